"""Every shipped diffusion config trains: one step of tools/train.py's engine on its family's test pipeline.

Each config under ``configs/diffusion/`` (the per-component x depth recipe examples and the ``<family>_lora.py`` ones) builds on
its family's ``_base_`` file; here its own LoRA targets, rank, full fine-tune and LR grid are kept, and only the
sizes (test pipeline, 32 px photos), the run length and the sample settings are overridden.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recipes.train.config import load_config
from recipes.train.diffusion.families import family_of_preset
from tests.test_diffusion_task import ROOT, photos, pipeline_dir, run, videos

CONFIGS = sorted((ROOT / "configs" / "diffusion").glob("*.py"))
#: recipe-example configs of families with an LR grid (tools/show_lr.py) but no training path yet: none left
GRID_ONLY: set[str] = set()
TRAINABLE = [p for p in CONFIGS if p.stem not in GRID_ONLY]
VIDEO_FAMILIES = {"wan", "wan22", "ltx_video", "hunyuan_video", "ltx2"}  # trained on 5-frame clips


def tiny_family(cfg) -> str:
    """The test pipeline a config trains on: its preset's family (Flux.2 [dev] has its own test pipeline)."""
    preset = cfg.model["preset"]
    return "flux2_dev" if preset == "flux2-dev" else family_of_preset(preset).name


def one_step_options(family: str) -> list[str]:
    video = family in VIDEO_FAMILIES
    side = 16 if family.startswith("wan") else 32  # LTX-Video's and LTX-2's pipelines ask for multiples of 32 px
    data = (
        [f"data.train.resolution=({side},{side})", "data.train.num_frames=5"] if video else ["data.train.resolution=32"]
    )
    return [f"model.pretrained={pipeline_dir(family)}", f"data_root={videos() if video else photos()}",
            "model.dtype=float32", "train.max_steps=1", "train.batch_size=1", "train.grad_accum=1",
            "train.progress=False", "train.tensorboard=False", "train.fsdp=False", "task.cache_dir=None", "task.samples.steps=2",
            "task.samples.seeds=[0]", "schedule.warmup_steps=0", *data]  # fmt: skip


def test_each_config_is_trainable_or_named_grid_only():
    """A config with no training path says so here; every other one has a task and data from its family base."""
    for path in CONFIGS:
        cfg = load_config(path)
        if path.stem in GRID_ONLY:
            assert not cfg.get("task"), f"{path.name} trains now: take it out of GRID_ONLY"
            continue
        assert cfg.task["type"] == "diffusion" and cfg.data["train"], path.name
        assert '_base_ = "./_base_/' in path.read_text(), f"{path.name}: build on the family's _base_ file"
        assert "strategy" in cfg and cfg.policy["type"] in ("lora_only", "full"), path.name
        if cfg.strategy.get("depth_strategy") != "inverted_u":  # _delete_: no key of the base's LRs leaks in
            assert "peak_position" not in cfg.strategy, path.name


@pytest.mark.slow  # loads a test pipeline and trains one step per config: 5-20 s each on a shared 2-core CPU
@pytest.mark.parametrize("path", TRAINABLE, ids=[p.stem for p in TRAINABLE])
def test_shipped_config_trains_one_step_on_its_family_tiny_pipeline(path, tmp_path):
    cfg = load_config(path)
    family = tiny_family(cfg)
    cfg = load_config(path, one_step_options(family))
    trainer, summary = run(cfg, tmp_path / "wd")
    assert summary["steps"] == 1 and torch.isfinite(torch.tensor(summary["final_loss"]))
    assert trainer.task.family.name == family.replace("_dev", "")
    model = trainer.bare_model()
    lora = cfg.policy if cfg.policy["type"] == "lora_only" else None
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    if lora is None:  # a full fine-tune: every denoiser weight trains and is saved with save_pretrained
        assert len(trained) == len(list(model.parameters()))
        assert Path(summary["saved"]).is_dir()
    else:  # the config's rank on its own targets, saved for load_lora_weights
        a = [p for n, p in model.named_parameters() if "lora_A" in n]
        assert a and all(p.shape[0] == lora["r"] for p in a)
        assert all("lora_" in n for n in trained) and Path(summary["saved"]).is_file()
        targets = lora.get("targets") or []
        for target in [] if isinstance(targets, str) else targets:  # a string is one regex: matched by peft
            assert any(f".{target}.lora_A" in n for n in trained), f"{path.name}: no LoRA on {target!r}"
