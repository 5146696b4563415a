"""Captioned image/video folders: captions, crops and flips, buckets, and clear errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recipes.train.data.captioned import CaptionedImages, CaptionedVideos, aspect_buckets
from recipes.train.sampling import BucketBatchSampler, dataset_steps_per_epoch, make_loader

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the sample photos")
PHOTOS = {"chelsea": "a photo of a cat", "coffee": "a photo of a coffee cup on a table",
          "astronaut": "a portrait of an astronaut woman", "rocket": "a photo of a rocket"}  # fmt: skip
#: two aspect ratios: 2 square photos (astronaut, immunohistochemistry 512x512) and 3 landscape ones (about 3:2)
BUCKET_PHOTOS = [*PHOTOS, "immunohistochemistry"]
CAPTIONS = {**PHOTOS, "immunohistochemistry": "a microscope image of stained tissue"}


def write_photos(root, names=PHOTOS, captions="txt", size=96):
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        img = Image.fromarray(getattr(skimage_data, name)())
        img.thumbnail((size, size))
        img.save(root / f"{name}.jpg")
        if captions == "txt":
            (root / f"{name}.txt").write_text(CAPTIONS[name] + "\n")
    if captions == "jsonl":
        (root / "metadata.jsonl").write_text("\n".join(json.dumps({"file_name": f"{n}.jpg", "text": CAPTIONS[n]})
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


def bucketed(tmp_path, **kw):
    return CaptionedImages(str(write_photos(tmp_path, names=BUCKET_PHOTOS)), resolution=64, buckets=True,
                           bucket_step=16, **kw)  # fmt: skip


def epoch_batches(ds, epoch, seed=0, rank=0, world=1, start_batch=0, batch_size=2):
    loader = make_loader(ds, batch_size=batch_size, seed=seed, epoch=epoch, collate=torch.utils.data.default_collate,
                         rank=rank, world=world, start_batch=start_batch)  # fmt: skip
    return list(loader)


def test_bucket_batches_hold_one_size_and_every_image_each_epoch(tmp_path):
    """batch_size 2 over real photos of two aspect ratios: each batch stacks one size, each epoch sees all 5."""
    ds = bucketed(tmp_path)
    sizes = {f.stem: t for f, t in zip(ds.files, ds.targets, strict=True)}
    assert len(set(sizes.values())) == 2 and sizes["astronaut"] == sizes["immunohistochemistry"] == (64, 64)
    assert dataset_steps_per_epoch(ds, 2) == 3  # landscape 2 + 1, square 2 (a partial last batch per bucket)
    orders = []
    for epoch in range(3):
        batches = epoch_batches(ds, epoch)
        assert len(batches) == 3
        for b in batches:  # default_collate stacked them: one size per batch, and the size is the bucket's
            assert {sizes[ds.files[i].stem] for i in b["index"].tolist()} == {tuple(b["pixels"].shape[2:])}
        seen = [i for b in batches for i in b["index"].tolist()]
        assert sorted(seen) == list(range(5))  # complete, no repeats
        orders.append(seen)
    assert len({tuple(o) for o in orders}) > 1  # reshuffled per epoch
    again = epoch_batches(ds, 1)
    assert [b["index"].tolist() for b in again] == [b["index"].tolist() for b in epoch_batches(ds, 1)]
    assert all(torch.equal(a["pixels"], b["pixels"]) for a, b in zip(again, epoch_batches(ds, 1), strict=True))


def test_bucket_batches_resume_mid_epoch_and_split_over_ranks(tmp_path):
    ds = bucketed(tmp_path)
    whole = [b["index"].tolist() for b in epoch_batches(ds, 4)]
    assert [b["index"].tolist() for b in epoch_batches(ds, 4, start_batch=1)] == whole[1:]  # resume skips 1 batch
    keys = ds.bucket_keys()
    ranks = [BucketBatchSampler(keys, 0, 4, rank=r, world=2, batch_size=1) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2  # 5 one-image batches: 2 per rank, the same count on both
    got = [i for r in ranks for b in r for i in b]
    assert len(got) == len(set(got)) == 4  # distinct batches per rank
    assert dataset_steps_per_epoch(ds, 1, world=2) == 2
    evals = [list(BucketBatchSampler(keys, 0, 0, rank=r, world=2, batch_size=2, train=False)) for r in (0, 1)]
    assert sorted(i for e in evals for b in e for i in b) == list(range(5))  # evaluation: every sample once
    assert all(len({keys[i] for i in b}) == 1 for e in evals for b in e)


def test_bucket_drop_last_gives_full_batches_only(tmp_path):
    ds = bucketed(tmp_path, bucket_drop_last=True)
    assert dataset_steps_per_epoch(ds, 2) == 2
    seen = set()
    for epoch in range(4):
        batches = epoch_batches(ds, epoch)
        assert [len(b["index"]) for b in batches] == [2, 2]
        seen |= {i for b in batches for i in b["index"].tolist()}
    assert seen == set(range(5))  # the landscape photo left out changes with the epoch
    with pytest.raises(ValueError, match=r"bucket_drop_last applies to aspect-ratio buckets"):
        CaptionedImages(str(tmp_path), resolution=64, bucket_drop_last=True)
    plain = CaptionedImages(str(tmp_path), resolution=32)  # one size: the plain sampler, partial batch dropped
    assert dataset_steps_per_epoch(plain, 2) == 2 and len(epoch_batches(plain, 0)) == 2
