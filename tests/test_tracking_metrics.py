"""Tracking metrics against the reference toolkits: the GOT-10k toolkit's own code (pip ``got10k``), and
fixture numbers derived by hand from pytracking's ``extract_results`` / pysot-toolkit's ``OPEBenchmark``."""

from __future__ import annotations

import numpy as np
import pytest

from recipes.train.data.tracking import load_sequence
from recipes.train.metrics.tracking import (
    bound_to_image,
    box_iou,
    centre_errors,
    per_sequence_table,
    plot_curves,
    sequence_scores,
    summarise,
)
from tests.tracking_fixtures import write_got10k


def test_iou_and_centre_errors_by_hand():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    b = np.array([[5, 0, 10, 10], [0, 0, 10, 10], [20, 20, 2, 2]])
    np.testing.assert_allclose(box_iou(a, b), [50 / 150, 1.0, 0.0])
    px, norm = centre_errors(b, a)
    np.testing.assert_allclose(px, [5.0, 0.0, np.hypot(16, 16)])
    np.testing.assert_allclose(norm, [0.5, 0.0, np.hypot(1.6, 1.6)])


def three_sequences() -> dict[str, dict[str, np.ndarray]]:
    """A: 4 frames, B: 2 frames (frame 2 absent), C: 2 frames; ground truth 10x10 at the origin."""
    gt = np.array([[0, 0, 10, 10]] * 4, dtype=float)
    # A: frame 1 is replaced by the ground truth (pytracking); then IoU 1, 1/3 (5 px off), 0 (30 px off)
    a = sequence_scores(np.array([[9, 9, 1, 1], [0, 0, 10, 10], [5, 0, 10, 10], [30, 0, 10, 10]]), gt, np.ones(4, bool))
    b = sequence_scores(np.array([[0, 0, 10, 10], [0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [np.nan] * 4]),
                        np.array([True, False]))  # fmt: skip
    c = sequence_scores(np.array([[0, 0, 10, 10], [30, 0, 10, 10]]), gt[:2], np.ones(2, bool))
    return {"A": a, "B": b, "C": c}


def test_got10k_pooled_and_sequence_mean_by_hand():
    m = summarise(three_sequences())
    # scored frames (not the first, target visible): A 1, 1/3, 0; B none; C 0: pooled over the 4 frames
    assert m["AO"] == pytest.approx((1 + 1 / 3) / 4)
    assert m["SR0.50"] == pytest.approx(1 / 4) and m["SR0.75"] == pytest.approx(1 / 4)
    assert m["AO_seq_mean"] == pytest.approx(((4 / 3) / 3 + 0) / 2)  # B has no scored frame: left out


def test_otb_lasot_protocol_by_hand():
    """pytracking extract_results / calc_seq_err_robust (pysot OPEBenchmark agrees on these): frame 1 = the ground
    truth, per-sequence curves over all frames (absent frames are misses, still in the denominator), then averaged."""
    m = summarise(three_sequences())
    # A: IoUs 1, 1, 1/3, 0: 3/4 above t for the 7 thresholds 0..0.30, 2/4 for the 13 from 0.35 to 0.95, 0 at 1
    auc_a = (7 * 3 / 4 + 13 * 2 / 4) / 21
    auc_b = auc_c = 20 * (1 / 2) / 21  # IoUs 1 then a miss (B: absent, C: 30 px off)
    assert m["success_auc"] == pytest.approx((auc_a + auc_b + auc_c) / 3)
    # centre errors A 0, 0, 5, 30 px (normalised 0, 0, 0.5, 3); B 0, absent; C 0, 30 px (3)
    assert m["precision@20"] == pytest.approx((3 / 4 + 1 / 2 + 1 / 2) / 3)
    assert m["norm_precision"] == pytest.approx((2 / 4 + 1 / 2 + 1 / 2) / 3)


def test_prediction_bounded_to_image_shifted_not_cropped():
    gt = np.array([[0, 0, 10, 10]] * 2, float)
    pred = np.array([[0, 0, 10, 10], [-5, 0, 10, 10]], float)  # hangs 5 px off the left edge
    assert bound_to_image(pred, (64, 48))[1].tolist() == [0, 0, 10, 10]  # shifted in, width kept
    got10k = sequence_scores(pred, gt, np.ones(2, bool), size=(64, 48))
    assert got10k["iou"][0] == pytest.approx(1.0) and got10k["otb_iou"][1] == pytest.approx(5 / 15)
    assert sequence_scores(pred, gt, np.ones(2, bool))["iou"][0] == pytest.approx(5 / 15)  # no size: as is


def got10k_val_root(tmp_path, rng) -> tuple:
    """A GOT-10k root (val/list.txt, meta_info.ini, cover/absence/cut_by_image labels) of three fixture sequences,
    and the toolkit's result files for a tracker that hangs boxes off the image and misses some frames."""
    val, preds = tmp_path / "got10k" / "val", {}
    for k, name in enumerate(["GOT-10k_Val_000001", "GOT-10k_Val_000002", "GOT-10k_Val_000003"]):
        n = 8 + 3 * k
        seq = write_got10k(val, name, n=n, seed=k, absent=(4,) if k == 1 else ())
        (seq / "cover.label").write_text("".join("0\n" if k == 1 and i == 4 else "6\n" for i in range(n)))
        (seq / "cut_by_image.label").write_text("0\n" * n)
        if k != 1:
            (seq / "absence.label").write_text("0\n" * n)
        (seq / "meta_info.ini").write_text("[METAINFO]\nresolution: (64, 48)\n")
        gt = np.loadtxt(seq / "groundtruth.txt", delimiter=",")
        pred = gt + rng.normal(0, 4, gt.shape).round(3)
        pred[:, 0] -= rng.integers(0, 2, n) * 8  # every other frame or so hangs off the left edge
        pred[:, 2:] = np.abs(pred[:, 2:]) + 1
        out = tmp_path / "results" / "GOT-10k" / "t" / name
        out.mkdir(parents=True)
        np.savetxt(out / f"{name}_001.txt", pred, fmt="%.3f", delimiter=",")
        np.savetxt(out / f"{name}_time.txt", np.full(n, 0.01), fmt="%.8f")  # the report needs the times
        preds[name] = np.loadtxt(out / f"{name}_001.txt", delimiter=",")
    (val / "list.txt").write_text("\n".join(preds) + "\n")
    return tmp_path / "got10k", preds


def test_matches_got10k_toolkit_report(tmp_path, monkeypatch):
    pytest.importorskip("got10k")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    from got10k.experiments import ExperimentGOT10k
    from got10k.utils.metrics import rect_iou

    root, preds = got10k_val_root(tmp_path, np.random.default_rng(0))
    exp = ExperimentGOT10k(str(root), subset="val", result_dir=str(tmp_path / "results"),
                           report_dir=str(tmp_path / "reports"))  # fmt: skip
    ref = exp.report(["t"])["t"]
    per = {}
    for name, pred in preds.items():
        seq = load_sequence(root / "val" / name)
        per[name] = sequence_scores(pred, seq.truth, seq.visible, seq.size)
        toolkit_ious = rect_iou(pred[1:].copy(), np.loadtxt(seq.gt_file, delimiter=",")[1:], bound=(64, 48))
        np.testing.assert_allclose(per[name]["iou"], toolkit_ious[seq.visible[1:]], rtol=0, atol=1e-15)
        assert per[name]["iou"].mean() == pytest.approx(ref["seq_wise"][name]["ao"], abs=1e-15)
    m = summarise(per)
    assert m["AO"] == pytest.approx(ref["overall"]["ao"], abs=1e-15)
    assert m["SR0.50"] == pytest.approx(ref["overall"]["sr"], abs=1e-15)
    assert m["SR0.75"] == pytest.approx(ref["overall"]["succ_curve"][75], abs=1e-15)  # threshold 0.75 of 101
    assert m["AO"] != pytest.approx(m["AO_seq_mean"], abs=1e-6)  # pooling makes a difference on these lengths
    unbounded = summarise({k: sequence_scores(p, load_sequence(root / "val" / k).truth,
                                              load_sequence(root / "val" / k).visible) for k, p in preds.items()})  # fmt: skip
    assert unbounded["AO"] < m["AO"] - 1e-3  # bounding to the image changes the result on these boxes


def test_table_and_plots(tmp_path):
    per = three_sequences()
    table = per_sequence_table(per)
    assert "| A | 3 | 0.444 | 0.333 | 0.333 | 0.750 |" in table and "| B | 0 | - |" in table
    paths = plot_curves({"tracker": per}, str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["success_plot.png", "precision_plot.png"]
    assert all((tmp_path / p).stat().st_size > 1000 for p in ("success_plot.png", "precision_plot.png"))
