"""COCO box mAP with ``faster-coco-eval`` (``pycocotools`` when it is missing), plus per-class AP."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np


def _quiet(*args: Any, **kwargs: Any) -> None:
    return None


def _backend() -> tuple[Any, Any]:
    try:
        from functools import partial

        from faster_coco_eval import COCO, COCOeval_faster

        return partial(COCO, print_function=_quiet), partial(COCOeval_faster, print_function=_quiet)
    except ImportError:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval


def coco_map(
    gt: dict[str, Any],
    dets: list[dict[str, Any]],
    img_ids: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """``mAP`` (@[.5:.95]), ``mAP50``, ``mAP75`` and ``AP/<class>`` for COCO-format ``dets``.

    ``dets``: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``. ``img_ids`` limits the
    evaluation to the images actually predicted (skipped images do not count as misses).

    >>> gt = {"images": [{"id": 0, "width": 10, "height": 10}], "categories": [{"id": 1, "name": "a"}],
    ...       "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 0}]}
    >>> coco_map(gt, [{"image_id": 0, "category_id": 1, "bbox": [1, 1, 4, 4], "score": 0.9}])["mAP50"]
    1.0
    """
    names = list(class_names or [c["name"] for c in gt["categories"]])
    zeros = {"mAP": 0.0, "mAP50": 0.0, "mAP75": 0.0, **{f"AP/{n}": 0.0 for n in names}}
    if not dets or not gt["annotations"]:
        return zeros
    coco_cls, eval_cls = _backend()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_cls(gt)
        coco_dt = coco_gt.loadRes(dets)
        ev = eval_cls(coco_gt, coco_dt, "bbox")
        if img_ids is not None:
            ev.params.imgIds = sorted(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(0.0, float(s)) for s in ev.stats[:3]]
    out = {"mAP": stats[0], "mAP50": stats[1], "mAP75": stats[2]}
    # precision: [iou thr, recall, class, area range, max dets]; area "all", 100 detections
    precision = np.asarray(ev.eval["precision"])[:, :, :, 0, -1]
    cat_ids = sorted(c["id"] for c in gt["categories"])
    for k, (cid, name) in enumerate(zip(cat_ids, names, strict=True)):
        p = precision[:, :, ev.params.catIds.index(cid)] if cid in ev.params.catIds else precision[:, :, k]
        p = p[p > -1]
        out[f"AP/{name}"] = float(p.mean()) if p.size else 0.0
    return out
