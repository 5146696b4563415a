"""Exports: the diffusers-format LoRA carries its strength in the weights (loaders that read the adapter metadata,
diffusers, and loaders that do not, ComfyUI: no ``.alpha`` key -> scale 1, apply the trained alpha / r); a run with
``train.ema`` exports its EMA weights; tools/export_diffusion.py's bad input is one error line (exit 2)."""

from __future__ import annotations

import json

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

    from tests.test_diffusion_task import assert_sd15_lora_reproduces, config, resave_with_visible_lora, run

    opts = {"task.samples.prompts": "[]", "policy.r": 4, "policy.alpha": 8, "policy.dora": dora}
    trainer, _ = run(config("sd15", steps=1, **opts), tmp_path)
    model, _ = resave_with_visible_lora(trainer, tmp_path)
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


def _export_main(*args):
    from tools import export_diffusion

    return export_diffusion.main([str(a) for a in args])


def test_export_out_that_links_nowhere_or_is_a_file_is_one_error_naming_it(tmp_path, capsys):
    from tests.test_diffusion_task import ROOT

    cfg = ROOT / "configs" / "diffusion" / "sd15_lora.py"
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone")
    assert _export_main(cfg, tmp_path / "best.pt", "--out", link) == 2
    err = capsys.readouterr().err
    assert f"error: --out {link} is a symbolic link to" in err and "which does not exist" in err
    assert err.count("\n") == 1 and not (tmp_path / "gone").exists()  # one line; nothing made through the link
    (tmp_path / "file").write_text("mine")
    assert _export_main(cfg, tmp_path / "best.pt", "--out", tmp_path / "file") == 2
    assert f"error: --out {tmp_path / 'file'} is a file" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "mine"


def test_export_weights_follow_what_the_checkpoint_holds():
    from recipes.train.errors import BadInput
    from tools.export_diffusion import chosen_weights

    plain, ema = {"a": torch.zeros(1)}, {"a": torch.ones(1)}
    step = {"model": plain, "ema": ema, "path": "step_2.pt"}
    assert chosen_weights(step, None) == ({**step, "model": ema}, "ema")  # as the end of the run exports
    assert chosen_weights(step, "model") == (step, "model")
    best = {"model": ema, "weights": "ema", "path": "best.pt"}
    assert chosen_weights(best, None) == (best, "ema")
    with pytest.raises(BadInput, match=r"best.pt: --weights model given, but it holds only the ema weights \(they"):
        chosen_weights(best, "model")
    with pytest.raises(BadInput, match=r"holds only the model weights \(its run had no train.ema\)"):
        chosen_weights({"model": plain, "ema": None, "path": "s.pt"}, "ema")


@pytest.mark.slow  # trains the SD 1.5 test pipeline two steps with EMA, then exports four times: ~40 s on 2 CPUs
def test_ema_run_exports_the_ema_weights_and_export_errors_name_the_tensor(tmp_path, capsys):
    """train.ema: the end-of-run LoRA and tools/export_diffusion.py on a step checkpoint are the EMA weights (the
    plain ones with --weights model); a changed policy.r or a mis-shaped tensor is one error line (exit 2)."""
    from safetensors.torch import load_file

    from recipes.train.diffusion.lora_io import lora_state_dict
    from tests.test_diffusion_task import config, run

    opts = {"task.samples.prompts": "[]", "policy.r": 1, "policy.alpha": 1, "train.ema": 0.5}
    trainer, summary = run(config("sd15", steps=2, **opts), tmp_path / "wd")
    ema, plain = lora_state_dict(trainer.ema.module), lora_state_dict(trainer.bare_model())
    assert any(not torch.equal(ema[k], plain[k]) for k in ema)  # two steps at decay 0.5: they differ
    saved = load_file(summary["saved"])
    assert set(saved) == {f"unet.{k}" for k in ema}
    assert all(torch.equal(saved[f"unet.{k}"], v) for k, v in ema.items())
    assert json.loads((tmp_path / "wd" / "lora" / "training.json").read_text())["weights"] == "ema"
    cfg, step = tmp_path / "wd" / "config.py", sorted((tmp_path / "wd" / "checkpoints").glob("step_*.pt"))[-1]
    assert _export_main(cfg, step, "--out", tmp_path / "e") == 0
    assert "(ema weights)" in capsys.readouterr().out
    assert load_file(tmp_path / "e" / "pytorch_lora_weights.safetensors").keys() == saved.keys()
    exported = load_file(tmp_path / "e" / "pytorch_lora_weights.safetensors")
    assert all(torch.equal(exported[k], saved[k]) for k in saved)
    assert _export_main(cfg, step, "--out", tmp_path / "m", "--weights", "model") == 0
    exported = load_file(tmp_path / "m" / "pytorch_lora_weights.safetensors")
    assert all(torch.equal(exported[f"unet.{k}"], v) for k, v in plain.items())
    capsys.readouterr()
    assert _export_main(cfg, step, "--out", tmp_path / "r", "--cfg-options", "policy.r=2") == 2
    err = capsys.readouterr().err
    assert "has rank 1, the config says policy.r=2" in err and "--cfg-options policy.r=1" in err
    assert err.count("\n") == 1 and not (tmp_path / "r").exists()
    ckpt = torch.load(step, weights_only=True)
    name = next(k for k in ckpt["ema"] if ".lora_B." in k)
    ckpt["ema"][name] = torch.zeros(ckpt["ema"][name].shape[0] + 1, 1)
    torch.save(ckpt, tmp_path / "bad.pt")
    assert _export_main(cfg, tmp_path / "bad.pt", "--out", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert f"error: checkpoint {str(tmp_path / 'bad.pt')!r}: the tensor {name!r} has shape" in err
    assert sum("error:" in line for line in err.splitlines()) == 1 and not (tmp_path / "b").exists()
