"""One-pass tracking metrics: GOT-10k AO / SR, OTB success AUC and precision, LaSOT normalised precision.

Conventions (each checked against the toolkit named):

* the first frame (given to the tracker) is not scored, and frames whose target is absent are
  skipped, as GOT-10k's toolkit does;
* ``AO``: the mean over sequences of each sequence's mean IoU; ``SR0.50`` / ``SR0.75``: the mean
  over sequences of the fraction of frames with IoU > 0.5 / > 0.75 (strictly greater, as GOT-10k);
* ``success_auc``: the mean of the success curve at IoU thresholds 0, 0.05, ..., 1 (21 points,
  OTB / pytracking), over all scored frames of all sequences;
* ``precision@20``: the fraction of frames whose centre error is <= 20 px (OTB);
  ``norm_precision``: the fraction whose centre error, divided by the ground-truth box's size per
  axis, is <= 0.2 in norm (LaSOT / pytracking, threshold index 20 of 0..0.5).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

IOU_THRESHOLDS = np.linspace(0, 1, 21)
PIXEL_THRESHOLDS = np.arange(0, 51)
NORM_THRESHOLDS = np.linspace(0, 0.5, 51)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of x,y,w,h boxes, row by row."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0, y0 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x1 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    y1 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def centre_errors(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixel centre distance, centre distance normalised by the ground truth's w and h)."""
    pred, gt = np.asarray(pred, dtype=np.float64).reshape(-1, 4), np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    d = (pred[:, :2] + pred[:, 2:] / 2) - (gt[:, :2] + gt[:, 2:] / 2)
    return np.linalg.norm(d, axis=1), np.linalg.norm(d / np.maximum(gt[:, 2:], 1e-12), axis=1)


def sequence_scores(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame IoU and centre errors over the scored frames (not the first, target visible)."""
    keep = np.asarray(visible, dtype=bool).copy()
    keep[0] = False
    iou = box_iou(pred[keep], gt[keep])
    px, norm = centre_errors(pred[keep], gt[keep])
    return {"iou": iou, "centre_px": px, "centre_norm": norm}


def summarise(per_sequence: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Overall metrics from :func:`sequence_scores` of each sequence (see the module docstring)."""
    scored = {k: v for k, v in per_sequence.items() if len(v["iou"])}
    if not scored:
        return {"AO": 0.0, "SR0.50": 0.0, "SR0.75": 0.0, "success_auc": 0.0, "precision@20": 0.0,
                "norm_precision": 0.0}  # fmt: skip
    iou = np.concatenate([v["iou"] for v in scored.values()])
    px = np.concatenate([v["centre_px"] for v in scored.values()])
    norm = np.concatenate([v["centre_norm"] for v in scored.values()])
    return {
        "AO": float(np.mean([v["iou"].mean() for v in scored.values()])),
        "SR0.50": float(np.mean([(v["iou"] > 0.5).mean() for v in scored.values()])),
        "SR0.75": float(np.mean([(v["iou"] > 0.75).mean() for v in scored.values()])),
        "success_auc": float(success_curve(iou).mean()),
        "precision@20": float((px <= 20).mean()),
        "norm_precision": float((norm <= 0.2).mean()),
    }


def success_curve(iou: np.ndarray) -> np.ndarray:
    return np.array([(iou > t).mean() for t in IOU_THRESHOLDS])


def precision_curve(errors: np.ndarray, thresholds: np.ndarray = PIXEL_THRESHOLDS) -> np.ndarray:
    return np.array([(errors <= t).mean() for t in thresholds])


def per_sequence_table(per_sequence: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """A markdown table: frames scored, AO, SR0.50, SR0.75, precision@20 per sequence."""
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
    """Success and precision plots (PNG) of one or more trackers; returns the written paths."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, xs, key, xlabel in (("success", IOU_THRESHOLDS, "iou", "overlap threshold"),
                                  ("precision", PIXEL_THRESHOLDS, "centre_px", "location error threshold (px)")):  # fmt: skip
        fig, ax = plt.subplots(figsize=(5, 4))
        for name, per_seq in results.items():
            vals = np.concatenate([v[key] for v in per_seq.values()])
            ys = success_curve(vals) if kind == "success" else precision_curve(vals)
            label = f"{name} [{ys.mean():.3f}]" if kind == "success" else f"{name} [{precision_curve(vals)[20]:.3f}]"
            ax.plot(xs, ys, label=label)
        ax.set(xlabel=xlabel, ylabel=f"{kind} rate", ylim=(0, 1), title=f"{kind} plot (one-pass)")
        ax.legend(loc="lower left" if kind == "success" else "lower right")
        ax.grid(alpha=0.3)
        path = out / f"{kind}_plot.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(str(path))
    return paths
