"""The files a run keeps in its work dir: step checkpoints, the best weights and the summary.

``RunFiles(work_dir, is_main, keep_ckpts)`` is the one object that writes them (on the main process only):

- ``prepare(cfg, resuming, step)``: take the work dir's lock, delete ``.tmp`` files an interrupted write left,
  move an earlier run's files to ``previous/<time>/`` (a fresh run) or a ``best.pt`` written after the resume
  point to ``previous/best_after_step_<step>/`` (a resumed one), and write ``config.py``;
- ``save_checkpoint(state, step)``: ``checkpoints/step_XXXXXXX.pt`` and the ``checkpoints/last`` pointer,
  keeping the newest ``keep_ckpts``;
- ``consider(metrics, epoch, ...)`` keeps the best score so far (plain or EMA weights), ``save_best(state, info)``
  writes ``best.pt`` and ``best.json`` (derived from it);
- ``write_summary`` / ``read_summary``: ``summary.json``.

Every write is atomic (``checkpoint.save_atomic`` / ``write_text_atomic``). The logs (``train_log.csv``,
``eval_log.jsonl``, ``diagnostics.csv``) are ``run_log.RunLog``'s.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from recipes.train.checkpoint import (
    BEST,
    BEST_INFO,
    LAST,
    latest_checkpoint,
    load_checkpoint,
    remove_stale_tmp,
    safe_load,
    save_atomic,
    write_text_atomic,
)
from recipes.train.errors import BadInput
from recipes.train.workdir import WorkDirLock

log = logging.getLogger("recipes.train")

SUMMARY = "summary.json"
BEST_INFO_KEYS = ("metric", "value", "epoch", "step", "weights", "metrics")  # best.pt entries copied to best.json
LOGS = ("eval_log.jsonl", "train_log.csv", "diagnostics.csv")  # RunLog's files, rewritten on resume


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class RunFiles:
    """A run's checkpoints, best weights and summary in ``work_dir``; ``best`` is ``(value, epoch, weights)``."""

    def __init__(self, work_dir: Path, is_main: bool, keep_ckpts: int) -> None:
        self.work_dir, self.is_main, self.keep_ckpts = Path(work_dir), is_main, keep_ckpts
        self.checkpoints = self.work_dir / "checkpoints"
        self.best: tuple[float, int, str] | None = None
        self.lock: WorkDirLock | None = None

    # ------------------------------------------------------------------------------------- the work dir
    def prepare(self, cfg: Any, resuming: bool, step: int) -> None:
        """Lock and set up the work dir; a fresh run moves an earlier run's files aside instead of overwriting them."""
        if not self.is_main:
            return
        self.lock = WorkDirLock(self.work_dir).acquire()  # before anything in it is moved or written
        for tmp in remove_stale_tmp(self.work_dir, (BEST, BEST_INFO, SUMMARY, *LOGS)):
            log.info(f"[work_dir] removed {tmp}, left by an interrupted write")
        old = [p for p in self.work_dir.iterdir() if p.name not in ("previous", ".lock")]
        if old and not resuming:
            dest = self.work_dir / "previous" / time.strftime("%Y%m%d-%H%M%S")
            dest.mkdir(parents=True, exist_ok=True)
            for p in old:
                shutil.move(str(p), str(dest / p.name))
            log.info(f"[work_dir] an earlier run's files were moved to {dest}")
        if resuming:
            self._set_aside_later_best(step)
        cfg.dump(str(self.work_dir / "config.py"))

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def _set_aside_later_best(self, step: int) -> None:
        """Resuming from ``step``: a best.pt written after it belongs to the abandoned branch.

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
        if int(saved["step"]) <= step:
            return
        dest = self.work_dir / "previous" / f"best_after_step_{step}"
        dest.mkdir(parents=True, exist_ok=True)
        for name in (BEST, BEST_INFO):
            if (self.work_dir / name).exists():
                shutil.move(str(self.work_dir / name), str(dest / name))
        log.info(
            f"[resume] the best checkpoint was written at step {saved['step']}, after this resume point "
            f"(step {step}); moved to {dest}"
        )

    # ------------------------------------------------------------------------------------- checkpoints
    def read_resume(self, resume: str | Path | bool | None) -> dict[str, Any] | None:
        """The checkpoint ``--resume`` names (True: the newest in this work dir), or None for a fresh run."""
        if not resume:
            return None
        return load_checkpoint(self.work_dir if resume is True else Path(resume))

    @staticmethod
    def check_schedule(ckpt: dict[str, Any] | None, total_steps: int, steps_per_epoch: int) -> None:
        """Warn when a resumed run's schedule length differs from the checkpoint's (its LR curve changes)."""
        if ckpt is None or (ckpt.get("total_steps"), ckpt.get("steps_per_epoch")) == (total_steps, steps_per_epoch):
            return
        log.warning(
            f"the schedule changed since the checkpoint: it was {ckpt.get('total_steps')} steps "
            f"({ckpt.get('steps_per_epoch')} per epoch), this config gives {total_steps} ({steps_per_epoch} per "
            f"epoch); the LR curve from step {ckpt['step']} on is not the one the run started with"
        )

    def save_checkpoint(self, state: dict[str, Any], step: int) -> Path:
        """``checkpoints/step_XXXXXXX.pt`` (atomic), then the ``last`` pointer; older ones beyond ``keep_ckpts`` go."""
        path = self.checkpoints / f"step_{step:07d}.pt"
        save_atomic(state, path)
        write_text_atomic(self.checkpoints / LAST, path.name)
        for old in sorted(self.checkpoints.glob("step_*.pt"))[: -self.keep_ckpts]:
            old.unlink()
        return path

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.checkpoints)

    # ------------------------------------------------------------------------------------- best
    def load_best(self, saved: list[Any] | None) -> None:
        """The best score a checkpoint carried (``[value, epoch, weights]``; older ones lack ``weights``)."""
        self.best = (float(saved[0]), int(saved[1]), str(saved[2]) if len(saved) > 2 else "model") if saved else None

    def consider(self, metrics: dict[str, float], epoch: int, key: str, higher_is_better: bool) -> str | None:
        """Keep ``metrics[key]`` (plain weights) or ``metrics["ema_" + key]`` if better; which improved, or None."""
        improved = None
        for source, name in (("model", key), ("ema", f"ema_{key}")):
            value = metrics.get(name)
            if value is None or not math.isfinite(value):
                continue
            if self.best is None or (value > self.best[0] if higher_is_better else value < self.best[0]):
                self.best, improved = (float(value), epoch, source), source
        return improved

    def best_entries(self, metric: str) -> dict[str, Any]:
        """``best_<metric>``, ``best_epoch`` and ``best_weights`` for the summary (none before any evaluation)."""
        if self.best is None:
            return {}
        return dict(zip((f"best_{metric}", "best_epoch", "best_weights"), self.best, strict=True))

    def save_best(self, state: dict[str, Any], metric: str, step: int, metrics: dict[str, float]) -> Path:
        """``best.pt``: ``state`` (the weights that scored ``best``) with what they scored, then ``best.json``.

        best.pt holds the entries of best.json too: on resume best.json is re-derived from it.
        """
        if self.best is None:
            raise ValueError("save_best before any score was considered")
        value, epoch, source = self.best
        scores = {k: float(v) for k, v in metrics.items()}
        info = {"metric": metric, "value": value, "epoch": epoch, "step": step, "weights": source, "metrics": scores}
        path = self.work_dir / BEST
        save_atomic({**state, **info}, path)
        write_text_atomic(self.work_dir / BEST_INFO, json.dumps(info, indent=2))
        log.info(f"[best] {metric}={value:.4g} ({source} weights) at epoch {epoch}, step {step}: {path}")
        return path

    # ------------------------------------------------------------------------------------- summary
    def write_summary(self, summary: dict[str, Any]) -> None:
        """``summary.json`` (main process), and the summary logged with 4 significant digits."""
        if self.is_main:
            write_text_atomic(self.work_dir / SUMMARY, json.dumps(summary, indent=2, default=float))
        log.info("[summary] " + json.dumps(summary, default=lambda v: round(float(v), 4)))

    def read_summary(self) -> dict[str, Any] | None:
        path = self.work_dir / SUMMARY
        return _read_json(path) if path.is_file() else None
