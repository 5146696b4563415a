"""The training engine behind ``tools/train.py``: one recipe, read top to bottom.

``Trainer(cfg, work_dir, resume).setup()`` validates the config, builds the task, data, model,
trainable policy, parameter groups, optimizer and step schedule; ``train()`` runs the loop;
``save_checkpoint()`` writes an atomic, ``weights_only``-loadable checkpoint. The same code runs on
one process or under ``torchrun`` (DDP; gloo on CPU, nccl on GPU).

The model, groups, freeze plan and schedule come from :func:`recipes.train.build.prepare_run`, the
path ``tools/show_lr.py`` shares. Each optimizer step, in order: ``schedule.apply(optimizer, step)``
(every group's ``lr`` = ``value(step) * lr_scale``; the weight-decay schedule only on groups with
weight decay > 0), the freeze plan (groups made only of frozen tensors show lr 0), ``task.on_step``,
``grad_accum`` forward/backward passes (under autocast), unscale, the frozen tensors' gradients
dropped, clip, step, EMA update. Messages go to the ``recipes`` logger (:func:`setup_logging`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from recipes.adapter import unwrap_model
from recipes.report import format_lr_grid
from recipes.train.build import prepare_run
from recipes.train.checkpoint import (
    BEST,
    BEST_INFO,
    LAST,
    all_finite,
    latest_checkpoint,
    load_checkpoint,
    remove_stale_tmp,
    rng_state,
    safe_load,
    save_atomic,
    set_rng_state,
    write_text_atomic,
)  # fmt: skip
from recipes.train.config import train_options, world_size
from recipes.train.diagnostics import UpdateTracker
from recipes.train.distributed import gather_objects, mean_over_ranks
from recipes.train.ema import ModelEMA
from recipes.train.errors import BadInput, Interrupted, NonFiniteLoss
from recipes.train.run_log import RunLog, setup_logging
from recipes.train.sampling import make_loader
from recipes.train.trainable_state import frozen_fingerprint, load_model, model_state, saves_frozen
from recipes.train.workdir import StopOnSignal, WorkDirLock

__all__ = ["NonFiniteLoss", "Trainer", "count_params", "seed_everything"]

log = logging.getLogger("recipes.train")


BEST_INFO_KEYS = ("metric", "value", "epoch", "step", "weights", "metrics")  # best.pt entries copied to best.json


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


class Trainer:
    """``Trainer(cfg, "work_dirs/x").setup().train()`` returns the final summary dict."""

    def __init__(self, cfg: Any, work_dir: str | Path, resume: str | Path | bool | None = None) -> None:
        self.cfg, self.work_dir, self.resume = cfg, Path(work_dir), resume
        self.opts = train_options(cfg)
        self.step = 0
        self.history: list[tuple[int, float]] = []  # (step, loss) of this process, for tests and the summary
        self.best: tuple[float, int, str] | None = None  # (value, epoch, "model" or "ema")
        self.imgs, self.t0 = 0, time.perf_counter()

    # ------------------------------------------------------------------------------------- setup
    def setup(self) -> Trainer:
        if self.work_dir.exists() and not self.work_dir.is_dir():
            raise BadInput(f"work dir {str(self.work_dir)!r} is a file, not a folder; choose another --work-dir")
        if self.opts["num_threads"]:
            torch.set_num_threads(int(self.opts["num_threads"]))  # CPU: fewer threads than cores when shared
        self._setup_distributed()
        setup_logging(self.is_main)
        seed_everything(self.opts["seed"] + self.rank)
        ckpt = self._read_resume()
        plan = prepare_run(self.cfg, world=self.world, work_dir=self.work_dir)  # task.work_dir: the task's outputs
        self.task, self.train_set, self.val_set = plan.task, plan.train_set, plan.val_set
        self.steps_per_epoch, self.total_steps, self.schedule = plan.steps_per_epoch, plan.total_steps, plan.schedule
        self.freeze = plan.freeze
        self.model = self._setup_model(plan.model, ckpt)
        self.optimizer = self._report_setup(plan.groups, plan.optimizer)
        self._check_schedule(ckpt)
        self._setup_amp_ema()
        if ckpt is not None:
            self._load_training_state(ckpt)
        self.model = self._wrap_model(self.model)
        self._prepare_work_dir(resuming=ckpt is not None)
        self.log = RunLog(self.work_dir if self.is_main else None, [g["name"] for g in self.optimizer.param_groups],
                          self.step, self.opts["tensorboard"])  # fmt: skip
        self.tracker = UpdateTracker()
        return self

    def _setup_distributed(self) -> None:
        self.world = world_size()
        self.rank = int(os.environ.get("RANK", "0"))
        want = self.opts["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
        if want.startswith("cuda") and not torch.cuda.is_available():
            raise BadInput(
                f"train.device={want!r} but no CUDA GPU is visible here; set train.device='cpu' or leave it unset"
            )
        if want == "cuda":
            want = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(torch.device(want))
        self.device = torch.device(want)
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.is_main = self.rank == 0

    def _read_resume(self) -> dict[str, Any] | None:
        if not self.resume:
            return None
        where = self.work_dir if self.resume is True else Path(self.resume)
        return load_checkpoint(where)

    def _setup_model(self, model: nn.Module, ckpt: dict[str, Any] | None) -> nn.Module:
        self.trainable, self.total_params = count_params(model)
        self.save_full = saves_frozen(model, self.opts["save_frozen"])
        self.fingerprint = frozen_fingerprint(model)
        if ckpt is not None:
            load_model(model, ckpt, self.fingerprint)
        model.to(self.device)
        if self.opts["channels_last"]:
            model.to(memory_format=torch.channels_last)
        return model

    def _report_setup(self, groups: list[dict[str, Any]], optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        log.info(format_lr_grid(groups, self.model, title="lr_grid"))
        pct = 100 * self.trainable / max(1, self.total_params)
        roles = ""
        if self.cfg.get("policy"):
            from recipes.policies import trainable_counts

            roles = " by role " + ", ".join(
                f"{k} {v:,}" for k, v in trainable_counts(self.model).items() if k != "total"
            )
        log.info(f"[params] trainable {self.trainable:,} of {self.total_params:,} ({pct:.2f}%){roles}")
        for line in self.freeze.describe():
            log.info(f"[freeze] {line}")
        return optimizer

    def _check_schedule(self, ckpt: dict[str, Any] | None) -> None:
        if ckpt is not None and (ckpt.get("total_steps"), ckpt.get("steps_per_epoch")) != (
            self.total_steps,
            self.steps_per_epoch,
        ):
            log.warning(f"the schedule changed since the checkpoint: it was {ckpt.get('total_steps')} steps "
                        f"({ckpt.get('steps_per_epoch')} per epoch), this config gives {self.total_steps} "
                        f"({self.steps_per_epoch} per epoch); the LR curve from step {ckpt['step']} on is not the one "
                        "the run started with")  # fmt: skip

    def _setup_amp_ema(self) -> None:
        amp = self.opts["amp"]
        if amp not in (None, "bf16", "fp16"):
            raise ValueError(f"train.amp must be None, 'bf16' or 'fp16', got {amp!r}")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(self.device.type) if amp == "fp16" else None
        ema = self.opts["ema"]
        if isinstance(ema, (int, float)) and not isinstance(ema, bool):
            ema = {"decay": ema}
        self.ema = ModelEMA(self.model, **ema) if ema else None

    def _load_training_state(self, ckpt: dict[str, Any]) -> None:
        self.step = int(ckpt["step"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.task.load_state_dict(ckpt.get("task") or {})
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        best = ckpt.get("best")
        self.best = (float(best[0]), int(best[1]), str(best[2]) if len(best) > 2 else "model") if best else None
        rngs = ckpt["rng"]
        set_rng_state(rngs[self.rank] if self.rank < len(rngs) else rngs[0])
        log.info(f"[resume] {ckpt['path']}: step {self.step} of {self.total_steps}")

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if self.opts["compile"]:
            model = torch.compile(model)
        return model

    def _prepare_work_dir(self, resuming: bool) -> None:
        """Create the work dir; a fresh run moves an earlier run's files aside instead of overwriting them."""
        if not self.is_main:
            return
        self.lock = WorkDirLock(self.work_dir).acquire()  # before anything in it is moved or written
        for tmp in remove_stale_tmp(self.work_dir, (BEST, BEST_INFO, "eval_log.jsonl", "train_log.csv",
                                                    "diagnostics.csv", "summary.json")):  # fmt: skip
            log.info(f"[work_dir] removed {tmp}, left by an interrupted write")
        old = [p for p in self.work_dir.iterdir() if p.name not in ("previous", ".lock")]
        if old and not resuming:
            dest = self.work_dir / "previous" / time.strftime("%Y%m%d-%H%M%S")
            dest.mkdir(parents=True, exist_ok=True)
            for p in old:
                shutil.move(str(p), str(dest / p.name))
            log.info(f"[work_dir] an earlier run's files were moved to {dest}")
        if resuming:
            self._set_aside_later_best()
        self.cfg.dump(str(self.work_dir / "config.py"))

    def _set_aside_later_best(self) -> None:
        """Resuming from an earlier checkpoint: a best.pt written after it belongs to the abandoned branch.

        best.json is derived from best.pt (a kill between the two writes left them disagreeing: rewrite it).
        """
        best = self.work_dir / BEST
        if not best.is_file():
            return
        try:
            saved = {k: v for k, v in safe_load(best, "best checkpoint").items() if k in BEST_INFO_KEYS}
            int(saved["step"])
        except (BadInput, KeyError, TypeError, ValueError, AttributeError):  # unreadable: keep the files, say so
            log.warning(f"{best} cannot be read; it is kept as it is and replaced by the next better epoch")
            return
        info = self.work_dir / BEST_INFO
        if not info.is_file() or _read_json(info) != saved:
            write_text_atomic(info, json.dumps(saved, indent=2))
            log.info(f"[resume] {info} rewritten from {best} (they disagreed after an interrupted write)")
        if int(saved["step"]) <= self.step:
            return
        dest = self.work_dir / "previous" / f"best_after_step_{self.step}"
        dest.mkdir(parents=True, exist_ok=True)
        for name in (BEST, BEST_INFO):
            if (self.work_dir / name).exists():
                shutil.move(str(self.work_dir / name), str(dest / name))
        log.info(f"[resume] the best checkpoint was written at step {saved['step']}, after this resume point "
                 f"(step {self.step}); moved to {dest}")  # fmt: skip

    # ------------------------------------------------------------------------------------- train
    def train(self) -> dict[str, Any]:
        try:
            if self.resume and self.step >= self.total_steps:
                return self._already_finished()
            with StopOnSignal() as self.stop:
                return self._train()
        finally:
            if getattr(self, "lock", None) is not None:
                self.lock.release()

    def _already_finished(self) -> dict[str, Any]:
        """``--resume`` of a finished run: nothing to train; summary.json and the checkpoints stay as they are."""
        path = self.work_dir / "summary.json"
        summary = _read_json(path) if path.is_file() else None
        if self.is_main:
            log.info(f"[resume] the run already finished ({self.step} of {self.total_steps} steps); nothing to do, "
                     f"{path} is left as it is")  # fmt: skip
        self.log.close()
        return summary or {"steps": self.step}

    def _stop_requested(self) -> bool:
        """A signal reached this process (or, under DDP, any rank): every rank stops at the same step."""
        flag = self.stop.signal is not None
        if self.world > 1:
            t = torch.tensor([float(flag)], device=self.device)
            torch.distributed.all_reduce(t)
            flag = bool(t.item())
        return flag

    def _interrupt(self, saved: bool) -> None:
        path = latest_checkpoint(self.work_dir / "checkpoints") if saved else self.save_checkpoint()
        where = path or self.work_dir / "checkpoints"
        raise Interrupted(
            f"interrupted ({self.stop.signal or 'signal on another rank'}) at step {self.step} of "
            f"{self.total_steps}; checkpoint saved to {where}. Continue with the same command plus --resume "
            f"(work dir {self.work_dir})"
        )

    def _train(self) -> dict[str, Any]:
        o, spe = self.opts, self.steps_per_epoch
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (self.is_main and o["progress"]),
                   dynamic_ncols=True, mininterval=1.0, desc="train")  # fmt: skip
        self.t0, self.imgs = time.perf_counter(), 0
        try:
            while self.step < self.total_steps:
                epoch, skip = divmod(self.step, spe)
                it = iter(self._loader(epoch, skip * o["grad_accum"]))
                for _ in range(skip, spe):
                    if self.step >= self.total_steps:
                        break
                    self._one_step(it, epoch, bar)
                    if self.step % (o["eval_every"] or spe) == 0 or self.step >= self.total_steps:
                        self._end_of_epoch(epoch)  # before the checkpoint, so a resume never skips it
                    every = o["ckpt_every"] or spe  # default: each epoch end
                    saved = self.step % every == 0 and self.step < self.total_steps
                    if saved:
                        self.save_checkpoint()
                    if self.step < self.total_steps and self._stop_requested():
                        self._interrupt(saved)
            self.save_checkpoint()
        except NonFiniteLoss as e:
            last = latest_checkpoint(self.work_dir / "checkpoints")
            log.error(f"STOPPED: {e}. The last good checkpoint is {last or '(none written yet)'}; nothing after it "
                      "was saved.")  # fmt: skip
            raise
        finally:
            bar.close()
        return self._summary()

    def _loader(self, epoch: int, start_batch: int = 0, dataset: Any = None, train: bool = True) -> Any:
        o = self.opts
        return make_loader(dataset if dataset is not None else self.train_set,
                           batch_size=o["batch_size"] if train else o["eval_batch_size"] or o["batch_size"],
                           seed=o["seed"], epoch=epoch, collate=self.task.collate, rank=self.rank, world=self.world,
                           train=train, start_batch=start_batch, num_workers=o["num_workers"],
                           pin_memory=self.device.type == "cuda")  # fmt: skip

    def _one_step(self, it: Any, epoch: int, bar: Any) -> None:
        t = time.perf_counter()
        base = self.schedule.apply(self.optimizer, self.step)
        frozen = self.freeze.frozen(self.step)
        self._show_frozen_lrs(frozen)
        self.task.on_step(self.model, self.optimizer, self.step)
        loss, logs = self._forward_backward(it)
        self._optimizer_step(frozen)
        self.step += 1
        n = self.opts["batch_size"] * self.opts["grad_accum"] * self.world
        self.imgs += n
        rate = n / max(1e-9, time.perf_counter() - t)
        self.history.append((self.step - 1, loss))
        row = {"step": self.step - 1, "epoch": epoch, "loss": loss, "base_lr": base, "img_per_s": rate}
        row.update({f"lr/{g['name']}": g["lr"] for g in self.optimizer.param_groups})
        self.log.step(row, logs)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{base:.3g}", img_s=f"{rate:.0f}", refresh=False)
        if not self.opts["progress"] and self.opts["log_every"] and self.step % self.opts["log_every"] == 0:
            log.info(f"[train] step {self.step}/{self.total_steps} epoch {epoch + 1} loss {loss:.4f} lr {base:.4g} "
                     f"img/s {rate:.0f}")  # fmt: skip
        bar.update(1)

    def _show_frozen_lrs(self, frozen: list[nn.Parameter]) -> None:
        """Groups made only of tensors frozen at this step show (and use) lr 0 in the logs."""
        if not frozen:
            return
        ids = {id(p) for p in frozen}
        for g in self.optimizer.param_groups:
            if g["params"] and all(id(p) in ids for p in g["params"]):
                g["lr"] = 0.0

    def _forward_backward(self, it: Any) -> tuple[float, dict[str, float]]:
        accum, total, logs = self.opts["grad_accum"], 0.0, {}
        ddp = isinstance(self.model, nn.parallel.DistributedDataParallel)
        for k in range(accum):
            batch = next(it)
            sync = contextlib.nullcontext() if (k == accum - 1 or not ddp) else self.model.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    loss, logs = self.task.train_step(self.model, batch, self.device)
                value = float(loss.detach())
                scaled = loss / accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += value / accum
        total = mean_over_ranks(total, self.device)
        if not math.isfinite(total):  # checked after the all-reduce: every rank stops at the same step
            raise NonFiniteLoss(f"loss is {total} at step {self.step}")
        return total, logs

    def _optimizer_step(self, frozen: list[nn.Parameter]) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        for p in frozen:  # no gradient -> the optimizer skips them: no update, no state, no weight decay
            p.grad = None
        if self.scaler is None:  # fp16's scaler skips a step with inf gradients by itself
            self._check_gradients()
        measure = self._measure_now()
        if measure:
            self.tracker.before(self.optimizer)
        clip = self.opts["clip_grad"]
        if clip:
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self._bare_model(), self.step)
        if measure:
            self.log.diagnostics(self.tracker.after(self.optimizer, self.step))

    def _check_gradients(self) -> None:
        """A finite loss can still give an inf gradient: stop before that step touches the weights.

        One fused norm per device over all gradients (the same pass ``clip_grad_norm_`` makes); under DDP
        the gradients are already all-reduced, so every rank stops at the same step.
        """
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        if not math.isfinite(float(norm)):
            bad = next(g["name"] for g in self.optimizer.param_groups
                       if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in g["params"]))  # fmt: skip
            raise NonFiniteLoss(f"gradient is {float(norm)} at step {self.step} (first in group {bad!r}); "
                                "the update was not applied")  # fmt: skip

    def _measure_now(self) -> bool:
        """Every step with log_grad_norms; else the last two steps of each epoch (one cosine each)."""
        if self.opts["log_grad_norms"] or self.cfg.strategy.get("log_grad_norms", False):  # strategy: see strategies.py
            return True
        pos = self.step % self.steps_per_epoch
        return pos >= self.steps_per_epoch - 2 or self.step >= self.total_steps - 2

    # ------------------------------------------------------------------------------------- eval
    def _bare_model(self) -> nn.Module:
        """The model without DDP / compile wrappers: evaluation shards are uneven, DDP forwards would hang."""
        return unwrap_model(self.model)

    def _evaluate(self, module: nn.Module, dataset: Any) -> dict[str, float]:
        loader = self._loader(0, dataset=dataset, train=False)
        return self.task.evaluate(module, loader, self.device)

    def _end_of_epoch(self, epoch: int) -> None:
        if self.val_set is None:
            return
        metrics = self._evaluate(self._bare_model(), self.val_set)
        media = self.task.evaluation_media()
        if self.ema is not None:
            metrics.update({f"ema_{k}": v for k, v in self._evaluate(self.ema.module, self.val_set).items()})
            media.update({f"ema_{k}": v for k, v in self.task.evaluation_media().items()})
        key, improved = self.task.primary_metric, None
        for source, name in (("model", key), ("ema", f"ema_{key}")):
            value = metrics.get(name)
            if value is not None and math.isfinite(value) and self._better(value):
                self.best, improved = (float(value), epoch + 1, source), source
        self.last_metrics = metrics
        self.log.evaluation(self.step, epoch + 1, metrics)
        self.log.media(self.step, media)
        shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        log.info(f"[eval] epoch {epoch + 1} step {self.step}: {shown}")
        if improved:
            self._save_best(metrics)

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best[0] if self.task.higher_is_better else value < self.best[0]

    # ------------------------------------------------------------------------------------- save
    def _save_best(self, metrics: dict[str, float]) -> None:
        """``best.pt``: the weights (plain or EMA) that scored best, for inference and fine-tuning, not resume.

        It follows ``train.save_frozen`` as the step checkpoints do: a mostly frozen model (LoRA) saves its
        trainable tensors and buffers (``frozen_omitted``) with the fingerprint of the frozen rest, which a
        reader rebuilds from the config's pretrained weights and checks (``trainable_state.load_model``).
        """
        if not self.is_main or self.best is None:
            return
        value, epoch, source = self.best
        weights = self.ema.state_dict(full=self.save_full) if source == "ema" else \
            model_state(self._bare_model(), self.save_full)  # fmt: skip
        info = {"metric": self.task.primary_metric, "value": value, "epoch": epoch, "step": self.step,
                "weights": source, "metrics": {k: float(v) for k, v in metrics.items()}}  # fmt: skip
        state = {"model": weights, **info, "frozen_omitted": not self.save_full,
                 "frozen_fingerprint": self.fingerprint, "class_names": list(self.task.class_names),
                 "config": self.cfg.pretty_text, "model_cfg": str(dict(self.cfg.model))}  # fmt: skip
        save_atomic(state, self.work_dir / BEST)  # holds `info` too: best.json is re-derived from it on resume
        write_text_atomic(self.work_dir / BEST_INFO, json.dumps(info, indent=2))
        log.info(f"[best] {info['metric']}={value:.4g} ({source} weights) at epoch {epoch}, step {self.step}: "
                 f"{self.work_dir / BEST}")  # fmt: skip

    def save_checkpoint(self) -> Path | None:
        """``checkpoints/step_XXXXXXX.pt`` (atomic) and the ``checkpoints/last`` pointer; keeps ``keep_ckpts``."""
        rngs = gather_objects(rng_state())
        bad = all_finite({"model": self._bare_model().state_dict(),
                          "ema": self.ema.state_dict() if self.ema is not None else {}})  # fmt: skip
        if bad is not None:  # never write weights that cannot be resumed from (same on every rank)
            raise NonFiniteLoss(f"the weights hold NaN/inf at step {self.step} ({bad}); not saved")
        if not self.is_main:
            return None
        state = {
            "model": model_state(self._bare_model(), self.save_full),
            "frozen_omitted": not self.save_full, "frozen_fingerprint": self.fingerprint,
            "task": self.task.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.state_dict(full=self.save_full) if self.ema is not None else None,
            "step": self.step, "total_steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.world, "rng": rngs, "best": list(self.best) if self.best else None,
            "config": self.cfg.pretty_text, "model_cfg": str(dict(self.cfg.model)),
            "class_names": list(self.task.class_names),
        }  # fmt: skip
        ckpt_dir = self.work_dir / "checkpoints"
        path = ckpt_dir / f"step_{self.step:07d}.pt"
        save_atomic(state, path)
        write_text_atomic(ckpt_dir / LAST, path.name)
        for old in sorted(ckpt_dir.glob("step_*.pt"))[: -self.opts["keep_ckpts"]]:
            old.unlink()
        return path

    def _summary(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        summary: dict[str, Any] = {"steps": self.step, "epochs": self.step / self.steps_per_epoch, "wall_s": wall,
                                   "img_per_s": self.imgs / max(wall, 1e-9), "trainable_params": self.trainable,
                                   "total_params": self.total_params,
                                   "final_loss": self.history[-1][1] if self.history else None}  # fmt: skip
        summary["val"] = getattr(self, "last_metrics", {})
        if self.cfg.get("policy"):
            from recipes.policies import trainable_counts

            summary["trainable_by_role"] = trainable_counts(self._bare_model())
        if self.best:
            summary[f"best_{self.task.primary_metric}"], summary["best_epoch"], summary["best_weights"] = self.best
        summary.update(self.task.final_report(self._bare_model(), self.device, self._evaluate_split))
        if self.is_main:
            (self.work_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        log.info("[summary] " + json.dumps(summary, default=lambda v: round(float(v), 4)))
        self.log.close()
        return summary

    def _evaluate_split(self, dataset: Any) -> Any:
        """A rank-sharded evaluation loader for a task's ``final_report``."""
        return self._loader(0, dataset=dataset, train=False)
