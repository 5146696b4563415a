"""The diffusers-format LoRA carries its strength in the weights: loaders that read the adapter metadata (diffusers)
and loaders that do not (ComfyUI: no ``.alpha`` key -> scale 1) apply the trained alpha / r."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from recipes.train.diffusion.lora_io import bake_scale

STATE = {"a.lora_A.weight": torch.ones(2, 3), "a.lora_B.weight": torch.full((3, 2), 0.5),
         "a.lora_magnitude_vector": torch.ones(3)}  # fmt: skip


@pytest.mark.parametrize(
    ("meta", "scale"),
    [({"r": 2, "lora_alpha": 8}, 4.0), ({"r": 4, "lora_alpha": 8, "use_rslora": True}, 4.0),
     ({"r": 2, "lora_alpha": 2}, 1.0)],
)  # fmt: skip
def test_bake_scale_multiplies_lora_b_and_writes_alpha_equal_r(meta, scale):
    state, out = bake_scale(STATE, meta)
    assert torch.equal(state["a.lora_B.weight"], STATE["a.lora_B.weight"] * scale)
    assert torch.equal(state["a.lora_A.weight"], STATE["a.lora_A.weight"])
    assert torch.equal(state["a.lora_magnitude_vector"], STATE["a.lora_magnitude_vector"])  # DoRA: unchanged
    assert out["lora_alpha"] == meta["r"] and not out.get("use_rslora")


def test_bake_scale_leaves_per_module_patterns_alone():
    meta = {"r": 2, "lora_alpha": 8, "rank_pattern": {"a": 4}}
    assert bake_scale(STATE, meta) == (STATE, meta)


@pytest.mark.slow  # trains the SD 1.5 test pipeline one step and reloads it: ~20 s on a shared 2-core CPU
@pytest.mark.parametrize("dora", [False, True])
def test_alpha_not_r_reloads_at_the_trained_strength(tmp_path, dora):
    from safetensors import safe_open

    from tests.test_diffusion_task import assert_sd15_lora_reproduces, config, run

    opts = {"task.samples.prompts": "[]", "policy.r": 4, "policy.alpha": 8, "policy.dora": dora}
    trainer, _ = run(config("sd15", steps=1, **opts), tmp_path)
    model, task = trainer.bare_model().eval(), trainer.task
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(torch.randn_like(p) * 0.05)
    shutil.rmtree(tmp_path / "lora")
    task.final_report(model, torch.device("cpu"), None)
    assert_sd15_lora_reproduces(model, tmp_path / "lora", atol=1e-5, min_change=1e-4)  # diffusers' loader
    with safe_open(str(tmp_path / "lora" / "pytorch_lora_weights.safetensors"), "pt") as f:
        keys, meta = list(f.keys()), json.loads(f.metadata()["lora_adapter_metadata"])
        name = next(k for k in keys if k.endswith("attn1.to_q.lora_B.weight"))
        saved_b, saved_a = f.get_tensor(name), f.get_tensor(name.replace("lora_B", "lora_A"))
    alphas = {v for k, v in meta.items() if k.endswith("lora_alpha")}  # diffusers prefixes the component name
    assert not any(k.endswith(".alpha") for k in keys) and alphas == {4}, meta
    module = model.get_submodule(name.removeprefix("unet.").removesuffix(".lora_B.weight"))
    trained = module.lora_B["default"].weight @ module.lora_A["default"].weight * module.scaling["default"]
    torch.testing.assert_close(saved_b @ saved_a, trained.detach())  # what a scale-1 reader (ComfyUI) adds
