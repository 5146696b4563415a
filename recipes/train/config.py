"""Loading configs (mmengine ``Config``) and deriving schedule lengths from them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmengine.config import Config, DictAction

from recipes.train.errors import BadInput


def load_config(path: str | Path, options: Sequence[str] = ()) -> Config:
    """``Config.fromfile`` (``_base_`` inheritance, ``custom_imports``) plus ``key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {str(path)!r} does not exist; the shipped ones are in configs/")
    cfg = _read_config_file(path)
    if options:
        bad = [o for o in options if "=" not in o or o.startswith("=")]
        if bad:
            raise BadInput(f"--cfg-options {bad[0]!r}: expected key=value (e.g. train.epochs=10)")
        parser_action = DictAction(option_strings=[], dest="opts")

        class _NS:
            pass

        merged: dict[str, Any] = {}
        for option in options:  # one at a time, so an error names the option
            holder = _NS()
            try:
                parser_action(None, holder, [option])
            except (AssertionError, ValueError, SyntaxError) as e:  # mmengine asserts on unbalanced brackets
                raise BadInput(f"--cfg-options {option!r} cannot be parsed: {e}") from None
            merged.update(holder.opts)
        cfg.merge_from_dict(merged)
    if "recipe" in cfg:
        raise KeyError(
            f"config {str(path)!r}: the `recipe` section is now called `strategy` (the param-group strategy: "
            "layer_decay, component_depth, flat, ...); rename it"
        )
    for key in ("model", "strategy", "schedule"):
        if key not in cfg:
            raise KeyError(f"config {str(path)!r}: missing the `{key}` section")
    return cfg


def _read_config_file(path: Path) -> Config:
    """``Config.fromfile`` with a one-line error for a config that does not run (syntax, unknown name)."""
    try:
        return Config.fromfile(str(path))
    except SyntaxError as e:
        where = f"{e.filename}:{e.lineno}" if e.lineno else str(path)
        raise BadInput(f"config {where}: syntax error: {e.msg}") from None
    except (NameError, ImportError, AttributeError) as e:
        tb = e.__traceback__
        line = None
        while tb is not None:  # the line of the config file (or its _base_) that failed
            if tb.tb_frame.f_code.co_filename.endswith(".py") and "mmengine" not in tb.tb_frame.f_code.co_filename:
                line = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
            tb = tb.tb_next
        raise BadInput(f"config {line or path}: {type(e).__name__}: {e}") from None


def schedule_steps(cfg: Config, steps_per_epoch: int | None = None) -> tuple[int, int | None]:
    """(total optimizer steps, steps per epoch) from ``train.max_steps`` or ``train.epochs``.

    ``steps_per_epoch`` comes from the argument, else ``train.steps_per_epoch``, else the training
    set's length and ``train.batch_size`` / ``train.grad_accum``.
    """
    train = cfg.get("train", {})
    if steps_per_epoch is None:
        steps_per_epoch = train.get("steps_per_epoch")
    if steps_per_epoch is None and "data" in cfg and train.get("epochs"):
        from recipes.train.registry import DATASETS

        d = dict(cfg.data["train"])
        if d.get("root") is None and cfg.get("data_root") is not None:
            d["root"] = cfg.data_root  # as the tasks do
        n = len(DATASETS.build(d))
        batch = train.get("batch_size", 1) * train.get("grad_accum", 1)
        steps_per_epoch = max(1, n // batch if train.get("drop_last", True) else math.ceil(n / batch))
    if train.get("max_steps"):
        return _count("train.max_steps", train["max_steps"]), steps_per_epoch
    if not train.get("epochs") or not steps_per_epoch:
        raise ValueError("config: set train.max_steps, or train.epochs with a dataset (or --steps-per-epoch)")
    return _count("train.epochs", train["epochs"]) * int(steps_per_epoch), int(steps_per_epoch)


def _count(key: str, value: Any, low: int = 1) -> int:
    """A whole number >= ``low``: ``abc``, ``2.5`` or ``-3`` are errors naming the key, never truncated."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < low:
        raise BadInput(f"{key} must be a whole number >= {low}, got {value!r}")
    return int(value)


# Every `train.*` option the engine reads, with its default (docs/training.md explains each).
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": None, "max_steps": None, "steps_per_epoch": None, "batch_size": 32, "eval_batch_size": None,
    "grad_accum": 1, "amp": None, "clip_grad": None, "compile": False, "channels_last": False, "ema": None,
    "ckpt_every": None, "keep_ckpts": 3, "seed": 0, "num_workers": 0, "log_every": 10,
    "log_grad_norms": False, "tensorboard": True, "progress": True, "device": None, "num_threads": None,
    "bad_images": "error",
}  # fmt: skip
BAD_IMAGES = ("error", "skip")  # train.bad_images: what the setup-time data check does with an unreadable image
TRAIN_ALIASES = {"grad_clip": "clip_grad"}  # rfdetr's name for the same option
# Top-level sections something reads; anything else gets a warning.
SECTIONS = ("model", "task", "data", "data_root", "policy", "strategy", "adapter", "optimizer", "schedule", "train",
            "custom_imports", "default_scope", "work_dir")  # fmt: skip


def _warn_unread(where: str, keys: Sequence[str], known: Sequence[str]) -> None:
    import difflib
    import warnings

    for key in keys:
        if key.startswith("_") or key in known:
            continue
        near = difflib.get_close_matches(key, list(known), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        msg = f"config: `{where}{key}` is not read by anything{hint}; it has no effect"
        warnings.warn(msg, stacklevel=3)
        print(f"WARNING: {msg}")


def check_config(cfg: Config) -> None:
    """Warn about top-level sections and ``train.*`` keys nothing reads (typos, stale options)."""
    _warn_unread("", list(cfg.keys()), SECTIONS)
    _warn_unread("train.", list(cfg.get("train", {}).keys()), [*TRAIN_DEFAULTS, *TRAIN_ALIASES])


def train_options(cfg: Config) -> dict[str, Any]:
    """``train.*`` merged over :data:`TRAIN_DEFAULTS`, aliases resolved, numbers validated."""
    given = dict(cfg.get("train", {}))
    for alias, key in TRAIN_ALIASES.items():
        if alias in given:
            if key in given:
                raise ValueError(f"train: give `{key}` or its alias `{alias}`, not both")
            given[key] = given.pop(alias)
    opts = {**TRAIN_DEFAULTS, **{k: v for k, v in given.items() if k in TRAIN_DEFAULTS}}
    for key in ("batch_size", "grad_accum", "keep_ckpts"):
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"train.{key} must be an int >= 1, got {v!r}")
    if opts["num_workers"] < 0:
        raise ValueError(f"train.num_workers must be >= 0, got {opts['num_workers']}")
    for key in ("epochs", "max_steps", "steps_per_epoch"):
        if opts[key] is not None:
            opts[key] = _count(f"train.{key}", opts[key])
    if opts["ckpt_every"] is not None:
        opts["ckpt_every"] = _count("train.ckpt_every", opts["ckpt_every"])
    if opts["bad_images"] not in BAD_IMAGES:
        raise BadInput(f"train.bad_images must be one of {BAD_IMAGES}, got {opts['bad_images']!r}")
    return opts
