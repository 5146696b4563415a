"""Loading configs (mmengine ``Config``) and deriving schedule lengths from them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmengine.config import Config, DictAction


def load_config(path: str | Path, options: Sequence[str] = ()) -> Config:
    """``Config.fromfile`` (``_base_`` inheritance, ``custom_imports``) plus ``key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {str(path)!r} does not exist; the shipped ones are in configs/")
    cfg = Config.fromfile(str(path))
    if options:
        parser_action = DictAction(option_strings=[], dest="opts")
        ns: dict[str, Any] = {}

        class _NS:
            pass

        holder = _NS()
        parser_action(None, holder, list(options))
        ns = holder.opts
        cfg.merge_from_dict(ns)
    for key in ("model", "recipe", "schedule"):
        if key not in cfg:
            raise KeyError(f"config {str(path)!r}: missing the `{key}` section")
    return cfg


def schedule_steps(cfg: Config, steps_per_epoch: int | None = None) -> tuple[int, int | None]:
    """(total optimizer steps, steps per epoch) from ``train.max_steps`` or ``train.epochs``.

    ``steps_per_epoch`` comes from the argument, else ``train.steps_per_epoch``, else the training
    set's length and ``train.batch_size`` / ``train.grad_accum``.
    """
    train = cfg.get("train", {})
    if steps_per_epoch is None:
        steps_per_epoch = train.get("steps_per_epoch")
    if steps_per_epoch is None and "data" in cfg and train.get("epochs"):
        from recipes.registry import DATASETS

        n = len(DATASETS.build(cfg.data["train"]))
        batch = train.get("batch_size", 1) * train.get("grad_accum", 1)
        steps_per_epoch = max(1, n // batch if train.get("drop_last", True) else math.ceil(n / batch))
    if train.get("max_steps"):
        return int(train["max_steps"]), steps_per_epoch
    if not train.get("epochs") or not steps_per_epoch:
        raise ValueError("config: set train.max_steps, or train.epochs with a dataset (or --steps-per-epoch)")
    return int(train["epochs"]) * int(steps_per_epoch), int(steps_per_epoch)
