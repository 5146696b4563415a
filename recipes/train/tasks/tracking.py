"""Single-object tracking: a one-stream VideoMAE tracker trained on template/search pairs.

Config sketch (``configs/tracking/videomae_dinov2_cpu.py`` is a complete one)::

    model = dict(type="videomae_tracker", init="/path/dinov2_small", num_hidden_layers=6)
    task = dict(type="tracking", template_size=70, search_size=140, loss_weights=dict(focal=1, l1=5, giou=2))
    data = dict(train=dict(type="tracking_pairs", exclude=[...]), val=dict(type="tracking_sequences", sequences=[...]))

The crop geometry (``template_size``, ``search_size``, ``template_context``, ``search_context``) is
set once here and handed to the model, the training pairs and the online tracker. Losses: focal
loss on a Gaussian centre heatmap (CenterNet / OSTrack), L1 and GIoU on the box regressed at the
ground-truth centre cell. Evaluation runs the online tracker over every whole validation sequence
(one pass, no reset); ``AO`` decides ``best.pt``; the success and precision plots go to
``<work_dir>/plots/``. Every ``task.*`` key is a keyword of ``__init__`` (a misspelt one is an error).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from recipes.train.config import build_with_keys
from recipes.train.data.tracking import Sequence
from recipes.train.errors import BadInput
from recipes.train.metrics.tracking import per_sequence_table, plot_curves, sequence_scores, summarise
from recipes.train.models.tracker import decode_boxes
from recipes.train.registry import MODELS, TASKS
from recipes.train.tasks.base import Task
from recipes.train.tasks.tracking_online import OnlineTracker, TrackerOptions

GEOMETRY = ("template_size", "search_size", "template_context", "search_context")
LOSSES = ("focal", "l1", "giou")
BOX_LOSS_AT = ("target", "peak", "both")  # where L1 / GIoU read the box: the true centre cell, the predicted peak


def focal_heatmap_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on a Gaussian heatmap, normalised by the number of centres."""
    p = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -(torch.log(p) * (1 - p) ** alpha * pos).sum()
    neg_loss = -(torch.log(1 - p) * p**alpha * (1 - target) ** beta * (1 - pos)).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)


def gaussian_targets(box: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(heatmap (B,1,g,g) with 1 at the centre cell, centre cell row, column) for cx,cy,w,h boxes in [0, 1]."""
    b = box.shape[0]
    ix = (box[:, 0] * grid).long().clamp(0, grid - 1)
    iy = (box[:, 1] * grid).long().clamp(0, grid - 1)
    sigma = (box[:, 2:].prod(1).sqrt() * grid / 6).clamp(min=0.5)  # about a sixth of the target's size in cells
    ar = torch.arange(grid, device=box.device, dtype=box.dtype)
    dy = (ar[None, :, None] - iy[:, None, None]) ** 2
    dx = (ar[None, None, :] - ix[:, None, None]) ** 2
    heat = torch.exp(-(dx + dy) / (2 * sigma[:, None, None] ** 2))
    return heat.reshape(b, 1, grid, grid), iy, ix


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    return torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], dim=1)


def giou_loss(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 - GIoU, IoU) per row, boxes cx,cy,w,h."""
    from torchvision.ops import box_iou, generalized_box_iou

    p, g = cxcywh_to_xyxy(pred), cxcywh_to_xyxy(gt)
    p = torch.cat([p[:, :2], torch.maximum(p[:, 2:], p[:, :2] + 1e-6)], dim=1)
    return 1 - generalized_box_iou(p, g).diagonal(), box_iou(p, g).diagonal()


@TASKS.register_module("tracking")
class TrackingTask(Task):
    """Args: the crop geometry (see the module docstring), ``loss_weights`` (focal, l1, giou), and the
    online tracker's ``window_penalty`` (0..1, weight of a Hann window on the score map),
    ``template_update_interval`` (0 = never; else every N frames when the peak score >= ``template_update_score``),
    ``size_lr`` (damping of the box size between frames; 1 = none), ``box_loss_at`` (``target``: L1 / GIoU on the
    box regressed at the ground-truth centre cell; ``peak``: at the predicted score peak, the box the tracker
    reads, as OSTrack; ``both``: the mean of the two).
    """

    primary_metric = "AO"
    higher_is_better = True
    metrics = ("AO", "AO_seq_mean", "SR0.50", "SR0.75", "success_auc", "precision@20", "norm_precision", "fps")
    data_splits = ("train", "val", "test")

    def __init__(self, cfg: Any, *, template_size: int = 112, search_size: int = 224, template_context: float = 2.0,
                 search_context: float = 4.0, loss_weights: dict[str, float] | None = None,
                 window_penalty: float = 0.49, template_update_interval: int = 0, template_update_score: float = 0.7,
                 size_lr: float = 1.0, box_loss_at: str = "target") -> None:  # fmt: skip
        super().__init__(cfg)
        if box_loss_at not in BOX_LOSS_AT:
            raise BadInput(f"task.box_loss_at={box_loss_at!r}: expected one of {BOX_LOSS_AT}")
        self.box_loss_at = box_loss_at
        weights = {"focal": 1.0, "l1": 5.0, "giou": 2.0, **dict(loss_weights or {})}
        unknown = set(weights) - set(LOSSES)
        if unknown:
            raise KeyError(f"task.loss_weights: unknown terms {sorted(unknown)}; known: {list(LOSSES)}")
        self.loss_weights = {k: float(v) for k, v in weights.items()}
        self.geometry = {"template_size": int(template_size), "search_size": int(search_size),
                         "template_context": float(template_context), "search_context": float(search_context)}  # fmt: skip
        self.tracker_options = TrackerOptions(**self.geometry, window_penalty=float(window_penalty),
                                              template_update_interval=int(template_update_interval),
                                              template_update_score=float(template_update_score),
                                              size_lr=float(size_lr))  # fmt: skip
        self._datasets: dict[str, Dataset | None] = {}
        self.bad_images = str((cfg.get("train") or {}).get("bad_images", "error"))  # validated by the engine
        self.last_per_sequence: dict[str, dict[str, np.ndarray]] = {}

    # --- model and data -----------------------------------------------------------------------
    def _merge(self, where: str, section: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
        for k in keys:
            if k in section and section[k] != self.geometry[k]:
                raise ValueError(
                    f"{where}.{k}={section[k]} contradicts task.{k}={self.geometry[k]}; set it in task only"
                )
            section[k] = self.geometry[k]
        return section

    def build_model(self) -> nn.Module:
        kw = self._merge("model", dict(self.model_cfg), ("template_size", "search_size"))
        return build_with_keys(MODELS.lookup(kw.pop("type")), kw, "model.")

    def dataset(self, split: str) -> Dataset | None:
        """The dataset of ``data.<split>`` (built once; training pairs get the task's geometry and the run's seed)."""
        if split not in self._datasets:
            d = self.data_cfg.get(split)
            bad = self.bad_images  # frames are checked against the labels as each sequence loads
            if d is not None and d.get("type") == "tracking_pairs":
                self._merge(f"data.{split}", dict(d), GEOMETRY)  # a contradicting value is an error
                self._datasets[split] = self.build_dataset(split, seed=self.seed, bad_images=bad, **self.geometry)
            else:
                self._datasets[split] = self.build_dataset(split, bad_images=bad)
        return self._datasets[split]

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        if not self.data_cfg.get("train"):
            raise KeyError("config: the `data.train` section is missing (e.g. dict(type='tracking_pairs'))")
        train, val = self.dataset("train"), self.dataset("val")
        if val is not None and getattr(val, "withheld", False):
            raise BadInput(f"data.val: {val.seqs[0].gt_file} gives only the first box (withheld by the evaluation "
                           "server), so it cannot pick best.pt; validate on split='val'")  # fmt: skip
        self.dataset("test")  # checked at setup too; tracked once at the end of the run (final_report)
        return train, val

    def collate(self, batch: list[Any]) -> Any:
        if isinstance(batch[0], Sequence):
            return batch
        return torch.utils.data.default_collate(batch)

    # --- steps --------------------------------------------------------------------------------
    def losses(self, out: dict[str, torch.Tensor], box: torch.Tensor) -> dict[str, torch.Tensor]:
        grid = out["score"].shape[-1]
        heat, iy, ix = gaussian_targets(box, grid)
        ar = torch.arange(box.shape[0], device=box.device)
        off, size = out["offset"][ar, :, iy, ix], out["size"][ar, :, iy, ix]
        at_target = torch.stack([(ix + off[:, 0]) / grid, (iy + off[:, 1]) / grid, size[:, 0], size[:, 1]], dim=1)
        # "peak": the box the tracker will read (OSTrack's L1 / GIoU on the box at the predicted score peak)
        preds = {"target": [at_target], "peak": [decode_boxes(out)], "both": [at_target, decode_boxes(out)]}
        l1, giou, iou = [], [], []
        for pred in preds[self.box_loss_at]:
            g, i = giou_loss(pred.float(), box.float())
            l1.append(F.l1_loss(pred.float(), box.float()))
            giou.append(g.mean())
            iou.append(i.mean())
        return {"focal": focal_heatmap_loss(out["score"].float(), heat), "l1": torch.stack(l1).mean(),
                "giou": torch.stack(giou).mean(), "iou": torch.stack(iou).mean().detach()}  # fmt: skip

    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        template, search, box = (t.to(device) for t in batch)
        terms = self.losses(model(template, search), box)
        loss = sum(self.loss_weights[k] * terms[k] for k in LOSSES)
        return loss, {k: float(v.detach()) for k, v in terms.items()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        per_seq, frames, t0 = {}, 0, time.perf_counter()
        try:
            for seqs in loader:
                check_scorable(seqs)
                for seq, boxes in zip(seqs, track(model, seqs, self.tracker_options, device), strict=True):
                    per_seq[seq.name] = sequence_scores(boxes, seq.truth, seq.visible, seq.size)
                    frames += len(seq) - 1
        finally:
            model.train(was_training)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            shards: list[Any] = [None] * torch.distributed.get_world_size()  # each rank tracked its share
            torch.distributed.all_gather_object(shards, (per_seq, frames))
            per_seq = {k: v for shard, _ in shards for k, v in shard.items()}
            frames = sum(n for _, n in shards)
        self.last_per_sequence = per_seq
        self.write_plots(per_seq)
        return {**summarise(per_seq), "fps": frames / max(time.perf_counter() - t0, 1e-9)}

    def write_plots(self, per_seq: dict[str, dict[str, np.ndarray]]) -> list[str]:
        """The success and precision plots of this evaluation in ``<work_dir>/plots/`` (the main rank; none
        outside a run). Each evaluation replaces the previous one's: the run's own files, not a user's."""
        if self.work_dir is None or not per_seq:
            return []
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
            return []
        return plot_curves({"model": per_seq}, str(Path(self.work_dir) / "plots"))

    def final_report(self, model: nn.Module, device: torch.device, loader_of: Any) -> dict[str, Any]:
        """The last evaluation's per-sequence table (also in summary.json), and the final model on ``data.test``:
        its metrics, or for a split whose boxes are withheld (GOT-10k test, TrackingNet TEST) the evaluation
        server's submission in ``<work_dir>/submission`` (+ ``.zip``)."""
        out: dict[str, Any] = {}
        if self.last_per_sequence:
            print(per_sequence_table(self.last_per_sequence))
            out["per_sequence"] = {k: {"frames": len(v["iou"]), "AO": float(v["iou"].mean()) if len(v["iou"]) else None}
                                   for k, v in self.last_per_sequence.items()}  # fmt: skip
        test = self.dataset("test")
        if test is None or (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return out  # (one process tracks the test split; under torchrun use tools/track.py --split test)
        was_training = model.training
        model.eval()
        try:
            t0 = time.perf_counter()
            boxes = track(model, test.seqs, self.tracker_options, device)
            wall = time.perf_counter() - t0
        finally:
            model.train(was_training)
        if test.withheld:
            from recipes.train.data.tracking_roots import write_submission

            frames = sum(len(s) for s in test.seqs)
            seconds = [wall * len(s) / frames for s in test.seqs]
            where = Path(self.work_dir or ".") / "submission"
            out["test_submission"] = str(write_submission(test.kind, test.seqs, boxes, seconds, where))
            print(
                f"[test] {len(test.seqs)} sequences tracked; submission for the evaluation server: {out['test_submission']}"
            )
            return out
        per_seq = {
            s.name: sequence_scores(b, s.truth, s.visible, s.size) for s, b in zip(test.seqs, boxes, strict=True)
        }
        out["test"] = summarise(per_seq)
        print("[test] " + "  ".join(f"{k}={v:.4g}" for k, v in out["test"].items()))
        return out


def check_scorable(seqs: list[Sequence]) -> None:
    """An error naming the file when a sequence's boxes after the first are withheld (nothing to score against)."""
    for s in seqs:
        if s.meta.get("withheld"):
            raise BadInput(f"{s.gt_file}: only the first box is given (a test split whose boxes the evaluation server "
                           "withholds): it cannot be scored; tools/track.py --eval --split test writes the submission")  # fmt: skip


def track(model: nn.Module, seqs: list[Sequence], opts: TrackerOptions, device: torch.device) -> list[np.ndarray]:
    """Boxes (N, 4) x,y,w,h for each sequence: one pass, all sequences advanced together (batched)."""
    trackers = [OnlineTracker(model, opts, device) for _ in seqs]
    out = [np.zeros((len(s), 4)) for s in seqs]
    for t, s in zip(trackers, seqs, strict=True):
        t.init(s.read(0), s.boxes[0])
    for k, s in enumerate(seqs):
        out[k][0] = s.boxes[0]
    for i in range(1, max(len(s) for s in seqs)):
        live = [k for k, s in enumerate(seqs) if i < len(s)]
        boxes = OnlineTracker.step_many([trackers[k] for k in live], [seqs[k].read(i) for k in live])
        for k, b in zip(live, boxes, strict=True):
            out[k][i] = b
    return out
