"""The task contract: what the training engine needs from classification, detection, ...

The engine builds a task as ``TASKS.lookup(cfg.task.type)(cfg, **other task keys)`` (not
``TASKS.build``: mmengine reserves a ``cfg`` keyword), and the task answers five questions;
the engine owns everything else (param groups, schedule, AMP, accumulation, DDP, checkpoints,
logging). Tasks import heavy upstream packages inside their methods only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset


class Task:
    """Base class; subclasses register with ``@TASKS.register_module("name")``."""

    #: the metric that decides the best checkpoint, and whether higher is better
    primary_metric: str = "loss"
    higher_is_better: bool = False

    def __init__(self, cfg: Any, **options: Any) -> None:
        self.cfg = cfg
        self.options = options
        #: names of the classes, index = label; saved in checkpoints (set by ``build_model``)
        self.class_names: list[str] = []

    def build_model(self) -> nn.Module:
        """The model to train (the engine applies the trainable policy and moves it)."""
        raise NotImplementedError

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

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        """(train, val) datasets; val may be None."""
        raise NotImplementedError

    def collate(self, batch: list[Any]) -> Any:
        """Turn a list of samples into a batch (default: torch's default collate)."""
        return torch.utils.data.default_collate(batch)

    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward one batch: the scalar loss to backpropagate and floats to log."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        """Metrics on a loader (the engine calls it at each epoch end, on rank 0 or all ranks)."""
        raise NotImplementedError
