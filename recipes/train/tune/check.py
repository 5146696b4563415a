"""A space against the config it tunes: keys, corners and the metric, all before any trial runs."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any

from mmengine import Config

from recipes.param_groups import build_strategy
from recipes.registry import SCHEDULES, STRATEGIES, accepted_options
from recipes.schedules import build_schedule
from recipes.train.config import SECTIONS, check_config, train_options
from recipes.train.tune.space import MAPPING_OPTIONS, Space, SpaceError, nearest, nested

#: sections whose options a class declares: a key the config does not set yet may still be searched
_DECLARED = {"strategy": STRATEGIES, "schedule": SCHEDULES}


def _options_of(cfg: Config, section: str) -> set[str]:
    registry = _DECLARED.get(section)
    spec = cfg.get(section)
    if registry is None or not isinstance(spec, Mapping) or "type" not in spec:
        return set()
    cls = registry.get(spec["type"])
    names = set(accepted_options(cls)) if cls is not None else set()
    return names | {n[: -len("_steps")] + "_epochs" for n in names if n.endswith("_steps")}  # schedules take both


def check_key(cfg: Config, key: str, where: str) -> None:
    """The key exists in ``cfg``, or is an option its section's class declares, or an entry of a mapping option."""
    parts = key.split(".")
    node: Any = cfg.to_dict()
    for i, part in enumerate(parts):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
            continue
        if i == 0 and part in SECTIONS and len(parts) == 1:
            return  # a whole section the config leaves out (e.g. policy: full fine-tuning or LoRA)
        parent = parts[i - 1] if i else ""
        if parent in MAPPING_OPTIONS and i == len(parts) - 1:
            return  # strategy.component_scale.<component>: a new entry of a mapping the user fills
        if i == 1 and part in _options_of(cfg, parts[0]):
            if i == len(parts) - 1 or (part in MAPPING_OPTIONS and i == len(parts) - 2):
                return
        known = list(node) if isinstance(node, Mapping) else []
        if i == 1:
            known += sorted(_options_of(cfg, parts[0]))
        missing = ".".join(parts[: i + 1])
        raise SpaceError(
            f"{where}: the config has no `{missing}`{nearest(missing, ['.'.join([*parts[:i], k]) for k in known])}"
        )


def check_values(cfg: Config) -> None:
    """The option checks a run makes before it reads data: top-level keys, train.*, strategy, policy, schedule."""
    check_config(cfg)
    opts = train_options(cfg)
    build_strategy(cfg.strategy)
    if cfg.get("policy"):
        from recipes.policies import check_policy

        check_policy(cfg.policy)
    spe = 10**6  # the data decide the real length; the schedule's own checks need only some length
    total = (opts.get("epochs") or 1) * spe if not opts.get("max_steps") else opts["max_steps"]
    with warnings.catch_warnings():  # "warm-up cut to the run": the real length is not known here
        warnings.simplefilter("ignore")
        build_schedule(cfg.schedule, total_steps=max(total, 1), steps_per_epoch=spe, lr=1e-3, fit_warmup=True)


def merged(cfg: Config, values: Mapping[str, Any]) -> Config:
    """``cfg`` with a trial's values (dotted keys) merged as a config file written on top of it would."""
    out = Config(copy.deepcopy(cfg.to_dict()))
    for section, value in nested(values, out).items():
        if isinstance(value, Mapping) and not value.get("_delete_") and isinstance(out.get(section), Mapping):
            base = out[section].to_dict() if hasattr(out[section], "to_dict") else dict(out[section])
            out[section] = _deep_merge(base, value)
        else:
            out[section] = {k: v for k, v in value.items() if k != "_delete_"} if isinstance(value, Mapping) else value
    return out


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, Mapping) and v.get("_delete_"):
            base[k] = {kk: vv for kk, vv in v.items() if kk != "_delete_"}
        elif isinstance(v, Mapping) and isinstance(base.get(k), Mapping):
            base[k] = _deep_merge(dict(base[k]), v)
        else:
            base[k] = v
    return base


def objective_of(cfg: Config, space: Space) -> tuple[str, str]:
    """``(metric, direction)``: the space's metric, which the task must report, and which way is better."""
    from recipes.train.tasks.base import TASKS

    task_type = (cfg.get("task") or {}).get("type")
    task_cls = TASKS.get(task_type) if task_type else None
    if task_cls is None:
        raise SpaceError(f"config: task.type {task_type!r} is not a registered task")
    metric = space.metric or task_cls.primary_metric
    reported = {task_cls.primary_metric, *task_cls.metrics}
    name = metric[4:] if metric.startswith("ema_") else metric
    if name not in reported:
        raise SpaceError(
            f"space {space.path}: metric {metric!r} is not reported by the {task_type!r} task (it reports "
            f"{sorted(reported)}, each also as ema_<name> with train.ema)"
        )
    if space.direction:
        return metric, space.direction
    if name != task_cls.primary_metric:
        raise SpaceError(f"space {space.path}: metric {metric!r} is not the task's primary one: set direction=")
    return metric, "maximize" if task_cls.higher_is_better else "minimize"


def check_space(cfg: Config, space: Space) -> tuple[str, str]:
    """Every key, every corner of every range and choice, and the metric; returns ``(metric, direction)``."""
    for p in space.params:
        where = f"space {space.path}: params[{p.key!r}]"
        check_key(cfg, p.key, where)
        for value in p.corners():
            try:
                check_values(merged(cfg, {p.key: value}))
            except (KeyError, ValueError, TypeError) as e:
                msg = e.args[0] if e.args else str(e)
                raise SpaceError(f"{where}: the value {value!r} is not valid: {msg}") from None
    return objective_of(cfg, space)
