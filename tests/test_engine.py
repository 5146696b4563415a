"""The engine on a real timm ViT (tiny) and real data (scikit-learn digits): exact resume, NaN stop, logs."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from recipes.train.checkpoint import latest_checkpoint
from recipes.train.engine import NonFiniteLoss, Trainer

TINY_MODEL = dict(type="timm", name="vit_tiny_patch16_224", img_size=8, patch_size=4, in_chans=1, depth=2,
                  embed_dim=32, num_heads=2, drop_rate=0.1)  # fmt: skip


def tiny_cfg(**train) -> Config:
    """~126 digits (a 10% slice), batch 16: 7 steps per epoch; augmentation and dropout exercise the RNGs."""
    aug = [dict(type="Affine", translate_px=(-1, 1), rotate=(-10, 10), p=0.7)]
    return Config(dict(
        model=copy.deepcopy(TINY_MODEL),
        task=dict(type="classification"),
        data=dict(train=dict(type="digits", split="train", holdout=0.9, part="main", pipeline=aug),
                  val=dict(type="digits", split="val")),
        strategy=dict(type="layer_decay", lr=2e-3, decay=0.75, weight_decay=0.05),
        optimizer=dict(type="AdamW"),
        schedule=dict(type="cosine", warmup_steps=3, min_lr_ratio=0.01, weight_decay=0.05, weight_decay_end=0.1),
        train=dict(dict(epochs=2, batch_size=16, seed=3, progress=False, tensorboard=False, num_threads=1), **train),
    ))  # fmt: skip


def losses(work_dir: Path) -> list[tuple[int, float]]:
    with open(work_dir / "train_log.csv") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


@pytest.mark.parametrize(
    "extra", [{}, {"grad_accum": 2, "num_workers": 1, "epochs": 4}], ids=["plain", "accum_workers"]
)
def test_stop_and_resume_gives_the_same_losses_step_for_step(tmp_path, extra):
    opts = dict(ckpt_every=5, ema=dict(decay=0.9), **extra)
    full = Trainer(tiny_cfg(**opts), tmp_path / "full").setup()
    spe = 7 // opts.get("grad_accum", 1)
    assert full.steps_per_epoch == spe and full.total_steps == 14 - 2 * bool(extra)
    full.train()
    assert len(full.history) == full.total_steps
    ckpts = sorted(p.name for p in (tmp_path / "full" / "checkpoints").glob("step_*.pt"))
    assert ckpts == ["step_0000005.pt", "step_0000010.pt", f"step_{full.total_steps:07d}.pt"]
    assert 5 % spe and 10 % spe  # both mid-epoch
    state = torch.load(tmp_path / "full" / "checkpoints" / "step_0000010.pt", weights_only=True)
    assert (
        state["step"] == 10
        and state["total_steps"] == full.total_steps
        and isinstance(state["rng"][0]["torch"], torch.Tensor)
    )

    # a run "stopped" after step 5: its work dir as it was then (checkpoint pointer at step 5, logs beyond it)
    stopped = tmp_path / "stopped"
    shutil.copytree(tmp_path / "full", stopped)
    (stopped / "checkpoints" / "last").write_text("step_0000005.pt")
    resumed = Trainer(tiny_cfg(**opts), stopped, resume=True).setup()
    assert resumed.step == 5
    resumed.train()
    assert resumed.history == full.history[5:]  # exact float equality, including mid-epoch batches
    assert losses(stopped) == losses(tmp_path / "full")  # the CSV was cut at step 5 and continued
    last = f"step_{full.total_steps:07d}.pt"
    a = torch.load(tmp_path / "full" / "checkpoints" / last, weights_only=True)
    b = torch.load(stopped / "checkpoints" / last, weights_only=True)
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])


def test_changed_schedule_length_warns_once_on_resume(tmp_path, capsys):
    """One logging channel: the warning is printed once (it was both a UserWarning and a print)."""
    Trainer(tiny_cfg(max_steps=4), tmp_path).setup().train()
    capsys.readouterr()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        Trainer(tiny_cfg(max_steps=6), tmp_path, resume=True).setup()
    out = capsys.readouterr().out
    assert out.count("the schedule changed since the checkpoint: it was 4 steps") == 1
    assert "WARNING: the schedule changed" in out


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    t = Trainer(tiny_cfg(ckpt_every=2), tmp_path).setup()
    step = t.task.train_step

    def poisoned(model, batch, device):
        loss, logs = step(model, batch, device)
        return (loss * float("nan") if t.step == 3 else loss), logs

    t.task.train_step = poisoned
    with pytest.raises(NonFiniteLoss, match="loss is nan at step 3"):
        t.train()
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step_0000002.pt"
    assert "STOPPED: loss is nan at step 3" in capsys.readouterr().out


def test_grad_accum_amp_clip_and_diagnostics(tmp_path):
    t = Trainer(tiny_cfg(max_steps=3, grad_accum=2, amp="bf16", clip_grad=1.0, log_grad_norms=True), tmp_path)
    t.setup().train()
    with open(tmp_path / "diagnostics.csv") as f:
        rows = list(csv.DictReader(f))
    groups = {g["name"] for g in t.optimizer.param_groups}
    assert {r["group"] for r in rows} == groups and {int(r["step"]) for r in rows} == {0, 1, 2}
    assert all(float(r["grad_norm"]) > 0 for r in rows)
    assert all(float(r["update_norm"]) > 0 for r in rows if r["step"] != "0")  # step 0: warm-up lr 0
    assert all(-1 <= float(r["update_cos"]) <= 1 for r in rows if r["step"] == "2")  # step 1 follows a zero update
    header = (tmp_path / "train_log.csv").read_text().splitlines()[0]
    assert header.startswith("step,epoch,loss,base_lr,lr/embed.") and header.endswith("img_per_s")


def test_schedule_is_applied_to_every_group_with_lr_scale(tmp_path):
    t = Trainer(tiny_cfg(max_steps=4), tmp_path).setup()
    t.train()
    with open(tmp_path / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        step = int(row["step"])
        for g in t.optimizer.param_groups:
            assert float(row[f"lr/{g['name']}"]) == pytest.approx(t.schedule.group_lr(step, g["lr_scale"]), rel=1e-12)
    # the weight-decay schedule touched only groups with weight decay
    assert all(g["weight_decay"] == 0 for g in t.optimizer.param_groups if g["name"].endswith("no_decay"))
    assert all(g["weight_decay"] > 0.05 for g in t.optimizer.param_groups if g["name"].endswith(".decay"))


def test_best_checkpoint_holds_the_weights_that_scored_best(tmp_path):
    """best.pt = the plain or EMA weights with the best val top-1; evaluating them again gives that score."""
    cfg = tiny_cfg(epochs=3, batch_size=32, ema=dict(decay=0.9))
    cfg.data.train = dict(type="digits", split="train")  # all 1,257 digits: top-1 moves between epochs (~3 s)
    t = Trainer(cfg, tmp_path).setup()
    summary = t.train()
    info = json.loads((tmp_path / "best.json").read_text())
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert (info["value"], info["epoch"], info["weights"]) == (
        summary["best_top1"],
        summary["best_epoch"],
        summary["best_weights"],
    )
    assert best["metric"] == "top1" and best["step"] == info["epoch"] * t.steps_per_epoch == info["step"]
    assert best["class_names"] == [str(c) for c in range(10)]
    # the score of the epoch that won is the best of every plain and EMA score logged
    evals = [json.loads(line) for line in (tmp_path / "eval_log.jsonl").read_text().splitlines()]
    scores = [e[k] for e in evals for k in ("top1", "ema_top1")]
    assert info["value"] == max(scores) and len(set(scores)) > 1
    model = t.task.build_model()
    model.load_state_dict(best["model"])
    assert t._evaluate(model, t.val_set)["top1"] == pytest.approx(info["value"], abs=1e-9)
    last = torch.load(latest_checkpoint(tmp_path / "checkpoints"), weights_only=True)
    assert last["class_names"] == best["class_names"]


def test_resume_from_before_the_best_epoch_sets_that_best_aside(tmp_path):
    Trainer(tiny_cfg(epochs=2, ckpt_every=3, keep_ckpts=9), tmp_path).setup().train()
    assert json.loads((tmp_path / "best.json").read_text())["step"] > 3
    (tmp_path / "checkpoints" / "last").write_text("step_0000003.pt")
    t = Trainer(tiny_cfg(epochs=2, ckpt_every=3), tmp_path, resume=True).setup()
    assert t.step == 3 and not (tmp_path / "best.json").exists()
    assert (tmp_path / "previous" / "best_after_step_3" / "best.pt").is_file()
    t.train()
    assert json.loads((tmp_path / "best.json").read_text())["step"] > 3


def test_max_steps_shorter_than_the_warmup_cuts_the_warmup(tmp_path):
    cfg = tiny_cfg(max_steps=2)
    cfg.schedule.warmup_steps = 50
    with pytest.warns(UserWarning, match="warmup_steps=50 is longer than this run"):
        t = Trainer(cfg, tmp_path).setup()
    assert t.schedule.warmup_steps == 2
    cfg = tiny_cfg(epochs=1)  # the schedule of a whole run stays strict
    cfg.schedule.warmup_steps = 50
    with pytest.raises(ValueError, match="warmup_steps=50 is longer than the schedule"):
        Trainer(cfg, tmp_path / "b").setup()


def test_channels_last_trains_the_same_model(tmp_path):
    """channels_last changes the memory layout of 4-D weights and inputs, not the maths."""
    plain = Trainer(tiny_cfg(max_steps=3), tmp_path / "a").setup()
    plain.train()
    cl = Trainer(tiny_cfg(max_steps=3, channels_last=True), tmp_path / "b").setup()
    conv = cl.model.patch_embed.proj.weight
    assert conv.dim() == 4 and conv.is_contiguous(memory_format=torch.channels_last)
    cl.train()
    for (_, a), (_, b) in zip(plain.history, cl.history, strict=True):
        assert b == pytest.approx(a, rel=1e-4)


@pytest.mark.slow
def test_torch_compile_trains_and_resumes(tmp_path):
    """torch.compile (inductor on CPU, ~1 min): losses match eager, checkpoints hold the bare names.

    Without dropout: inductor draws its own random numbers, so dropout masks differ from eager's.
    """

    def cfg(**kw):
        c = tiny_cfg(max_steps=4, **kw)
        c.model.drop_rate = 0.0
        return c

    eager = Trainer(cfg(), tmp_path / "eager").setup()
    eager.train()
    compiled = Trainer(cfg(compile=True, ckpt_every=2, keep_ckpts=5), tmp_path / "c").setup()
    compiled.train()
    for (_, a), (_, b) in zip(eager.history, compiled.history, strict=True):
        assert b == pytest.approx(a, rel=1e-3)
    state = torch.load(tmp_path / "c" / "checkpoints" / "step_0000002.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in state["model"])
    (tmp_path / "c" / "checkpoints" / "last").write_text("step_0000002.pt")
    resumed = Trainer(cfg(compile=True, ckpt_every=2, keep_ckpts=5), tmp_path / "c", resume=True).setup()
    resumed.train()
    assert [s for s, _ in resumed.history] == [2, 3]
    assert [v for _, v in resumed.history] == pytest.approx([v for _, v in compiled.history[2:]], rel=1e-5)
