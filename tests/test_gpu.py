"""The engine on a CUDA device: AMP fp16 with the grad scaler, bf16, CUDA RNG restore on resume, NCCL DDP.

Marked ``gpu`` and skipped without CUDA (NCCL DDP also needs two GPUs). Same tiny timm ViT and real
digits data as tests/test_engine.py; dropout is on, so CUDA random numbers matter.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recipes.train.engine import Trainer
from tests.test_engine import tiny_cfg

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def gpu_cfg(**train):
    return tiny_cfg(**{"device": "cuda", "max_steps": 6, "ckpt_every": 3, "keep_ckpts": 5, **train})


def run_and_resume(tmp_path: Path, **train) -> tuple[Trainer, Trainer]:
    """A whole run, then a resume of a copy of it from step 3; returns both trainers."""
    full = Trainer(gpu_cfg(**train), tmp_path / "full").setup()
    full.train()
    stopped = tmp_path / "stopped"
    shutil.copytree(tmp_path / "full", stopped)
    (stopped / "checkpoints" / "last").write_text("step_0000003.pt")
    resumed = Trainer(gpu_cfg(**train), stopped, resume=True).setup()
    resumed.train()
    return full, resumed


def test_amp_fp16_with_the_grad_scaler_trains_and_resumes_exactly(tmp_path):
    full, resumed = run_and_resume(tmp_path, amp="fp16")
    assert full.scaler is not None and full.scaler.is_enabled() and full.scaler.get_scale() > 0
    ck = torch.load(tmp_path / "full" / "checkpoints" / "step_0000003.pt", weights_only=True)
    assert ck["scaler"] and ck["scaler"]["scale"] > 0  # the scaler's state is part of the checkpoint
    assert all(torch.isfinite(torch.tensor(v)) for _, v in full.history)
    assert resumed.history == full.history[3:]
    assert resumed.scaler.get_scale() == full.scaler.get_scale()


def test_bf16_autocast_trains_close_to_fp32(tmp_path):
    fp32 = Trainer(gpu_cfg(), tmp_path / "fp32").setup()
    fp32.train()
    bf16 = Trainer(gpu_cfg(amp="bf16"), tmp_path / "bf16").setup()
    assert bf16.scaler is None and bf16.amp_dtype == torch.bfloat16
    bf16.train()
    assert [v for _, v in bf16.history] == pytest.approx([v for _, v in fp32.history], rel=5e-2)
    assert [v for _, v in bf16.history] != [v for _, v in fp32.history]  # autocast did change the maths


def test_cuda_rng_is_restored_on_resume(tmp_path):
    """Dropout draws from the CUDA generator: a resume matches only if its state was saved and restored."""
    full, resumed = run_and_resume(tmp_path)
    assert next(full.model.parameters()).is_cuda
    ck = torch.load(tmp_path / "full" / "checkpoints" / "step_0000003.pt", weights_only=True)
    assert "cuda" in ck["rng"][0] and len(ck["rng"][0]["cuda"]) == torch.cuda.device_count()
    assert resumed.history == full.history[3:]
    a = torch.load(tmp_path / "full" / "checkpoints" / "step_0000006.pt", weights_only=True)
    b = torch.load(tmp_path / "stopped" / "checkpoints" / "step_0000006.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL DDP needs two GPUs")
def test_two_gpu_nccl_ddp(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    opts = ["model.depth=2", "model.embed_dim=32", "model.num_heads=2", "model.patch_size=4", "train.progress=False",
            "train.tensorboard=False", "data.train.holdout=0.9", "data.train.part=main", "schedule.warmup_epochs=0",
            "train.max_steps=4", "train.batch_size=8", "train.ckpt_every=2", "train.device=cuda"]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "tools/train.py", str(ROOT / "configs" / "default.py"), "--work-dir", str(tmp_path / "wd"),
           "--cfg-options", *opts]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "wd" / "train_log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [0, 1, 2, 3]
    ck = torch.load(tmp_path / "wd" / "checkpoints" / "step_0000004.pt", weights_only=True)
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2 and ck["steps_per_epoch"] == 7
