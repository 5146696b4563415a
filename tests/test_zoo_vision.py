"""The vision adapters on their real classes: RF-DETR, transformers DINOv2 / VideoMAE / ViT, VideoMAEv2.

Full-size default configs on the meta device (RF-DETR on the CPU: it builds in 0.3 s and does not
build on meta), tiny configs where a forward pass runs. Coverage, auto recognition, VideoMAEv2's
scales on VideoMAE, LoRA / DoRA / LoRA+ with explicit numbers (every adapter's invariants:
tests/test_adapters.py).
"""

from __future__ import annotations

import functools
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch

from recipes.adapter import Adapter
from recipes.param_groups import build_param_groups, resolve_adapter
from recipes.registry import ADAPTERS

T = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")
rfdetr = pytest.importorskip("rfdetr")
MINE = ("rfdetr", "dinov2_hf", "dinov2_registers_hf", "videomae", "videomaev2", "hf_vit")


def hf(cls: str, config: str, device: str = "meta", **kw) -> torch.nn.Module:
    with torch.device(device):
        return getattr(T, cls)(getattr(T, config)(**kw))


def rf(variant: str) -> torch.nn.Module:
    kwargs = {"positional_encoding_size": 40} if variant == "RFDETRBase" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(rfdetr, variant)(pretrain_weights=None, **kwargs).model.model


def timm_meta(name: str, **kw) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, **kw)


_DINO_G = dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, use_swiglu_ffn=True)
# name -> (builder, adapter, {catch-all component: the top-level modules left in it})
E, H = "embed", "head"
_RF_HEAD = {
    "bbox_embed",
    "class_embed",
    "query_feat",
    "refpoint_embed",
    "transformer.enc_out_bbox_embed",
    "transformer.enc_out_class_embed",
    "transformer.enc_output",
    "transformer.enc_output_norm",
}
_KP_HEAD = {
    "keypoint_embed",
    "transformer.enc_out_keypoint_embed",
    "transformer.keypoint_query_initializer",
    "transformer.keypoint_query_initializer_enc",
}
FULL = {
    **{v: (lambda v=v: rf(v), "rfdetr", {H: _RF_HEAD})
       for v in ("RFDETRNano", "RFDETRSmall", "RFDETRMedium", "RFDETRLarge", "RFDETRBase")},
    "RFDETRSegNano": (lambda: rf("RFDETRSegNano"), "rfdetr", {H: _RF_HEAD | {"segmentation_head"}}),
    "RFDETRKeypointPreview": (lambda: rf("RFDETRKeypointPreview"), "rfdetr", {H: _RF_HEAD | _KP_HEAD}),
    "Dinov2Model": (lambda: hf("Dinov2Model", "Dinov2Config"), "dinov2_hf", {E: {"embeddings"}}),
    "Dinov2-giant-cls": (lambda: hf("Dinov2ForImageClassification", "Dinov2Config", **_DINO_G), "dinov2_hf",
                         {E: {"dinov2.embeddings"}, H: {"classifier"}}),
    "Dinov2WithRegisters-cls": (
        lambda: hf("Dinov2WithRegistersForImageClassification", "Dinov2WithRegistersConfig"),
        "dinov2_registers_hf", {E: {"dinov2_with_registers.embeddings"}, H: {"classifier"}}),
    "VideoMAEModel": (lambda: hf("VideoMAEModel", "VideoMAEConfig"), "videomae", {E: {"embeddings"}}),
    "VideoMAE-cls": (lambda: hf("VideoMAEForVideoClassification", "VideoMAEConfig"), "videomae",
                     {E: {"videomae.embeddings"}, H: {"fc_norm", "classifier"}}),
    "VideoMAE-cls-no-mean-pool": (
        lambda: hf("VideoMAEForVideoClassification", "VideoMAEConfig", use_mean_pooling=False), "videomae",
        {E: {"videomae.embeddings"}, H: {"classifier"}}),
    "ViTForImageClassification": (lambda: hf("ViTForImageClassification", "ViTConfig"), "hf_vit",
                                  {E: {"vit.embeddings"}, H: {"classifier"}}),
    "ViTModel": (lambda: hf("ViTModel", "ViTConfig"), "hf_vit", {E: {"embeddings"}, H: {"pooler"}}),
    "ViTForMaskedImageModeling": (lambda: hf("ViTForMaskedImageModeling", "ViTConfig"), "hf_vit",
                                  {E: {"vit.embeddings"}, H: {"decoder"}}),
    # VideoMAEv2 naming on timm's classes (same names), chosen by name: auto gives timm_vit
    "videomaev2-beit": (lambda: timm_meta("beit_base_patch16_224", use_shared_rel_pos_bias=True),
                        "videomaev2", {E: {"cls_token", "patch_embed"}, H: {"fc_norm", "head", "rel_pos_bias"}}),
    "videomaev2-vit": (lambda: timm_meta("vit_base_patch16_224"), "videomaev2",
                       {E: {"cls_token", "pos_embed", "patch_embed"}, H: {"head"}}),
}  # fmt: skip


@functools.cache
def full(key: str) -> torch.nn.Module:
    return FULL[key][0]()


def _top(name: str) -> str:
    return re.match(r"(?:transformer\.|videomae\.|vit\.|dinov2\.|dinov2_with_registers\.)?[^.]+", name).group(0)


def _adapter(key: str) -> Adapter:
    name = FULL[key][1]
    if name == "videomaev2":
        assert resolve_adapter(full(key)).name == "timm_vit"  # never claimed by auto
        return resolve_adapter(full(key), name)
    adp = resolve_adapter(full(key))  # auto: exactly one adapter claims it
    assert adp.name == name
    return adp


@pytest.mark.parametrize("key", sorted(FULL))
def test_full_size_coverage(key):
    model, adp = full(key), _adapter(key)
    mmap = adp.describe(model)
    assert mmap.unmatched == []
    assert len(mmap.params) == sum(1 for _ in model.parameters())
    left: dict[str, set[str]] = {}
    for name, info in mmap.params.items():
        assert 0 <= info.layer_id <= mmap.num_layers + 1 and info.component
        if info.component in adp.catch_all:
            assert info.stack is None, f"{name}: a block parameter in a catch-all"
            left.setdefault(info.component, set()).add(_top(name))
    assert left == FULL[key][2]
    assert mmap.num_layers == (40 if "giant" in key else 12)


def test_adapters_do_not_import_upstream_at_import_time():
    for adapter in MINE:
        src = Path(sys.modules[ADAPTERS.get(adapter).__module__].__file__).read_text()
        assert not re.search(r"^\s*(?:import|from) (?:transformers|rfdetr|timm)\b", src, re.M), adapter


def test_auto_errors_when_none_or_two_claim(registries):
    with pytest.raises(ValueError, match="no registered adapter recognises torch.nn.modules.linear.Linear"):
        resolve_adapter(torch.nn.Linear(2, 2))
    twin = type("TwinViT", (ADAPTERS.get("hf_vit"),), {"name": "twin_vit"})
    ADAPTERS.register_module("twin_vit", module=twin)
    assert resolve_adapter(full("ViTModel")).name == "twin_vit"  # a subclass claiming too is the more specific
    rival = type("RivalViT", (ADAPTERS.get("hf"),), {"name": "rival_vit", "matches": classmethod(lambda c, m: True)})
    ADAPTERS.register_module("rival_vit", module=rival)
    with pytest.raises(ValueError, match=r"adapters \['rival_vit', 'twin_vit'\] all claim .*ViTModel"):
        resolve_adapter(full("ViTModel"))
    assert resolve_adapter(full("ViTModel"), "twin_vit").name == "twin_vit"  # the way out
    assert resolve_adapter(full("ViTModel"), "beit_style").name == "videomaev2"  # the alias


# transformers 4.x names (not installable beside 5.x): the same rules must place them
LEGACY = [
    ("videomae", "videomae.encoder.layer.3.attention.attention.q_bias", 4, "self_attn"),
    ("videomae", "videomae.encoder.layer.3.attention.attention.v_bias", 4, "self_attn"),
    ("videomae", "videomae.encoder.layer.3.attention.attention.query.weight", 4, "self_attn"),
    ("videomae", "videomae.encoder.layer.3.attention.output.dense.weight", 4, "self_attn"),
    ("videomae", "videomae.encoder.layer.3.output.dense.weight", 4, "ffn"),
    ("dinov2_hf", "encoder.layer.0.attention.attention.query.weight", 1, "self_attn"),
    ("dinov2_hf", "encoder.layer.0.attention.output.dense.weight", 1, "self_attn"),
    ("dinov2_hf", "encoder.layer.0.mlp.weights_in.weight", 1, "ffn"),
    ("dinov2_hf", "embeddings.register_tokens", 0, "embed"),
    ("hf_vit", "vit.encoder.layer.5.attention.attention.key.weight", 6, "self_attn"),
    ("hf_vit", "vit.encoder.layer.5.intermediate.dense.weight", 6, "ffn"),
    ("hf_vit", "vit.encoder.layer.5.output.dense.bias", 6, "ffn"),
    ("hf_vit", "vit.encoder.layer.5.layernorm_after.weight", 6, "norm"),
    ("videomaev2", "blocks.2.attn.q_bias", 3, "self_attn"),
    ("videomaev2", "blocks.2.gamma_2", 3, "ffn"),
    ("videomaev2", "norm.weight", 13, "norm"),
]


@pytest.mark.parametrize(("adapter", "name", "layer_id", "component"), LEGACY)
def test_legacy_and_original_names(adapter, name, layer_id, component):
    padding = [f"blocks.{i}.attn.qkv.weight" for i in range(12)]  # 12 blocks so the head is 13
    if adapter != "videomaev2":
        padding = [name.split(".layer.")[0] + f".layer.{i}.x.weight" for i in range(12)]
    info = ADAPTERS.get(adapter)().describe(None, [name, *padding]).params[name]
    assert (info.layer_id, info.component) == (layer_id, component)


# --- VideoMAE: VideoMAEv2's layer-decay scales, exactly ------------------------------------------
_TINY_VMAE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                  patch_size=16, num_frames=4, tubelet_size=2, num_labels=3)  # fmt: skip


def _by_name(groups) -> dict[str, tuple[float, float]]:
    return {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["param_names"]}


def test_videomae_layer_decay_gives_videomaev2_scales():
    model = hf("VideoMAEForVideoClassification", "VideoMAEConfig", device="cpu", **_TINY_VMAE)
    got = _by_name(build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5, weight_decay=0.05)))
    b = "videomae.encoder.layer."
    expected = {  # L = 2 blocks: embeddings 0 -> 0.5**3, block i -> 0.5**(2-i), fc_norm/head (L+1) -> 1
        "videomae.embeddings.patch_embeddings.projection.weight": (0.125, 0.05),
        "videomae.embeddings.patch_embeddings.projection.bias": (0.125, 0.0),
        b + "0.attention.attention.query.weight": (0.25, 0.05),
        b + "0.attention.attention.query.bias": (0.25, 0.0),
        b + "0.attention.attention.key.weight": (0.25, 0.05),
        b + "0.attention.attention.value.weight": (0.25, 0.05),
        b + "0.attention.attention.value.bias": (0.25, 0.0),
        b + "0.attention.output.dense.weight": (0.25, 0.05),
        b + "0.attention.output.dense.bias": (0.25, 0.0),
        b + "0.intermediate.dense.weight": (0.25, 0.05),
        b + "0.intermediate.dense.bias": (0.25, 0.0),
        b + "0.output.dense.weight": (0.25, 0.05),
        b + "0.output.dense.bias": (0.25, 0.0),
        b + "0.layernorm_before.weight": (0.25, 0.0),
        b + "0.layernorm_before.bias": (0.25, 0.0),
        b + "0.layernorm_after.weight": (0.25, 0.0),
        b + "0.layernorm_after.bias": (0.25, 0.0),
        "fc_norm.weight": (1.0, 0.0),
        "fc_norm.bias": (1.0, 0.0),
        "classifier.weight": (1.0, 0.05),
        "classifier.bias": (1.0, 0.0),
    }
    expected.update({k.replace(b + "0.", b + "1."): (0.5, wd) for k, (_, wd) in expected.items() if k.startswith(b)})
    assert got == expected


def _videomaev2_scale(name: str, depth: int, decay: float) -> float:
    """VideoMAEv2's ``get_num_layer_for_vit`` and ``LayerDecayValueAssigner``, as written upstream."""
    num_max_layer = depth + 2
    if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
        layer_id = 0
    elif name.startswith("blocks"):
        layer_id = int(name.split(".")[1]) + 1
    else:  # rel_pos_bias, norm, fc_norm, head
        layer_id = num_max_layer - 1
    return decay ** (num_max_layer - 1 - layer_id)


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_videomaev2_adapter_matches_videomaev2_on_its_naming(pool):
    model = timm_meta("vit_base_patch16_224", global_pool=pool)  # "token": final norm; "avg": fc_norm
    groups = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.75), adapter="videomaev2")
    for g in groups:
        for n in g["param_names"]:
            assert g["lr_scale"] == pytest.approx(_videomaev2_scale(n, 12, 0.75), rel=1e-12), n
    # timm's own rule puts the final norm with the last block: the one place the two differ
    timm_groups = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.75))
    lr_scale = {n: g["lr_scale"] for g in timm_groups for n in g["param_names"]}
    assert lr_scale.get("norm.weight", 0.75) == 0.75


def test_videomaev2_handoff_and_zero_weight_decay():
    """The BEiT / VideoMAEv2 loop sets ``lr = schedule[it] * lr_scale``; with weight_decay=0 the decay survives."""
    model = hf("VideoMAEForVideoClassification", "VideoMAEConfig", device="cpu", **_TINY_VMAE)
    groups = build_param_groups(model, dict(type="layer_decay", lr=1e-3, decay=0.5, weight_decay=0.0))
    assert sorted({g["lr_scale"] for g in groups}) == [0.125, 0.25, 0.5, 1.0]  # VideoMAEv2 loses these at wd=0
    opt = torch.optim.AdamW(groups)
    for g, ours in zip(opt.param_groups, groups, strict=True):
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"]) and g["lr_scale"] == ours["lr_scale"]
        g["lr"] = 5e-4 * g["lr_scale"]  # the hand-off, one step of a schedule
    video = torch.randn(1, 4, 3, 32, 32)
    before = [p.detach().clone() for p in model.parameters()]
    model(pixel_values=video).logits.sum().backward()
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


# --- DINOv2: register tokens and layer-scale gammas ---------------------------------------------
def test_dinov2_tokens_and_layer_scale_get_layer_0_and_no_decay():
    hf_groups = build_param_groups(
        full("Dinov2WithRegisters-cls"), dict(type="layer_decay", lr=1.0, decay=0.5, weight_decay=0.05)
    )
    got = _by_name(hf_groups)
    e = "dinov2_with_registers.embeddings."
    for token in ("cls_token", "mask_token", "register_tokens", "position_embeddings"):
        assert got[e + token] == (0.5**13, 0.0), token
    assert got[e + "patch_embeddings.projection.weight"] == (0.5**13, 0.05)
    assert got["dinov2_with_registers.encoder.layer.0.layer_scale1.lambda1"] == (0.5**12, 0.0)
    assert got["dinov2_with_registers.encoder.layer.11.layer_scale2.lambda1"] == (0.5, 0.0)
    assert got["dinov2_with_registers.layernorm.weight"] == got["classifier.bias"] == (1.0, 0.0)
    timm_model = timm_meta("vit_small_patch14_reg4_dinov2")  # timm's DINOv2 is timm_vit's
    assert resolve_adapter(timm_model).name == "timm_vit"
    got = _by_name(build_param_groups(timm_model, dict(type="layer_decay", lr=1.0, decay=0.5, weight_decay=0.05)))
    # no head (num_classes=0): timm's last id is the last block's (12), where its final norm sits
    assert got["reg_token"] == got["cls_token"] == got["pos_embed"] == (0.5**12, 0.0)
    assert got["blocks.0.ls1.gamma"] == (0.5**11, 0.0)


# --- LoRA / DoRA / LoRA+ -------------------------------------------------------------------------
def _inject_lora(model, targets, use_dora=False):
    """peft LoRA on ``targets`` (full module names), every other weight frozen."""
    from peft import LoraConfig, inject_adapter_in_model

    with torch.device(next(model.parameters()).device):
        inject_adapter_in_model(LoraConfig(r=2, lora_alpha=2, target_modules=targets, use_dora=use_dora), model)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    return model


LORA_FAMILIES = {
    "rfdetr": (lambda: rf("RFDETRNano"), r"encoder\.layer\.\d+\.|transformer\.decoder\.layers\.\d+\.linear|^class_embed$"),
    "videomae": (lambda: hf("VideoMAEForVideoClassification", "VideoMAEConfig"), r"\.layer\.\d+\.|^classifier$"),
    "dinov2_registers_hf": (
        lambda: hf("Dinov2WithRegistersForImageClassification", "Dinov2WithRegistersConfig"), r"\.layer\.\d+\."),
    "dinov2_hf": (lambda: hf("Dinov2Model", "Dinov2Config"), r"\.layer\.\d+\."),
    "hf_vit": (lambda: hf("ViTForImageClassification", "ViTConfig"), r"\.layers\.\d+\.|^classifier$"),
    "videomaev2": (lambda: timm_meta("vit_base_patch16_224"), r"^blocks\.\d+\.|^head$"),
}  # fmt: skip


@pytest.mark.parametrize("family", sorted(LORA_FAMILIES))
def test_lora_takes_the_wrapped_modules_place(family):
    build, where = LORA_FAMILIES[family]
    model = build()  # a fresh tree: peft modifies it
    adp = resolve_adapter(model, family)
    base = adp.describe(model)
    targets = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and re.search(where, n)]
    _inject_lora(model, targets, use_dora=family == "hf_vit")
    groups = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5, loraplus_ratio=16), adp)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    names = [n for g in groups for n in g["param_names"]]
    assert sorted(names) == sorted(trainable) and all("lora_" in n for n in names)  # frozen base left out
    lora = adp.describe(model)
    for n in trainable:
        wrapped = re.sub(r"\.lora_\w+\.default(?:\.weight)?$", ".weight", n)
        info = lora.params[wrapped]
        assert (info.layer_id, info.component) == (base.params[wrapped].layer_id, base.params[wrapped].component)
        if ".lora_A." in n:
            assert _lr(groups, n.replace(".lora_A.", ".lora_B.")) == 16 * _lr(groups, n)


def _lr(groups, name: str) -> float:
    (lr,) = {g["lr"] for g in groups if name in g["param_names"]}
    return lr


def test_tiny_vit_dora_and_loraplus_compose_with_layer_decay_and_component_scale():
    from peft import LoraConfig, get_peft_model

    model = hf("ViTForImageClassification", "ViTConfig", device="cpu", hidden_size=32, num_hidden_layers=2,
               num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=16, num_labels=3)  # fmt: skip
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=2, target_modules=["q_proj", "fc1"], use_dora=True))
    recipe = dict(type="layer_decay", lr=1.0, decay=0.5, component_scale={"ffn": 0.5}, loraplus_ratio=8)
    groups = build_param_groups(model, recipe)  # auto sees through the peft wrapper
    p = "base_model.model.vit.layers."
    # 2 blocks, head id 3: block 1 (layers.0) -> 0.25, block 2 (layers.1) -> 0.5; ffn x 0.5; B x 8
    assert _lr(groups, p + "0.attention.q_proj.lora_A.default.weight") == 0.25
    assert _lr(groups, p + "0.attention.q_proj.lora_B.default.weight") == 2.0
    assert _lr(groups, p + "0.attention.q_proj.lora_magnitude_vector.default.weight") == 0.25
    assert _lr(groups, p + "1.mlp.fc1.lora_A.default.weight") == 0.25
    assert _lr(groups, p + "1.mlp.fc1.lora_B.default.weight") == 2.0
    model(pixel_values=torch.randn(1, 3, 32, 32)).logits.sum().backward()  # runs, and trains only LoRA
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)


def test_rfdetr_preset_with_lora_plus():
    model = rf("RFDETRNano")
    enc = "backbone.0.encoder.encoder.encoder.layer.11.attention.attention.query"
    _inject_lora(model, [enc, "transformer.decoder.layers.0.linear1", "class_embed"])
    groups = build_param_groups(model, dict(type="rfdetr", loraplus_ratio=16), adapter="rfdetr")
    top = 1.5e-4 * 0.8**2 * 0.7**2  # rfdetr: L = 13 on Nano, block 12 -> 0.8 ** (14 - 12), encoder x 0.7 ** 2
    assert _lr(groups, enc + ".lora_A.default.weight") == pytest.approx(top, rel=1e-12)
    assert _lr(groups, enc + ".lora_B.default.weight") == pytest.approx(16 * top, rel=1e-12)
    assert _lr(groups, "transformer.decoder.layers.0.linear1.lora_B.default.weight") == pytest.approx(16 * 7e-5)
    assert _lr(groups, "class_embed.lora_A.default.weight") == pytest.approx(1e-4, rel=1e-12)
    assert len(groups) == 6  # encoder, decoder, head x (A, B); weight decay on all (rfdetr's rule)
