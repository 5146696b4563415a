"""Building a run from a config: the one path ``tools/train.py`` and ``tools/show_lr.py`` share.

``prepare_run(cfg)`` returns the task, the datasets, the model exactly as it will train (the task's
model with the class count from the data, the trainable policy, gradient checkpointing), its
parameter groups and optimizer, the freeze plan, and the run's length and LR schedule. The engine
adds the device, AMP, EMA, DDP and checkpoints on top.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from recipes.adapter import canonical_name, unwrap_model
from recipes.options import check_keys
from recipes.param_groups import base_lr_of, build_param_groups
from recipes.schedules import Schedule, build_schedule
from recipes.train.config import schedule_steps, train_options
from recipes.train.config_check import check_config
from recipes.train.data.checks import check_datasets
from recipes.train.errors import BadInput
from recipes.train.optimizers import build_optimizer
from recipes.train.sampling import dataset_steps_per_epoch
from recipes.train.tasks.base import Task, build_task


def enable_grad_checkpointing(model: nn.Module) -> str:
    """Switch on the model's own activation checkpointing; returns which API it used.

    timm ``set_grad_checkpointing(True)``, transformers ``gradient_checkpointing_enable()`` (non-reentrant),
    diffusers ``enable_gradient_checkpointing()``; a model with none of them is an error.
    """
    base = unwrap_model(model)
    if hasattr(base, "set_grad_checkpointing"):
        base.set_grad_checkpointing(True)
        return "set_grad_checkpointing"
    if hasattr(base, "gradient_checkpointing_enable"):
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return "gradient_checkpointing_enable"
    if hasattr(base, "enable_gradient_checkpointing"):
        base.enable_gradient_checkpointing()
        return "enable_gradient_checkpointing"
    raise ValueError(
        f"train.grad_checkpointing=True: {type(base).__name__} has no gradient-checkpointing API (timm "
        "set_grad_checkpointing, transformers gradient_checkpointing_enable, diffusers "
        "enable_gradient_checkpointing); remove the option or use a model that has one"
    )


def build_model(cfg: Any, task: Task, opts: Mapping[str, Any]) -> nn.Module:
    """The model ``tools/train.py`` trains: ``task.build_model()``, the policy, gradient checkpointing."""
    model = task.build_model()
    if cfg.get("policy"):
        model = task.apply_policy(model, cfg.policy)
    model = task.finish_model(model)
    if opts["grad_checkpointing"]:
        enable_grad_checkpointing(model)
    return model


LORA_OPTIONS = ("loraplus_ratio", "lr_lora", "loraplus_lr_embedding")  # strategy options that act on LoRA only


def warn_options_without_effect(cfg: Any, model: nn.Module) -> list[str]:
    """Warn (as peft does) about each LoRA-only strategy option on a model without trainable LoRA tensors."""
    strategy = cfg.get("strategy") or {}
    given = [k for k in LORA_OPTIONS if strategy.get(k) is not None]
    if not given:
        return []
    roles = {canonical_name(n)[1] for n, p in unwrap_model(model).named_parameters() if p.requires_grad} - {None}
    if roles & {"lora_A", "lora_B"}:
        return []
    if roles:  # LoKr / LoHa: lr_lora acts on them, LoRA+ (B tensors) does not
        given = [k for k in given if k != "lr_lora"]
        fix = "LoRA+ scales LoRA's B tensors: use policy.kind='lora'"
    else:
        fix = "switch LoRA on with a LoRA policy, e.g. policy=dict(type='lora_only')"
    what = f"{'/'.join(sorted(roles))} tensors, no LoRA A / B" if roles else "no trainable LoRA tensor"
    msgs = [
        f"strategy.{k}={strategy[k]!r} has no effect: the model has {what} ({fix}, or remove strategy.{k})"
        for k in given
    ]
    for msg in msgs:
        warnings.warn(msg, UserWarning, stacklevel=2)
    return msgs


@dataclass
class Freeze:
    """Trainable parameters that get no update before ``steps`` (``label`` says where the rule came from)."""

    label: str
    names: list[str]
    steps: int


class FreezePlan:
    """Every "frozen for the first N steps" rule of a run: ``train.freeze``, the task's, ``policy.freeze_lora_steps``.

    The parameters stay trainable (``requires_grad=True``: DDP fixes the trained set when it wraps
    the model, and the groups exist from step 0); the engine drops their gradients before each
    optimizer step while ``step < steps``, so the optimizer skips them: no update, no state, no
    weight decay. A pure function of the step, so a resume is exact.
    """

    def __init__(self, rules: list[Freeze], model: nn.Module) -> None:
        self.rules = rules
        by_name = dict(unwrap_model(model).named_parameters())
        self._params = [(r.steps, [by_name[n] for n in r.names]) for r in rules]

    def frozen(self, step: int) -> list[nn.Parameter]:
        """Parameters that must not change at optimizer step ``step``."""
        return [p for steps, params in self._params if step < steps for p in params]

    def describe(self) -> list[str]:
        return [f"{r.label}: {len(r.names)} tensors get no update before step {r.steps}" for r in self.rules]


def _freeze_rule(spec: Any, where: str, names: list[str]) -> Freeze | None:
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise TypeError(f"{where}: expected dict(params='regex', steps=N), got {spec!r}")
    check_keys(f"{where}.", spec, ("params", "steps"))
    steps, pattern = spec.get("steps"), spec.get("params")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"{where}.steps must be a whole number of optimizer steps >= 0, got {steps!r}")
    if not isinstance(pattern, str):
        raise TypeError(f"{where}.params must be a regex string (searched in parameter names), got {pattern!r}")
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{where}.params: {pattern!r} is not a valid regex ({e})") from None
    hit = [n for n in names if rx.search(n)]
    if not hit:
        raise ValueError(f"{where}.params={pattern!r} matches no trainable parameter (e.g. {names[:3]})")
    return Freeze(where, hit, steps) if steps else None


def build_freeze(cfg: Any, opts: Mapping[str, Any], task: Task, model: nn.Module) -> FreezePlan:
    names = [n for n, p in unwrap_model(model).named_parameters() if p.requires_grad]
    rules = [_freeze_rule(opts["freeze"], "train.freeze", names), _freeze_rule(task.freeze(), "task", names)]
    lora_steps = (cfg.get("policy") or {}).get("freeze_lora_steps", 0) or 0
    if lora_steps:
        lora = [n for n in names if canonical_name(n)[1]]
        if not lora:
            raise ValueError("policy.freeze_lora_steps is set but the policy put no LoRA tensor in the model")
        rules.append(Freeze("policy.freeze_lora_steps", lora, int(lora_steps)))
    return FreezePlan([r for r in rules if r is not None], model)


@dataclass
class RunPlan:
    task: Task
    train_set: Dataset | None
    val_set: Dataset | None
    model: nn.Module
    groups: list[dict[str, Any]]
    optimizer: torch.optim.Optimizer
    freeze: FreezePlan
    total_steps: int
    steps_per_epoch: int | None
    schedule: Schedule
    opts: dict[str, Any]


def prepare_run(cfg: Any, world: int = 1, steps_per_epoch: int | None = None, data: bool = True,
                work_dir: str | Path | None = None) -> RunPlan:  # fmt: skip
    """Everything of a run that does not depend on the device: see the module docstring.

    ``work_dir`` is set as ``task.work_dir`` before the task builds anything (a task may check its own
    paths against it while building its datasets, e.g. a cache that must not live in the work dir).
    ``data=False`` skips the datasets (``tools/show_lr.py`` without the data at hand): the class
    count is then the config's own and ``steps_per_epoch`` (or ``train.max_steps``) must be given.
    """
    check_config(cfg)
    opts = train_options(cfg)
    if not data:
        from mmengine.config import Config

        cfg = Config({k: v for k, v in cfg.to_dict().items() if k != "data"})
    task = build_task(cfg)
    task.work_dir = None if work_dir is None else Path(work_dir)
    train_set = val_set = None
    if data:
        train_set, val_set = task.build_datasets()
        check_datasets(train_set, val_set, opts["bad_images"])  # before counting: 'skip' drops samples
        counted = dataset_steps_per_epoch(train_set, opts["batch_size"], opts["grad_accum"], world)
        if steps_per_epoch is None:
            steps_per_epoch = counted
        if opts["steps_per_epoch"] is not None and opts["steps_per_epoch"] != counted:
            raise ValueError(f"train.steps_per_epoch={opts['steps_per_epoch']} but the training data gives {counted} "
                             "per epoch; remove it (it is for tools/show_lr.py without the data)")  # fmt: skip
    model = build_model(cfg, task, opts)
    warn_options_without_effect(cfg, model)
    groups = build_param_groups(model, cfg.strategy, adapter=cfg.get("adapter", "auto"))
    optimizer = build_optimizer(groups, cfg.get("optimizer"))
    freeze = build_freeze(cfg, opts, task, model)
    total, spe = schedule_steps(cfg, steps_per_epoch)
    schedule = build_schedule(cfg.schedule, total_steps=total, lr=base_lr_of(groups), steps_per_epoch=spe,
                              fit_warmup=bool(opts["max_steps"]))  # fmt: skip
    return RunPlan(task, train_set, val_set, model, groups, optimizer, freeze, total, spe, schedule, opts)


# Starting-weights keys of `model` (rfdetr's `encoder_weights`: a DINOv2 folder for its encoder only): a
# checkpoint holding every weight needs none of them; a trainable-only one needs them for its frozen rest.
STARTING_WEIGHTS = ("pretrained", "pretrained_format", "encoder_weights")


def rebuild_model(cfg: Any, ckpt: Mapping[str, Any], task_type: type[Task] | None = None,
                  needs_pretrained: bool = False) -> tuple[Task, nn.Module]:  # fmt: skip
    """The one way a tool rebuilds a trained model: ``(task, model)`` in eval mode, weights from ``ckpt``.

    ``ckpt`` comes from :func:`recipes.train.checkpoint.read_checkpoint`. The whole config is checked
    first; the model is built as ``tools/train.py`` builds it (the task's ``build_model``, the policy,
    gradient checkpointing) without reading any data (the class count comes from the checkpoint's
    ``class_names``). A checkpoint with every weight needs no starting weights, so ``model.pretrained``
    is dropped (``needs_pretrained``: the tool needs them anyway, e.g. a diffusion pipeline's other
    parts); a trainable-only one (``frozen_omitted``) is completed from ``model.pretrained`` and checked
    against the fingerprint of the frozen weights the run saved.
    """
    from mmengine.config import Config

    from recipes.train.trainable_state import frozen_fingerprint, load_model

    check_config(cfg)
    path = ckpt.get("path", "checkpoint")
    model_cfg = dict(cfg.get("model") or {})
    if ckpt.get("frozen_omitted") or needs_pretrained:
        if all(model_cfg.get(k) is None for k in STARTING_WEIGHTS if k != "pretrained_format"):
            what = "holds only the trainable tensors (frozen_omitted) of its run" if ckpt.get("frozen_omitted") else (
                "needs the weights its run started from")  # fmt: skip
            raise BadInput(f"checkpoint {str(path)!r} {what}; set model.pretrained to the weights the run started "
                           "from (--cfg-options model.pretrained=PATH)")  # fmt: skip
    else:
        model_cfg = {k: v for k, v in model_cfg.items() if k not in STARTING_WEIGHTS}
    names = list(ckpt.get("class_names") or [])
    if names:
        model_cfg["num_classes"] = len(names)
    cfg = Config({**{k: v for k, v in cfg.to_dict().items() if k != "data"}, "model": model_cfg})
    task = build_task(cfg)
    if task_type is not None and not isinstance(task, task_type):
        raise BadInput(
            f"task.type={(cfg.get('task') or {}).get('type')!r}: this tool runs a {task_type.__name__} config"
        )
    task.class_names = names
    model = build_model(cfg, task, train_options(cfg))
    load_model(model, {**ckpt, "path": str(path)}, frozen_fingerprint(model))
    return task, model.eval()
