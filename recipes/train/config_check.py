"""Check a whole config before anything is built: every section, every key, no data read and no model made.

``check_config(cfg)`` runs first in :func:`recipes.train.build.prepare_run` and in every tool that
rebuilds a model, as mmengine's optimizer constructor checks its config before it builds. A key
nothing reads fails with the one error of :func:`recipes.options.unknown_key_error`
(``config: `<section>.<key>` is not read by anything (did you mean ...)``); a key that was renamed
names its new spelling. Sections checked: the top level, ``train``, ``optimizer``, ``strategy``,
``schedule``, ``policy``, ``adapter``, ``task``, ``data`` (splits and each dataset's keywords) and
``model`` (the builder's keywords, or the upstream class's through the builder's ``check_options``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recipes.options import accepted_options, check_keys, unknown_key_error
from recipes.train.config import SECTIONS, TRAIN_ALIASES, TRAIN_DEFAULTS, TRAIN_REMOVED
from recipes.train.errors import BadInput

# Old spellings of the starting weights and of the LoRA / gradient-checkpointing switches, with the new one.
RENAMED = {
    "model.pretrained_file": ("model.pretrained", "a local weights file or folder"),
    "model.pretrain_weights": ("model.pretrained", "a local RF-DETR checkpoint"),
    "model.init": ("model.pretrained", "a DINOv2 / VideoMAE folder or a VideoMAEv2 .pth"),
    "model.strict_init": ("model.strict_pretrained", "a tensor left random is an error"),
    "task.gradient_checkpointing": ("train.grad_checkpointing", "the one switch of every task"),
    "task.lora": (
        "policy",
        "the one switch of what trains in every task: policy=dict(type='lora_only', r=16, alpha=16) for a diffusion "
        "LoRA, no policy (or type='full') for a full fine-tune, policy=dict(type='encoder_lora') for "
        "RF-DETR's encoder LoRA",
    ),
}


def renamed_error(key: str) -> KeyError:
    new, what = RENAMED[key]
    return KeyError(f"config: `{key}` is now `{new}` ({what}); rename it")


def _section(cfg: Any, name: str) -> dict[str, Any]:
    value = cfg.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"config: `{name}` must be a dict, got {type(value).__name__} {value!r}")
    return dict(value)


def check_top_and_train(cfg: Any) -> None:
    check_keys("", cfg.keys(), SECTIONS)
    train = _section(cfg, "train")
    for key in train:
        if key in TRAIN_REMOVED:
            raise KeyError(f"config: `train.{key}`: {TRAIN_REMOVED[key]}")
    check_keys("train.", train, [*TRAIN_DEFAULTS, *TRAIN_ALIASES])


def check_optimizer(cfg: Any) -> None:
    from recipes.train.registry import OPTIMIZERS

    opt = _section(cfg, "optimizer")
    for key in ("lr", "weight_decay"):
        if key in opt:
            raise KeyError(
                f"config: `optimizer.{key}` would be ignored: every param group carries its own {key} from the "
                f"strategy section; set strategy.{key}=... instead"
            )
    factory = OPTIMIZERS.lookup(opt.pop("type", "AdamW"))
    known = accepted_options(factory, skip=("self", "params"))
    if known is None:
        hook = getattr(factory, "options", None)  # timm's optimizers: the class behind the name
        known = hook() if callable(hook) else None
    if known is not None:
        check_keys("optimizer.", opt, known)


def check_model(cfg: Any) -> None:
    """``model.*``: old spellings, then the builder's keywords (or its ``check_options`` for ``**kwargs``)."""
    from recipes.train.registry import MODELS

    model = _section(cfg, "model")
    for key in model:
        if f"model.{key}" in RENAMED:
            raise renamed_error(f"model.{key}")
    if "type" not in model:
        return
    builder = MODELS.lookup(model.pop("type"))
    known = accepted_options(builder)
    if known is not None:
        check_keys("model.", model, known)
        return
    hook = getattr(builder, "check_options", None)
    if callable(hook):
        hook(model)


def check_task_and_data(cfg: Any) -> None:
    """``task.*`` against the task's declared options; ``data`` splits and each split's dataset keywords."""
    from recipes.train.registry import DATASETS, TASKS
    from recipes.train.tasks.base import task_options

    task = _section(cfg, "task")
    cls = TASKS.lookup(task.pop("type", "classification"))
    for key in task:
        if f"task.{key}" in RENAMED:
            raise renamed_error(f"task.{key}")
    known = task_options(cls)
    for key in task:
        if key not in known:
            raise unknown_key_error("task.", key, known)
    data = _section(cfg, "data")
    check_keys("data.", data, cls.data_splits)
    for split, spec in data.items():
        if spec is None:
            continue
        if not isinstance(spec, Mapping):
            raise TypeError(f"config: `data.{split}` must be a dict with a `type`, got {spec!r}")
        spec = dict(spec)
        if "type" not in spec:
            continue  # the task fills the type (or says it is missing when it builds the split)
        fn = DATASETS.lookup(spec.pop("type"))
        known_data = accepted_options(fn)
        if known_data is not None:
            check_keys(f"data.{split}.", spec, known_data)


def check_library_sections(cfg: Any) -> None:
    """``strategy`` (built: it needs no model), ``schedule``, ``policy`` (by the task: ``Task.check_policy``) and
    ``adapter``."""
    from recipes.param_groups import build_strategy
    from recipes.registry import ADAPTERS
    from recipes.schedules import check_schedule
    from recipes.train.registry import TASKS

    build_strategy(_section(cfg, "strategy"))
    check_schedule(_section(cfg, "schedule"))
    if cfg.get("policy"):
        TASKS.lookup(_section(cfg, "task").get("type", "classification")).check_policy(_section(cfg, "policy"))
    adapter = cfg.get("adapter", "auto")
    if isinstance(adapter, str) and adapter != "auto":
        ADAPTERS.lookup(adapter)


def check_combinations(cfg: Any) -> None:
    """Options that are each valid but do not work together: one error naming both (FSDP's: ``fsdp.check_conflicts``)."""
    from recipes.train.fsdp import check_conflicts

    check_conflicts(_section(cfg, "train"), _section(cfg, "strategy"), _section(cfg, "model"))


def check_config(cfg: Any) -> None:
    """Every section of ``cfg`` checked before any dataset is read or any model is built (see the module docstring)."""
    if not isinstance(cfg, Mapping) and not hasattr(cfg, "keys"):
        raise BadInput(f"config: expected a dict-like config, got {type(cfg).__name__}")
    check_top_and_train(cfg)
    check_library_sections(cfg)
    check_optimizer(cfg)
    check_task_and_data(cfg)
    check_model(cfg)
    check_combinations(cfg)
