"""Training pairs and evaluation sequences for single-object tracking (registered in DATASETS).

``tracking_pairs``: each sample is a (template, search) pair from one sequence, the search frame
within ``max_gap`` frames of the template; the search region is cut around a jittered box (scale
and shift, as OSTrack's ``center/scale_jitter_factor``), both crops keep context around the target.
Albumentations applies the same flip and photometric change to both crops (bbox-aware). Everything
random is seeded per sample from ``(seed, epoch, index)``, so a resumed run sees the same data.
``still_images``: a share of the pairs cut from still images of a COCO-format detection set (:class:`StillImages`).

``tracking_sequences``: whole sequences for evaluation (items are :class:`Sequence`); ``max_sequences``
keeps the first N (GOT-10k's 180 validation sequences take ~15 min a pass on 2 CPU cores).
Both read a plain folder of sequences (``split=None``) or a split of a GOT-10k / LaSOT / TrackingNet root.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from recipes.train.data.tracking import Sequence, load_sequences
from recipes.train.data.tracking_roots import root_kind
from recipes.train.errors import BadInput
from recipes.train.registry import DATASETS

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # ImageNet statistics, as DINOv2 / VideoMAE
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def crop_region(img: np.ndarray, box: np.ndarray, context: float, out_size: int) -> tuple[np.ndarray, tuple]:
    """Square crop of side ``context * sqrt(w*h)`` centred on ``box`` (x,y,w,h), resized to ``out_size``.

    Returns the crop (padded with the image mean) and ``(scale, x0, y0)``: image = crop / scale + (x0, y0).
    """
    import cv2

    x, y, w, h = (float(v) for v in box)
    side = max(context * math.sqrt(max(w, 1.0) * max(h, 1.0)), 4.0)
    x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
    s = out_size / side
    m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], dtype=np.float64)
    fill = tuple(float(v) for v in img.reshape(-1, 3).mean(0))
    crop = cv2.warpAffine(img, m, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=fill)  # fmt: skip
    return crop, (s, x0, y0)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    x = (img.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def build_augment(flip: float, photometric: float) -> Any:
    import albumentations as A

    ops = [A.HorizontalFlip(p=flip)] if flip else []
    if photometric:
        ops += [A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0, p=photometric),
                A.ToGray(p=0.05 * photometric)]  # fmt: skip
    if not ops:
        return None
    boxes = A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True) if flip else None
    return A.Compose(ops, bbox_params=boxes,
                     additional_targets={"template": "image"}, is_check_shapes=False, strict=True)  # fmt: skip


@DATASETS.register_module("tracking_pairs")
class TrackingPairs(Dataset):
    """(template, search, box) samples; ``box`` is the target's cx,cy,w,h in the search crop, in [0, 1]."""

    def __init__(self, root: str, sequences: list[str] | str | None = None, exclude: list[str] = (),
                 samples_per_epoch: int = 2000, max_gap: int = 100, template_size: int = 112,
                 search_size: int = 224, template_context: float = 2.0, search_context: float = 4.0,
                 scale_jitter: float = 0.25, shift_jitter: float = 3.0, flip: float = 0.5,
                 photometric: float = 0.8, layout: str = "auto", seed: int = 0,
                 bad_images: str = "error", split: str | None = None,
                 still_images: dict[str, Any] | None = None) -> None:  # fmt: skip
        if max_gap < 1 or samples_per_epoch < 1:
            raise ValueError(f"tracking_pairs: max_gap and samples_per_epoch must be >= 1, got {max_gap}, "
                             f"{samples_per_epoch}")  # fmt: skip
        self.seqs = load_sequences(root, sequences, list(exclude), layout, bad_images, split)
        withheld = [s for s in self.seqs if s.meta.get("withheld")]
        if withheld:
            raise BadInput(f"tracking_pairs: {withheld[0].gt_file} gives only the first box (the {split} split's "
                           "boxes are withheld); train on split='train'")  # fmt: skip
        self.weights = np.array([s.visible.sum() for s in self.seqs], dtype=np.float64)
        self.weights /= self.weights.sum()
        self.n, self.max_gap = int(samples_per_epoch), int(max_gap)
        self.sizes = (int(template_size), int(search_size))
        self.context = (float(template_context), float(search_context))
        self.jitter = (float(scale_jitter), float(shift_jitter))
        self.augment = build_augment(flip, photometric)
        self.seed, self.epoch = int(seed), 0
        self.stills = None if still_images is None else StillImages(root, **dict(still_images))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def pick(self, rng: np.random.Generator) -> tuple[Sequence, int, int]:
        seq = self.seqs[rng.choice(len(self.seqs), p=self.weights)]
        vis = np.flatnonzero(seq.visible)
        t = int(rng.choice(vis))
        near = vis[np.abs(vis - t) <= self.max_gap]
        return seq, t, int(rng.choice(near))

    def jittered(self, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        scale, shift = self.jitter
        wh = box[2:] * np.exp(rng.standard_normal(2) * scale)
        centre = box[:2] + box[2:] / 2 + math.sqrt(wh.prod()) * shift * (rng.random(2) - 0.5)
        return np.concatenate([centre - wh / 2, wh])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        still = np.random.default_rng([self.seed, self.epoch, int(index), 1])  # apart: share=0 changes nothing
        if self.stills is not None and still.random() < self.stills.share:
            image, box = self.stills.pick(still)  # template and search cut from one still image (OSTrack's COCO pairs)
            t_img, t_box, s_img, s_box = image, box, image, box
        else:
            seq, t, s = self.pick(rng)
            t_img, t_box, s_img, s_box = seq.read(t), seq.boxes[t], seq.read(s), seq.boxes[s]
        (tz, tx), (cz, cx) = self.sizes, self.context
        template, _ = crop_region(t_img, t_box, cz, tz)
        search, (k, x0, y0) = crop_region(s_img, self.jittered(s_box, rng), cx, tx)
        x, y, w, h = s_box
        xyxy = np.clip([(x - x0) * k, (y - y0) * k, (x + w - x0) * k, (y + h - y0) * k], 0, tx)
        if xyxy[2] - xyxy[0] < 1 or xyxy[3] - xyxy[1] < 1:  # jitter pushed the target out: re-centre on it
            search, (k, x0, y0) = crop_region(s_img, s_box, cx, tx)
            xyxy = np.clip([(x - x0) * k, (y - y0) * k, (x + w - x0) * k, (y + h - y0) * k], 0, tx)
        seed = int(rng.integers(2**31))
        out = {"image": search, "template": template, "bboxes": [xyxy]}
        if self.augment is not None:
            self.augment.set_random_seed(seed)
            boxes = {"bboxes": [xyxy], "labels": [0]} if "bboxes" in self.augment.processors else {}
            out = {"bboxes": [xyxy], **self.augment(image=search, template=template, **boxes)}
        bx = np.asarray(out["bboxes"][0], dtype=np.float32) / tx
        box = torch.tensor([(bx[0] + bx[2]) / 2, (bx[1] + bx[3]) / 2, bx[2] - bx[0], bx[3] - bx[1]])
        return to_tensor(out["template"]), to_tensor(out["image"]), box


class StillImages:
    """Boxes of a COCO-format detection set as extra training pairs: a ``share`` of the samples cut the template
    and the (jittered) search region from one still image around one object, as OSTrack trains on COCO.

    Keys: ``share`` (0..1, the fraction of samples), ``min_size`` (px; smaller boxes are left out), and
    ``coco_detection``'s own: ``ann_file`` (absolute, or under ``root``), ``img_dir``, ``root`` (default: the
    tracking data's root), ``split``.
    """

    def __init__(self, tracking_root: str, share: float = 0.25, min_size: float = 8.0, root: str | None = None,
                 **coco: Any) -> None:  # fmt: skip
        from recipes.train.data.coco_detection import build_coco_detection

        if not 0.0 <= share <= 1.0:
            raise BadInput(f"data.train.still_images.share must lie in [0, 1], got {share}")
        unknown = set(coco) - {"ann_file", "img_dir", "split"}
        if unknown:
            raise BadInput(f"data.train.still_images: unknown keys {sorted(unknown)}; known: share, min_size, root, "
                           "ann_file, img_dir, split")  # fmt: skip
        self.coco = build_coco_detection(root if root is not None else tracking_root, train=False, **coco)
        self.share = float(share)
        self.objects = [(i, box) for i, im in enumerate(self.coco.images) for box in self.coco.anns[im["id"]][:, :4]
                        if min(box[2], box[3]) >= min_size]  # fmt: skip
        if not self.objects:
            raise BadInput(f"{self.coco.ann_file}: no box of at least {min_size:g} px to cut training pairs from")

    def pick(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        i, box = self.objects[int(rng.integers(len(self.objects)))]
        image = self.coco.read_image(i)
        if image is None:
            raise BadInput(f"{self.coco.img_dir / self.coco.images[i]['file_name']}: the image cannot be read")
        return image, np.asarray(box, dtype=np.float64)


@DATASETS.register_module("tracking_sequences")
class TrackingSequences(Dataset):
    """Whole sequences for one-pass evaluation; items are :class:`Sequence` objects."""

    def __init__(self, root: str, sequences: list[str] | str | None = None, exclude: list[str] = (),
                 layout: str = "auto", bad_images: str = "error", split: str | None = None,
                 max_sequences: int | None = None) -> None:  # fmt: skip
        if max_sequences is not None and max_sequences < 1:
            raise BadInput(f"tracking_sequences: max_sequences must be >= 1 or None, got {max_sequences}")
        self.seqs = load_sequences(root, sequences, list(exclude), layout, bad_images, split)[:max_sequences]
        self.kind = root_kind(Path(root))

    @property
    def withheld(self) -> bool:
        """True for a test split whose boxes after the first are withheld (results go to the evaluation server)."""
        return any(s.meta.get("withheld") for s in self.seqs)

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, index: int) -> Sequence:
        return self.seqs[index]
