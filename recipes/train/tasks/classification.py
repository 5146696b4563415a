"""Image classification: any ``MODELS`` classifier (timm by name), cross-entropy, calibration metrics.

Config sketch::

    model = dict(type="timm", name="vit_small_patch16_224", pretrained_file="/path/vit_s16.safetensors")
    task = dict(type="classification", label_smoothing=0.0)
    data = dict(train=dict(type="cifar100", split="train", pipeline=[...]),
                val=dict(type="cifar100", split="test", pipeline=[...]),
                test=None)   # optional: temperature fitted on val, ECE before/after on test

``model.num_classes`` follows the training set's classes (a different number given explicitly is
an error); the classifier head is new whenever the class count differs from the weights'.
``data_root`` fills ``root`` in every data split that has none, and ``train.seed`` seeds the
augmentations. Metrics: top-1, top-5, NLL, ECE (15 bins); at the end, post-hoc temperature scaling.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from recipes.train.config import build_with_keys
from recipes.train.distributed import gather_objects
from recipes.train.metrics.classification import classification_metrics, expected_calibration_error, fit_temperature
from recipes.train.registry import MODELS, TASKS
from recipes.train.tasks.base import Task


@TASKS.register_module("classification")
class ClassificationTask(Task):
    """Cross-entropy on ``(images, labels)`` batches; evaluation gathers logits over all ranks."""

    primary_metric = "top1"
    higher_is_better = True
    metrics = ("top1", "top5", "nll", "ece")

    data_splits = ("train", "val", "test")

    def __init__(self, cfg: Any, label_smoothing: float = 0.0, temperature_scaling: bool = True) -> None:
        super().__init__(cfg)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.label_smoothing, self.temperature_scaling = float(label_smoothing), bool(temperature_scaling)
        self._datasets: dict[str, Dataset | None] = {}

    # --- data ---------------------------------------------------------------------------------
    def dataset(self, split: str) -> Dataset | None:
        """The dataset of ``data.<split>`` (built once), or None when the config has none."""
        if split not in self._datasets:
            self._datasets[split] = self.build_dataset(split, seed=self.seed)
        return self._datasets[split]

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        if not self.data_cfg.get("train"):
            raise KeyError("config: the `data.train` section is missing (e.g. dict(type='digits', split='train'))")
        train, val = self.dataset("train"), self.dataset("val")
        classes = getattr(train, "classes", None)
        for name in ("val", "test"):
            other = self.dataset(name)
            if classes and other is not None and getattr(other, "classes", classes) != classes:
                raise ValueError(f"data.{name} has classes {other.classes[:5]}... ({len(other.classes)}) but data.train "
                                 f"has {classes[:5]}... ({len(classes)}); both must list the same classes")  # fmt: skip
        return train, val

    # --- model --------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        kw = self.follow_dataset_classes(dict(self.model_cfg), getattr(self.dataset("train"), "classes", None))
        return build_with_keys(MODELS.lookup(kw.pop("type")), kw, "model.")

    # --- steps --------------------------------------------------------------------------------
    def _to(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        fmt = torch.channels_last if self.channels_last and x.dim() == 4 else torch.contiguous_format
        return x.to(device, non_blocking=True, memory_format=fmt), y.to(device, non_blocking=True)

    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = self._to(batch, device)
        logits = model(x)
        return F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing), {}

    @torch.no_grad()
    def logits(self, model: nn.Module, loader: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """All logits and labels of a loader, gathered from every rank, on the CPU."""
        was_training = model.training
        model.eval()
        outs, labels = [], []
        for batch in loader:
            x, y = self._to(batch, device)
            outs.append(model(x).float().cpu())
            labels.append(y.cpu())
        model.train(was_training)
        logits, labels = torch.cat(outs), torch.cat(labels)
        return _gather(logits, labels)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        return classification_metrics(*self.logits(model, loader, device))

    def final_report(self, model: nn.Module, device: torch.device, make_loader: Any) -> dict[str, Any]:
        """Test metrics and temperature scaling: T fitted on val; ECE before/after on test (else on val's odd half)."""
        val, test = self.dataset("val"), self.dataset("test")
        out: dict[str, Any] = {}
        if val is None:
            return out
        v_logits, v_labels = self.logits(model, make_loader(val), device)
        if test is not None:
            t_logits, t_labels = self.logits(model, make_loader(test), device)
            out["test"] = classification_metrics(t_logits, t_labels)
            fit_on, eval_on, where = (v_logits, v_labels), (t_logits, t_labels), "test"
        else:
            fit_on, eval_on, where = (v_logits[0::2], v_labels[0::2]), (v_logits[1::2], v_labels[1::2]), "val odd half"
        if self.temperature_scaling and len(fit_on[1]) > 1:
            t = fit_temperature(*fit_on)
            out["temperature"] = {"T": t, "ece_before": expected_calibration_error(*eval_on),
                                  "ece_after": expected_calibration_error(eval_on[0] / t, eval_on[1]),
                                  "nll_before": float(F.cross_entropy(*eval_on)),
                                  "nll_after": float(F.cross_entropy(eval_on[0] / t, eval_on[1])), "on": where}  # fmt: skip
        return out


def _gather(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    parts = gather_objects((logits, labels))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
