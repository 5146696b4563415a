"""tools/train.py end to end: a 2-process CPU DDP run (gloo) and clear errors on bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tools.train import main

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "configs" / "default.py")
TINY = ["model.depth=2", "model.embed_dim=32", "model.num_heads=2", "model.patch_size=4", "train.progress=False",
        "train.tensorboard=False", "train.num_threads=1", "data.train.holdout=0.9", "data.train.part=main",
        "schedule.warmup_epochs=0"]  # fmt: skip


def run(tmp_path: Path, *options: str, resume: str | None = None, config: str = DEFAULT) -> int:
    argv = [config, "--work-dir", str(tmp_path / "wd"), "--cfg-options", *TINY, *options]
    return main(argv + (["--resume", resume] if resume else []))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two processes that each import torch, timm and the data: ~10 s idle, ~35 s on a busy machine
def test_two_process_ddp_on_cpu_with_the_encoder_frozen_for_two_steps(tmp_path):
    """torchrun, 2 ranks (gloo): DDP trains; ``train.freeze`` works under DDP (the groups exist from step 0)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}", "tools/train.py",
           DEFAULT, "--work-dir", str(tmp_path / "wd"), "--cfg-options", *TINY, "train.max_steps=4",
           "train.batch_size=8", "train.ckpt_every=2", "train.keep_ckpts=5", r"train.freeze.params=^(blocks\.0\.|patch_embed)",
           "train.freeze.steps=2"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "wd" / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]  # rank 0 writes; the loss is the mean over ranks
    at2, at4 = (torch.load(tmp_path / "wd" / "checkpoints" / f"step_{s:07d}.pt", weights_only=True) for s in (2, 4))
    assert at4["world_size"] == 2 and len(at4["rng"]) == 2
    # 126 digits / 2 ranks / batch 8 = 7 batches per rank and epoch
    assert at4["steps_per_epoch"] == 7 and "[summary]" in done.stdout
    frozen = [n for n in at2["model"] if n.startswith(("blocks.0.", "patch_embed"))]
    assert frozen and all(not torch.equal(at2["model"][n], at4["model"][n]) for n in frozen if "weight" in n)
    names = [n for g in at2["optimizer"]["param_groups"] for n in g["param_names"]]
    with_state = {names[i] for i in at2["optimizer"]["state"]}
    assert not with_state & set(frozen) and with_state  # frozen: no optimizer state before step 2
    assert set(frozen) <= {names[i] for i in at4["optimizer"]["state"]}  # trained from step 2 on


def test_missing_data_path(tmp_path, capsys):
    cfg = str(ROOT / "configs" / "classification" / "vit_s16_cifar100_norm_only.py")
    argv = [cfg, "--work-dir", str(tmp_path / "wd"), "--cfg-options", f"data_root={tmp_path / 'nowhere'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cifar100 root" in err and "does not exist; set data_root" in err
    assert not (tmp_path / "wd").exists()


def test_wrong_class_count(tmp_path, capsys):
    assert run(tmp_path, "model.num_classes=7") == 2
    assert "model.num_classes=7 but the training set has 10 classes" in capsys.readouterr().err


def test_unknown_model_name(tmp_path, capsys):
    assert run(tmp_path, "model.name=vit_tinyy_patch16_224") == 2
    assert "unknown timm model 'vit_tinyy_patch16_224'; did you mean ['vit_tiny_patch16_224'" in capsys.readouterr().err


def test_batch_larger_than_dataset(tmp_path, capsys):
    assert run(tmp_path, "train.batch_size=4096") == 2
    assert "is larger than the training set (126 samples)" in capsys.readouterr().err


def test_checkpoint_from_another_model_and_nothing_is_lost(tmp_path, capsys):
    assert run(tmp_path, "train.max_steps=2") == 0
    ckpt = tmp_path / "wd" / "checkpoints" / "step_0000002.pt"
    before = sorted(p.name for p in (tmp_path / "wd").iterdir())
    assert run(tmp_path, "train.max_steps=2", "model.depth=3", resume=str(ckpt)) == 2
    err = capsys.readouterr().err
    assert "does not fit this model: it was saved from model={" in err and "'depth': 2" in err
    assert sorted(p.name for p in (tmp_path / "wd").iterdir()) == before and ckpt.is_file()
    # a fresh run into a used work dir moves the earlier files aside instead of overwriting them
    assert run(tmp_path, "train.max_steps=2") == 0
    kept = list((tmp_path / "wd" / "previous").glob("*/checkpoints/step_0000002.pt"))
    assert len(kept) == 1


def test_unread_config_key_is_an_error(tmp_path, capsys):
    assert run(tmp_path, "train.max_steps=1", "task.label_smooting=0.3") == 2
    err = capsys.readouterr().err
    assert "`task.label_smooting` is not read by anything (did you mean 'label_smoothing'?)" in err
    assert not (tmp_path / "wd").exists()  # nothing was written


def test_resume_without_checkpoint_is_clear(tmp_path, capsys):
    missing = tmp_path / "none.pt"
    assert run(tmp_path, "train.max_steps=1", resume=str(missing)) == 2
    assert capsys.readouterr().err.strip() == f"error: --resume: checkpoint {str(missing)!r} does not exist"
    assert not (tmp_path / "wd").exists()
