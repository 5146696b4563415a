"""LoKr and LoHa (``policy.kind``): peft's LyCORIS adapters with the LoRA's per-block / per-component LRs, trained
on a test pipeline, saved in a form a user loads back (diffusers' loader for LoKr on Z-Image / Flux.2, a peft
adapter folder otherwise), and reloaded to the trained outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from recipes.names import canonical_name
from recipes.train.build import prepare_run
from recipes.train.config import load_config
from recipes.train.diffusion.adapters import load_adapter_folder
from tests.test_diffusion_task import ROOT, config, pipeline_dir, run


def _lr_by_module(plan) -> dict[str, tuple[float, str]]:
    """``{wrapped module's weight name: (lr, group name without the role)}`` over every trainable tensor."""
    out: dict[str, tuple[float, str]] = {}
    for g in plan.groups:
        for n in g["param_names"]:
            canon, role = canonical_name(n)
            assert role is not None, n  # only adapter tensors train
            out.setdefault(canon, (g["lr"], g["name"].replace(f".{role}.", ".")))
            assert out[canon][0] == g["lr"], n  # every tensor of one module: one LR
    return out


@pytest.mark.slow  # three full-size denoisers on the meta device per family: ~30 s on a shared 2-core CPU
@pytest.mark.parametrize("family", ["sd15", "flux"])
def test_lokr_and_loha_get_the_loras_lr_grid(family):
    """The same module gets the same LR and the same (layer, component) group with LoKr, LoHa and LoRA
    (tools/show_lr.py's path: the full-size denoiser on the meta device)."""
    base = ["model.device=meta", "model.pretrained=None"]
    path = ROOT / "configs" / "diffusion" / f"{family}_lora.py"
    grids = {k: _lr_by_module(prepare_run(load_config(path, [*base, f"policy.kind={k}"]), data=False))
             for k in ("lora", "lokr", "loha")}  # fmt: skip
    assert len(grids["lora"]) > 20 and len({lr for lr, _ in grids["lora"].values()}) > 3  # a real grid
    assert grids["lokr"] == grids["lora"] and grids["loha"] == grids["lora"]


def _perturbed(trainer) -> torch.nn.Module:
    """The trained denoiser with its adapter moved well away from the init (LoKr's w2 / LoHa's w2_a start at 0)."""
    model = trainer.bare_model().eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _assert_same_adapter_outputs(trained, fresh, base) -> None:
    """Every adapted layer of ``fresh`` gives ``trained``'s output on a random input, and ``base``'s differs."""
    modules = {canonical_name(n)[0].removesuffix(".weight") for n, p in trained.named_parameters() if p.requires_grad}
    assert modules
    moved = 0
    for name in sorted(modules):
        a, b, plain = (m.get_submodule(name) for m in (trained, fresh, base))
        weight = plain.weight
        x = torch.randn(2, weight.shape[1]) if weight.dim() == 2 else torch.randn(1, weight.shape[1], 6, 6)
        with torch.no_grad():
            want, got, before = a(x), b(x), plain(x)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        moved += int((want - before).abs().max() > 1e-4)
    assert moved == len(modules)


@pytest.mark.slow  # trains the Z-Image test pipeline one step and reloads it: ~40 s on a shared 2-core CPU
def test_lokr_on_zimage_reloads_with_load_lora_weights(tmp_path):
    import diffusers

    trainer, summary = run(config("zimage", steps=1, **{"task.samples.prompts": "[]", "policy.kind": "lokr",
                                                         "policy.r": 4, "policy.alpha": 8}), tmp_path)  # fmt: skip
    assert Path(summary["saved"]).name == "pytorch_lora_weights.safetensors"
    assert any("lokr_w1" in n for n, _ in trainer.bare_model().named_parameters())
    model = _perturbed(trainer)
    shutil.rmtree(tmp_path / "lora")
    trainer.task.final_report(model, torch.device("cpu"), None)
    fresh = diffusers.DiffusionPipeline.from_pretrained(pipeline_dir("zimage"))
    fresh.load_lora_weights(str(tmp_path / "lora"))
    base = diffusers.DiffusionPipeline.from_pretrained(pipeline_dir("zimage")).transformer
    _assert_same_adapter_outputs(model, fresh.transformer, base)


@pytest.mark.slow  # trains the SD 1.5 test pipeline one step per kind and reloads it: ~40 s on a shared 2-core CPU
@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_loha_and_lokr_on_sd15_reload_from_a_peft_folder(tmp_path, kind):
    """SD 1.5's diffusers loader reads neither: a peft adapter folder that load_adapter_folder puts back; the
    kohya format has no LyCORIS layout (an error naming the fix)."""
    import diffusers

    opts = {"task.samples.prompts": "[]", "policy.kind": kind, "policy.r": 2, "policy.alpha": 4}
    trainer, summary = run(config("sd15", steps=1, **opts), tmp_path)
    saved = Path(summary["saved"])
    assert saved.name == "adapter_model.safetensors" and (saved.parent / "adapter_config.json").is_file()
    model = _perturbed(trainer)
    shutil.rmtree(tmp_path / "lora")
    trainer.task.final_report(model, torch.device("cpu"), None)
    unet = diffusers.UNet2DConditionModel.from_pretrained(pipeline_dir("sd15"), subfolder="unet")
    fresh = load_adapter_folder(unet, tmp_path / "lora")
    base = diffusers.UNet2DConditionModel.from_pretrained(pipeline_dir("sd15"), subfolder="unet")
    _assert_same_adapter_outputs(model, fresh, base)
    x, t, ctx = torch.randn(1, 4, 16, 16), torch.tensor([500]), torch.randn(1, 77, 16)
    with torch.no_grad():  # the whole U-Net too, not only its adapted layers
        torch.testing.assert_close(fresh(x, t, ctx).sample, model(x, t, ctx).sample, atol=1e-5, rtol=1e-5)
    trainer.task.save_format = "kohya"
    with pytest.raises(ValueError, match=r"task.save_format='kohya' writes LoRA tensors only; a Lo.. adapter"):
        trainer.task.final_report(model, torch.device("cpu"), None)
