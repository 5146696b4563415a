"""``task.save_format="kohya"`` for SDXL: the U-Net's LoRA under the names kohya sd-scripts' SDXL network gives it.

kohya trains SDXL on its own copy of the original (SGM) U-Net, ``library/sdxl_original_unet.py``
(``input_blocks.N.M``, ``middle_block.N``, ``output_blocks.N.M``), and ``networks/lora.py`` names each LoRA module
``lora_unet_`` + that path with ``_`` for ``.`` (every Linear and Conv2d of ``Transformer2DModel``, and with conv
LoRA of ``ResnetBlock2D``, ``Downsample2D``, ``Upsample2D``). Checked on the release's U-Net (meta device) against that
layout written out from kohya's source, through diffusers' own SGM reader, and by ``load_lora_weights`` on the tiny
pipeline, whose U-Net has other block counts (the names follow the config)."""

from __future__ import annotations

import functools
import re

import pytest
import torch

from recipes.train.diffusion.kohya_keys import SGM_RESNET, kohya_state, original_path, sgm_blocks
from tests.test_diffusion_kohya import randomize_lora

#: every module kohya's SDXL network wraps, as diffusers names it: the Linear / Conv2d layers of each attention
#: (Transformer2DModel), resnet, downsampler and upsampler
ALL_KOHYA = (
    r".*(?:attentions\.\d+\.(?:proj_in|proj_out|transformer_blocks\.\d+\.(?:attn[12]\.(?:to_[qkv]|to_out\.0)"
    r"|ff\.net\.(?:0\.proj|2)))|resnets\.\d+\.(?:conv1|conv2|time_emb_proj|conv_shortcut)|(?:down|up)samplers\.0\.conv)"
)
_ATTN = [f"attn{a}.{p}" for a in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")] + ["ff.net.0.proj", "ff.net.2"]


def _kohya_sdxl_unet() -> set[str]:
    """The LoRA-wrapped module paths of kohya's ``SdxlUNet2DConditionModel`` (``library/sdxl_original_unet.py``),
    written out from its ``__init__``: each block's children in order, a Transformer2DModel with its depth, a
    ResnetBlock2D with a ``skip_connection`` Conv2d only where its in and out channels differ."""
    res, skip, down, up = "res", "res+skip", "down", "up"
    layout = {
        "input_blocks.1": [res], "input_blocks.2": [res], "input_blocks.3": [down],  # level 0: 320 channels
        "input_blocks.4": [skip, 2], "input_blocks.5": [res, 2], "input_blocks.6": [down],  # level 1: 640, depth 2
        "input_blocks.7": [skip, 10], "input_blocks.8": [res, 10],  # level 2: 1280, depth 10
        "middle_block": [res, 10, res],
        "output_blocks.0": [skip, 10], "output_blocks.1": [skip, 10], "output_blocks.2": [skip, 10, up],
        "output_blocks.3": [skip, 2], "output_blocks.4": [skip, 2], "output_blocks.5": [skip, 2, up],
        "output_blocks.6": [skip], "output_blocks.7": [skip], "output_blocks.8": [skip],
    }  # fmt: skip
    names = set()
    for block, children in layout.items():
        for i, child in enumerate(children):
            at = f"{block}.{i}"
            if isinstance(child, int):  # Transformer2DModel(num_transformer_layers=child, use_linear_projection=True)
                names |= {f"{at}.proj_in", f"{at}.proj_out"}
                names |= {f"{at}.transformer_blocks.{t}.{p}" for t in range(child) for p in _ATTN}
            elif child == down:
                names.add(f"{at}.op")
            elif child == up:
                names.add(f"{at}.conv")
            else:
                names |= {f"{at}.in_layers.2", f"{at}.emb_layers.1", f"{at}.out_layers.3"}
                names |= {f"{at}.skip_connection"} if child == skip else set()
    return names


@functools.cache
def _release_unet():
    from recipes.train.models.diffusers import build_diffusers_model

    return build_diffusers_model("sdxl", device="meta")  # the release's config, no weights


def test_release_unet_modules_get_kohyas_sdxl_names_and_diffusers_maps_them_back():
    """Every module kohya's SDXL network wraps, on the release's U-Net: a distinct name, the set is exactly kohya's
    (788: 700 in the 70 transformer blocks, 22 proj_in / proj_out, 62 resnet and 4 sampler convs), and
    diffusers' SGM reader (``_maybe_map_sgm_blocks_to_diffusers``, ``_convert_non_diffusers_lora_to_diffusers``, then
    ``convert_unet_state_dict_to_peft``: what SDXL's ``load_lora_weights`` runs on a kohya file) puts each back on the
    module it came from."""
    from diffusers.loaders.lora_conversion_utils import (
        _convert_non_diffusers_lora_to_diffusers,
        _maybe_map_sgm_blocks_to_diffusers,
    )
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

    from recipes.train.diffusion.families import FAMILIES

    unet = _release_unet()
    modules = [n for n, _ in unet.named_modules() if re.fullmatch(ALL_KOHYA, n)]
    kinds = ("Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D")  # kohya's target classes
    linear = (torch.nn.Linear, torch.nn.Conv2d)
    assert set(modules) == {f"{n}.{c}" for n, m in unet.named_modules() if type(m).__name__ in kinds
                            for c, x in m.named_modules() if c and isinstance(x, linear)}  # fmt: skip
    names = [original_path("sdxl", n, unet)[0] for n in modules]
    kohya = _kohya_sdxl_unet()
    assert len(set(names)) == len(names) == len(kohya)
    assert set(names) == kohya
    default = {original_path("sdxl", n, unet)[0] for n, _ in unet.named_modules()
               if re.fullmatch(FAMILIES["sdxl"].lora_targets, n)}  # fmt: skip
    assert len(default) == 700 and default < kohya  # the default targets: attn1, attn2, ff of the 70 blocks

    one, state = torch.ones(1, 1), {}
    for name in names:
        stem = "lora_unet_" + name.replace(".", "_")
        state |= {f"{stem}.lora_down.weight": one, f"{stem}.lora_up.weight": one, f"{stem}.alpha": torch.tensor(4.0)}
    converted, alphas = _convert_non_diffusers_lora_to_diffusers(_maybe_map_sgm_blocks_to_diffusers(state, unet.config))
    assert len(alphas) == len(modules)
    part = {k.removeprefix("unet."): v for k, v in converted.items()}
    back = {k.removesuffix(".lora_A.weight") for k in convert_unet_state_dict_to_peft(part)
            if k.endswith(".lora_A.weight")}  # fmt: skip
    assert back == set(modules)


def test_kohyas_block_index_of_each_exported_name_is_the_layer_id_it_trained_at():
    """kohya reads a module's ``--block_lr`` slot (``down_lr_weight`` ...) from its name: ``networks/lora.py``
    ``get_block_index(lora_name, is_sdxl=True)`` = 1 + N for ``input_blocks_N``, 10 + N for ``middle_block_N``,
    13 + N for ``output_blocks_N``. On every exported name it is the U-Net adapter's layer id of the module (the
    kohya block the LR grid trained it in), so a file continued in kohya keeps each module's block."""
    from recipes.param_groups import resolve_adapter

    unet = _release_unet()
    layer_ids = resolve_adapter(unet).describe(unet).params
    for module in (n for n, _ in unet.named_modules() if re.fullmatch(ALL_KOHYA, n)):
        name = original_path("sdxl", module, unet)[0]
        where, n = re.match(r"(input_blocks|middle_block|output_blocks)\.(\d+)\.", name).groups()
        kohya_index = {"input_blocks": 1, "middle_block": 10, "output_blocks": 13}[where] + int(n)
        assert layer_ids[f"{module}.weight"].layer_id == kohya_index, (module, name)


def test_sgm_blocks_follow_the_config_not_the_release():
    """The tiny test U-Net (one layer per block, attention only in the second level): its own SGM numbers, as
    ComfyUI's ``unet_to_diffusers`` walks the same config; the release's 2-layer levels move every index."""
    from recipes.train.diffusion.testing import build_test_pipeline

    tiny = build_test_pipeline("sdxl").unet.config
    assert sgm_blocks(tiny) == {
        "down_blocks.0.resnets.0": "input_blocks.1.0", "down_blocks.0.downsamplers.0.conv": "input_blocks.2.0.op",
        "down_blocks.1.resnets.0": "input_blocks.3.0", "down_blocks.1.attentions.0": "input_blocks.3.1",
        "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
        "mid_block.resnets.1": "middle_block.2",
        "up_blocks.0.resnets.0": "output_blocks.0.0", "up_blocks.0.attentions.0": "output_blocks.0.1",
        "up_blocks.0.resnets.1": "output_blocks.1.0", "up_blocks.0.attentions.1": "output_blocks.1.1",
        "up_blocks.0.upsamplers.0.conv": "output_blocks.1.2.conv",
        "up_blocks.1.resnets.0": "output_blocks.2.0", "up_blocks.1.resnets.1": "output_blocks.3.0",
    }  # fmt: skip
    module = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    assert original_path("sdxl", module, tiny)[0] == "input_blocks.3.1.transformer_blocks.0.attn1.to_q"
    assert original_path("sdxl", module, _release_unet())[0] == "input_blocks.4.1.transformer_blocks.0.attn1.to_q"
    assert original_path("sdxl", "up_blocks.1.resnets.2.time_emb_proj", _release_unet())[0] == (
        "output_blocks.5.0.emb_layers.1")  # fmt: skip
    assert set(SGM_RESNET.values()) == {"in_layers.2", "emb_layers.1", "out_layers.3", "skip_connection"}


def test_modules_outside_kohyas_sdxl_network_are_errors_naming_them():
    from peft import LoraConfig

    cfg = _release_unet().config
    for module in ("conv_in", "time_embedding.linear_1", "add_embedding.linear_2", "conv_out"):
        with pytest.raises(ValueError, match=rf"{re.escape(repr(module))} is not in kohya's SDXL network"):
            original_path("sdxl", module, cfg)
    with pytest.raises(ValueError, match=r"'down_blocks.1.resnets.0.norm1' has no SGM name"):
        original_path("sdxl", "down_blocks.1.resnets.0.norm1", cfg)
    with pytest.raises(ValueError, match="follow its config: pass the U-Net"):
        original_path("sdxl", "mid_block.attentions.0.proj_in")
    odd = dict(cfg, down_block_types=["DownBlock2D", "AttnDownBlock2D", "CrossAttnDownBlock2D"])
    with pytest.raises(ValueError, match="not the SDXL layout kohya's SGM names are known for"):
        sgm_blocks(odd)
    a, b = torch.zeros(2, 4), torch.zeros(4, 2)
    state = {"conv_in.lora_A.weight": a, "conv_in.lora_B.weight": b}
    with pytest.raises(ValueError, match="'conv_in' is not in kohya's SDXL network"):
        kohya_state(state, "sdxl", LoraConfig(r=2, lora_alpha=2), cfg)


def test_sdxl_kohya_layout_is_checked_when_the_model_is_built():
    """The release's U-Net on the meta device: a target outside kohya's network stops the run before any step."""
    from recipes.train.build import prepare_run
    from recipes.train.config import load_config
    from tests.test_diffusion_task import ROOT

    opts = ["model.device=meta", "model.pretrained=None", "task.save_format=kohya",
            r"policy.targets='.*(?:conv_in|attn1\.to_q)'"]  # fmt: skip
    cfg = load_config(ROOT / "configs" / "diffusion" / "sdxl_lora.py", opts)
    with pytest.raises(ValueError, match="'conv_in' is not in kohya's SDXL network"):
        prepare_run(cfg, data=False)


def _base_weights(unet) -> dict[str, torch.Tensor]:
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in unet.named_parameters() if "lora_" not in n}


def test_kohya_file_with_every_kohya_module_loads_as_the_diffusers_file(tmp_path):
    """The tiny pipeline with LoRA (r 2, alpha 8) on every module kohya's SDXL network wraps, convs included: the
    kohya file holds SGM names only, each module's ``.alpha`` / rank is 4, and ``load_lora_weights`` of it fuses to
    the U-Net of the diffusers file, with every LoRA module's weight changed."""
    from safetensors import safe_open

    from recipes.train.diffusion.adapters import add_adapter
    from recipes.train.diffusion.families import FAMILIES
    from recipes.train.diffusion.lora_io import save_lora
    from recipes.train.diffusion.testing import build_test_pipeline

    pipe = build_test_pipeline("sdxl")
    unet = add_adapter(pipe.unet, {"r": 2, "alpha": 8.0, "targets": ALL_KOHYA}, FAMILIES["sdxl"].lora_targets)
    randomize_lora(unet)
    key = FAMILIES["sdxl"].lora_save_key
    path = save_lora(type(pipe), unet, tmp_path / "kohya", key, "kohya", family="sdxl")
    save_lora(type(pipe), unet, tmp_path / "diffusers", key, "diffusers", family="sdxl")
    lora_modules = [n for n, m in unet.named_modules() if hasattr(m, "lora_A")]
    with safe_open(str(path), "pt") as f:
        stems = {k.rpartition(".")[0].removesuffix(".lora_down").removesuffix(".lora_up") for k in f.keys()}
        ratios = {s: float(f.get_tensor(f"{s}.alpha")) / f.get_tensor(f"{s}.lora_down.weight").shape[0] for s in stems}
    assert len(stems) == len(lora_modules) and all(r == pytest.approx(4.0) for r in ratios.values())
    assert {re.match(r"lora_unet_([a-z]+_block)", s).group(1) for s in stems} == {
        "input_block", "middle_block", "output_block"}  # fmt: skip
    assert "lora_unet_output_blocks_1_2_conv" in stems and "lora_unet_input_blocks_2_0_op" in stems

    fused = {}
    for fmt in ("kohya", "diffusers"):
        loaded = build_test_pipeline("sdxl")
        loaded.load_lora_weights(str(tmp_path / fmt))
        loaded.fuse_lora(components=["unet"])
        fused[fmt] = _base_weights(loaded.unet)
    assert fused["kohya"].keys() == fused["diffusers"].keys()
    for n, w in fused["diffusers"].items():
        torch.testing.assert_close(fused["kohya"][n], w, atol=1e-5, rtol=1e-5, msg=n)
    base = _base_weights(build_test_pipeline("sdxl").unet)
    changed = [n for n, w in fused["kohya"].items() if not torch.equal(w, base[n])]
    assert sorted(changed) == sorted(f"{n}.weight" for n in lora_modules)


@pytest.mark.slow  # trains the tiny SDXL pipeline two steps and exports a checkpoint: ~30 s on a shared CPU
def test_an_sdxl_run_saves_sgm_names_and_the_tool_exports_the_same_file(tmp_path):
    """A run with ``save_format='kohya'`` (r 2, alpha 4) ends with SGM names holding the trained tensors (kohya's
    scale alpha / rank = 2), which SDXL's ``load_lora_weights`` puts back on the trained U-Net; the export tool
    writes the same file from the last step checkpoint."""
    import diffusers
    from safetensors.torch import load_file

    from tests.test_diffusion_task import config, pipeline_dir, run
    from tools import export_diffusion

    opts = {"task.samples.prompts": "[]", "task.save_format": "kohya", "policy.r": 2, "policy.alpha": 4}
    trainer, summary = run(config("sdxl", steps=2, **opts), tmp_path / "wd")
    saved, model = load_file(summary["saved"]), trainer.bare_model()
    stem, module = "lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k", "down_blocks.1.attentions.0"
    lora = model.get_submodule(f"{module}.transformer_blocks.0.attn2.to_k")
    assert torch.equal(saved[f"{stem}.lora_up.weight"], lora.lora_B["default"].weight.detach())
    assert lora.lora_B["default"].weight.abs().max() > 0 and float(saved[f"{stem}.alpha"]) == pytest.approx(4.0)
    assert not any("down_blocks" in k or "up_blocks" in k or "mid_block" in k for k in saved)

    fresh = diffusers.StableDiffusionXLPipeline.from_pretrained(pipeline_dir("sdxl"))
    fresh.load_lora_weights(str(tmp_path / "wd" / "lora_kohya"))
    fresh.fuse_lora(components=["unet"])
    want = lora.base_layer.weight + lora.get_delta_weight("default")
    got = fresh.unet.get_submodule(f"{module}.transformer_blocks.0.attn2.to_k").weight
    torch.testing.assert_close(got, want.detach(), atol=1e-6, rtol=1e-6)
    step = sorted((tmp_path / "wd" / "checkpoints").glob("step_*.pt"))[-1]
    assert export_diffusion.main([str(tmp_path / "wd" / "config.py"), str(step), "--out", str(tmp_path / "e")]) == 0
    exported = load_file(tmp_path / "e" / "pytorch_lora_weights.safetensors")
    assert exported.keys() == saved.keys() and all(torch.equal(exported[k], saved[k]) for k in saved)
