"""Captioned image/video folders: captions, crops and flips, buckets, and clear errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recipes.train.data.captioned import CaptionedImages, CaptionedVideos, aspect_buckets

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the sample photos")
PHOTOS = {"chelsea": "a photo of a cat", "coffee": "a photo of a coffee cup on a table",
          "astronaut": "a portrait of an astronaut woman", "rocket": "a photo of a rocket"}  # fmt: skip


def write_photos(root, names=PHOTOS, captions="txt", size=96):
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        img = Image.fromarray(getattr(skimage_data, name)())
        img.thumbnail((size, size))
        img.save(root / f"{name}.jpg")
        if captions == "txt":
            (root / f"{name}.txt").write_text(PHOTOS[name] + "\n")
    if captions == "jsonl":
        (root / "metadata.jsonl").write_text("\n".join(json.dumps({"file_name": f"{n}.jpg", "text": PHOTOS[n]})
                                                       for n in names))  # fmt: skip
    return root


def write_video(path, frames=12, size=(32, 48)):
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8, (size[1], size[0]))
    cat = skimage_data.chelsea()
    for i in range(frames):  # a real photo panning right
        crop = np.ascontiguousarray(cat[100 : 100 + size[0] * 2 : 2, 4 * i : 4 * i + size[1] * 2 : 2, ::-1])
        w.write(crop)
    w.release()
    return path


@pytest.mark.parametrize("captions", ["txt", "jsonl"])
def test_captions_from_txt_or_metadata_jsonl(tmp_path, captions):
    ds = CaptionedImages(str(write_photos(tmp_path, captions=captions)), resolution=32)
    assert sorted(ds.captions) == sorted(PHOTOS.values())
    s = ds[0]
    assert s["pixels"].shape == (3, 32, 32) and -1.0 <= s["pixels"].min() < s["pixels"].max() <= 1.0
    assert s["caption"] == PHOTOS[ds.files[0].stem] and len(s["key"]) == 64


def test_missing_captions_error_or_default_or_instance_prompt(tmp_path):
    root = write_photos(tmp_path)
    (root / "coffee.txt").unlink()
    with pytest.raises(ValueError, match=r"1 of 4 images .* have no caption .*coffee.jpg.*default_caption"):
        CaptionedImages(str(root), resolution=32)
    ds = CaptionedImages(str(root), resolution=32, default_caption="a photo")
    assert ds.captions[[f.stem for f in ds.files].index("coffee")] == "a photo"
    ds = CaptionedImages(str(root), resolution=32, instance_prompt="a photo of sks thing")
    assert set(ds.captions) == {"a photo of sks thing"}


def test_corrupt_image_is_named(tmp_path):
    root = write_photos(tmp_path)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "broken.txt").write_text("x")
    with pytest.raises(ValueError, match=r"broken.jpg' is not a readable image"):
        CaptionedImages(str(root), resolution=32)


def test_random_crop_and_flip_follow_seed_epoch_index(tmp_path):
    root = write_photos(tmp_path, names=["coffee"])
    center = CaptionedImages(str(root), resolution=32)[0]
    ds = CaptionedImages(str(root), resolution=32, crop="random", flip_p=0.5, seed=3)
    draws = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        a, b = ds[0], ds[0]
        assert torch.equal(a["pixels"], b["pixels"])  # same (seed, epoch, index) -> same crop
        draws.append((a["crop_top_left"], a["flipped"]))
    assert len(set(draws)) > 1 and {f for _, f in draws} == {True, False}
    assert center["crop_top_left"][0] == 0 and center["crop_top_left"][1] > 0  # landscape photo: cut at the sides
    flipped = CaptionedImages(str(root), resolution=32, flip_p=1.0)[0]
    assert torch.equal(flipped["pixels"], center["pixels"].flip(-1))


def test_aspect_buckets_assign_by_ratio(tmp_path):
    buckets = aspect_buckets(64, step=16)
    assert (64, 64) in buckets and all(h * w <= 64 * 64 and h % 16 == 0 == w % 16 for h, w in buckets)
    ds = CaptionedImages(str(write_photos(tmp_path)), resolution=64, buckets=True, bucket_step=16)
    by_name = {f.stem: t for f, t in zip(ds.files, ds.targets, strict=True)}
    assert by_name["astronaut"] == (64, 64)  # square
    assert by_name["coffee"][1] > by_name["coffee"][0]  # 600x400 -> a landscape bucket
    s = ds[ds.files.index(next(f for f in ds.files if f.stem == "coffee"))]
    assert tuple(s["pixels"].shape[1:]) == by_name["coffee"]


def test_video_folder_frames_stride_and_errors(tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    write_video(root / "pan.mp4")
    (root / "pan.txt").write_text("a cat, camera panning")
    ds = CaptionedVideos(str(root), resolution=(16, 16), num_frames=5, frame_stride=2)
    s = ds[0]
    assert s["pixels"].shape == (3, 5, 16, 16) and s["caption"] == "a cat, camera panning"
    assert not torch.equal(s["pixels"][:, 0], s["pixels"][:, -1])  # the frames move
    with pytest.raises(ValueError, match=r"gave 12 frames, 13 are needed"):
        CaptionedVideos(str(root), resolution=16, num_frames=7, frame_stride=2)
    (root / "bad.mp4").write_bytes(b"\x00" * 100)
    (root / "bad.txt").write_text("x")
    with pytest.raises(ValueError, match=r"bad.mp4' gave 0 frames"):
        CaptionedVideos(str(root), resolution=16, num_frames=5)
