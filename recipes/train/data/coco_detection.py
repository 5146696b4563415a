"""COCO json + image folder detection dataset, bbox-aware albumentations, RF-DETR targets.

A sample is ``(image CHW float tensor, target)`` with the target RF-DETR's criterion reads:
``labels`` (contiguous 0..K-1, sorted category ids), ``boxes`` (normalised cx, cy, w, h of the
transformed image), plus ``image_id``, ``orig_size`` and ``size`` (h, w). Bad input is handled at
load time: a malformed file names the file and the field; boxes outside the image are clipped and
zero-area ones dropped, with counts in the log; images that fail to decode are skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from recipes.options import forwards_kwargs
from recipes.train.registry import DATASETS

log = logging.getLogger("recipes.detection")

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RF-DETR's RFDETR.means / stds
IMAGENET_STD = (0.229, 0.224, 0.225)
ANN_NAME = "_annotations.coco.json"  # the Roboflow / RF-DETR split layout (tools/voc2coco.py writes it)


def _field(obj: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise ValueError(f"{where}: missing the {key!r} field")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}: field {key!r} should be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def load_coco(ann_file: str | Path) -> dict[str, Any]:
    """Read and check a COCO detection json; every problem names the file and the field."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise FileNotFoundError(f"annotation file {str(ann_file)!r} does not exist")
    try:
        coco = json.loads(ann_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{ann_file}: not valid json ({e})") from None
    f = str(ann_file)
    for key in ("images", "annotations", "categories"):
        _field(coco, key, f, list)
    if not coco["categories"]:
        raise ValueError(f"{f}: 'categories' is empty; a detection set needs at least one class")
    for i, c in enumerate(coco["categories"]):
        _field(c, "id", f"{f}: categories[{i}]", int)
        _field(c, "name", f"{f}: categories[{i}]", str)
    for i, im in enumerate(coco["images"]):
        _field(im, "id", f"{f}: images[{i}]", (int, str))
        _field(im, "file_name", f"{f}: images[{i}]", str)
    cat_ids = {c["id"] for c in coco["categories"]}
    img_ids = {im["id"] for im in coco["images"]}
    for i, a in enumerate(coco["annotations"]):
        where = f"{f}: annotations[{i}]"
        _field(a, "image_id", where, (int, str))
        cid = _field(a, "category_id", where, int)
        box = _field(a, "bbox", where, list)
        if len(box) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
            raise ValueError(f"{where}: field 'bbox' should be 4 finite numbers [x, y, w, h], got {box!r}")
        if cid not in cat_ids:
            raise ValueError(f"{where}: category_id {cid} is not among the categories {sorted(cat_ids)}")
        if a["image_id"] not in img_ids:
            raise ValueError(f"{where}: image_id {a['image_id']!r} is not among the images")
    return coco


def clean_boxes(boxes: np.ndarray, width: float, height: float) -> tuple[np.ndarray, int, int]:
    """Clip xywh boxes to the image and find the ones left with no area.

    Returns (clipped xyxy boxes, keep mask, number clipped among the kept, number dropped).
    """
    xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1) if len(boxes) else np.zeros((0, 4))
    clipped = xyxy.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    n_clipped = int((np.abs(clipped - xyxy).sum(1) > 1e-6)[keep].sum())
    return clipped, keep, n_clipped, int((~keep).sum())


def build_transform(
    train: bool, size: int, scale_jitter: bool = True, flip: float = 0.5, color_jitter: float = 0.5
) -> Any:
    """Albumentations pipeline to a square ``size`` (RF-DETR's square resize), boxes kept valid.

    Train: horizontal flip, then either a plain resize or a random-resized crop (RF-DETR's
    ``scale_jitter`` option B), colour jitter; boxes cut to nothing by a crop are dropped.
    Eval: the square resize only.
    """
    import albumentations as A

    if train:
        resize = A.OneOf([A.Resize(size, size), A.RandomResizedCrop((size, size), scale=(0.3, 1.0))], p=1.0) \
            if scale_jitter else A.Resize(size, size)  # fmt: skip
        ops = [A.HorizontalFlip(p=flip), resize,
               A.ColorJitter(0.2, 0.2, 0.2, 0.02, p=color_jitter)]  # fmt: skip
    else:
        ops = [A.Resize(size, size)]
    bbox = A.BboxParams(format="pascal_voc", label_fields=["labels"], min_area=1.0, clip=True)
    return A.Compose([*ops, A.Normalize(IMAGENET_MEAN, IMAGENET_STD)], bbox_params=bbox)


@forwards_kwargs(build_transform, filled=("train", "size"))
class CocoDetection(Dataset):
    """A COCO split: ``ann_file`` plus the folder the ``file_name`` entries are relative to.

    >>> ds = CocoDetection("coco/train/_annotations.coco.json", size=384)  # doctest: +SKIP
    >>> image, target = ds[0]; target["boxes"].shape  # doctest: +SKIP
    torch.Size([1, 4])
    """

    def __init__(
        self,
        ann_file: str | Path,
        img_dir: str | Path | None = None,
        size: int = 384,
        train: bool = False,
        num_classes: int | None = None,
        seed: int = 0,
        **aug: Any,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.img_dir = Path(img_dir) if img_dir is not None else self.ann_file.parent
        coco = load_coco(self.ann_file)
        cats = sorted(coco["categories"], key=lambda c: c["id"])
        self.cat_ids = [c["id"] for c in cats]
        self.class_names = [c["name"] for c in cats]
        if num_classes is not None and num_classes != len(cats):
            raise ValueError(
                f"{self.ann_file}: {len(cats)} categories {self.class_names} but num_classes={num_classes}; "
                "leave num_classes unset to follow the dataset, or fix the 'categories' list"
            )
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"data.size must be a whole number > 0 (the square side in pixels; by default "
                             f"model.resolution), got {size!r} for {self.ann_file}")  # fmt: skip
        self.size, self.train = size, train
        self.seed, self.epoch = int(seed), 0
        self.transform = build_transform(train, size, **aug)
        self.images, self.anns = self._index(coco)
        self.skipped: list[str] = []  # images that failed to decode, in this process

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    def _index(self, coco: dict[str, Any]) -> tuple[list[dict], dict[Any, np.ndarray]]:
        label_of = {cid: k for k, cid in enumerate(self.cat_ids)}
        per_image: dict[Any, list] = {im["id"]: [] for im in coco["images"]}
        for a in coco["annotations"]:
            if not a.get("iscrowd", 0):
                per_image[a["image_id"]].append([*a["bbox"], label_of[a["category_id"]]])
        anns, n_clip, n_drop, n_unsized = {}, 0, 0, 0
        for im in coco["images"]:
            rows = np.asarray(per_image[im["id"]], dtype=np.float64).reshape(-1, 5)
            w, h = im.get("width"), im.get("height")
            if not w or not h:  # unknown size: checked against the decoded image in __getitem__
                n_unsized += 1
                w = h = math.inf
            boxes, keep, c, d = clean_boxes(rows[:, :4], w, h)
            n_clip, n_drop = n_clip + c, n_drop + d
            anns[im["id"]] = np.concatenate([boxes, rows[:, 4:]], axis=1)[keep]
        log.info(
            "%s: %d images, %d boxes, %d classes %s; %d boxes clipped to the image, %d dropped (zero area)%s",
            self.ann_file, len(coco["images"]), sum(len(v) for v in anns.values()), len(self.cat_ids),
            self.class_names, n_clip, n_drop, f"; {n_unsized} images without width/height" if n_unsized else "",
        )  # fmt: skip
        self.num_clipped, self.num_dropped = n_clip, n_drop
        return coco["images"], anns

    def image_files(self) -> list[Path]:
        """One file per sample, for the setup-time data check."""
        return [self.img_dir / im["file_name"] for im in self.images]

    def expected_sizes(self) -> list[tuple[int, int] | None]:
        """``(width, height)`` from the json, where it gives them."""
        return [(im["width"], im["height"]) if im.get("width") and im.get("height") else None for im in self.images]

    def drop_samples(self, positions: Sequence[int]) -> None:
        """Leave out images (positions in the current order), e.g. unreadable files."""
        gone = set(positions)
        self.images = [im for k, im in enumerate(self.images) if k not in gone]

    def set_epoch(self, epoch: int) -> None:
        """Augmentation is seeded per sample from (seed, epoch, index): resumed runs see the same data."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def read_image(self, index: int) -> np.ndarray | None:
        """RGB uint8 array, or None (with a warning) when the file is missing or does not decode."""
        from PIL import Image

        path = self.img_dir / self.images[index]["file_name"]
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as e:
            self.skipped.append(str(path))
            log.warning("skipping image %s: it does not decode (%s); %d skipped so far", path, e, len(self.skipped))
            return None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        image = self.read_image(index)
        if image is None:
            if not self.train or len(self.skipped) >= len(self):
                return None  # the task's collate drops it; evaluation skips the image
            return self[(index + 1) % len(self)]  # training: the next image takes its place
        h, w = image.shape[:2]
        rows = self.anns[self.images[index]["id"]]
        boxes, keep, _, _ = clean_boxes(_xywh(rows[:, :4]), w, h)
        if self.train:
            self.transform.set_random_seed(((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index) % 2**32)
        out = self.transform(image=image, bboxes=boxes[keep], labels=rows[keep, 4].astype(np.int64))
        img = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))).float()
        return img, self._target(index, out["bboxes"], out["labels"], (h, w), img.shape[1:])

    def _target(self, index: int, bboxes: Any, labels: Any, orig: tuple[int, int], size: Sequence[int]) -> dict:
        sh, sw = size
        b = torch.as_tensor(np.asarray(bboxes, dtype=np.float32).reshape(-1, 4))
        cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2 / sw, (b[:, 1] + b[:, 3]) / 2 / sh,
                              (b[:, 2] - b[:, 0]) / sw, (b[:, 3] - b[:, 1]) / sh], dim=1)  # fmt: skip
        return {
            "boxes": cxcywh,
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
            "image_id": torch.tensor(index),
            "orig_size": torch.tensor(orig),
            "size": torch.tensor([sh, sw]),
        }

    def coco_gt(self) -> dict[str, Any]:
        """Ground truth as a COCO dict (image id = dataset index, category id = label + 1), cleaned boxes."""
        images, anns = [], []
        for k, im in enumerate(self.images):
            images.append({"id": k, "width": im.get("width", 0), "height": im.get("height", 0)})
            for x0, y0, x1, y1, lab in self.anns[im["id"]]:
                w, h = x1 - x0, y1 - y0
                anns.append({"id": len(anns) + 1, "image_id": k, "category_id": int(lab) + 1,
                             "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
        cats = [{"id": k + 1, "name": n} for k, n in enumerate(self.class_names)]
        return {"images": images, "annotations": anns, "categories": cats}


def _xywh(xyxy: np.ndarray) -> np.ndarray:
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)


@DATASETS.register_module("coco_detection")
@forwards_kwargs(CocoDetection, filled=("ann_file", "img_dir", "train"))
def build_coco_detection(
    root: str | Path | None = None,
    split: str = "train",
    ann_file: str | None = None,
    img_dir: str | None = None,
    train: bool | None = None,
    **kwargs: Any,
) -> CocoDetection:
    """``root/split/_annotations.coco.json`` (RF-DETR / Roboflow layout) or explicit paths under ``root``.

    ``train`` (training augmentation) defaults to ``split == "train"``.
    """
    if root is None and (ann_file is None or not Path(ann_file).is_absolute()):
        raise ValueError(
            "data: set data_root (e.g. --cfg-options data_root=/path/to/coco_folder) or an absolute ann_file"
        )
    base = Path(root) if root is not None else Path("/")
    ann = base / (ann_file or f"{split}/{ANN_NAME}")
    imgs = base / img_dir if img_dir else None
    return CocoDetection(ann, imgs, train=split == "train" if train is None else train, **kwargs)
