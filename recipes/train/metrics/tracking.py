"""One-pass tracking metrics, each computed as the reference toolkit named beside it computes it.

* ``AO``, ``SR0.50``, ``SR0.75`` (GOT-10k toolkit ``ExperimentGOT10k.report``, got10k 0.1.3): the first
  frame is not scored, only frames with the target visible (``cover > 0``) count, the prediction and the
  ground truth are first bounded to the image (``x`` clipped to ``[0, W]``, then ``w`` to ``W - x``: a box
  hanging off the left edge is shifted, not cropped), IoU is ``inter / (union + eps)``; the IoUs of all
  frames of all sequences are pooled, then averaged (``AO``) or thresholded (IoU strictly above 0.5 / 0.75).
  ``AO_seq_mean`` is the mean over sequences of each sequence's mean IoU (this module's former ``AO``).
* ``success_auc``, ``precision@20`` (OTB as pytracking's ``extract_results`` / pysot-toolkit's
  ``OPEBenchmark``): every frame counts, frame 1 as the given box (IoU 1); per sequence, the fraction of
  its frames with IoU above each of 21 thresholds 0, 0.05, ..., 1 (success curve) or with a centre error
  of at most 0, 1, ..., 50 px (precision curve); the curves are averaged over sequences; AUC is the mean of
  the success curve, precision@20 the precision curve at 20 px.
* ``norm_precision`` (LaSOT, same code): the centre error divided by the ground truth's w, h per axis, at
  most 0.2 (threshold index 20 of 0, 0.01, ..., 0.5), per sequence then averaged.
* Absent frames (flagged, or a zero-size ground truth) are misses in the three OTB / LaSOT figures (they
  stay in each sequence's denominator), as pytracking and pysot do on LaSOT; GOT-10k skips them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

IOU_THRESHOLDS = np.arange(0, 1.05, 0.05)  # pysot's thresholds_overlap (pytracking: the same 21 values)
PIXEL_THRESHOLDS = np.arange(0, 51)
NORM_THRESHOLDS = np.arange(0, 51) / 100
GOT10K_EPS = np.finfo(float).eps


def bound_to_image(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Boxes x,y,w,h bounded to a ``size = (W, H)`` image as the GOT-10k toolkit's ``rect_iou(bound=)`` does."""
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    for axis, limit in enumerate(size):
        b[:, axis] = np.clip(b[:, axis], 0, limit)
        b[:, axis + 2] = np.clip(b[:, axis + 2], 0, limit - b[:, axis])
    return b


def box_iou(a: np.ndarray, b: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """IoU of x,y,w,h boxes, row by row (``eps`` added to the union, as GOT-10k's toolkit adds machine eps)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0, y0 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x1 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    y1 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter + eps
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(union > 0, inter / union, 0.0), 0.0, 1.0)


def centre_errors(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixel centre distance, centre distance normalised by the ground truth's w and h)."""
    pred, gt = np.asarray(pred, dtype=np.float64).reshape(-1, 4), np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    d = (pred[:, :2] + pred[:, 2:] / 2) - (gt[:, :2] + gt[:, 2:] / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.linalg.norm(d, axis=1), np.linalg.norm(d / gt[:, 2:], axis=1)


def sequence_scores(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray,
                    size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Per-frame scores of one sequence: ``iou`` (GOT-10k: scored frames only, boxes bounded to ``size``
    when given), and over every frame ``otb_iou`` (-1 where absent), ``centre_px`` / ``centre_norm`` (inf
    where absent), frame 1 taken as the ground truth as pytracking does."""
    pred = np.array(pred, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    if pred.shape != gt.shape:
        raise ValueError(f"tracking metrics: {len(pred)} predicted boxes for {len(gt)} ground-truth frames")
    valid = np.asarray(visible, dtype=bool) & (np.nan_to_num(gt[:, 2:]) > 0).all(1)
    keep = valid.copy()
    keep[0] = False
    p, g = (
        (pred[keep], gt[keep]) if size is None else (bound_to_image(pred[keep], size), bound_to_image(gt[keep], size))
    )
    pred[0] = gt[0]
    otb_iou = np.full(len(gt), -1.0)
    otb_iou[valid] = box_iou(pred[valid], gt[valid])
    px, norm = np.full(len(gt), np.inf), np.full(len(gt), np.inf)
    px[valid], norm[valid] = centre_errors(pred[valid], gt[valid])
    return {"iou": box_iou(p, g, GOT10K_EPS), "otb_iou": otb_iou, "centre_px": px, "centre_norm": norm}


def summarise(per_sequence: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Overall metrics from :func:`sequence_scores` of each sequence (see the module docstring)."""
    if not per_sequence:
        raise ValueError("tracking metrics: no sequence to score")
    seqs = list(per_sequence.values())
    iou = np.concatenate([v["iou"] for v in seqs])
    scored = [v["iou"] for v in seqs if len(v["iou"])]
    pooled = {"AO": iou.mean(), "SR0.50": (iou > 0.5).mean(), "SR0.75": (iou > 0.75).mean()} if len(iou) else {}
    return {
        **{k: float(pooled.get(k, 0.0)) for k in ("AO", "SR0.50", "SR0.75")},
        "AO_seq_mean": float(np.mean([i.mean() for i in scored])) if scored else 0.0,
        "success_auc": float(mean_curve(seqs, "otb_iou").mean()),
        "precision@20": float(mean_curve(seqs, "centre_px")[20]),
        "norm_precision": float(mean_curve(seqs, "centre_norm")[20]),
    }


def success_curve(iou: np.ndarray) -> np.ndarray:
    """Fraction of frames with IoU strictly above each of :data:`IOU_THRESHOLDS`."""
    return (np.asarray(iou)[:, None] > IOU_THRESHOLDS[None, :]).mean(0)


def precision_curve(errors: np.ndarray, thresholds: np.ndarray = PIXEL_THRESHOLDS) -> np.ndarray:
    """Fraction of frames with an error at most each threshold."""
    return (np.asarray(errors)[:, None] <= thresholds[None, :]).mean(0)


def mean_curve(seqs: list[Mapping[str, np.ndarray]], key: str) -> np.ndarray:
    """The success (``otb_iou``) or precision (``centre_px`` / ``centre_norm``) curve, per sequence then averaged."""
    if key == "otb_iou":
        return np.mean([success_curve(v[key]) for v in seqs], axis=0)
    thresholds = NORM_THRESHOLDS if key == "centre_norm" else PIXEL_THRESHOLDS
    return np.mean([precision_curve(v[key], thresholds) for v in seqs], axis=0)


def per_sequence_table(per_sequence: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """A markdown table: frames scored, AO, SR0.50, SR0.75 (GOT-10k), precision@20 (OTB) per sequence."""
    rows = ["| sequence | frames | AO | SR0.50 | SR0.75 | P@20 |", "|---|---|---|---|---|---|"]
    for name, v in per_sequence.items():
        i = v["iou"]
        if not len(i):
            rows.append(f"| {name} | 0 | - | - | - | - |")
            continue
        rows.append(f"| {name} | {len(i)} | {i.mean():.3f} | {(i > 0.5).mean():.3f} | {(i > 0.75).mean():.3f} | "
                    f"{(v['centre_px'] <= 20).mean():.3f} |")  # fmt: skip
    return "\n".join(rows)


def plot_curves(results: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], out_dir: str) -> list[str]:
    """Success and precision plots (PNG, OTB protocol) of one or more trackers; returns the written paths."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, xs, key, xlabel in (("success", IOU_THRESHOLDS, "otb_iou", "overlap threshold"),
                                  ("precision", PIXEL_THRESHOLDS, "centre_px", "location error threshold (px)")):  # fmt: skip
        fig, ax = plt.subplots(figsize=(5, 4))
        for name, per_seq in results.items():
            ys = mean_curve(list(per_seq.values()), key)
            ax.plot(xs, ys, label=f"{name} [{ys.mean() if kind == 'success' else ys[20]:.3f}]")
        ax.set(xlabel=xlabel, ylabel=f"{kind} rate", ylim=(0, 1), title=f"{kind} plot (one-pass, OTB protocol)")
        ax.legend(loc="lower left" if kind == "success" else "lower right")
        ax.grid(alpha=0.3)
        path = out / f"{kind}_plot.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(str(path))
    return paths
