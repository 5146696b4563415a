"""LoRA targets by peft's own rules, LoRA on every component a shipped config names, one norm rule."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import timm
import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import check_target_module_exists

from recipes.adapter import canonical_name, is_norm, is_norm_name, norm_param_names
from recipes.param_groups import build_param_groups, resolve_adapter
from recipes.policies import apply_policy, target_matches, trainable_counts

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _unet_names(preset: str) -> tuple[str, ...]:
    return tuple(n for n, _ in _unet(preset).named_modules())


def _unet(preset: str) -> torch.nn.Module:
    from recipes.train.models.diffusers import build_diffusers_model

    return build_diffusers_model(preset, device="meta")


def _vit(depth: int = 2, **kw) -> torch.nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=8, depth=depth, num_classes=3, embed_dim=8, num_heads=2, **kw
    )


# --- targets: peft's check_target_module_exists, name by name ---------------------------------------------
PEFT_CASES = [
    ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"],
    ["attn1.to_out.0", "net.2", "conv1"],
    ["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"],  # a whole name
    r".*\.attn[12]\.to_(?:q|k|v|out\.0)",
    r"up_blocks\.\d+\.resnets\.\d+\.conv[12]",
]


@pytest.mark.parametrize("targets", PEFT_CASES, ids=range(len(PEFT_CASES)))
def test_targets_match_peft_on_the_sd15_unet(targets):
    names = _unet_names("sd15")
    config = LoraConfig(target_modules=targets)
    want = {n for n in names if check_target_module_exists(config, n)}
    got = target_matches(names, targets)
    assert set().union(*got.values()) == want and want
    if isinstance(targets, list):  # each entry matches something on its own
        assert all(got[t] for t in targets)


def test_targets_match_peft_on_a_timm_vit():
    names = [n for n, _ in _vit(3).named_modules()]
    for targets in (["qkv", "proj", "fc1", "fc2"], ["attn.proj", "mlp.fc2"], r"blocks\.[02]\.attn\.qkv"):
        want = {n for n in names if check_target_module_exists(LoraConfig(target_modules=targets), n)}
        assert set().union(*target_matches(names, targets).values()) == want and want


def _lora_modules(model) -> set[str]:
    return {canonical_name(n)[0].rsplit(".", 1)[0] for n, _ in model.named_parameters() if canonical_name(n)[1]}


def test_dotted_targets_and_a_regex_string_land_where_peft_would():
    unet = _unet("sd15")
    targets = ["to_out.0", "ff.net.2"]
    apply_policy(unet, dict(type="lora_only", r=2, targets=targets))
    names = _unet_names("sd15")
    want = {n for n in names if check_target_module_exists(LoraConfig(target_modules=targets), n)}
    assert _lora_modules(unet) == want and len(want) == 48  # 16 transformer blocks x (attn1, attn2, FFN)
    vit = _vit(3)
    apply_policy(vit, dict(type="lora_only", r=2, targets=r"blocks\.[12]\.(?:attn\.qkv|mlp\.fc2)"))
    assert _lora_modules(vit) == {"blocks.1.attn.qkv", "blocks.2.attn.qkv", "blocks.1.mlp.fc2", "blocks.2.mlp.fc2"}


def test_targets_are_restricted_to_the_chosen_blocks():
    vit = _vit(3)
    apply_policy(vit, dict(type="hybrid_layerwise", layout="deep_lora", lora_blocks=1, r=2, targets=["attn.proj"]))
    assert _lora_modules(vit) == {"blocks.2.attn.proj"}
    vit = _vit(3)
    apply_policy(vit, dict(type="lora_only", r=2, targets="all-linear"))
    assert _lora_modules(vit) == {
        f"blocks.{b}.{m}" for b in range(3) for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    }


@pytest.mark.parametrize(
    "targets,match",
    [
        (["qkv", "to_q", "fc9"], r"LoRA targets \['to_q', 'fc9'\] match no nn.Linear"),
        (r"blocks\.\d+\.attn\.nothing", r"LoRA regex \['blocks.*nothing'\] match no"),
        (["attn"], r"'attn' matches only \['Attention'\]"),
        (["head"], r"'head' matches only outside those blocks"),
        ("qkv", r"LoRA regex \['qkv'\]"),  # a string is a full-match regex: 'qkv' names no whole module
    ],
)
def test_a_target_that_matches_nothing_is_named(targets, match):
    with pytest.raises(ValueError, match=match):
        apply_policy(_vit(2), dict(type="lora_only", r=2, targets=targets))


# --- every shipped LoRA config: LoRA on every component its component_lr names ----------------------------
LORA_CONFIGS = sorted(ROOT.glob("configs/diffusion/*_lora.py")) + sorted(ROOT.glob("configs/classification/*lora*.py"))
FAST = {"sd15_character_lora", "vit_s16_cifar100_deep_lora", "vit_s16_cifar100_lora_only"}


@pytest.mark.parametrize(
    "path",
    [p if p.stem in FAST else pytest.param(p, marks=pytest.mark.slow) for p in LORA_CONFIGS],
    ids=[p.stem for p in LORA_CONFIGS],
)
def test_shipped_lora_config_puts_lora_on_every_component_it_names(path):
    from recipes.train.config import load_config
    from recipes.train.registry import MODELS

    cfg = load_config(path)
    if (cfg.get("task") or {}).get("type") == "diffusion":  # the diffusion task adds the policy's LoRA (as show_lr)
        from recipes.train.build import prepare_run

        cfg.merge_from_dict({"model.device": "meta", "model.pretrained": None})
        model = prepare_run(cfg, data=False).model
        mmap = resolve_adapter(model, cfg.get("adapter", "auto")).describe(model)
    else:
        model_cfg = dict(cfg.model)
        if model_cfg.get("type") != "diffusers":
            model_cfg["device"] = "meta"
        if model_cfg.get("pretrained_format") and not model_cfg.get("pretrained"):
            model_cfg.pop("pretrained_format")  # the weights file is the user's to give; the layout is the same
        model = MODELS.build(model_cfg)
        mmap = resolve_adapter(model, cfg.get("adapter", "auto")).describe(model)
        apply_policy(model, cfg.policy)
    with_lora = {
        mmap.params[canonical_name(n)[0]].component for n, _ in model.named_parameters() if canonical_name(n)[1]
    }
    named = set(cfg.strategy.get("component_lr", {})) - {"norm"}  # LoRA wraps layers, not norms
    if not named:  # flat LoRA configs (the PEFT comparison): the attention and the MLP of a ViT
        named = {"self_attn", "ffn"}
    assert named <= with_lora, f"no LoRA on {sorted(named - with_lora)}"
    if path.stem == "sd15_character_lora":  # attention outputs and the FFN of every transformer block
        lora = _lora_modules(model)
        blocks = {n.rsplit(".attn1", 1)[0] for n in lora if ".attn1." in n}
        assert len(blocks) == 16
        assert all({f"{b}.attn1.to_out.0", f"{b}.attn2.to_out.0", f"{b}.ff.net.2"} <= lora for b in blocks)


# --- one norm rule ---------------------------------------------------------------------------------------
def _norm_models():
    import transformers
    from diffusers import FluxTransformer2DModel
    from diffusers.models.normalization import AdaLayerNorm

    with torch.device("meta"):
        yield "convnext", timm.create_model("convnext_atto"), {"stem.1.weight": True, "stages.1.downsample.0.weight": True,
                                                                "stages.0.blocks.0.conv_dw.weight": False, "head.norm.weight": True}  # fmt: skip
        yield "resnet", timm.create_model("resnet18"), {"bn1.weight": True, "layer2.0.downsample.1.weight": True,
                                                         "layer2.0.downsample.0.weight": False}  # fmt: skip
        llama = transformers.LlamaModel(transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                                 num_attention_heads=2, num_key_value_heads=2, vocab_size=32))  # fmt: skip
        yield "llama", llama, {"layers.0.input_layernorm.weight": True, "norm.weight": True,
                               "layers.0.mlp.up_proj.weight": False}  # fmt: skip
        gpt2 = transformers.GPT2Model(
            transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=32, n_positions=8)
        )
        yield "gpt2", gpt2, {"h.0.ln_1.weight": True, "ln_f.bias": True, "h.0.attn.c_attn.weight": False}
    flux = FluxTransformer2DModel(num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
                                  joint_attention_dim=16, pooled_projection_dim=8, in_channels=4, axes_dims_rope=(2, 2, 4))  # fmt: skip
    yield "flux", flux, {"transformer_blocks.0.attn.norm_q.weight": True, "transformer_blocks.0.attn.norm_added_k.weight": True,
                         "transformer_blocks.0.norm1.linear.weight": False, "norm_out.linear.weight": False}  # fmt: skip
    yield "unet", _unet("sd15"), {"down_blocks.0.resnets.0.norm1.weight": True,  # GroupNorm
                                  "down_blocks.0.attentions.0.norm.weight": True, "conv_norm_out.bias": True,
                                  "down_blocks.0.attentions.0.proj_in.weight": False}  # fmt: skip
    ada = torch.nn.ModuleDict({"norm1": AdaLayerNorm(8, num_embeddings=4), "ln_1": torch.nn.LayerNorm(8)})
    yield "ada", ada, {"norm1.linear.weight": False, "norm1.emb.weight": False, "ln_1.weight": True}


def test_one_norm_rule_by_the_holder_class_and_every_user_agrees():
    for family, model, expected in _norm_models():
        norms = norm_param_names(model)
        modules = dict(model.named_modules())
        for name, want in expected.items():
            assert (name in norms) is want, (family, name)
            assert is_norm(name, modules[name.rsplit(".", 1)[0]]) is want, (family, name)
        if family in ("llama", "gpt2", "flux", "unet"):  # where the names say it, the name-only fallback agrees
            assert all(is_norm_name(n) is w for n, w in expected.items()), family
        if next(model.parameters()).is_meta:
            continue
        # lr_norm (strategy), norm_only (policy) and trainable_counts all use the same set
        groups = build_param_groups(model, dict(type="flat", lr=1.0, lr_norm=0.5))
        lr = {n: g["lr"] for g in groups for n in g["param_names"]}
        assert {n for n, v in lr.items() if v == 0.5} == norms, family
        apply_policy(model, dict(type="norm_only", head="^$"))
        assert {n for n, p in model.named_parameters() if p.requires_grad} == norms, family
        assert trainable_counts(model)["norm"] == sum(p.numel() for n, p in model.named_parameters() if n in norms)


def test_norm_rule_on_a_convnext_stem_and_lr_norm():
    """ConvNeXt's stem norm is ``stem.1`` (a LayerNorm2d): the class says norm, the name does not."""
    model = timm.create_model("convnext_atto", num_classes=3)
    groups = build_param_groups(model, dict(type="flat", lr=1.0, lr_norm=0.5))
    lr = {n: g["lr"] for g in groups for n in g["param_names"]}
    assert lr["stem.1.weight"] == lr["stages.0.blocks.0.norm.weight"] == 0.5
    assert lr["stem.0.weight"] == lr["stages.0.blocks.0.conv_dw.bias"] == 1.0
    apply_policy(model, dict(type="norm_only"))
    assert model.stem[1].weight.requires_grad and not model.stem[0].weight.requires_grad


# --- LoKr / LoHa (policy.kind): the same modules, the same layer-decay table --------------------------------
@pytest.mark.parametrize(
    ("name", "want"),
    [("blocks.0.attn.qkv.lokr_w1.default", ("blocks.0.attn.qkv.weight", "lokr")),
     ("base_model.model.blocks.1.mlp.fc2.lokr_w2_b.default", ("blocks.1.mlp.fc2.weight", "lokr")),
     ("down_blocks.0.resnets.0.conv1.lokr_t2.default", ("down_blocks.0.resnets.0.conv1.weight", "lokr")),
     ("blocks.0.attn.qkv.hada_w1_a.default", ("blocks.0.attn.qkv.weight", "loha")),
     ("blocks.0.attn.qkv.hada_t2.default", ("blocks.0.attn.qkv.weight", "loha")),
     ("blocks.0.attn.qkv.base_layer.weight", ("blocks.0.attn.qkv.weight", None)),
     ("blocks.0.hada_gate.weight", ("blocks.0.hada_gate.weight", None))],
)  # fmt: skip
def test_lycoris_tensors_take_the_name_of_the_weight_they_wrap(name, want):
    assert canonical_name(name) == want


@pytest.mark.parametrize("kind", ["lokr", "loha"])
def test_lycoris_kinds_go_where_lora_goes_with_its_layer_decay(kind):
    """peft's LoKrConfig / LoHaConfig on the LoRA's modules; every tensor of a module gets that module's
    layer-decay LR, the table LoRA gets (ViT, decay 0.5: exact powers of two)."""
    strategy = dict(type="layer_decay", lr=1.0, decay=0.5)
    lrs = {}
    for k in ("lora", kind):
        vit = _vit(3)
        apply_policy(vit, dict(type="lora_only", kind=k, r=2, alpha=2, head="^$"))
        trained = [n for n, p in vit.named_parameters() if p.requires_grad]
        assert trained and all(canonical_name(n)[1] is not None for n in trained)
        assert all(canonical_name(n)[1] == kind for n in trained) or k == "lora"
        groups = build_param_groups(vit, strategy)
        lrs[k] = {canonical_name(n)[0]: g["lr"] for g in groups for n in g["param_names"]}
    assert lrs[kind] == lrs["lora"] and set(lrs["lora"].values()) == {2.0**-3, 2.0**-2, 2.0**-1}


def test_lycoris_kinds_change_the_trained_tensors():
    """Same modules and rank, other tensors: LoRA's A / B (2 blocks x (2 x 8 + 24 x 2)), LoKr's Kronecker factors,
    LoHa's two Hadamard pairs (twice LoRA's)."""
    counts = {}
    for kind in ("lora", "lokr", "loha"):
        vit = _vit(2)
        apply_policy(vit, dict(type="lora_only", kind=kind, r=2, alpha=2, targets=["qkv"], head="^$"))
        counts[kind] = sum(p.numel() for p in vit.parameters() if p.requires_grad)
    assert counts == {"lora": 2 * (2 * 8 + 24 * 2), "lokr": counts["lokr"], "loha": 2 * counts["lora"]}
    assert counts["lokr"] not in (counts["lora"], counts["loha"])


@pytest.mark.parametrize(
    ("policy", "match"),
    [(dict(kind="lokr", dora=True), r"policy.dora=True is LoRA's DoRA; policy.kind='lokr' has no DoRA"),
     (dict(kind="loha", dropout=0.1), r"policy.dropout is LoRA's dropout; peft's loha has rank / module dropout"),
     (dict(kind="ia3"), r"policy.kind must be one of \('lora', 'lokr', 'loha'\)"),
     (dict(r=0), r"policy.r must be a whole number >= 1"),
     (dict(dora="yes"), r"policy.dora must be True or False")],
)  # fmt: skip
def test_bad_adapter_settings_are_named(policy, match):
    with pytest.raises((ValueError, TypeError), match=match):
        apply_policy(_vit(2), dict(type="lora_only", **policy))
