"""``task.save_format="kohya"`` for every family with a kohya / musubi layout, checked against the peer's own mapping:
diffusers' ``load_lora_weights`` reads kohya files through the converters in ``lora_conversion_utils`` (kohya Flux.1
and Flux.2, musubi WAN, Z-Image), so a kohya file must give the same denoiser as the diffusers-format file."""

from __future__ import annotations

import re

import pytest
import torch

from recipes.train.diffusion.adapters import add_adapter
from recipes.train.diffusion.families import FAMILIES
from recipes.train.diffusion.kohya_keys import kohya_state, original_path
from recipes.train.diffusion.lora_io import lora_state_dict, save_lora
from recipes.train.diffusion.testing import build_test_pipeline

_MMDIT = r"attn\.(?:to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out)|ff(?:_context)?\.net\.(?:0\.proj|2)"
# Flux.1's single-block linear1 (q, k, v, mlp fused) is split by diffusers' converter at Flux.1's full widths
# (3072 x 3 + 12288): on the tiny pipeline the double blocks and linear2 go through load_lora_weights, and
# linear1 is checked at full width below
TARGETS = {
    "flux": rf"transformer_blocks\.\d+\.(?:{_MMDIT})|single_transformer_blocks\.\d+\.proj_out",
    "chroma": rf"transformer_blocks\.\d+\.(?:{_MMDIT})|single_transformer_blocks\.\d+\.proj_out",
}


def randomize_lora(module: torch.nn.Module, seed: int = 1) -> None:
    """Every LoRA A and B tensor of ``module`` random (seeded), so a LoRA changes every target it wraps."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def _trained(family: str, dora: bool = False, r: int = 2, alpha: float = 8.0):
    """The family's test pipeline with a LoRA whose A and B are random (a LoRA that changes every target)."""
    pipe = build_test_pipeline(family)
    fam = FAMILIES[family]
    model = getattr(pipe, fam.denoiser)
    lora = {"r": r, "alpha": alpha, "dora": dora, "targets": TARGETS.get(family)}
    add_adapter(model, lora, fam.lora_targets)
    randomize_lora(model)
    return pipe, model


def _fused_weights(pipe, family: str, folder) -> dict[str, torch.Tensor]:
    fresh = build_test_pipeline(family)
    fresh.load_lora_weights(str(folder))  # diffusers' converter for this family's kohya / musubi keys
    fresh.fuse_lora()
    model = getattr(fresh, FAMILIES[family].denoiser)
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


@pytest.mark.slow  # builds four tiny pipelines per family and fuses their LoRAs: 0.2-9 s each on a shared CPU
@pytest.mark.parametrize("family", ["flux", "chroma", "flux2", "wan", "zimage"])
def test_kohya_file_gives_the_denoiser_of_the_diffusers_file(family, tmp_path):
    from safetensors import safe_open

    pipe, model = _trained(family)
    cls, key = type(pipe), FAMILIES[family].lora_save_key
    save_lora(cls, model, tmp_path / "diffusers", key, "diffusers", family=family)
    path = save_lora(cls, model, tmp_path / "kohya", key, "kohya", family=family)
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        alphas = {k: float(f.get_tensor(k)) for k in keys if k.endswith(".alpha")}
        ranks = {k: f.get_tensor(k).shape[0] for k in keys if k.endswith(".lora_down.weight")}
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    assert len(alphas) == len(ranks)  # every module carries its .alpha
    for k, rank in ranks.items():  # kohya's (and ComfyUI's) scale alpha / rank is the trained 8 / 2
        assert alphas[k.replace(".lora_down.weight", ".alpha")] / rank == pytest.approx(4.0), k
    from_kohya, from_diffusers = (
        _fused_weights(pipe, family, tmp_path / "kohya"),
        _fused_weights(pipe, family, tmp_path / "diffusers"),
    )
    base = {n: p for n, p in getattr(build_test_pipeline(family), FAMILIES[family].denoiser).named_parameters()}
    changed = [n for n in from_kohya if not torch.equal(from_kohya[n], base[n])]
    for name, w in from_diffusers.items():
        torch.testing.assert_close(from_kohya[name], w, atol=1e-5, rtol=1e-5, msg=name)
    assert len(changed) >= len(ranks)  # the LoRA acts on every module it names (a fused one on each part)


def test_flux_single_block_linear1_at_full_width_maps_back_through_kohyas_converter():
    """Flux.1 [dev]'s single block at its real widths (meta-device shapes): q, k, v and proj_mlp fused into
    ``linear1`` come back from diffusers' ``_convert_kohya_flux_lora_to_diffusers`` as the trained deltas."""
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers
    from peft import LoraConfig

    with torch.device("meta"):
        flux = FluxTransformer2DModel(num_layers=1, num_single_layers=1)  # the release's widths (3072, mlp 12288)
    gen = torch.Generator().manual_seed(0)
    state = {}
    for part in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out"):
        lin = flux.get_submodule(f"single_transformer_blocks.0.{part}")
        state[f"single_transformer_blocks.0.{part}.lora_A.weight"] = torch.randn(2, lin.in_features, generator=gen)
        state[f"single_transformer_blocks.0.{part}.lora_B.weight"] = torch.randn(lin.out_features, 2, generator=gen)
    config = LoraConfig(r=2, lora_alpha=8)
    out = _convert_kohya_flux_lora_to_diffusers(kohya_state(state, "flux", config))
    assert len(out) == len(state)
    for key in state:
        if key.endswith("lora_A.weight"):
            b = key.replace("lora_A", "lora_B")
            want = state[b] @ state[key] * 4.0
            torch.testing.assert_close(out["transformer." + b] @ out["transformer." + key], want, msg=key)


def test_kohya_names_follow_the_original_checkpoints():
    assert original_path("flux", "transformer_blocks.3.attn.add_k_proj") == (
        "double_blocks.3.txt_attn.qkv", 1, ("add_q_proj", "add_k_proj", "add_v_proj"))  # fmt: skip
    assert original_path("flux", "single_transformer_blocks.0.proj_mlp")[:2] == ("single_blocks.0.linear1", 3)
    assert original_path("flux", "proj_out")[0] == "final_layer.linear"
    assert original_path("wan22", "blocks.7.attn2.to_out.0")[0] == "blocks.7.cross_attn.o"
    assert original_path("sd3", "transformer_blocks.1.ff_context.net.2")[0] == "joint_blocks.1.context_block.mlp.fc2"
    assert original_path("zimage", "layers.0.feed_forward.w1")[0] == "layers.0.feed_forward.w1"


def test_kohya_format_errors_name_the_module_or_the_family():
    from peft import LoraConfig

    config = LoraConfig(r=2, lora_alpha=2)
    a, b = torch.zeros(2, 4), torch.zeros(4, 2)
    partial = {"transformer_blocks.0.attn.to_q.lora_A.weight": a, "transformer_blocks.0.attn.to_q.lora_B.weight": b}
    with pytest.raises(ValueError, match=r"double_blocks.0.img_attn.qkv .* lacks \['to_k', 'to_v'\]"):
        kohya_state(partial, "flux", config)
    with pytest.raises(ValueError, match=r"'pos_embed.proj' has no name in kohya's wan layout"):
        kohya_state({"pos_embed.proj.lora_A.weight": a, "pos_embed.proj.lora_B.weight": b}, "wan", config)
    with pytest.raises(ValueError, match="no kohya / ComfyUI key layout is known for the pixart family"):
        kohya_state(partial, "pixart", config)
    with pytest.raises(ValueError, match="rank_pattern"):
        kohya_state(partial, "flux", LoraConfig(r=2, lora_alpha=2, rank_pattern={"to_q": 4}))


def test_rslora_scale_goes_into_alpha():
    from peft import LoraConfig

    a, b = torch.ones(4, 3), torch.ones(5, 4)
    out = kohya_state({"blocks.0.ffn.net.2.lora_A.weight": a, "blocks.0.ffn.net.2.lora_B.weight": b}, "wan",
                      LoraConfig(r=4, lora_alpha=8, use_rslora=True))  # fmt: skip
    assert float(out["lora_unet_blocks_0_ffn_2.alpha"]) / 4 == pytest.approx(8 / 4**0.5)  # alpha / sqrt(r)


def test_dora_magnitude_is_written_as_dora_scale_per_output_row():
    """DoRA in the kohya file: ``<module>.dora_scale`` (the key comfy/lora.py reads), shape ``(out, 1)`` (ComfyUI's
    ``weight_decompose`` and LyCORIS's ``wd_on_out`` layout), and the merged weight by DoRA's definition,
    ``dora_scale * (W + alpha / rank * up @ down) / ||W + alpha / rank * up @ down||`` per output row, is peft's
    merged weight, also for q, k, v fused into one module. (diffusers drops ``dora_scale`` keys when it loads.)"""
    pipe, model = _trained("flux", dora=True)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_magnitude_vector" in name:
                p.mul_(1.0 + 0.2 * torch.rand(p.shape, generator=torch.Generator().manual_seed(2)))
    state = kohya_state(lora_state_dict(model), "flux", model.peft_config["default"])
    base = {n: m.base_layer.weight.detach().clone() for n, m in model.named_modules() if hasattr(m, "lora_A")}
    for _, m in model.named_modules():
        if hasattr(m, "lora_A"):
            m.merge()
    for stem, fused in (("double_blocks_0_img_attn_qkv", ("attn.to_q", "attn.to_k", "attn.to_v")),
                        ("double_blocks_0_img_attn_proj", ("attn.to_out.0",))):  # fmt: skip
        down, up = state[f"lora_unet_{stem}.lora_down.weight"], state[f"lora_unet_{stem}.lora_up.weight"]
        scale = float(state[f"lora_unet_{stem}.alpha"]) / down.shape[0]
        w = torch.cat([base[f"transformer_blocks.0.{p}"] for p in fused]) + scale * up @ down
        dora_scale = state[f"lora_unet_{stem}.dora_scale"]
        assert dora_scale.shape == (w.shape[0], 1)
        merged = dora_scale * w / w.norm(dim=1, keepdim=True)
        want = torch.cat([model.get_submodule(f"transformer_blocks.0.{p}").base_layer.weight for p in fused])
        torch.testing.assert_close(merged, want.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("config", "options", "match"),
    [
        ("pixart_lora.py", [], "no kohya / ComfyUI key layout is known for the pixart family"),
        ("flux_lora.py", [r"policy.targets='.*attn\.to_[qv]'"], r"double_blocks.0.img_attn.qkv .* lacks \['to_k'\]"),
    ],
)
def test_kohya_format_is_checked_when_the_model_is_built_not_at_the_end(config, options, match):
    """The full-size denoiser on the meta device (no weights): the layout error comes before any training step."""
    from recipes.train.build import prepare_run
    from recipes.train.config import load_config
    from tests.test_diffusion_task import ROOT

    opts = ["model.device=meta", "model.pretrained=None", "task.save_format=kohya", *options]
    cfg = load_config(ROOT / "configs" / "diffusion" / config, opts)
    with pytest.raises(ValueError, match=match):
        prepare_run(cfg, data=False)


class _Markers(dict):
    """An original-format checkpoint whose every tensor read says where it came from: row ``j`` of the ``i``-th key
    read holds ``i * 100000 + j``, so each converted diffusers tensor names its original key and first row."""

    ROWS = 3 * 3072 + 12288  # splits as Flux.1's single-block linear1 and in thirds / halves like any qkv

    def __init__(self, seed: dict[str, torch.Tensor]) -> None:
        super().__init__(seed)
        self.read: list[str] = []

    def pop(self, key, *default):
        super().pop(key, None)
        self.read.append(key)
        return (len(self.read) * 100000 + torch.arange(float(self.ROWS))).reshape(self.ROWS, 1)


SINGLE_FILE = {  # diffusers' converter of each release's original checkpoint, and what it reads besides the blocks
    "flux": ("convert_flux_transformer_checkpoint_to_diffusers", ["guidance_in.in_layer.weight"]),
    "chroma": (
        "convert_chroma_transformer_checkpoint_to_diffusers",
        ["distilled_guidance_layer.layers.0.in_layer.weight"],
    ),
    "flux2": ("convert_flux2_transformer_checkpoint_to_diffusers", []),
    "sd3": ("convert_sd3_transformer_checkpoint_to_diffusers", []),
    "wan": ("convert_wan_transformer_to_diffusers", []),
}


@pytest.mark.parametrize("family", sorted(SINGLE_FILE))
def test_kohya_names_are_the_original_keys_diffusers_converts_from(family):
    """kohya, musubi-tuner and ComfyUI (``model_lora_keys_unet``: ``lora_unet_`` + the native key, '_' for '.') name
    a LoRA module after the release's original checkpoint. diffusers' own single-file converter of that checkpoint
    says which original key, and which rows of a fused one, each diffusers module comes from: they must be the
    kohya module and part this exporter writes, for every rule of the family (SD3 ``joint_blocks``, BFL
    ``double_blocks`` / ``single_blocks``, WAN ``self_attn.q`` ...)."""
    import diffusers.loaders.single_file_utils as single_file

    from recipes.train.diffusion.kohya_keys import RULES

    converter, extra = SINGLE_FILE[family]
    seed = {f"{target.format(i)}.weight": torch.zeros(1) for _, target, _ in RULES[family] for i in (0, 1)}
    seed.update({k: torch.zeros(1) for k in extra}, **{"context_embedder.weight": torch.zeros(8, 1)})
    markers = _Markers(seed)
    converted = getattr(single_file, converter)(markers)
    used, first_rows = set(), {}
    for key, value in converted.items():
        module = key.removesuffix(".weight")
        rule = next((p for p, _, _ in RULES[family] if re.fullmatch(p, module)), None)
        if rule is None or not key.endswith(".weight"):
            continue
        target, index, parts = original_path(family, module)
        assert markers.read[int(value[0, 0]) // 100000 - 1] == f"{target}.weight", module
        first_rows.setdefault(target, {})[index] = int(value[0, 0]) % 100000
        used.add(rule)
    assert used == {p for p, _, _ in RULES[family]}  # every rule met a converted module
    for target, rows in first_rows.items():  # a fused module's parts in kohya's order: q, k, v (, mlp)
        assert rows[0] == 0 and [rows[i] for i in sorted(rows)] == sorted(rows.values()), target


@pytest.mark.slow  # trains the tiny Z-Image pipeline two steps and exports a checkpoint: ~30 s on a shared CPU
def test_a_dit_run_saves_and_exports_kohya_names_that_load_back(tmp_path):
    """A DiT run with save_format='kohya' ends with musubi-tuner's Z-Image names, which diffusers loads onto the
    weights the run trained; tools/export_diffusion.py writes the same file from the last step checkpoint."""
    from safetensors.torch import load_file

    from tests.test_diffusion_task import config, pipeline_dir, run
    from tools import export_diffusion

    opts = {"task.samples.prompts": "[]", "task.save_format": "kohya", "policy.r": 2, "policy.alpha": 4}
    trainer, summary = run(config("zimage", steps=2, **opts), tmp_path / "wd")
    saved = load_file(summary["saved"])
    assert (
        "lora_unet_layers_0_attention_to_q.lora_down.weight" in saved
        and "lora_unet_layers_0_attention_to_q.alpha" in saved
    )
    import diffusers

    fresh = diffusers.ZImagePipeline.from_pretrained(pipeline_dir("zimage"))
    fresh.load_lora_weights(str(tmp_path / "wd" / "lora_kohya"))
    fresh.fuse_lora()
    model = trainer.bare_model()
    module = model.get_submodule("layers.0.attention.to_q")
    want = module.base_layer.weight + module.get_delta_weight("default")
    torch.testing.assert_close(fresh.transformer.get_submodule("layers.0.attention.to_q").weight, want.detach())
    step = sorted((tmp_path / "wd" / "checkpoints").glob("step_*.pt"))[-1]
    assert export_diffusion.main([str(tmp_path / "wd" / "config.py"), str(step), "--out", str(tmp_path / "e")]) == 0
    exported = load_file(tmp_path / "e" / "pytorch_lora_weights.safetensors")
    assert exported.keys() == saved.keys() and all(torch.equal(exported[k], saved[k]) for k in saved)
