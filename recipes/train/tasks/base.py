"""The task contract: what the training engine needs from classification, detection, ...

``build_task(cfg)`` makes the task named by ``task.type`` with the other ``task.*`` keys as its
options; an option the task does not declare (a keyword of its ``__init__``) is an error naming
it. A task reads its own options and the sections it is given (``model_cfg``, ``data_cfg`` with
``data_root`` filled in, ``seed``, ``channels_last``), never the whole config.

Every hook the engine calls is declared here with its default; the engine never probes. The engine
owns everything else: param groups, the optimizer (for the whole run: no task adds groups), the
schedule, freezing for the first N steps (:meth:`Task.freeze`), AMP, accumulation, DDP,
checkpoints, logging. Tasks import heavy upstream packages inside their methods only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from recipes.options import accepted_options, check_keys, unknown_key_error
from recipes.train.config import build_with_keys, fill_data_root
from recipes.train.registry import DATASETS, TASKS


class Task:
    """Base class; subclasses register with ``@TASKS.register_module("name")`` and declare their options
    as keyword arguments of ``__init__(self, cfg, *, option=default, ...)`` (no ``**kwargs``)."""

    #: the metric that decides the best checkpoint, and whether higher is better
    primary_metric: str = "loss"
    higher_is_better: bool = False
    #: the other metrics ``evaluate`` reports (``tools/tune.py`` checks a searched metric against these)
    metrics: tuple[str, ...] = ()
    #: the ``data.<split>`` sections this task reads; any other split is an error
    data_splits: tuple[str, ...] = ("train", "val")
    #: the run's work dir, set by the engine before training (None in tools that only build the model):
    #: where a task writes its own outputs (samples, exported weights)
    work_dir: Path | None = None
    #: the run's ``ModelEMA`` when ``train.ema`` is set (by the engine, before training), else None: a task that
    #: exports weights at the end of the run exports its averaged module
    ema: Any = None

    def __init__(self, cfg: Any) -> None:
        #: ``model`` section (a copy): the task passes it to ``MODELS`` with the class count filled in
        self.model_cfg: dict[str, Any] = dict(cfg.get("model") or {})
        data = cfg.get("data") or {}
        check_keys("data.", data, self.data_splits)
        #: ``data.<split>`` sections with ``root`` filled from ``data_root`` (the one place that does it)
        self.data_cfg: dict[str, dict[str, Any] | None] = fill_data_root(data, cfg.get("data_root"))
        train = cfg.get("train") or {}
        self.seed = int(train.get("seed", 0))
        self.channels_last = bool(train.get("channels_last", False))
        #: names of the classes, index = label; saved in checkpoints (set by ``build_model``)
        self.class_names: list[str] = []

    # --- hooks the engine calls, in the order it calls them -----------------------------------
    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        """(train, val) datasets; val may be None."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_datasets()")

    def dataset(self, split: str) -> Dataset | None:
        """The dataset of ``data.<split>`` as this task builds it (None when the config has none); the engine's
        ``evaluate(split)`` reads splits other than train / val through it. Default: :meth:`build_dataset`."""
        return self.build_dataset(split)

    def build_model(self) -> nn.Module:
        """The model to train (the engine applies the trainable policy, freezing and moves it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_model()")

    @classmethod
    def check_policy(cls, policy: Mapping[str, Any]) -> dict[str, Any]:
        """The ``policy`` section checked without a model (``config_check`` calls it before anything is built).
        Default: the library's policies (``recipes.policies.check_policy``)."""
        from recipes.policies import check_policy

        return check_policy(policy)

    def apply_policy(self, model: nn.Module, policy: Mapping[str, Any]) -> nn.Module:
        """The ``policy`` section on the built model: what trains, where LoRA goes (the one switch of every task).
        Default: ``recipes.policies.apply_policy``; a task whose models need their own injection overrides it."""
        from recipes.policies import apply_policy

        return apply_policy(model, self.check_policy(policy)) or model

    def finish_model(self, model: nn.Module) -> nn.Module:
        """The last step of the build, once the policy has added what trains (before gradient checkpointing and
        the move to ``train.device``). Default: nothing; the diffusion task puts the adapter on the GPU here when
        the frozen base is group-offloaded (``model.offload``), which the engine's ``.to(device)`` would not move."""
        return model

    def freeze(self) -> dict[str, Any] | None:
        """Parameters the engine keeps from updating for the first N steps: ``dict(params=regex, steps=N)``.

        The engine builds every group from step 0 and drops those parameters' gradients before each
        optimizer step until ``steps`` (no update, no optimizer state, no weight decay); see
        ``train.freeze``. Default: nothing.
        """
        return None

    def collate(self, batch: list[Any]) -> Any:
        """Turn a list of samples into a batch (default: torch's default collate)."""
        return torch.utils.data.default_collate(batch)

    def on_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Called before each optimizer step's forward passes (after the schedule is applied). Default: nothing."""

    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward one batch: the scalar loss to backpropagate and floats to log."""
        raise NotImplementedError(f"{type(self).__name__} must implement train_step()")

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        """Metrics on a loader (the engine calls it at each epoch end, on every rank)."""
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate()")

    def evaluation_media(self) -> dict[str, Any]:
        """Images the last :meth:`evaluate` made, by tag, for the run's logs (TensorBoard); handed over once.

        Values: ``uint8`` arrays, an image ``(H, W, 3)`` or a video ``(T, H, W, 3)``. Default: none.
        """
        return {}

    def final_report(
        self, model: nn.Module, device: torch.device, make_loader: Callable[[Dataset], Any]
    ) -> dict[str, Any]:
        """Extra entries for ``summary.json`` at the end of a run. Default: none."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Task state that must survive a resume (tensors, numbers, strings). Default: none."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` on resume. Default: the state must be empty."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, but the checkpoint holds {sorted(state)}")

    # --- helpers for subclasses ---------------------------------------------------------------
    def build_dataset(self, split: str, **defaults: Any) -> Dataset | None:
        """``DATASETS`` entry of ``data.<split>`` (None when absent); ``defaults`` fill missing keys.

        A keyword the dataset does not take is an error naming ``data.<split>.<key>``.
        """
        d = self.data_cfg.get(split)
        if d is None:
            return None
        d = {**defaults, **d}
        if "type" not in d:
            raise KeyError(f"config: `data.{split}` needs a `type` (a DATASETS entry: {', '.join(DATASETS.names())})")
        fn = DATASETS.lookup(d.pop("type"))
        return build_with_keys(fn, d, f"data.{split}.")

    def follow_dataset_classes(self, model_kwargs: dict[str, Any], classes: Sequence[Any] | None,
                               noun: str = "classes") -> dict[str, Any]:  # fmt: skip
        """Set ``num_classes`` in ``model_kwargs`` from the training set's classes and remember their names.

        An explicit ``model.num_classes`` that differs is an error; ``classes`` None leaves both alone.
        """
        if classes is None:
            return model_kwargs
        given = model_kwargs.get("num_classes")
        if given is not None and given != len(classes):
            shown = f" {list(classes)}" if len(classes) <= 20 else ""
            raise ValueError(
                f"model.num_classes={given} but the training set has {len(classes)} {noun}{shown}; remove "
                "model.num_classes to follow the dataset, or point the data at the right folder"
            )
        model_kwargs["num_classes"] = len(classes)
        self.class_names = [str(c) for c in classes]
        return model_kwargs


def task_options(cls: type[Task]) -> set[str]:
    """The ``task.*`` options a task class declares (keywords of its ``__init__`` after ``cfg``)."""
    known = accepted_options(cls, skip=("self", "cfg"))
    if known is None:
        raise TypeError(f"{cls.__name__}.__init__ takes **kwargs: declare each task option as a keyword argument")
    return known


def build_task(cfg: Any) -> Task:
    """The task of ``cfg.task`` (default ``classification``); an undeclared ``task.*`` key is an error."""
    opts = dict(cfg.get("task") or {})
    cls = TASKS.lookup(opts.pop("type", "classification"))
    known = task_options(cls)
    for key in opts:
        if key not in known:
            raise unknown_key_error("task.", key, known)
    return cls(cfg, **opts)
