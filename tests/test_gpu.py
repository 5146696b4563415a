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


def test_flash_only_attention_trains_under_bf16(tmp_path):
    """train.sdpa_backends=['flash'] on CUDA: the timm ViT's attention runs on the flash kernel alone (it needs bf16 /
    fp16, so autocast makes it possible); the same run's losses match torch's own choice of kernel closely."""
    auto = Trainer(gpu_cfg(amp="bf16"), tmp_path / "auto").setup()
    auto.train()
    flash = Trainer(gpu_cfg(amp="bf16", sdpa_backends=["flash"]), tmp_path / "flash").setup()
    flash.train()
    assert [v for _, v in flash.history] == pytest.approx([v for _, v in auto.history], rel=5e-2)
    with pytest.raises(RuntimeError, match="No viable backend|No available kernel"):  # flash cannot run float32
        Trainer(gpu_cfg(sdpa_backends=["flash"]), tmp_path / "fp32").setup().train()


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


# --- diffusion on the GPU: low-precision bases, group offloading, the cache filled on the device ---------------
def _flux_cuda(tmp_path: Path, name: str, **options):
    from tests.test_diffusion_task import config, run

    return run(config("flux", steps=2, **{"train.device": "cuda", **options}), tmp_path / name)


@pytest.mark.parametrize("precision", ["fp8", "int8", "nf4"])
def test_diffusion_lora_on_a_low_precision_base_trains_on_cuda(tmp_path, precision):
    pytest.importorskip("bitsandbytes" if precision == "nf4" else "torchao")
    from tests.test_diffusion_precision import _lora_output
    from tests.test_diffusion_task import pipeline_dir

    ref, _ = _flux_cuda(tmp_path, "ref")
    low, summary = _flux_cuda(tmp_path, precision, **{"model.base_precision": precision})
    losses, want = [v for _, v in low.history], [v for _, v in ref.history]
    assert losses != want and losses == pytest.approx(want, rel=0.05)
    base, with_lora = _lora_output(pipeline_dir("flux"), Path(summary["saved"]).parent)
    assert not torch.allclose(base, with_lora)


def test_diffusion_group_offload_trains_like_the_resident_denoiser(tmp_path):
    ref, _ = _flux_cuda(tmp_path, "ref")
    off, _ = _flux_cuda(tmp_path, "offload", **{"model.offload": True})
    block = off.task.pipe.transformer.transformer_blocks[0]
    assert next(block.parameters()).device.type == "cpu"  # a block lives on the CPU between its uses
    assert [v for _, v in off.history] == pytest.approx([v for _, v in ref.history], rel=1e-4)


def test_diffusion_cache_fills_on_the_gpu_and_moves_the_vae_off(tmp_path):
    from recipes.train.tasks.base import build_task
    from tests.test_diffusion_task import config

    task = build_task(config("flux", **{"train.device": "cuda", "task.cache_dir": str(tmp_path / "cache")}))
    seen, latent_params = [], task.latent_params
    task.latent_params = lambda px: seen.append(px.device.type) or latent_params(px)
    task.build_datasets()
    assert seen and set(seen) == {"cuda"} and task.pipe.vae.device.type == "cpu" and task.pipe.text_encoder is None
