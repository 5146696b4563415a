"""The training engine behind ``tools/train.py``: one recipe, read top to bottom.

``Trainer(cfg, work_dir, resume).setup()`` validates the config, builds the task, data, model,
trainable policy, parameter groups, optimizer and step schedule; ``train()`` runs the loop;
``save_checkpoint()`` writes an atomic, ``weights_only``-loadable checkpoint. The same code runs on
one process or under ``torchrun`` (DDP; gloo on CPU, nccl on GPU).

The model, groups, freeze plan and schedule come from :func:`recipes.train.build.prepare_run`, the
path ``tools/show_lr.py`` shares. Each optimizer step, in order: ``schedule.apply(optimizer, step, weight_decays)``
(every group's ``lr`` = ``value(step) * lr_scale``; the weight-decay schedule only on groups with
weight decay > 0), the freeze plan (groups made only of frozen tensors show lr 0), ``task.on_step``,
``grad_accum`` forward/backward passes (under autocast), unscale, the frozen tensors' gradients
dropped, clip, step, EMA update. Messages go to the ``recipes`` logger (:func:`setup_logging`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recipes.adapter import unwrap_model
from recipes.train import fsdp
from recipes.train.build import prepare_run
from recipes.train.checkpoint import rng_state, seed_everything, set_rng_state
from recipes.train.config import sdpa_context, train_options, world_size
from recipes.train.diagnostics import UpdateTracker, check_gradients
from recipes.train.distributed import any_rank, gather_objects, init_device, mean_over_ranks
from recipes.train.ema import ModelEMA
from recipes.train.errors import BadInput, Interrupted, NonFiniteLoss
from recipes.train.run_files import RunFiles
from recipes.train.run_log import RunLog, WithProgress, log_setup, setup_logging
from recipes.train.sampling import make_loader
from recipes.train.trainable_state import count_params, frozen_fingerprint, load_model, saves_frozen
from recipes.train.workdir import StopOnSignal, check_work_dir

__all__ = ["NonFiniteLoss", "Trainer"]

log = logging.getLogger("recipes.train")


class Trainer:
    """``Trainer(cfg, "work_dirs/x").setup().train()`` returns the final summary dict."""

    def __init__(self, cfg: Any, work_dir: str | Path, resume: str | Path | bool | None = None) -> None:
        self.cfg, self.work_dir, self.resume = cfg, Path(work_dir), resume
        self.opts = train_options(cfg)
        self.step = 0
        self.history: list[tuple[int, float]] = []  # (step, loss) of this process, for tests and the summary
        self.imgs, self.t0 = 0, time.perf_counter()

    # ------------------------------------------------------------------------------------- setup
    def setup(self) -> Trainer:
        check_work_dir(self.work_dir)  # before anything is built: a folder no run wrote is refused
        if self.opts["num_threads"]:
            torch.set_num_threads(int(self.opts["num_threads"]))  # CPU: fewer threads than cores when shared
        self.world = world_size()
        self.rank, self.device = init_device(self.opts["device"], self.world)
        self.is_main = self.rank == 0
        fsdp.check_options(self.opts, self.world, self.cfg.get("strategy") or {}, self.cfg.get("model") or {})
        self.files = RunFiles(self.work_dir, self.is_main, self.opts["keep_ckpts"])
        setup_logging(self.is_main)
        seed_everything(self.opts["seed"] + self.rank)
        ckpt = self.files.read_resume(self.resume)
        plan = prepare_run(self.cfg, world=self.world, work_dir=self.work_dir)  # task.work_dir: the task's outputs
        self.task, self.train_set, self.val_set = plan.task, plan.train_set, plan.val_set
        self.steps_per_epoch, self.total_steps, self.schedule = plan.steps_per_epoch, plan.total_steps, plan.schedule
        self.freeze, self.groups = plan.freeze, plan.groups
        self.model = self._setup_model(plan.model, ckpt)
        self.optimizer = plan.optimizer
        self.weight_decays = [g.get("weight_decay", 0.0) for g in self.optimizer.param_groups]  # as built
        log_setup(plan.groups, self.model, self.freeze.describe(), by_role=bool(self.cfg.get("policy")))
        self.files.check_schedule(ckpt, self.total_steps, self.steps_per_epoch)
        self._setup_amp_ema()
        if ckpt is not None:
            self._load_training_state(ckpt)
        self.model = self._wrap_model(self.model, ckpt)
        self.files.prepare(self.cfg, resuming=ckpt is not None, step=self.step)
        names = [g["name"] for g in self.optimizer.param_groups]
        self.log = RunLog(self.work_dir if self.is_main else None, names, self.step, self.opts["tensorboard"])
        self.tracker = UpdateTracker()
        return self

    def _setup_model(self, model: nn.Module, ckpt: dict[str, Any] | None) -> nn.Module:
        self.trainable, self.total_params = count_params(model)
        self.save_full = saves_frozen(model, self.opts["save_frozen"])
        self.fingerprint = frozen_fingerprint(model)
        if ckpt is not None:
            load_model(model, ckpt, self.fingerprint)
        fsdp.place(model, self.device, self.opts["fsdp"])  # FSDP: rank 0's weights everywhere, moved when sharded
        if self.opts["channels_last"]:
            model.to(memory_format=torch.channels_last)
        return model

    def _setup_amp_ema(self) -> None:
        amp = self.opts["amp"]
        if amp not in (None, "bf16", "fp16"):
            raise ValueError(f"train.amp must be None, 'bf16' or 'fp16', got {amp!r}")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(self.device.type) if amp == "fp16" else None
        self.ema = self.task.ema = ModelEMA.from_option(self.model, self.opts["ema"])  # the task may export it

    def _load_training_state(self, ckpt: dict[str, Any]) -> None:
        self.step = int(ckpt["step"])
        fsdp.load_plain_optimizer(self.optimizer, ckpt, self.opts["fsdp"])  # FSDP: into the shards, by _wrap_model
        self.task.load_state_dict(ckpt.get("task") or {})
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.files.load_best(ckpt.get("best"))
        rngs = ckpt.get("rng") or [None]  # absent: set_rng_state names the entry
        set_rng_state(rngs[self.rank] if self.rank < len(rngs) else rngs[0], ckpt["path"])
        log.info(f"[resume] {ckpt['path']}: step {self.step} of {self.total_steps}")

    def _wrap_model(self, model: nn.Module, ckpt: dict[str, Any] | None) -> nn.Module:
        if self.opts["fsdp"]:  # FSDP2: shard_run also rebuilds self.optimizer and self.freeze on the shards
            return fsdp.shard_run(model, self, ckpt)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if self.opts["compile"]:
            model = torch.compile(model)
        return model

    # ------------------------------------------------------------------------------------- train
    def train(self) -> dict[str, Any]:
        try:
            if self.resume and self.step >= self.total_steps:
                return self._already_finished()
            with StopOnSignal() as self.stop:
                return self._train()
        finally:
            self.files.release()

    def _already_finished(self) -> dict[str, Any]:
        """``--resume`` of a finished run: nothing to train; summary.json and the checkpoints stay as they are."""
        if self.is_main:
            log.info(
                f"[resume] the run already finished ({self.step} of {self.total_steps} steps); nothing to do, "
                f"{self.work_dir} is left as it is"
            )
        self.log.close()
        return self.files.read_summary() or {"steps": self.step}

    def _stop_requested(self) -> bool:
        """A signal reached this process (or, under DDP, any rank): every rank stops at the same step."""
        return any_rank(self.stop.signal is not None, self.device)

    def _interrupt(self, saved: bool) -> None:
        path = self.files.latest_checkpoint() if saved else self.save_checkpoint()
        where = path or self.files.checkpoints
        raise Interrupted(
            f"interrupted ({self.stop.signal or 'signal on another rank'}) at step {self.step} of "
            f"{self.total_steps}; checkpoint saved to {where}. Continue with the same command plus --resume "
            f"(work dir {self.work_dir})"
        )

    def _train(self) -> dict[str, Any]:
        o, spe = self.opts, self.steps_per_epoch
        self.log.open_progress(self.total_steps, self.step, o["progress"], o["log_every"])
        self.t0, self.imgs = time.perf_counter(), 0
        try:
            while self.step < self.total_steps:
                epoch, skip = divmod(self.step, spe)
                it = iter(self._loader(epoch, skip * o["grad_accum"]))
                for _ in range(skip, spe):
                    if self.step >= self.total_steps:
                        break
                    self._one_step(it, epoch)
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
            last = self.files.latest_checkpoint()
            log.error(
                f"STOPPED: {e}. The last good checkpoint is {last or '(none written yet)'}; nothing after it was saved."
            )
            raise
        finally:
            self.log.close_progress()
        return self._summary()

    def _loader(self, epoch: int, start_batch: int = 0, dataset: Any = None, train: bool = True) -> Any:
        o = self.opts
        return make_loader(
            dataset if dataset is not None else self.train_set,
            batch_size=o["batch_size"] if train else o["eval_batch_size"] or o["batch_size"],
            seed=o["seed"],
            epoch=epoch,
            collate=self.task.collate,
            rank=0 if o["fsdp"] and not train else self.rank,  # FSDP: every rank evaluates all (collective forwards)
            world=1 if o["fsdp"] and not train else self.world,
            train=train,
            start_batch=start_batch,
            num_workers=o["num_workers"],
            pin_memory=self.device.type == "cuda",
        )

    def _one_step(self, it: Any, epoch: int) -> None:
        t = time.perf_counter()
        base = self.schedule.apply(self.optimizer, self.step, self.weight_decays)
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
            with sync, sdpa_context(self.opts["sdpa_backends"]):  # backward too: checkpointing recomputes there
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
            check_gradients(self.optimizer, self.step)
        every_step = self.opts["log_grad_norms"] or self.cfg.strategy.get("log_grad_norms", False)
        measure = not self.opts["fsdp"] and self.tracker.due(
            self.step, self.steps_per_epoch, self.total_steps, every_step
        )
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
            self.ema.update(self.bare_model(), self.step)
        if measure:
            self.log.diagnostics(self.tracker.after(self.optimizer, self.step))

    # ------------------------------------------------------------------------------------- eval
    def bare_model(self) -> nn.Module:
        """The model without DDP / compile wrappers: evaluation shards are uneven, DDP forwards would hang."""
        return unwrap_model(self.model)

    def eval_loader(self, dataset: Any) -> Any:
        """A rank-sharded evaluation loader over ``dataset`` (what a task's ``final_report`` gets)."""
        return self._loader(0, dataset=dataset, train=False)

    def evaluate(self, split: str = "val", weights: str = "model") -> dict[str, float]:
        """The task's metrics of the model (``weights="ema"``: its EMA) on ``data.<split>``, on every rank.

        ``split``: one of the task's ``data_splits`` that the config fills (``train``, ``val``; classification ``test``).
        """
        if weights not in ("model", "ema") or (weights == "ema" and self.ema is None):
            hint = "'model' or 'ema'" if self.ema else "'model' (this run keeps no EMA: train.ema is unset)"
            raise BadInput(f"evaluate(weights={weights!r}): {hint}")
        if split not in self.task.data_splits:
            raise BadInput(
                f"evaluate({split!r}): {type(self.task).__name__} reads the splits {list(self.task.data_splits)}"
            )
        data = {"train": self.train_set, "val": self.val_set}.get(split) or self.task.dataset(split)
        if data is None:
            raise BadInput(f"evaluate({split!r}): the config has no data.{split} section")
        return self._metrics(self.ema.module if weights == "ema" else self.bare_model(), data)

    def _metrics(self, module: nn.Module, dataset: Any) -> dict[str, float]:
        loader = WithProgress(self.eval_loader(dataset), "eval", self.is_main and bool(self.opts["progress"]))
        with sdpa_context(self.opts["sdpa_backends"]):  # a bar while it runs (70 s on RF-DETR's val set)
            return self.task.evaluate(module, loader, self.device)

    def _end_of_epoch(self, epoch: int) -> None:
        if self.val_set is None:
            return
        metrics = self._metrics(self.bare_model(), self.val_set)
        media = self.task.evaluation_media()
        if self.ema is not None:
            metrics.update({f"ema_{k}": v for k, v in self._metrics(self.ema.module, self.val_set).items()})
            media.update({f"ema_{k}": v for k, v in self.task.evaluation_media().items()})
        metrics = gather_objects(metrics)[0] if self.opts["fsdp"] else metrics  # rank 0's decide best.pt
        improved = self.files.consider(metrics, epoch + 1, self.task.primary_metric, self.task.higher_is_better)
        self.last_metrics = metrics
        self.log.evaluation(self.step, epoch + 1, metrics)
        self.log.media(self.step, media)
        shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        log.info(f"[eval] epoch {epoch + 1} step {self.step}: {shown}")
        if improved:
            self._save_best(metrics)

    # ------------------------------------------------------------------------------------- save
    def _weights_state(self, weights: dict[str, Any]) -> dict[str, Any]:
        """The weights and what rebuilds their model; ``frozen_omitted``: a mostly frozen model (LoRA) saves its
        trainable tensors and buffers, and a reader rebuilds the rest from the config (``trainable_state``)."""
        return {
            "model": weights,
            "frozen_omitted": not self.save_full,
            "frozen_fingerprint": self.fingerprint,
            "class_names": list(self.task.class_names),
            "config": self.cfg.pretty_text,
            "model_cfg": str(dict(self.cfg.model)),
        }

    def _save_best(self, metrics: dict[str, float]) -> None:
        """``best.pt``: the weights (plain or EMA) that scored best, for inference and fine-tuning, not resume."""
        if self.files.best is not None:  # every rank: FSDP gathers the weights to rank 0
            module = self.ema.module if self.files.best[2] == "ema" else self.bare_model()
            weights = fsdp.trainable_only(fsdp.full_state(module), self.bare_model(), self.save_full)
            if self.is_main:
                self.files.save_best(self._weights_state(weights), self.task.primary_metric, self.step, metrics)

    def save_checkpoint(self) -> Path | None:
        """``checkpoints/step_XXXXXXX.pt`` (atomic) and the ``checkpoints/last`` pointer; keeps ``keep_ckpts``."""
        rngs = gather_objects(rng_state())
        whole, optimizer, bad = fsdp.run_state(self.bare_model(), self.ema, self.optimizer)  # rank 0's under FSDP
        if bad is not None:  # never write weights that cannot be resumed from (same on every rank)
            raise NonFiniteLoss(f"the weights hold NaN/inf at step {self.step} ({bad}); not saved")
        if not self.is_main:
            return None
        best = self.files.best
        state = {
            **self._weights_state(fsdp.trainable_only(whole["model"], self.bare_model(), self.save_full)),
            "task": self.task.state_dict(),
            "optimizer": optimizer,
            "fsdp": self.opts["fsdp"],
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": fsdp.trainable_only(whole["ema"], self.bare_model(), self.save_full) if self.ema else None,
            "step": self.step,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.world,
            "rng": rngs,
            "best": list(best) if best else None,
        }
        return self.files.save_checkpoint(state, self.step)

    def _summary(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        summary: dict[str, Any] = {
            "steps": self.step, "epochs": self.step / self.steps_per_epoch, "wall_s": wall,
            "img_per_s": self.imgs / max(wall, 1e-9), "trainable_params": self.trainable,
            "total_params": self.total_params, "final_loss": self.history[-1][1] if self.history else None,
        }  # fmt: skip
        summary["val"] = getattr(self, "last_metrics", {})
        if self.cfg.get("policy"):
            from recipes.policies import trainable_counts

            summary["trainable_by_role"] = trainable_counts(self.bare_model())
        summary.update(self.files.best_entries(self.task.primary_metric))
        with sdpa_context(self.opts["sdpa_backends"]):  # the task's last evaluations (calibration, test split)
            summary.update(self.task.final_report(self.bare_model(), self.device, self.eval_loader))
        self.files.write_summary(summary)
        self.log.close()
        return summary
