"""Frames checked against labels at setup (issue 23): a missing frame, extra ground-truth lines, a frame of
another size are one error naming the sequence and the frame; ``train.bad_images='skip'`` drops the frame with
its own box (never shifting the later boxes), or says it cannot act."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from mmengine.config import Config

from recipes.train.data.tracking import load_sequence
from recipes.train.errors import BadInput
from recipes.train.tasks.base import build_task
from tests.tracking_fixtures import frames_of, write_got10k


def test_missing_frame_is_named_not_shifted(tmp_path):
    seq = write_got10k(tmp_path, "cat", n=6)
    (seq / "00000004.jpg").unlink()  # before: every later box moved one frame earlier
    with pytest.raises(BadInput, match=r"^cat: frame 4 .*cat/00000004.jpg: missing; boxes are matched to frames"):
        load_sequence(seq)
    with pytest.warns(UserWarning, match="cat: skipping 1 unusable frames"):
        s = load_sequence(seq, bad_images="skip")
    _, boxes = frames_of(6)
    assert [f.name for f in s.frames] == ["00000001.jpg", "00000002.jpg", "00000003.jpg", "00000005.jpg",
                                          "00000006.jpg"]  # fmt: skip
    np.testing.assert_array_equal(s.boxes, boxes[[0, 1, 2, 4, 5]])  # frame 5 keeps line 5


def test_extra_ground_truth_lines_are_an_error_even_with_skip(tmp_path):
    seq = write_got10k(tmp_path, "dog", n=4)
    (seq / "groundtruth.txt").write_text((seq / "groundtruth.txt").read_text() + "1,1,5,5\n2,2,5,5\n")
    for mode in ("error", "skip"):
        with pytest.raises(BadInput, match=r"dog/groundtruth.txt: 6 box lines for 4 frames \(lines 5-6 have no frame.*"
                                           r"train.bad_images='skip' cannot tell"):  # fmt: skip
            load_sequence(seq, bad_images=mode)


def test_frame_of_another_size(tmp_path):
    seq = write_got10k(tmp_path, "owl", n=5)
    small = cv2.resize(cv2.imread(str(seq / "00000003.jpg")), (32, 24))
    cv2.imwrite(str(seq / "00000003.jpg"), small)
    with pytest.raises(BadInput, match=r"^owl: frame 3 .*00000003.jpg: 32x24 pixels but the annotations say 64x48"):
        load_sequence(seq)
    with pytest.warns(UserWarning):
        assert len(load_sequence(seq, bad_images="skip")) == 4


def test_truncated_frame_and_first_frame(tmp_path):
    seq = write_got10k(tmp_path, "ant", n=4)
    data = (seq / "00000002.jpg").read_bytes()
    (seq / "00000002.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match=r"ant: frame 2 .*truncated"):
        load_sequence(seq)
    (seq / "00000001.jpg").write_bytes(b"")
    with pytest.raises(BadInput, match=r"ant: first frame .*00000001.jpg: empty"):
        load_sequence(seq, bad_images="skip")  # the target is given there: nothing to skip to


def tracking_cfg(root, bad_images: str) -> Config:
    return Config(dict(
        data_root=str(root), model=dict(type="videomae_tracker"),
        task=dict(type="tracking", template_size=16, search_size=32),
        data=dict(train=dict(type="tracking_pairs", exclude=["v"], samples_per_epoch=8, max_gap=3),
                  val=dict(type="tracking_sequences", sequences=["v"])),
        train=dict(bad_images=bad_images),
    ))  # fmt: skip


def test_train_bad_images_reaches_both_splits(tmp_path):
    for k, name in enumerate(("a", "v")):
        write_got10k(tmp_path, name, n=6, seed=k)
        (tmp_path / name / "00000003.jpg").unlink()
    with pytest.raises(BadInput, match="a: frame 3"):
        build_task(tracking_cfg(tmp_path, "error")).build_datasets()
    with pytest.warns(UserWarning):
        train, val = build_task(tracking_cfg(tmp_path, "skip")).build_datasets()
    assert [len(s) for s in train.seqs] == [5] and len(val[0]) == 5
