"""Object detection with RF-DETR: model, matcher, losses, post-processing and multi-scale from ``rfdetr``.

Written against ``rfdetr`` 1.11 (base install; ``rfdetr.training`` is never imported, it pulls
Lightning). The class count follows the training set's ``categories``. Config sketch::

    model = dict(type="rfdetr", size="nano", pretrained=None)   # or a local rf-detr-nano.pth
    task = dict(type="detection", multi_scale=True, freeze_encoder=0)
    policy = dict(type="encoder_lora")   # optional: rfdetr's own encoder LoRA (below)
    data = dict(train=dict(type="coco_detection", split="train"), val=dict(type="coco_detection", split="valid"))

Freezing the encoder (``backbone.0.encoder``, the DINOv2 ViT): ``freeze_encoder=True`` freezes it
for good (``requires_grad=False``: no gradients, no optimizer state); an int ``N`` asks the engine
(:meth:`DetectionTask.freeze`) to keep it from updating for the first N optimizer steps: its groups
exist from step 0 with the strategy's LRs, its gradients are dropped before each step until N (no
update, no optimizer state, no weight decay), under DDP too, and a resume is exact.

What trains is the ``policy`` section, as in every task. ``policy=dict(type="encoder_lora")`` is
rfdetr's own encoder LoRA (``backbone_lora=True``, ``rfdetr.models.weights.apply_lora``: DoRA, rank 16,
alpha 16 on the DINOv2 encoder's q / k / v and its cls / register tokens; the encoder's base weights
frozen, the projector, decoder and heads train in full), so rfdetr's own tools read the checkpoints.
Its rank and targets are rfdetr's, fixed: ``policy.r`` and the other adapter keys are errors with it.
The library's policies (``full``, ``lora_only``, ...) apply to the LWDETR module as to any model.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from recipes.train.distributed import gather_objects
from recipes.train.models.rfdetr import (  # noqa: F401 - build_rfdetr_wrapper, rfdetr_class re-exported
    build_rfdetr_wrapper,
    check_block,
    check_encoder_weights,
    check_resolution,
    load_encoder_weights,
    rfdetr_class,
)
from recipes.train.registry import TASKS
from recipes.train.tasks.base import Task

log = logging.getLogger("recipes.detection")

ENCODER_PREFIX = "backbone.0.encoder."
# DINOv2's mask token only serves masked-image pretraining: it never gets a gradient here (rfdetr's
# trainer.py probe finds it the one always-unused tensor). Frozen, so plain DDP works; AdamW skips
# tensors without gradients, so training is the same as rfdetr's.
NEVER_USED = ("embeddings.mask_token",)
MAIN_LOSSES = ("loss_ce", "loss_bbox", "loss_giou")  # the last decoder layer's terms, logged as is
ENCODER_LORA = "encoder_lora"  # the policy type of rfdetr's own encoder LoRA


@TASKS.register_module("detection")
class DetectionTask(Task):
    """RF-DETR on a COCO-format folder; see the module docstring for the options.

    Args:
        multi_scale: RF-DETR's per-batch multi-scale: the dataset resizes to the largest scale and
            each step interpolates the batch to one of ``compute_multi_scale_scales`` (seeded by the step).
        expanded_scales: RF-DETR's wider scale range (its default).
        freeze_encoder: False, True (for good) or the number of steps to keep the encoder frozen.
        train_config: extra ``rfdetr`` ``TrainConfig`` fields (loss coefficients, ``focal_alpha``...).
    """

    primary_metric = "mAP"
    higher_is_better = True
    metrics = ("mAP", "mAP50", "mAP75")

    def __init__(
        self,
        cfg: Any,
        multi_scale: bool = True,
        expanded_scales: bool = True,
        freeze_encoder: bool | int = False,
        train_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(cfg)
        if isinstance(freeze_encoder, bool):
            self.freeze_steps = -1 if freeze_encoder else 0
        elif isinstance(freeze_encoder, int) and freeze_encoder >= 0:
            self.freeze_steps = freeze_encoder
        else:
            raise ValueError(
                f"task.freeze_encoder: expected True/False or a number of steps >= 0, got {freeze_encoder!r}"
            )
        #: rfdetr's encoder LoRA (``policy.type='encoder_lora'``), built into the model by rfdetr
        self.lora = (cfg.get("policy") or {}).get("type") == ENCODER_LORA
        if self.lora and self.freeze_steps:
            raise ValueError("task.freeze_encoder has no effect with policy.type='encoder_lora' (LoRA already "
                             "freezes the encoder weights); remove one of them")  # fmt: skip
        self.multi_scale, self.expanded_scales = multi_scale, expanded_scales
        self.train_config_overrides = dict(train_config or {})
        self.model_config: Any = None
        self.criterion: nn.Module | None = None
        self.postprocess: nn.Module | None = None
        self._datasets: dict[str, Dataset] = {}
        self._step = 0

    # --- model --------------------------------------------------------------------------------
    def _model_kwargs(self) -> dict[str, Any]:
        kw = {k: v for k, v in self.model_cfg.items() if k != "type"}
        kw = self.follow_dataset_classes(kw, self.dataset_classes(), noun="categories")
        if self.lora:
            kw["backbone_lora"] = True
        return kw

    def build_model(self) -> nn.Module:
        from rfdetr.models.lwdetr import build_criterion_from_config

        kw = self._model_kwargs()
        encoder_weights = kw.pop("encoder_weights", None)
        check_encoder_weights(kw.get("pretrained"), encoder_weights)
        wrapper = build_rfdetr_wrapper(**kw)
        self.model_config = wrapper.model_config
        root = (self.data_cfg.get("train") or {}).get("root")
        tc = wrapper.get_train_config(dataset_dir=str(root or "."), **self.train_config_overrides)
        self.criterion, self.postprocess = build_criterion_from_config(self.model_config, tc)
        model = wrapper.model.model
        load_encoder_weights(model, encoder_weights)  # before LoRA/freezing act on the encoder's tensors
        for name, p in model.named_parameters():
            if name.endswith(NEVER_USED):
                p.requires_grad_(False)
        if self.freeze_steps < 0:
            n = set_encoder_trainable(model, False)
            log.info("encoder frozen for good (%d tensors: no gradients, no optimizer state)", n)
        return model

    @classmethod
    def check_policy(cls, policy: Mapping[str, Any]) -> dict[str, Any]:
        """``encoder_lora`` (rfdetr's own, fixed rank and targets), or one of the library's policies."""
        if isinstance(policy, Mapping) and policy.get("type") == ENCODER_LORA:
            extra = sorted(set(policy) - {"type", "freeze_lora_steps"})
            if extra:
                raise ValueError(f"policy.{extra[0]}: policy.type='encoder_lora' is rfdetr's own encoder LoRA (DoRA, "
                                 "rank 16, alpha 16 on q / k / v, fixed by rfdetr.models.weights.apply_lora); it "
                                 "reads only freeze_lora_steps. For another rank use type='lora_only'")  # fmt: skip
            return dict(policy)
        return super().check_policy(policy)

    def apply_policy(self, model: nn.Module, policy: Mapping[str, Any]) -> nn.Module:
        """``encoder_lora`` is already in the model (``build_model`` passed ``backbone_lora=True``)."""
        if self.check_policy(policy)["type"] == ENCODER_LORA:
            return model
        return super().apply_policy(model, policy)

    def freeze(self) -> dict[str, Any] | None:
        """``freeze_encoder=N``: the engine keeps the encoder from updating for the first N steps."""
        if self.freeze_steps > 0:
            return {"params": "^" + ENCODER_PREFIX.replace(".", r"\."), "steps": self.freeze_steps}
        return None

    def _resolved_config(self) -> Any:
        if self.model_config is None:  # datasets built before the model: the config alone is cheap
            skip = ("size", "pretrained", "allow_partial_load", "encoder_weights")
            kw = {k: v for k, v in self._model_kwargs().items() if k not in skip}
            check_resolution(kw.get("resolution", 1))
            self.model_config = rfdetr_class(self.model_cfg.get("size", "nano"))._model_config_class(**kw)
            check_block(self.model_config)
        return self.model_config

    def scales(self) -> list[int]:
        """The training resolutions RF-DETR samples from (just ``resolution`` without multi-scale)."""
        mc = self._resolved_config()
        if not self.multi_scale:
            return [mc.resolution]
        from rfdetr.datasets.coco import compute_multi_scale_scales

        return compute_multi_scale_scales(mc.resolution, self.expanded_scales, mc.patch_size, mc.num_windows)

    # --- data ---------------------------------------------------------------------------------
    def _data_cfg(self, split: str) -> dict[str, Any] | None:
        d = self.data_cfg.get(split)
        return None if d is None else dict(d)

    def dataset_classes(self) -> list[str] | None:
        """Class names of the training set (from its json), or None without a data section."""
        d = self._data_cfg("train")
        if d is None:
            return None
        if "train" in self._datasets:
            return self._datasets["train"].class_names
        from recipes.train.data.coco_detection import ANN_NAME, load_coco

        if d.get("root") is None:
            raise ValueError("data: set data_root (e.g. --cfg-options data_root=/path/to/coco_folder)")
        ann = Path(d["root"]) / (d.get("ann_file") or f"{d.get('split', 'train')}/{ANN_NAME}")
        return [c["name"] for c in sorted(load_coco(ann)["categories"], key=lambda c: c["id"])]

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        mc = self._resolved_config()
        for split, size in (("train", max(self.scales())), ("val", mc.resolution)):
            if self.data_cfg.get(split) is not None and split not in self._datasets:
                self._datasets[split] = self.build_dataset(split, size=size, num_classes=mc.num_classes)
        if "train" not in self._datasets:
            raise KeyError(
                "config: the `data.train` section is missing (e.g. dict(type='coco_detection', split='train'))"
            )
        return self._datasets["train"], self._datasets.get("val")

    def collate(self, batch: list[Any]) -> Any:
        from rfdetr.utilities.tensors import nested_tensor_from_tensor_list

        batch = [b for b in batch if b is not None]  # images that failed to decode
        if not batch:
            return None
        mc = self._resolved_config()
        images, targets = zip(*batch, strict=True)
        return nested_tensor_from_tensor_list(list(images), block_size=mc.patch_size * mc.num_windows), list(targets)

    # --- steps --------------------------------------------------------------------------------
    def _to(self, batch: Any, device: torch.device) -> tuple[Any, list[dict[str, torch.Tensor]]]:
        samples, targets = batch
        if self.criterion is not None:
            self.criterion.to(device)
        return samples.to(device), [{k: v.to(device) for k, v in t.items()} for t in targets]

    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        if self.criterion is None:
            raise RuntimeError("detection: build_model() must run before train_step (it builds the criterion)")
        samples, targets = self._to(batch, device)
        if self.multi_scale:
            # as rfdetr's on_train_batch_start: one scale per batch, the same on every rank
            _resize_batch(samples, random.Random(self._step).choice(self.scales()))
        self._step += 1
        loss_dict = self.criterion(model(samples, targets), targets)
        weights = self.criterion.weight_dict
        loss = torch.stack([loss_dict[k] * weights[k] for k in loss_dict if k in weights]).sum()
        logs = {k: float(loss_dict[k].detach()) for k in MAIN_LOSSES if k in loss_dict}
        return loss, logs

    def on_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Follow the engine's step: the multi-scale choice of a step is seeded by it (so a resume is exact)."""
        self._step = step

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        from recipes.train.metrics.coco import coco_map

        was_training = model.training
        model.eval()
        dets, seen = [], []
        for batch in loader:
            if batch is None:
                continue
            samples, targets = self._to(batch, device)
            orig = torch.stack([t["orig_size"] for t in targets])
            for t, r in zip(targets, self.postprocess(model(samples), orig), strict=True):
                seen.append(int(t["image_id"]))
                dets += to_coco_dets(seen[-1], r)
        model.train(was_training)
        dets, seen = _gather(dets, seen)
        ds = _base_dataset(loader.dataset)
        metrics = coco_map(ds.coco_gt(), dets, img_ids=seen, class_names=ds.class_names)
        if ds.skipped:
            metrics["skipped_images"] = float(len(ds.skipped))
        return metrics


def _resize_batch(samples: Any, size: int) -> None:
    """Interpolate a ``NestedTensor`` batch (images bilinear, padding mask nearest) in place."""
    f = nn.functional
    with torch.no_grad():
        samples.tensors = f.interpolate(samples.tensors, size=size, mode="bilinear", align_corners=False)
        samples.mask = f.interpolate(samples.mask[:, None].float(), size=size, mode="nearest")[:, 0].bool()


def set_encoder_trainable(model: nn.Module, trainable: bool) -> int:
    """``requires_grad`` of every encoder tensor (``backbone.0.encoder``); returns how many."""
    params = [p for n, p in model.named_parameters() if n.startswith(ENCODER_PREFIX) and not n.endswith(NEVER_USED)]
    if not params:
        raise ValueError(f"detection: no parameter under {ENCODER_PREFIX!r}; is this an RF-DETR model?")
    for p in params:
        p.requires_grad_(trainable)
    return len(params)


def to_coco_dets(image_id: int, result: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """rfdetr ``PostProcess`` output (xyxy pixels, 0-based labels) as COCO detections (ids from 1)."""
    boxes, labels, scores = result["boxes"].tolist(), result["labels"].tolist(), result["scores"].tolist()
    return [
        {"image_id": image_id, "category_id": lab + 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": s}
        for (x0, y0, x1, y1), lab, s in zip(boxes, labels, scores, strict=True)
    ]


def _base_dataset(ds: Any) -> Any:
    while hasattr(ds, "dataset") and not hasattr(ds, "coco_gt"):  # torch Subset and the like
        ds = ds.dataset
    return ds


def _gather(dets: list, seen: list) -> tuple[list, list]:
    """All ranks' detections when evaluation runs on the ranks' shards."""
    parts = gather_objects((dets, seen))
    if len(parts) == 1:
        return dets, seen
    return [d for p in parts for d in p[0]], sorted({i for p in parts for i in p[1]})
