"""Search spaces for ``tools/tune.py``: which config keys vary and over what, checked before any trial runs.

A space file is a config file (read like any config, no ``_base_``)::

    metric = "top1"                     # default: the task's primary metric (the one best.pt is picked by)
    direction = "maximize"              # needed only for a metric that is not the task's primary one
    sampler = dict(type="tpe", seed=0, n_startup_trials=6)
    pruner = dict(type="median", n_startup_trials=4, n_warmup_steps=1)   # or "successive_halving", "none"
    params = {
        "strategy.lr": dict(type="log_uniform", low=2e-4, high=5e-3),
        "strategy.decay": dict(type="uniform", low=0.5, high=0.95),
        "strategy.component_scale.head": dict(type="log_uniform", low=1.0, high=20.0),
        "schedule.warmup_steps": dict(type="int", low=0, high=24, step=4),
        "policy": dict(type="choice", choices=dict(full=None, lora_only=dict(type="lora_only", r=8))),
    }

Each key is a dotted path into the trained config. ``choice`` choices are named (a list of plain values
names each by itself); a dict choice replaces the whole section. Before any trial runs, every key must
exist in the config (or be an option its section's class takes, such as ``strategy.component_scale.*``)
and every corner of the space (each range's ends, each choice) must pass the option's own checks.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmengine import Config

PARAM_TYPES = ("log_uniform", "uniform", "int", "choice")
SPACE_KEYS = ("params", "metric", "direction", "sampler", "pruner")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "successive_halving", "none")
#: options whose value is a mapping the user fills (a new key under them is not a typo)
MAPPING_OPTIONS = ("component_scale", "component_lr")


class SpaceError(ValueError):
    """A space that cannot run: names the space file and the key."""


@dataclass(frozen=True)
class Param:
    """One searched config key."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[tuple[str, Any], ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The trial's value for this key (the config value, not the choice's name)."""
        if self.kind == "choice":
            return self.value_of(trial.suggest_categorical(self.key, [n for n, _ in self.choices]))
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "log_uniform", step=self.step)

    def value_of(self, optuna_value: Any) -> Any:
        """A stored trial parameter as the config value (a choice's name -> its value)."""
        if self.kind != "choice":
            return optuna_value
        return dict(self.choices)[optuna_value]

    def corners(self) -> list[Any]:
        if self.kind == "choice":
            return [v for _, v in self.choices]
        return [int(self.low), int(self.high)] if self.kind == "int" else [self.low, self.high]


@dataclass(frozen=True)
class Space:
    path: Path
    params: tuple[Param, ...]
    metric: str | None
    direction: str | None
    sampler: dict[str, Any]
    pruner: dict[str, Any]


def nearest(key: str, known: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known``, or the known keys when none is close."""
    near = difflib.get_close_matches(key, known, n=1)
    if near:
        return f" (did you mean {near[0]!r}?)"
    return f" (known: {', '.join(sorted(known)[:20])})" if known else ""


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpaceError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _param(where: str, key: str, spec: Any) -> Param:
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise SpaceError(f"{where}: expected dict(type=one of {PARAM_TYPES}, ...), got {spec!r}")
    kind = spec["type"]
    if kind not in PARAM_TYPES:
        raise SpaceError(f"{where}.type: {kind!r} is not one of {PARAM_TYPES}")
    allowed = {"choice": {"type", "choices"}}.get(kind, {"type", "low", "high", "step", "log"})
    extra = sorted(set(spec) - allowed)
    if extra:
        raise SpaceError(f"{where}: a {kind} parameter takes no `{extra[0]}`{nearest(extra[0], sorted(allowed))}")
    if kind == "choice":
        choices = spec.get("choices")
        if isinstance(choices, (list, tuple)):
            if not all(c is None or isinstance(c, (str, int, float, bool)) for c in choices):
                raise SpaceError(
                    f"{where}.choices: name dict-valued choices, e.g. choices=dict(full=None, lora=dict(...))"
                )
            choices = {str(c): c for c in choices}
        if not isinstance(choices, Mapping) or len(choices) < 2:
            raise SpaceError(f"{where}.choices: expected at least two choices (a list, or a dict name -> value)")
        return Param(key, kind, choices=tuple((str(n), _plain(v)) for n, v in choices.items()))
    if "low" not in spec or "high" not in spec:
        raise SpaceError(f"{where}: a {kind} parameter needs `low` and `high`")
    low, high = _number(f"{where}.low", spec["low"]), _number(f"{where}.high", spec["high"])
    if not low < high:
        raise SpaceError(f"{where}: low={low:g} must be below high={high:g}")
    log = kind == "log_uniform" or bool(spec.get("log", False))
    if log and low <= 0:
        raise SpaceError(f"{where}: a log-scale range needs low > 0, got {low:g}")
    step = spec.get("step")
    if step is not None:
        step = _number(f"{where}.step", step)
        if step <= 0 or (kind == "log_uniform"):
            raise SpaceError(f"{where}.step: needs step > 0 and a linear scale (uniform / int)")
    if kind == "int" and (low != int(low) or high != int(high)):
        raise SpaceError(f"{where}: an int parameter needs whole-number low / high, got {low:g}, {high:g}")
    return Param(key, kind, low, high, step, log)


def _plain(value: Any) -> Any:
    """ConfigDict -> dict (recursively), so written configs and trial values are plain Python."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def load_space(path: str | Path) -> Space:
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"--space {str(path)!r} does not exist (shipped spaces: configs/tune/)")
    raw = Config.fromfile(str(path)).to_dict()
    for key in raw:
        if key not in SPACE_KEYS and not key.startswith("_"):  # `_name`: a helper variable of the file
            raise SpaceError(f"space {path}: `{key}` is not read by anything{nearest(key, list(SPACE_KEYS))}")
    params = raw.get("params")
    if not isinstance(params, Mapping) or not params:
        raise SpaceError(f"space {path}: `params` must be a non-empty dict of config key -> dict(type=...)")
    sampler = dict(raw.get("sampler") or {"type": "tpe"})
    pruner = dict(raw.get("pruner") or {"type": "median"})
    if sampler.get("type") not in SAMPLERS:
        raise SpaceError(f"space {path}: sampler.type must be one of {SAMPLERS}, got {sampler.get('type')!r}")
    if pruner.get("type") not in PRUNERS:
        raise SpaceError(f"space {path}: pruner.type must be one of {PRUNERS}, got {pruner.get('type')!r}")
    direction = raw.get("direction")
    if direction not in (None, "maximize", "minimize"):
        raise SpaceError(f"space {path}: direction must be 'maximize' or 'minimize', got {direction!r}")
    return Space(
        path,
        tuple(_param(f"space {path}: params[{k!r}]", k, v) for k, v in params.items()),
        raw.get("metric"),
        direction,
        sampler,
        pruner,
    )


def nested(values: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"strategy.lr": 1e-3}`` -> ``{"strategy": {"lr": 1e-3}}``. A dict value replaces its whole section: it
    carries mmengine's ``_delete_`` where ``base`` (the config written on top of) already has that key."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node, below = out, base
        for p in parents:
            node = node.setdefault(p, {})
            below = below.get(p) if isinstance(below, Mapping) else None
        replaces = isinstance(below, Mapping) and isinstance(below.get(leaf), Mapping)
        node[leaf] = {"_delete_": True, **value} if isinstance(value, Mapping) and replaces else value
    return out
