"""Tracking metrics against values computed by hand (GOT-10k AO/SR, OTB success/precision, LaSOT norm. precision)."""

from __future__ import annotations

import numpy as np
import pytest

from recipes.train.metrics.tracking import (
    box_iou,
    centre_errors,
    per_sequence_table,
    plot_curves,
    sequence_scores,
    summarise,
)


def test_iou_and_centre_errors_by_hand():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    b = np.array([[5, 0, 10, 10], [0, 0, 10, 10], [20, 20, 2, 2]])
    np.testing.assert_allclose(box_iou(a, b), [50 / 150, 1.0, 0.0])
    px, norm = centre_errors(b, a)
    np.testing.assert_allclose(px, [5.0, 0.0, np.hypot(16, 16)])
    np.testing.assert_allclose(norm, [0.5, 0.0, np.hypot(1.6, 1.6)])


def two_sequences() -> dict[str, dict[str, np.ndarray]]:
    gt = np.array([[0, 0, 10, 10]] * 3, dtype=float)
    # A: frame 0 is the given box (not scored); frame 1 exact (IoU 1), frame 2 shifted 5 px (IoU 1/3)
    a = sequence_scores(np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 0, 10, 10]], float), gt, np.ones(3, bool))
    # B: frame 1 far off (IoU 0, 30 px), frame 2 absent: skipped whatever the tracker says
    b = sequence_scores(np.array([[0, 0, 10, 10], [30, 0, 10, 10], [0, 0, 10, 10]], float), gt,
                        np.array([True, True, False]))  # fmt: skip
    return {"A": a, "B": b}


def test_summary_by_hand():
    per = two_sequences()
    assert [len(v["iou"]) for v in per.values()] == [2, 1]
    m = summarise(per)
    assert m["AO"] == pytest.approx((2 / 3 + 0) / 2)  # mean over sequences of each sequence's mean IoU
    assert m["SR0.50"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["SR0.75"] == pytest.approx((1 / 2 + 0) / 2)
    # success curve over IoUs {1, 1/3, 0} at 0, 0.05, ..., 1 (IoU > t): 7 thresholds <= 0.30 see 2/3,
    # the 13 from 0.35 to 0.95 see 1/3, t = 1 sees none: AUC = (7 * 2/3 + 13 * 1/3) / 21 = 3/7
    assert m["success_auc"] == pytest.approx(3 / 7)
    assert m["precision@20"] == pytest.approx(2 / 3)  # errors 0, 5, 30 px
    assert m["norm_precision"] == pytest.approx(1 / 3)  # normalised errors 0, 0.5, 3 (threshold 0.2)


def test_table_and_plots(tmp_path):
    per = two_sequences()
    table = per_sequence_table(per)
    assert "| A | 2 | 0.667 | 0.500 | 0.500 | 1.000 |" in table and "| B | 1 | 0.000 |" in table
    paths = plot_curves({"tracker": per}, str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["success_plot.png", "precision_plot.png"]
    assert all((tmp_path / p).stat().st_size > 1000 for p in ("success_plot.png", "precision_plot.png"))
