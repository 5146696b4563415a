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

TINY_MODEL = dict(
    type="timm",
    name="vit_tiny_patch16_224",
    img_size=8,
    patch_size=4,
    in_chans=1,
    depth=2,
    embed_dim=32,
    num_heads=2,
    drop_rate=0.1,
)


def tiny_cfg(**train) -> Config:
    """~126 digits (a 10% slice), batch 16: 7 steps per epoch; augmentation and dropout exercise the RNGs."""
    aug = [dict(type="Affine", translate_px=(-1, 1), rotate=(-10, 10), p=0.7)]
    return Config(
        dict(
            model=copy.deepcopy(TINY_MODEL),
            task=dict(type="classification"),
            data=dict(
                train=dict(type="digits", split="train", holdout=0.9, part="main", pipeline=aug),
                val=dict(type="digits", split="val"),
            ),
            strategy=dict(type="layer_decay", lr=2e-3, decay=0.75, weight_decay=0.05),
            optimizer=dict(type="AdamW"),
            schedule=dict(type="cosine", warmup_steps=3, min_lr_ratio=0.01, weight_decay=0.05, weight_decay_end=0.1),
            train=dict(
                dict(epochs=2, batch_size=16, seed=3, progress=False, tensorboard=False, num_threads=1), **train
            ),
        )
    )


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
    t.bare_model().load_state_dict(best["model"])
    assert t.evaluate("val")["top1"] == pytest.approx(info["value"], abs=1e-9)
    last = torch.load(latest_checkpoint(tmp_path / "checkpoints"), weights_only=True)
    assert last["class_names"] == best["class_names"]


def test_evaluate_scores_each_split_and_the_ema_weights(tmp_path):
    """``Trainer.evaluate(split, weights)``: the public way to score a run (tools/baselines uses it)."""
    from recipes.train.metrics.classification import classification_metrics

    cfg = tiny_cfg(max_steps=3, ema=dict(decay=0.5))
    cfg.data.test = dict(type="digits", split="test")
    t = Trainer(cfg, tmp_path / "run").setup()
    t.train()
    test = t.evaluate("test")
    data = t.task.dataset("test")
    assert test == classification_metrics(*t.task.logits(t.bare_model(), t.eval_loader(data), t.device))
    assert test != t.evaluate("val")
    assert t.evaluate("val", weights="ema") != t.evaluate("val")  # the EMA lags 3 steps of AdamW behind
    with pytest.raises(ValueError, match=r"evaluate\('valid'\): ClassificationTask reads the splits"):
        t.evaluate("valid")
    with pytest.raises(ValueError, match=r"evaluate\(weights='best'\): 'model' or 'ema'"):
        t.evaluate("val", weights="best")
    plain = Trainer(tiny_cfg(max_steps=1), tmp_path / "plain").setup()
    with pytest.raises(ValueError, match="this run keeps no EMA"):
        plain.evaluate("val", weights="ema")
    with pytest.raises(ValueError, match="the config has no data.test section"):
        plain.evaluate("test")


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


def _copy_stopped_at(src: Path, dst: Path, step: int) -> Path:
    """A work dir as it was when the run stopped after ``step`` (checkpoint pointer at that step)."""
    shutil.copytree(src, dst)
    (dst / "checkpoints" / "last").write_text(f"step_{step:07d}.pt")
    return dst


def _state_names(ckpt: dict) -> set[str]:
    """Names of the tensors that have optimizer state in a saved checkpoint."""
    names = [n for g in ckpt["optimizer"]["param_groups"] for n in g["param_names"]]
    return {names[i] for i in ckpt["optimizer"]["state"]}


def test_freeze_for_n_steps_is_owned_by_the_engine_and_resumes_exactly(tmp_path):
    """train.freeze: every group from step 0; frozen tensors get no update, state or decay until step N."""
    opts = dict(max_steps=8, ckpt_every=3, keep_ckpts=9, freeze=dict(params=r"^blocks\.0\.", steps=5))

    def cfg() -> Config:
        c = tiny_cfg(**opts)
        c.data.val = None  # no evaluation: faster, and not what this test is about
        return c

    full = Trainer(cfg(), tmp_path / "full").setup()
    groups_at_start = [g["name"] for g in full.optimizer.param_groups]
    start = {n: p.detach().clone() for n, p in full.model.named_parameters() if n.startswith("blocks.0.")}
    full.train()
    assert [g["name"] for g in full.optimizer.param_groups] == groups_at_start  # no group added mid-run
    at3, at6 = (torch.load(tmp_path / "full" / "checkpoints" / f"step_{s:07d}.pt", weights_only=True) for s in (3, 6))
    assert all(torch.equal(at3["model"][n], v) for n, v in start.items())  # no update, no weight decay
    assert not any(n.startswith("blocks.0.") for n in _state_names(at3))  # no optimizer state
    assert all(not torch.equal(at6["model"][n], v) for n, v in start.items() if n.endswith("weight"))
    assert {n for n in _state_names(at6) if n.startswith("blocks.0.")} == set(start)
    with open(tmp_path / "full" / "train_log.csv") as f:
        lrs = [float(r["lr/blocks.00.decay"]) for r in csv.DictReader(f)]
    assert lrs[:5] == [0.0] * 5 and all(lr > 0 for lr in lrs[5:])
    for stop in (3, 6):  # before and after the unfreeze step
        wd = _copy_stopped_at(tmp_path / "full", tmp_path / f"stopped_{stop}", stop)
        resumed = Trainer(cfg(), wd, resume=True).setup()
        resumed.train()
        assert resumed.history == full.history[stop:]


def test_freeze_errors_name_the_option(tmp_path):
    with pytest.raises(ValueError, match=r"train.freeze.params='\^nothing' matches no trainable parameter"):
        Trainer(tiny_cfg(max_steps=2, freeze=dict(params="^nothing", steps=2)), tmp_path).setup()
    with pytest.raises(KeyError, match=r"`train.freeze.step` is not read by anything \(did you mean 'steps'\?\)"):
        Trainer(tiny_cfg(max_steps=2, freeze=dict(params="blocks", step=2)), tmp_path).setup()


def test_task_state_is_saved_and_restored_on_resume(tmp_path, monkeypatch):
    """The engine calls the task's state_dict / load_state_dict hooks (declared on Task, never probed)."""
    from recipes.train.tasks.classification import ClassificationTask

    def on_step(self, model, optimizer, step):
        self.calls = getattr(self, "calls", 0) + 1

    monkeypatch.setattr(ClassificationTask, "on_step", on_step)
    monkeypatch.setattr(ClassificationTask, "state_dict", lambda self: {"calls": getattr(self, "calls", 0)})
    monkeypatch.setattr(ClassificationTask, "load_state_dict", lambda self, s: setattr(self, "calls", s["calls"]))
    Trainer(tiny_cfg(max_steps=4, ckpt_every=2, keep_ckpts=5), tmp_path / "a").setup().train()
    wd = _copy_stopped_at(tmp_path / "a", tmp_path / "b", 2)
    assert torch.load(wd / "checkpoints" / "step_0000002.pt", weights_only=True)["task"] == {"calls": 2}
    resumed = Trainer(tiny_cfg(max_steps=4), wd, resume=True).setup()
    resumed.train()
    assert resumed.task.calls == 4


def test_task_hooks_are_declared_on_the_base_with_defaults():
    from recipes.train.tasks.base import Task

    hooks = (
        "build_model",
        "build_datasets",
        "dataset",
        "freeze",
        "collate",
        "on_step",
        "train_step",
        "evaluate",
        "final_report",
        "state_dict",
        "load_state_dict",
    )
    assert all(callable(getattr(Task, h)) for h in hooks)
    task = Task(Config(dict(model=dict(type="timm"))))
    assert (task.freeze(), task.state_dict(), task.final_report(None, None, None)) == (None, {}, {})
    with pytest.raises(ValueError, match="keeps no state, but the checkpoint holds"):
        task.load_state_dict({"x": 1})


@pytest.mark.parametrize("name", ["lamb", "lion", "adan", "adopt", "SGD", "Adafactor"])
def test_optimizers_registry_torch_and_timm(tmp_path, name):
    cfg = tiny_cfg(max_steps=2)
    cfg.optimizer = dict(type=name)
    t = Trainer(cfg, tmp_path).setup()
    before = t.model.head.weight.detach().clone()
    t.train()
    assert type(t.optimizer).__name__.lower() == {"adan": "adan", "adopt": "adopt"}.get(name, name.lower())
    assert not torch.equal(before, t.model.head.weight)  # it trained (step 1: warm-up lr > 0)
    assert [g["name"] for g in t.optimizer.param_groups][0] == "embed.no_decay"  # the strategy's groups


def test_optimizer_errors_are_clear(tmp_path):
    from recipes.train.optimizers import build_optimizer

    p = torch.nn.Parameter(torch.zeros(2))
    for key in ("lr", "weight_decay"):
        cfg = tiny_cfg(max_steps=2)
        cfg.optimizer = {"type": "AdamW", key: 0.1}
        with pytest.raises(KeyError, match=rf"`optimizer.{key}` would be ignored.*strategy.{key}"):
            Trainer(cfg, tmp_path).setup()
    with pytest.raises(KeyError, match=r"`optimizer.betaz` is not read by anything \(did you mean 'betas'\?\)"):
        build_optimizer([dict(params=[p], lr=0.1)], dict(type="lamb", betaz=(0.9, 0.99)))
    with pytest.raises(KeyError, match="unknown optimizers 'lamd'"):
        build_optimizer([dict(params=[p], lr=0.1)], dict(type="lamd"))
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="'AdamW8bit' needs the bitsandbytes package"):
            build_optimizer([dict(params=[p], lr=0.1)], dict(type="AdamW8bit"))


def test_grad_checkpointing_uses_timms_api_and_trains_the_same(tmp_path):
    plain = Trainer(tiny_cfg(max_steps=3), tmp_path / "a").setup()
    plain.train()
    gc = Trainer(tiny_cfg(max_steps=3, grad_checkpointing=True), tmp_path / "b").setup()
    assert gc.model.grad_checkpointing is True and not plain.model.grad_checkpointing
    gc.train()
    assert [v for _, v in gc.history] == pytest.approx([v for _, v in plain.history], rel=1e-6)


@pytest.mark.slow  # importing transformers and diffusers: ~5 s
def test_grad_checkpointing_transformers_diffusers_and_a_model_without_it():
    import transformers
    from diffusers import UNet2DModel

    from recipes.train.build import enable_grad_checkpointing

    bert = transformers.BertModel(
        transformers.BertConfig(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=50
        )
    )
    assert enable_grad_checkpointing(bert) == "gradient_checkpointing_enable" and bert.is_gradient_checkpointing
    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    assert enable_grad_checkpointing(unet) == "enable_gradient_checkpointing" and unet.is_gradient_checkpointing
    with pytest.raises(ValueError, match="Sequential has no gradient-checkpointing API"):
        enable_grad_checkpointing(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def _lora_cfg(**train) -> Config:
    cfg = tiny_cfg(**{"max_steps": 6, "ckpt_every": 3, "keep_ckpts": 5, "ema": dict(decay=0.9), **train})
    cfg.policy = dict(type="lora_only", r=4, alpha=8)
    cfg.strategy = dict(type="flat", lr=2e-3, lr_lora=1e-3, weight_decay=0.05)
    cfg.data.val = None  # no evaluation: not what these tests are about
    return cfg


def test_lora_checkpoints_hold_only_trainable_tensors_and_resume_bit_exact(tmp_path):
    full = Trainer(_lora_cfg(), tmp_path / "full").setup()
    full.train()
    model = full.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    ck = torch.load(tmp_path / "full" / "checkpoints" / "step_0000003.pt", weights_only=True)
    assert ck["frozen_omitted"] and trainable <= set(ck["model"]) and not frozen & set(ck["model"])
    assert set(ck["ema"]) == set(ck["model"])  # EMA over the trainable tensors only
    whole = torch.load(
        Trainer(_lora_cfg(save_frozen=True), tmp_path / "big").setup().save_checkpoint(), weights_only=True
    )
    assert not whole["frozen_omitted"] and set(whole["model"]) == set(model.state_dict())

    def nbytes(state: dict) -> int:
        return sum(v.numel() * v.element_size() for v in state.values())

    assert nbytes(ck["model"]) < 0.2 * nbytes(whole["model"])  # 4,426 trainable of 30,634 parameters
    wd = _copy_stopped_at(tmp_path / "full", tmp_path / "stopped", 3)
    resumed = Trainer(_lora_cfg(), wd, resume=True).setup()
    resumed.train()
    assert resumed.history == full.history[3:]
    a = torch.load(tmp_path / "full" / "checkpoints" / "step_0000006.pt", weights_only=True)
    b = torch.load(wd / "checkpoints" / "step_0000006.pt", weights_only=True)
    assert all(torch.equal(a[k][n], b[k][n]) for k in ("model", "ema") for n in a[k])
    # other frozen weights than the run started with (here: another init seed) cannot be resumed silently
    with pytest.raises(ValueError, match="rebuilds different frozen weights"):
        Trainer(_lora_cfg(seed=4), wd, resume=True).setup()


def test_lora_best_pt_holds_only_trainable_tensors_and_reloads_to_its_score(tmp_path):
    """best.pt follows save_frozen='auto' too (plain or EMA weights); completed from the config and checked
    against the frozen fingerprint, it scores what best.json says; other frozen weights are refused."""
    from recipes.train.trainable_state import load_model

    cfg = _lora_cfg(max_steps=None, epochs=2, ckpt_every=None)
    cfg.data.val = tiny_cfg().data.val
    t = Trainer(cfg, tmp_path / "run").setup()
    t.train()
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    model = t.bare_model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n for n, _ in model.named_buffers()}
    assert best["frozen_omitted"] and trainable <= set(best["model"]) <= trainable | buffers
    fresh = Trainer(cfg, tmp_path / "fresh").setup()  # the same config rebuilds the same frozen weights
    load_model(fresh.bare_model(), {**best, "path": "best.pt"}, fresh.fingerprint)
    assert fresh.evaluate("val")["top1"] == best["value"]
    other = Trainer(_lora_cfg(seed=4), tmp_path / "other").setup()
    with pytest.raises(ValueError, match="rebuilds different frozen weights"):
        load_model(other.bare_model(), {**best, "path": "best.pt"}, other.fingerprint)


def test_one_logging_channel_prints_each_message_once(tmp_path, capsys):
    """The engine logs through `recipes`; with an application's console handler on the root logger, the
    records go through that handler only (once), not a second time through the engine's own."""
    import logging

    root = logging.getLogger()
    theirs = logging.StreamHandler(stream=__import__("sys").stdout)
    recipes_logger = logging.getLogger("recipes")
    ours = [h for h in recipes_logger.handlers]
    for h in ours:
        recipes_logger.removeHandler(h)
    root.addHandler(theirs)
    try:
        Trainer(tiny_cfg(max_steps=1), tmp_path).setup().train()
    finally:
        root.removeHandler(theirs)
        for h in ours:
            recipes_logger.addHandler(h)
    out = capsys.readouterr().out
    assert out.count("[params] trainable 26,538") == 1 and out.count("[summary]") == 1


def test_run_files_keep_the_best_score_of_either_weights_and_the_newest_checkpoints(tmp_path):
    """RunFiles: the best of plain and EMA scores (higher or lower is better; NaN never wins), keep_ckpts."""
    from recipes.train.run_files import RunFiles

    files = RunFiles(tmp_path, is_main=True, keep_ckpts=2)
    assert files.consider({"top1": 50.0, "ema_top1": 52.0}, 1, "top1", True) == "ema"
    assert files.consider({"top1": 51.0, "ema_top1": float("nan")}, 2, "top1", True) is None
    assert files.consider({"top1": 53.0, "ema_top1": 52.5}, 3, "top1", True) == "model"
    assert files.best == (53.0, 3, "model")
    assert files.best_entries("top1") == {"best_top1": 53.0, "best_epoch": 3, "best_weights": "model"}
    loss = RunFiles(tmp_path, is_main=True, keep_ckpts=2)
    assert [loss.consider({"loss": v}, e, "loss", False) for e, v in enumerate((0.5, 0.7, 0.4), 1)] == [
        "model",
        None,
        "model",
    ]
    assert loss.best == (0.4, 3, "model") and RunFiles(tmp_path, True, 1).best_entries("loss") == {}
    for step in (5, 10, 15):
        files.save_checkpoint({"model": {}, "step": step}, step)
    assert sorted(p.name for p in files.checkpoints.glob("step_*.pt")) == ["step_0000010.pt", "step_0000015.pt"]
    assert files.latest_checkpoint() == files.checkpoints / "step_0000015.pt"
    assert files.read_resume(True)["step"] == 15 and files.read_resume(None) is None  # True: the newest
    path = files.save_best({"model": {}}, "top1", 21, {"top1": 53.0})
    info = json.loads((tmp_path / "best.json").read_text())
    assert info == {
        "metric": "top1",
        "value": 53.0,
        "epoch": 3,
        "step": 21,
        "weights": "model",
        "metrics": {"top1": 53.0},
    }
    assert {k: v for k, v in torch.load(path, weights_only=True).items() if k != "model"} == info
