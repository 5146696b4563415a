"""Official tracking roots: GOT-10k (train/ val/ test/ with list.txt), LaSOT (<class>/<class>-<n> with its
official lists), TrackingNet (TRAIN_* / TEST chunks); the test split's withheld boxes give the evaluation
server's submission format, never scores; missing list files are one error naming the file."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from recipes.train.data.tracking import load_sequences
from recipes.train.data.tracking_pairs import TrackingPairs, TrackingSequences
from recipes.train.data.tracking_roots import root_kind, write_submission
from recipes.train.errors import BadInput
from tests.tracking_fixtures import frames_of, write_frames, write_got10k


def got10k_root(tmp_path: Path) -> Path:
    root = tmp_path / "GOT-10k"
    splits = {"train": ["GOT-10k_Train_000001", "GOT-10k_Train_000002"], "val": ["GOT-10k_Val_000001"],
              "test": ["GOT-10k_Test_000001"]}  # fmt: skip
    for k, (split, names) in enumerate(splits.items()):
        for j, name in enumerate(names):
            seq = write_got10k(root / split, name, n=6, seed=k + j)
            if split == "test":  # the server withholds every box but the first
                (seq / "groundtruth.txt").write_text((seq / "groundtruth.txt").read_text().splitlines()[0] + "\n")
        (root / split / "list.txt").write_text("\n".join(names) + "\n")
    return root


def test_got10k_root_splits(tmp_path):
    root = got10k_root(tmp_path)
    assert root_kind(root) == "got10k"
    assert [s.name for s in load_sequences(root, split="train")] == ["GOT-10k_Train_000001", "GOT-10k_Train_000002"]
    test = TrackingSequences(str(root), split="test")
    assert test.withheld and len(test[0]) == 6 and test[0].visible.tolist() == [True] + [False] * 5
    assert not TrackingSequences(str(root), split="val").withheld
    with pytest.raises(BadInput, match=r"GOT-10k is a got10k root; set split='train', 'val' or 'test'"):
        load_sequences(root)
    with pytest.raises(BadInput, match=r"GOT-10k_Test_000001/groundtruth.txt gives only the first box"):
        TrackingPairs(str(root), split="test")
    (root / "val" / "list.txt").unlink()
    with pytest.raises(BadInput, match=r"^\S+/GOT-10k/val/list.txt: not found; a GOT-10k root has val/list.txt"):
        load_sequences(root, split="val")


def test_split_on_a_plain_folder_names_the_shared_config(tmp_path):
    write_got10k(tmp_path, "a", n=3)
    write_got10k(tmp_path, "b", n=3)
    with pytest.raises(BadInput, match="not a GOT-10k, LaSOT or TrackingNet root.*videomae_dinov2_cpu_shared.py"):
        load_sequences(tmp_path, split="train")


def test_lasot_root_with_official_lists(tmp_path):
    root = tmp_path / "LaSOT"
    frames, boxes = frames_of(5)
    for name in ("cat-1", "cat-2", "dog-1"):
        seq = root / name.split("-")[0] / name
        write_frames(seq / "img", frames)
        (seq / "groundtruth.txt").write_text("\n".join(",".join(f"{v:g}" for v in b) for b in boxes) + "\n")
    with pytest.raises(BadInput, match=r"LaSOT/training_set.txt: not found; LaSOT's official train list"):
        load_sequences(root, split="train")  # the <class>/<class>-<n> layout without its lists
    (root / "training_set.txt").write_text("cat-1\ndog-1\n")
    (root / "testing_set.txt").write_text("cat-2\n")
    assert [s.name for s in load_sequences(root, split="train")] == ["cat-1", "dog-1"]
    test = load_sequences(root, split="test")
    assert [s.name for s in test] == ["cat-2"] and test[0].meta["layout"] == "lasot" and test[0].visible.all()
    with pytest.raises(BadInput, match="no official validation split"):
        load_sequences(root, split="val")
    (root / "testing_set.txt").unlink()
    with pytest.raises(BadInput, match=r"LaSOT/testing_set.txt: not found"):
        load_sequences(root, split="test")


def test_trackingnet_chunks(tmp_path):
    root = tmp_path / "TrackingNet"
    frames, boxes = frames_of(5)
    for chunk, video in (("TRAIN_0", "a1"), ("TRAIN_1", "b2"), ("TEST", "t3")):
        write_frames(root / chunk / "frames" / video, frames, first=0, digits=1)  # 0.jpg, 1.jpg, ...
        (root / chunk / "anno").mkdir(parents=True)
        rows = boxes[:1] if chunk == "TEST" else boxes
        (root / chunk / "anno" / f"{video}.txt").write_text("\n".join(",".join(f"{v:g}" for v in b) for b in rows))
    train = load_sequences(root, split="train")
    assert [s.name for s in train] == ["a1", "b2"] and train[0].meta["layout"] == "trackingnet"
    np.testing.assert_array_equal(train[1].boxes, boxes)
    test = TrackingSequences(str(root), split="test")
    assert test.withheld and test.kind == "trackingnet" and len(test[0]) == 5
    zipped = write_submission("trackingnet", test.seqs, [boxes], [0.5], tmp_path / "sub")
    assert zipfile.ZipFile(zipped).namelist() == ["t3.txt"]


def test_got10k_submission_format(tmp_path):
    """GOT-10k's toolkit layout (ExperimentGOT10k.run / report on the test subset): <seq>/<seq>_001.txt with
    '%.3f' boxes, <seq>/<seq>_time.txt, zipped; an existing folder or zip is never replaced."""
    root = got10k_root(tmp_path)
    test = TrackingSequences(str(root), split="test")
    boxes = [np.tile([1.23456, 2, 30, 40], (6, 1))]
    zipped = write_submission("got10k", test.seqs, boxes, [0.6], tmp_path / "submission")
    name = "GOT-10k_Test_000001"
    assert sorted(zipfile.ZipFile(zipped).namelist()) == [
        f"{name}/",
        f"{name}/{name}_001.txt",
        f"{name}/{name}_time.txt",
    ]
    assert (tmp_path / "submission" / name / f"{name}_001.txt").read_text().splitlines()[
        0
    ] == "1.235,2.000,30.000,40.000"
    np.testing.assert_allclose(np.loadtxt(tmp_path / "submission" / name / f"{name}_time.txt"), np.full(6, 0.1))
    with pytest.raises(BadInput, match="already exists"):
        write_submission("got10k", test.seqs, boxes, [0.6], tmp_path / "submission")


@pytest.mark.slow  # builds the tiny model and runs the tool three times: ~35 s on a loaded CPU
def test_track_tool_eval_on_the_test_split(tmp_path):
    """tools/track.py --eval --split test: the submission for a withheld split; scoring it is an error naming the
    file; --split without --eval is an error."""
    from tests.test_tracking_train import tiny_cfg
    from tools import track as track_tool

    root = got10k_root(tmp_path)
    cfg = tiny_cfg(root)
    cfg.data = dict(train=dict(type="tracking_pairs", split="train"), val=dict(type="tracking_sequences", split="val"),
                    test=dict(type="tracking_sequences", split="test"))  # fmt: skip
    cfg.dump(str(tmp_path / "cfg.py"))
    base = [str(tmp_path / "cfg.py"), "--tracker", "opencv_mil", "--eval"]
    assert track_tool.main([*base, "--split", "test", "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "submission.zip").is_file()
    assert track_tool.main([*base, "--out", str(tmp_path / "v")]) == 0
    assert set(json.loads((tmp_path / "v" / "metrics.json").read_text())) >= {"AO", "AO_seq_mean", "success_auc"}
    from recipes.train.tasks.tracking_online import evaluate_tracker

    with pytest.raises(BadInput, match=r"GOT-10k_Test_000001/groundtruth.txt: only the first box is given"):
        evaluate_tracker(cfg, lambda seqs: [], split="test")
    assert track_tool.main([str(tmp_path / "cfg.py"), "--tracker", "opencv_mil", "--frames", str(tmp_path),
                            "--split", "test"]) == 2  # fmt: skip


@pytest.mark.slow
def test_shipped_config_on_a_got10k_root_of_real_sequences(shared_data, tmp_path):
    """configs/tracking/videomae_dinov2_cpu.py with data_root = a GOT-10k root built from the shared set's real
    sequences (symlinked frames): trains on train/, validates on val/ and writes test/'s submission; only the
    model and the step count are cut down (no data override)."""
    import tarfile

    from recipes.train.config import load_config
    from recipes.train.engine import Trainer

    with tarfile.open(shared_data / "tracking_sot.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    sot, root = tmp_path / "x" / "tracking_sot", tmp_path / "GOT-10k"
    for split, names in {"train": ["otb_Crossing", "vot2015_ball1"], "val": ["dtb70_Surfing06"],
                         "test": ["otb_Skiing"]}.items():  # fmt: skip
        for name in names:
            shutil.copytree(sot / name, root / split / name, copy_function=lambda s, d: Path(d).symlink_to(s))
        (root / split / "list.txt").write_text("\n".join(names) + "\n")
    gt = root / "test" / "otb_Skiing" / "groundtruth.txt"
    gt.unlink()
    gt.write_text((sot / "otb_Skiing" / "groundtruth.txt").read_text().splitlines()[0] + "\n")
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tracking" / "videomae_dinov2_cpu.py")
    cfg.merge_from_dict({"data_root": str(root), "model.num_hidden_layers": 1, "data.train.samples_per_epoch": 8,
                         "train.epochs": 1, "train.batch_size": 4, "train.progress": False,
                         "train.tensorboard": False, "schedule.warmup_steps": 1})  # fmt: skip
    summary = Trainer(cfg, tmp_path / "run").setup().train()
    assert list(summary["per_sequence"]) == ["dtb70_Surfing06"] and 0.0 <= summary["val"]["AO"] <= 1.0
    sub = tmp_path / "run" / "submission" / "otb_Skiing" / "otb_Skiing_001.txt"
    assert summary["test_submission"].endswith("submission.zip") and len(np.loadtxt(sub, delimiter=",")) == 81
