"""The diffusion task on 2 processes (torchrun, gloo, CPU): DDP for every family, FSDP2 for full and LoRA runs.

Each 2-process run (batch B per rank) is compared with a 1-process run of batch 2 x B on the same data:
per-sample draws (recipes/train/diffusion/draws.py) and the sampler's round-robin deal make the two
see the same samples with the same noise, so the logged losses agree step for step.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recipes.train.config import load_config
from recipes.train.engine import Trainer
from tests.test_diffusion_task import CONFIG_OF, photos, pipeline_dir, videos
from tests.test_train_cli import free_port

pytest.importorskip("skimage.data", reason="scikit-image ships the sample photos")
ROOT = Path(__file__).resolve().parents[1]
TRAINABLE = ["sd15", "sdxl", "sd3", "flux", "flux2", "flux2_dev", "chroma", "zimage", "wan"]


def options(family: str, steps: int, batch: int, **extra: object) -> list[str]:
    """``--cfg-options`` of a short run of ``family``'s shipped config on a tiny pipeline and real photos."""
    data = videos() if family == "wan" else photos()
    res = (
        ["data.train.resolution=(16,16)", "data.train.num_frames=5"]
        if family == "wan"
        else ["data.train.resolution=32"]
    )
    opts = [f"model.pretrained={pipeline_dir(family)}", f"data_root={data}", "model.dtype=float32",
            f"train.max_steps={steps}", f"train.batch_size={batch}", "train.grad_accum=1", "train.progress=False",
            "train.tensorboard=False", "train.log_every=1", "train.num_threads=1", "task.cache_dir=None",
            "task.samples.prompts=[]", "schedule.warmup_steps=0", "task.caption_dropout=0.5", *res]  # fmt: skip
    return opts + [f"{k}={v}" for k, v in extra.items()]


def config_path(family: str, kind: str = "lora") -> str:
    return str(ROOT / "configs" / "diffusion" / f"{CONFIG_OF.get(family, family)}_{kind}.py")


def one_process(family: str, work_dir: Path, opts: list[str], kind: str = "lora") -> Trainer:
    trainer = Trainer(load_config(config_path(family, kind), opts), work_dir).setup()
    trainer.train()
    return trainer


def torchrun(config: str, work_dir: Path, opts: list[str], resume: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "tools/train.py", config, "--work-dir", str(work_dir), "--cfg-options", *opts,
           *(["--resume"] if resume else [])]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def logged_losses(work_dir: Path) -> list[float]:
    with open(work_dir / "train_log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.slow  # two torchrun processes per family, each importing torch + diffusers: 20-60 s each
@pytest.mark.parametrize("family", TRAINABLE)
def test_ddp_two_processes_give_the_one_process_losses(family, tmp_path):
    """``torchrun --nproc_per_node 2`` with batch 1 per rank == one process with batch 2, loss for loss."""
    steps = 3
    ref = one_process(family, tmp_path / "one", options(family, steps, batch=2))
    done = torchrun(config_path(family), tmp_path / "two", options(family, steps, batch=1))
    assert done.returncode == 0, done.stderr[-3000:]
    want = [loss for _, loss in ref.history]
    assert len(want) == steps and len(set(want)) == steps  # the losses change from step to step
    assert logged_losses(tmp_path / "two") == pytest.approx(want, rel=1e-4, abs=1e-6)
