"""What a run writes besides checkpoints: per-step CSV, TensorBoard, eval JSON lines, diagnostics.

Files in the work dir:
  ``train_log.csv``   step, epoch, loss, base_lr, one ``lr/<group name>`` column per group, img_per_s
  ``eval_log.jsonl``  one object per evaluation (step, epoch, metrics)
  ``diagnostics.csv`` step, group, grad_norm, update_norm, update_cos
  ``tb/``             the same scalars for TensorBoard, and the images a task makes at each evaluation
                      (:meth:`Task.evaluation_media`: e.g. diffusion sample grids) under ``media/<tag>``
Resuming into the same work dir keeps the rows before the resumed step and drops the later ones.

Messages go through one channel: Python logging, logger ``recipes`` (and its children), printed by
:func:`setup_logging`'s handler with ``tqdm.write`` so they appear above the progress bar, once.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from recipes.train.checkpoint import write_text_atomic

TRAIN_CSV, EVAL_JSONL, DIAG_CSV = "train_log.csv", "eval_log.jsonl", "diagnostics.csv"
DIAG_FIELDS = ["step", "group", "grad_norm", "update_norm", "update_cos"]


class TqdmHandler(logging.Handler):
    """Writes records with ``tqdm.write`` (above an active progress bar) to the current ``sys.stdout``."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # noqa: BLE001 - logging must never break training
            self.handleError(record)


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return msg if record.levelno < logging.WARNING else f"{record.levelname}: {msg}"


def setup_logging(main_process: bool = True) -> logging.Logger:
    """The ``recipes`` logger with one tqdm-safe handler (idempotent); other ranks print warnings only.

    When the application already prints log records to the console (a plain ``StreamHandler`` on
    the root logger, e.g. ``logging.basicConfig()``), no handler is added: the records reach the
    console once, through the application's handler.
    """
    logger = logging.getLogger("recipes")
    console = any(type(h) is logging.StreamHandler for h in logging.getLogger().handlers)
    if not console and not any(isinstance(h, TqdmHandler) for h in logger.handlers):
        handler = TqdmHandler()
        handler.setFormatter(_Format("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if main_process else logging.WARNING)
    return logger


def _set_aside(path: Path, why: str) -> None:
    """Keep a damaged log for the user under another name, and say so (the run goes on with a fresh one)."""
    dest = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, dest)
    msg = f"{path} cannot be read ({why}); it was moved to {dest.name} and a new log is started"
    logging.getLogger("recipes").warning(msg)


def _truncate_csv(path: Path, start_step: int) -> None:
    if not path.is_file():
        return
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        keep = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) < start_step]
    except (ValueError, IndexError, UnicodeDecodeError, csv.Error) as e:
        _set_aside(path, str(e))
        return
    buf = io.StringIO()
    csv.writer(buf).writerows(keep)
    write_text_atomic(path, buf.getvalue())


def _truncate_jsonl(path: Path, start_step: int) -> None:
    """Keep the evaluations up to the resumed step; rewritten atomically, a damaged file set aside."""
    if not path.is_file():
        return
    try:
        rows = [(ln, json.loads(ln)) for ln in path.read_text().splitlines() if ln.strip()]
        lines = [ln for ln, row in rows if int(row["step"]) <= start_step]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        _set_aside(path, str(e))
        return
    write_text_atomic(path, "".join(ln + "\n" for ln in lines))


class RunLog:
    """Rank 0's writer; other ranks get ``RunLog(None, ...)``, which writes nothing."""

    def __init__(
        self, work_dir: Path | None, group_names: list[str], start_step: int = 0, tensorboard: bool = True
    ) -> None:
        self.dir = work_dir
        self.fields = ["step", "epoch", "loss", "base_lr"] + [f"lr/{n}" for n in group_names] + ["img_per_s"]
        self.tb = self.bar = None
        self.total_steps = self.log_every = 0
        if work_dir is None:
            return
        for name in (TRAIN_CSV, DIAG_CSV):
            _truncate_csv(work_dir / name, start_step)
        _truncate_jsonl(work_dir / EVAL_JSONL, start_step)
        self._csv = self._open_csv(TRAIN_CSV, self.fields)
        self._diag = self._open_csv(DIAG_CSV, DIAG_FIELDS)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(work_dir / "tb"), purge_step=start_step)

    def _open_csv(self, name: str, fields: list[str]) -> tuple[Any, csv.DictWriter]:
        path = self.dir / name
        new = not path.is_file() or path.stat().st_size == 0
        f = open(path, "a", newline="")  # noqa: SIM115 - kept open for the run
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        return f, w

    def open_progress(self, total_steps: int, initial: int, show: bool, log_every: int) -> None:
        """A progress bar over the run's steps (``show``); without one, a ``[train]`` line every ``log_every`` steps."""
        from tqdm import tqdm

        main = self.dir is not None
        self.bar = tqdm(total=total_steps, initial=initial, disable=not (show and main), mininterval=1.0, desc="train")
        self.total_steps, self.log_every = total_steps, 0 if show else log_every

    def close_progress(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _show(self, row: dict[str, Any]) -> None:
        step, loss, lr, rate = row["step"] + 1, row["loss"], row["base_lr"], row["img_per_s"]
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}", refresh=False)
            self.bar.update(1)
        if self.log_every and step % self.log_every == 0:
            logging.getLogger("recipes.train").info(
                f"[train] step {step}/{self.total_steps} epoch {row['epoch'] + 1} loss {loss:.4f} lr {lr:.4g} "
                f"img/s {rate:.0f}"
            )

    def step(self, row: dict[str, Any], extra: dict[str, float]) -> None:
        """One optimizer step's row (``step``, ``epoch``, ``loss``, ``base_lr``, ``lr/<group>``, ``img_per_s``)."""
        if self.dir is None:
            return
        self._show(row)
        f, w = self._csv
        w.writerow(row)
        f.flush()
        if self.tb is not None:
            s = row["step"]
            self.tb.add_scalar("train/loss", row["loss"], s)
            self.tb.add_scalar("lr/base", row["base_lr"], s)
            for k, v in row.items():
                if k.startswith("lr/"):
                    self.tb.add_scalar(k, v, s)
            for k, v in extra.items():
                self.tb.add_scalar(f"train/{k}", v, s)

    def diagnostics(self, rows: list[dict[str, Any]]) -> None:
        if self.dir is None or not rows:
            return
        f, w = self._diag
        w.writerows(rows)
        f.flush()
        if self.tb is not None:
            for r in rows:
                for k in ("grad_norm", "update_norm", "update_cos"):
                    if not math.isnan(r[k]):
                        self.tb.add_scalar(f"{k}/{r['group']}", r[k], r["step"])

    def evaluation(self, step: int, epoch: int, metrics: dict[str, float], tag: str = "val") -> None:
        if self.dir is None:
            return
        with open(self.dir / EVAL_JSONL, "a") as f:
            f.write(json.dumps({"step": step, "epoch": epoch, "split": tag, **metrics}) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"{tag}/{k}", v, step)

    def media(self, step: int, media: dict[str, Any]) -> None:
        """Images ``(H, W, 3)`` and videos ``(T, H, W, 3)`` (uint8) to TensorBoard as ``media/<tag>``.

        A video goes through ``add_video`` when moviepy (which TensorBoard's GIF encoder needs) is
        installed, else as its frames (``add_images``: one image of the frames side by side).
        """
        if self.tb is None or not media:
            return
        import importlib.util

        for tag, value in media.items():
            arr = np.asarray(value)
            if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
                raise ValueError(
                    f"media {tag!r}: expected uint8 (H, W, 3) or (T, H, W, 3), got {arr.dtype} {arr.shape}"
                )
            if arr.ndim == 3:
                self.tb.add_image(f"media/{tag}", arr, step, dataformats="HWC")
            elif importlib.util.find_spec("moviepy") is not None:
                self.tb.add_video(f"media/{tag}", arr.transpose(0, 3, 1, 2)[None], step, fps=8)
            else:
                self.tb.add_images(f"media/{tag}", arr, step, dataformats="NHWC")
        self.tb.flush()

    def close(self) -> None:
        if self.dir is None:
            return
        for f, _ in (self._csv, self._diag):
            f.close()
        if self.tb is not None:
            self.tb.close()


def log_setup(groups: list[dict[str, Any]], model: Any, freeze_lines: list[str], by_role: bool) -> None:
    """The run's LR grid, its trainable parameter counts (``by_role``: per policy role) and its freeze plan."""
    from recipes.report import format_lr_grid
    from recipes.train.trainable_state import count_params

    log = logging.getLogger("recipes.train")
    log.info(format_lr_grid(groups, model, title="lr_grid"))
    trainable, total = count_params(model)
    roles = ""
    if by_role:
        from recipes.policies import trainable_counts

        roles = " by role " + ", ".join(f"{k} {v:,}" for k, v in trainable_counts(model).items() if k != "total")
    log.info(f"[params] trainable {trainable:,} of {total:,} ({100 * trainable / max(1, total):.2f}%){roles}")
    for line in freeze_lines:
        log.info(f"[freeze] {line}")
