"""Tracking readers (GOT-10k, LaSOT, OTB, video), their bad-input errors, and the training pairs."""

from __future__ import annotations

import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from recipes.train.data.tracking import load_frames, load_sequence, load_sequences, load_video
from recipes.train.data.tracking_pairs import TrackingPairs, crop_region
from tests.tracking_fixtures import frames_of, write_frames, write_got10k

EVAL = ["otb_David", "otb_Diving", "otb_Skiing", "vot2016_bag", "uav10_person11"]


def test_got10k_absence_and_cover(tmp_path):
    seq = write_got10k(tmp_path, "a", n=6, absent=(3,))
    (seq / "cover.label").write_text("8\n8\n0\n0\n8\n8\n")  # 0 = fully occluded
    s = load_sequence(seq)
    assert s.meta["layout"] == "got10k" and len(s) == 6 and s.size == (64, 48)
    assert s.visible.tolist() == [True, True, False, False, True, True]
    assert np.isnan(s.boxes[3]).all() and s.boxes[2].tolist() == [10, 16, 12, 10]


def test_lasot_flags(tmp_path):
    frames, boxes = frames_of(5)
    seq = tmp_path / "cat-1"
    write_frames(seq / "img", frames)
    (seq / "groundtruth.txt").write_text("\n".join(",".join(f"{v:g}" for v in b) for b in boxes[:4]) + "\n0,0,0,0\n")
    (seq / "full_occlusion.txt").write_text("0,0,1,0,0")
    (seq / "out_of_view.txt").write_text("0,0,0,0,1")
    s = load_sequence(seq)
    assert s.meta["layout"] == "lasot" and s.visible.tolist() == [True, True, False, True, False]


@pytest.mark.parametrize("sep", [",", "\t", " ", ", "])
def test_otb_delimiters_and_first_frame(tmp_path, sep):
    frames, boxes = frames_of(4)
    seq = tmp_path / "David"
    write_frames(seq / "img", frames, first=300, digits=4)  # OTB David starts at 0300.jpg
    (seq / "groundtruth_rect.txt").write_text("\n".join(sep.join(f"{v:g}" for v in b) for b in boxes) + "\n")
    s = load_sequence(seq)
    assert s.meta["layout"] == "otb" and s.frames[0].name == "0300.jpg"
    np.testing.assert_array_equal(s.boxes, boxes)


def test_box_partly_outside_is_clipped(tmp_path):
    seq = write_got10k(tmp_path, "a", n=3)
    (seq / "groundtruth.txt").write_text("6,14,12,10\n-4,40,12,10\n60,14,12,10\n")
    s = load_sequence(seq)
    assert s.boxes[1].tolist() == [0, 40, 8, 8] and s.boxes[2].tolist() == [60, 14, 4, 10]


@pytest.mark.parametrize(
    "gt, match",
    [
        ("6,14,12,10\n8,15,12,10\n", r"groundtruth.txt: 2 box lines for 3 frames \(line 3 missing\)"),
        ("6,14,12,10\nnan,15,12,10\n9,9,9,9\n", r"groundtruth.txt:2: a NaN/inf box"),
        ("6,14,12,10\n8,15,0,10\n9,9,9,9\n", r"groundtruth.txt:2: a zero-size box"),
        ("6,14,12,10\n8,15,12,10\n\n200,9,9,9\n", r"groundtruth.txt:4: a box wholly outside the 64x48 image"),
        ("6,14,12\n", r"groundtruth.txt:1: expected 4 numbers x,y,w,h, got 3"),
        ("6,14,12,ten\n", r"groundtruth.txt:1: expected 4 numbers"),
    ],
)
def test_bad_ground_truth_names_file_and_line(tmp_path, gt, match):
    seq = write_got10k(tmp_path, "a", n=3)
    (seq / "groundtruth.txt").write_text(gt)
    with pytest.raises(ValueError, match=match):
        load_sequence(seq)


def test_empty_unreadable_and_unknown_sequences(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "groundtruth.txt").write_text("1,1,2,2\n")
    with pytest.raises(ValueError, match="empty sequence"):
        load_sequence(tmp_path / "empty")
    seq = write_got10k(tmp_path, "broken", n=2)
    (seq / "00000001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken: first frame .*00000001.jpg: not a readable image"):
        load_sequence(seq)
    with pytest.raises(ValueError, match="not a sequence folder"):
        load_sequence(_plain(tmp_path))
    with pytest.raises(ValueError, match="exclude names sequences not under"):
        load_sequences(tmp_path, ["broken"], exclude=["nope"])


def _plain(tmp_path: Path) -> Path:
    (tmp_path / "plain").mkdir()
    return tmp_path / "plain"


def test_video_file_and_frame_folder(tmp_path):
    frames, boxes = frames_of(8)
    path = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    s = load_video(path, tuple(boxes[0]))
    assert len(s) == 8 and s.size == (64, 48) and s.read(7).shape == (48, 64, 3) and s.visible.sum() == 1
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="bad.mp4: the video cannot be decoded"):
        load_video(tmp_path / "bad.mp4", (1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"--init 60,10,12,10: .* inside the 64x48 first frame"):
        load_video(path, (60, 10, 12, 10))
    write_frames(tmp_path / "frames", frames)
    assert len(load_frames(tmp_path / "frames", (6, 14, 12, 10))) == 8


def test_pairs_are_seeded_per_sample_and_target_centred(tmp_path):
    for k in range(2):
        write_got10k(tmp_path, f"s{k}", n=8, seed=k)
    kw = dict(root=tmp_path, samples_per_epoch=4, template_size=16, search_size=32, seed=3)
    ds = TrackingPairs(**kw)
    a, b = ds[1], ds[1]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    ds.set_epoch(1)
    assert not torch.equal(ds[1][1], a[1])  # another epoch, another sample
    still = TrackingPairs(**kw, scale_jitter=0.0, shift_jitter=0.0, flip=0.0, photometric=0.0)
    box = still[0][2]  # no jitter: the target sits in the middle, 1/context of the crop's side on average
    torch.testing.assert_close(box[:2], torch.tensor([0.5, 0.5]), atol=0.02, rtol=0)
    assert abs(float(box[2] * box[3]) - 1 / 16) < 0.01
    flipped = TrackingPairs(**kw, scale_jitter=0.0, shift_jitter=0.0, flip=1.0, photometric=0.0)[0]
    torch.testing.assert_close(flipped[1], still[0][1].flip(-1))  # the same flip on the search crop...
    torch.testing.assert_close(flipped[0], still[0][0].flip(-1))  # ...and the template
    coloured = TrackingPairs(**kw, scale_jitter=0.0, shift_jitter=0.0, flip=0.0, photometric=1.0)[0]
    assert not torch.equal(coloured[1], still[0][1])


def test_crop_region_maps_back(tmp_path):
    img = np.zeros((48, 64, 3), dtype=np.uint8)
    crop, (k, x0, y0) = crop_region(img, np.array([20.0, 10.0, 8.0, 8.0]), 2.0, 32)
    assert crop.shape == (32, 32, 3) and k == 2.0 and (x0, y0) == (16.0, 6.0)


@pytest.fixture(scope="module")
def sot(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sot")
    with tarfile.open(shared_data / "tracking_sot.tar.gz") as tar:
        tar.extractall(out, filter="data")
    return out / "tracking_sot"


@pytest.mark.slow
def test_shared_set_reads_and_splits(sot):
    seqs = load_sequences(sot)
    assert len(seqs) == 15 and sum(len(s) for s in seqs) == 3350
    ev = load_sequences(sot, EVAL)
    assert sum(len(s) for s in ev) == 1204 and sum(len(s) - 1 for s in ev) == 1199
    assert all(s.visible.all() for s in seqs)
    assert sum(len(s) for s in load_sequences(sot, exclude=EVAL)) == 2146


def _coco_stills(tmp_path: Path) -> Path:
    """A COCO-format detection set of 3 still photos (skimage's real ones), one object box each."""
    import json

    from skimage import data as skdata

    folder = tmp_path / "stills"
    folder.mkdir()
    images, anns = [], []
    for k, (name, box) in enumerate([("chelsea", [130, 20, 200, 220]), ("coffee", [40, 20, 360, 300]),
                                     ("astronaut", [140, 20, 200, 200])]):  # fmt: skip
        img = getattr(skdata, name)()
        cv2.imwrite(str(folder / f"{name}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        images.append({"id": k, "file_name": f"{name}.jpg", "width": img.shape[1], "height": img.shape[0]})
        anns.append({"id": k, "image_id": k, "category_id": 1, "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    (folder / "_annotations.coco.json").write_text(json.dumps(coco))
    return folder / "_annotations.coco.json"


def test_still_images_as_extra_pairs(tmp_path):
    """data.train.still_images: a share of the pairs is cut from one still image of a COCO-format set (template
    and search around the same object); share=0 leaves every sample as it was; bad keys are errors."""
    write_got10k(tmp_path, "a", n=6)
    ann = _coco_stills(tmp_path)
    kw = dict(samples_per_epoch=6, template_size=16, search_size=32, flip=0.0, photometric=0.0, seed=3)
    plain = TrackingPairs(str(tmp_path), ["a"], **kw)
    none = TrackingPairs(str(tmp_path), ["a"], still_images=dict(ann_file=str(ann), share=0.0), **kw)
    every = TrackingPairs(str(tmp_path), ["a"], still_images=dict(ann_file=str(ann), share=1.0), **kw)
    for i in range(3):
        assert all(torch.equal(x, y) for x, y in zip(plain[i], none[i], strict=True))
    z, x, box = every[0]
    assert not torch.equal(z, plain[0][0]) and z.shape == (3, 16, 16) and x.shape == (3, 32, 32)
    assert 0.2 < float(box[0]) < 0.8 and 0.1 < float(box[2]) < 0.6  # the object, with the search context around it
    assert len(every.stills.objects) == 3
    with pytest.raises(ValueError, match=r"still_images.share must lie in \[0, 1\], got 1.5"):
        TrackingPairs(str(tmp_path), ["a"], still_images=dict(ann_file=str(ann), share=1.5), **kw)
    with pytest.raises(ValueError, match=r"still_images: unknown keys \['shar'\]"):
        TrackingPairs(str(tmp_path), ["a"], still_images=dict(ann_file=str(ann), shar=0.5), **kw)
