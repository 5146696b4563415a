"""The online tracker: search region around the last box, Hann-window penalty, optional template update.

Used by the tracking task's evaluation and by ``tools/track.py``. Frames are processed one at a
time per sequence; :meth:`OnlineTracker.step_many` runs several sequences' current frames as one
batch (each with its own template).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from recipes.train.data.tracking_pairs import crop_region, to_tensor
from recipes.train.models.tracker import decode_boxes


@dataclass(frozen=True)
class TrackerOptions:
    template_size: int = 112
    search_size: int = 224
    template_context: float = 2.0
    search_context: float = 4.0
    window_penalty: float = 0.49  # score' = (1 - p) * score + p * hann: prefers small moves
    template_update_interval: int = 0  # 0: the first frame's template for the whole sequence
    template_update_score: float = 0.7  # update only when the peak score reaches this
    size_lr: float = 1.0  # w, h = (1 - size_lr) * previous + size_lr * predicted (SiamFC/SiamRPN damping); 1 = OSTrack

    def __post_init__(self) -> None:
        if not 0.0 <= self.window_penalty <= 1.0:
            raise ValueError(f"task.window_penalty must lie in [0, 1], got {self.window_penalty}")
        if not 0.0 < self.size_lr <= 1.0:
            raise ValueError(f"task.size_lr must lie in (0, 1], got {self.size_lr}")
        if self.template_update_interval < 0:
            raise ValueError(f"task.template_update_interval must be >= 0, got {self.template_update_interval}")


class OnlineTracker:
    def __init__(self, model: nn.Module, opts: TrackerOptions, device: torch.device | str = "cpu") -> None:
        self.model, self.opts, self.device = model, opts, torch.device(device)
        self.box = np.zeros(4)
        self.frame = 0
        self.size = (0, 0)
        self._window: torch.Tensor | None = None

    def init(self, image: np.ndarray, box: np.ndarray) -> None:
        o = self.opts
        self.template = to_tensor(crop_region(image, box, o.template_context, o.template_size)[0])
        self.box, self.frame, self.size = np.asarray(box, dtype=np.float64), 0, (image.shape[1], image.shape[0])

    def window(self, grid: int) -> torch.Tensor:
        if self._window is None or self._window.shape[-1] != grid:
            h = torch.hann_window(grid + 2, periodic=False)[1:-1]
            self._window = (h[:, None] * h[None, :]).to(self.device)
        return self._window

    @staticmethod
    @torch.no_grad()
    def step_many(trackers: list[OnlineTracker], images: list[np.ndarray]) -> list[np.ndarray]:
        """Track one new frame for each tracker; returns each new box x,y,w,h (image pixels)."""
        t0 = trackers[0]
        o = t0.opts
        crops, maps = [], []
        for t, img in zip(trackers, images, strict=True):
            crop, m = crop_region(img, t.box, o.search_context, o.search_size)
            crops.append(to_tensor(crop))
            maps.append(m)
        z = torch.stack([t.template for t in trackers]).to(t0.device)
        out = t0.model(z, torch.stack(crops).to(t0.device))
        score = out["score"].float().sigmoid()
        pen = (1 - o.window_penalty) * score + o.window_penalty * t0.window(score.shape[-1])
        boxes = decode_boxes({k: v.float() for k, v in out.items()}, pen).cpu().numpy()
        peaks = score.flatten(1).max(1).values.cpu().numpy()
        result = []
        for t, img, b, (k, x0, y0), peak in zip(trackers, images, boxes, maps, peaks, strict=True):
            t.box = t.to_image(b, k, x0, y0)
            t.frame += 1
            every = o.template_update_interval
            if every and t.frame % every == 0 and peak >= o.template_update_score:
                t.template = to_tensor(crop_region(img, t.box, o.template_context, o.template_size)[0])
            result.append(t.box.copy())
        return result

    def to_image(self, b: np.ndarray, k: float, x0: float, y0: float) -> np.ndarray:
        """A cx,cy,w,h box in [0, 1] of the search crop -> x,y,w,h in the image (size damped by ``size_lr``),
        its centre kept in the image, then clipped to the image; at least 4 px a side."""
        s, lr = self.opts.search_size / k, self.opts.size_lr
        cx, cy = b[0] * s + x0, b[1] * s + y0
        w = (1 - lr) * self.box[2] + lr * max(b[2] * s, 4.0)
        h = (1 - lr) * self.box[3] + lr * max(b[3] * s, 4.0)
        wi, hi = self.size
        cx, cy = min(max(cx, 0.0), wi), min(max(cy, 0.0), hi)
        x0_, y0_ = max(cx - w / 2, 0.0), max(cy - h / 2, 0.0)
        x1_, y1_ = min(cx + w / 2, wi), min(cy + h / 2, hi)
        return np.array([x0_, y0_, max(x1_ - x0_, 4.0), max(y1_ - y0_, 4.0)])

    def update(self, image: np.ndarray) -> np.ndarray:
        return self.step_many([self], [image])[0]


def track_opencv_mil(seq: object) -> np.ndarray:
    """OpenCV's ``TrackerMIL`` over a sequence (same input and output as the model's tracker).

    Not deterministic: on the tests' tiny sequences two runs differ even with ``cv2.setRNGSeed`` and one thread
    (on the shared eval split two runs gave the same AO).
    """
    import cv2

    boxes = np.zeros((len(seq), 4))
    boxes[0] = seq.boxes[0]
    mil = cv2.TrackerMIL.create()
    mil.init(cv2.cvtColor(seq.read(0), cv2.COLOR_RGB2BGR), tuple(int(round(v)) for v in seq.boxes[0]))
    for i in range(1, len(seq)):
        ok, box = mil.update(cv2.cvtColor(seq.read(i), cv2.COLOR_RGB2BGR))
        boxes[i] = box if ok else boxes[i - 1]  # lost: keep the last box
    return boxes


def eval_sequences(cfg: object, split: str = "val") -> object:
    """The ``tracking_sequences`` dataset of a tracking config's ``data.<split>`` (``val`` or ``test``)."""
    from recipes.train.config import fill_data_root
    from recipes.train.data.tracking_pairs import TrackingSequences
    from recipes.train.errors import BadInput

    if split not in ("val", "test"):
        raise BadInput(f"--split {split!r}: expected 'val' or 'test'")
    section = dict(fill_data_root(cfg.get("data"), cfg.get("data_root")).get(split) or {})
    if not section:
        raise BadInput(f"evaluation needs a data.{split} section (dict(type='tracking_sequences', split=...))")
    if section.pop("type", "tracking_sequences") != "tracking_sequences":
        raise BadInput(f"evaluation: data.{split} must be of type 'tracking_sequences' (whole sequences, one pass)")
    if section.get("root") is None:
        raise BadInput("evaluation needs data_root (e.g. --cfg-options data_root=/path/to/sequences)")
    bad_images = (cfg.get("train") or {}).get("bad_images", "error")
    return TrackingSequences(**{"bad_images": bad_images, **section})


def evaluate_tracker(cfg: object, run: object, split: str = "val",
                     data: object = None) -> tuple[list, list, dict, dict[str, float]]:  # fmt: skip
    """``run`` (sequences -> boxes) over a tracking config's ``data.<split>`` sequences (``data``: that split
    already loaded), scored as the task scores its model: ``(sequences, boxes, per-sequence scores, overall
    metrics with fps and frames)``."""
    import time

    from recipes.train.metrics.tracking import sequence_scores, summarise
    from recipes.train.tasks.tracking import check_scorable

    seqs = (data if data is not None else eval_sequences(cfg, split)).seqs
    check_scorable(seqs)
    t0 = time.perf_counter()
    boxes = run(seqs)
    wall = time.perf_counter() - t0
    per_seq = {s.name: sequence_scores(b, s.truth, s.visible, s.size) for s, b in zip(seqs, boxes, strict=True)}
    frames = sum(len(s) - 1 for s in seqs)
    return seqs, boxes, per_seq, {**summarise(per_seq), "fps": frames / wall, "frames": frames}


def evaluate_opencv_mil(cfg: object) -> dict[str, Any]:
    """OpenCV ``TrackerMIL`` over a tracking config's ``data.val`` sequences, and over ``data.test`` when the config
    has one with boxes, scored as the task scores its model: ``{"val": metrics, "test": metrics}``.

    The reference row of a tracking baseline (``run="recipes.train.tasks.tracking_online:evaluate_opencv_mil"``
    in an experiment's method): the same readers, the same one-pass protocol and metrics as the in-run evaluation
    and as a trained cell's final ``test`` figures.
    """

    def mil(seqs: list) -> list:
        return [track_opencv_mil(s) for s in seqs]

    out = {"val": evaluate_tracker(cfg, mil)[3]}
    test = eval_sequences(cfg, "test") if (cfg.get("data") or {}).get("test") is not None else None
    if test is not None and not test.withheld:  # loaded once: the frame checks read every header
        out["test"] = evaluate_tracker(cfg, mil, "test", test)[3]
    return out
