"""Loading configs (mmengine ``Config``), the ``train`` options, and the run's length in steps.

The whole config is checked by :func:`recipes.train.config_check.check_config` before anything is built.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmengine.config import Config, DictAction

from recipes.options import accepted_options, check_keys, unknown_key_error
from recipes.train.errors import BadInput

__all__ = ["accepted_options", "build_with_keys", "check_keys", "load_config", "train_options", "unknown_key_error"]


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
            opts: dict[str, Any]

        merged: dict[str, Any] = {}
        for option in options:  # one at a time, so an error names the option
            key, _, value = option.partition("=")
            if value.strip().startswith("{"):
                raise BadInput(f"--cfg-options {option!r}: a dict cannot be given whole; set its keys one by one, "
                               f"e.g. {key}.type=...")  # fmt: skip
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
        cfg = Config.fromfile(str(path), import_custom_modules=False)
    except SyntaxError as e:
        where, msg = _syntax_error_in(path) or (f"{e.filename}:{e.lineno}" if e.lineno else str(path), e.msg)
        raise BadInput(f"config {where}: syntax error: {msg}") from None
    except (NameError, ImportError, AttributeError) as e:
        raise BadInput(f"config {_failing_line(e) or path}: {type(e).__name__}: {e}") from None
    custom = cfg.get("custom_imports") or {}
    for name in custom.get("imports", []):
        try:
            _import_beside(name, path.resolve().parent)
        except ImportError as e:
            if custom.get("allow_failed_imports"):
                continue
            raise BadInput(
                f"config {str(path)!r}: custom_imports: {type(e).__name__}: {e}; modules are looked up beside the "
                f"config ({path.resolve().parent}), on PYTHONPATH and among the installed packages"
            ) from None
    return cfg


def _syntax_error_in(path: Path, seen: frozenset[Path] = frozenset()) -> tuple[str, str] | None:
    """``(file:line, message)`` of the first syntax error in ``path`` or its ``_base_`` files (mmengine parses
    some of them without a file name, so its error says ``<unknown>``)."""
    path = path.resolve()
    if path in seen or path.suffix != ".py" or not path.is_file():
        return None
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as e:
        return f"{path}:{e.lineno}", str(e.msg)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_" for t in node.targets):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                return None
            for base in [bases] if isinstance(bases, str) else list(bases):
                found = _syntax_error_in(path.parent / str(base), seen | {path})
                if found:
                    return found
    return None


def _import_beside(name: str, folder: Path) -> Any:
    """``import name``; a top-level package not on ``sys.path`` is looked up in ``folder`` (the config's)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        top = name.split(".")[0]
        spec = importlib.machinery.PathFinder.find_spec(top, [str(folder)]) if e.name == top else None
        if spec is None:
            raise
        module = importlib.util.module_from_spec(spec)
        sys.modules[top] = module  # the package beside the config; its submodules import through it
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader.exec_module(module)  # a namespace package (no __init__.py) has nothing to run
        return importlib.import_module(name)


def _failing_line(e: BaseException) -> str | None:
    """The line of the config file (or its _base_) that failed: the last frame outside mmengine and this file."""
    tb, line = e.__traceback__, None
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.endswith(".py") and "mmengine" not in name and name != __file__:
            line = f"{name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return line


def _count(key: str, value: Any, low: int = 1) -> int:
    """A whole number >= ``low``: ``abc``, ``2.5`` or ``-3`` are errors naming the key, never truncated."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < low:
        raise BadInput(f"{key} must be a whole number >= {low}, got {value!r}")
    return int(value)


# Every `train.*` option the engine reads, with its default (docs/training.md explains each).
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": None, "max_steps": None, "steps_per_epoch": None, "batch_size": 32, "eval_batch_size": None,
    "grad_accum": 1, "amp": None, "clip_grad": None, "compile": False, "channels_last": False, "ema": None,
    "ckpt_every": None, "eval_every": None, "keep_ckpts": 3, "seed": 0, "num_workers": 0, "log_every": 10,
    "log_grad_norms": False, "tensorboard": True, "progress": True, "device": None, "num_threads": None,
    "freeze": None, "grad_checkpointing": False, "save_frozen": "auto", "bad_images": "error", "fsdp": False,
    "sdpa_backends": None,
}  # fmt: skip
#: train.sdpa_backends: names -> torch.nn.attention.SDPBackend members
SDPA_BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "math": "MATH",
}
BAD_IMAGES = ("error", "skip")  # train.bad_images: what the setup-time data check does with an unreadable image
TRAIN_ALIASES = {"grad_clip": "clip_grad"}  # rfdetr's name for the same option
# Keys that once existed or that users carry over from other trainers, with what to do instead.
TRAIN_REMOVED = {
    "drop_last": "the engine always drops each rank's last partial batch (every rank takes the same number of "
    "steps, and the schedule length is exact); remove it",
    "lr": "the learning rates live in the strategy section (strategy.lr=...); remove train.lr",
}
# Top-level sections something reads.
SECTIONS = ("model", "task", "data", "data_root", "policy", "strategy", "adapter", "optimizer", "schedule", "train",
            "custom_imports", "default_scope", "work_dir")  # fmt: skip


def required_kwargs(fn: Callable[..., Any]) -> list[str]:
    """Keyword-passable parameters of ``fn`` without a default."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty and p.name != "self"]


def build_with_keys(fn: Callable[..., Any], kwargs: Mapping[str, Any], where: str) -> Any:
    """``fn(**kwargs)``; a keyword ``fn`` (or what it forwards to) does not take names ``<where><key>``."""
    known = accepted_options(fn)
    if known is not None:
        check_keys(where, kwargs, known)
    for name in required_kwargs(fn):
        if name not in kwargs:
            hint = " (set data_root, or this split's root)" if where.startswith("data.") and name == "root" else ""
            raise KeyError(f"config: `{where}{name}` is required{hint}")
    try:
        return fn(**kwargs)
    except TypeError as e:
        msg = str(e)
        if "unexpected keyword argument" not in msg:
            raise
        key = msg.rsplit("argument", 1)[-1].strip(" '\"")
        names = (accepted_options(fn) or set()) | callee_options(e)
        raise unknown_key_error(where, key, names, f" ({msg})") from None


def callee_options(e: TypeError) -> set[str]:
    """Keywords of the callable a ``**kwargs`` forwarder passed an unknown key to (for the did-you-mean)."""
    msg = str(e)
    m = re.match(r"(\w+)(?:\.__init__)?\(\)", msg)
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if m is None or tb is None:
        return set()
    frame = tb.tb_frame
    target = frame.f_locals.get(m.group(1), frame.f_globals.get(m.group(1)))
    if target is None:
        return set()
    return accepted_options(target) or set()


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
    if opts["save_frozen"] not in ("auto", True, False):
        raise ValueError(f"train.save_frozen must be 'auto', True or False, got {opts['save_frozen']!r}")
    for key in ("epochs", "max_steps", "steps_per_epoch"):
        if opts[key] is not None:
            opts[key] = _count(f"train.{key}", opts[key])
    for key in ("ckpt_every", "eval_every"):
        if opts[key] is not None:
            opts[key] = _count(f"train.{key}", opts[key])
    if opts["bad_images"] not in BAD_IMAGES:
        raise BadInput(f"train.bad_images must be one of {BAD_IMAGES}, got {opts['bad_images']!r}")
    if opts["sdpa_backends"] is not None:
        opts["sdpa_backends"] = _sdpa_names(opts["sdpa_backends"])
    return opts


def _sdpa_names(value: Any) -> list[str]:
    known = list(SDPA_BACKENDS)
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise BadInput(f"train.sdpa_backends must be a non-empty list of {known} (or None), got {value!r}")
    for name in value:
        if name not in SDPA_BACKENDS:
            near = difflib.get_close_matches(str(name), known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise BadInput(f"train.sdpa_backends: unknown attention kernel {name!r}{hint}; known: {known}")
    return list(value)


def sdpa_context(names: list[str] | None) -> contextlib.AbstractContextManager:
    """``train.sdpa_backends``: the kernels ``F.scaled_dot_product_attention`` may pick from (torch's ``sdpa_kernel``;
    among them, torch's order of preference) around every forward, backward and evaluation; None: torch's choice.
    Where none of them can run a call (``flash`` on float32 or with a mask), torch raises "No available kernel"."""
    if names is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, SDPA_BACKENDS[n]) for n in names])


def world_size() -> int:
    """Processes of this run (``WORLD_SIZE`` from torchrun; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def fill_data_root(data: Mapping[str, Any] | None, data_root: Any) -> dict[str, dict[str, Any] | None]:
    """The ``data`` section with ``root`` filled from ``data_root`` in every split that has none.

    The one place that does it: the tasks, ``schedule_steps`` and the tools all read data through it.
    """
    out: dict[str, dict[str, Any] | None] = {}
    for split, d in dict(data or {}).items():
        if d is None:
            out[split] = None
            continue
        d = dict(d)
        if d.get("root") is None and data_root is not None:
            d["root"] = data_root
        out[split] = d
    return out


def schedule_steps(cfg: Config, steps_per_epoch: int | None = None) -> tuple[int, int | None]:
    """(total optimizer steps, steps per epoch) from ``train.max_steps`` or ``train.epochs``.

    ``steps_per_epoch`` comes from the argument (the engine's, from its training set and world size),
    else ``train.steps_per_epoch``; without either, ``train.max_steps`` is required.
    """
    train = cfg.get("train", {})
    if steps_per_epoch is None:
        steps_per_epoch = train.get("steps_per_epoch")
    epochs = train.get("epochs")
    if epochs is not None:
        epochs = _count("train.epochs", epochs)
    if train.get("max_steps"):
        return _count("train.max_steps", train["max_steps"]), steps_per_epoch
    if not epochs or not steps_per_epoch:
        raise ValueError("config: set train.max_steps, or train.epochs with a dataset (or --steps-per-epoch)")
    return epochs * int(steps_per_epoch), int(steps_per_epoch)
