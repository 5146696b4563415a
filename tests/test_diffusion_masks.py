"""Masked loss: ``<name>.mask.png`` beside an image weights each pixel's error (white 1, black 0), placed with
the image's crop and flip; the mask file is not a training image."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from recipes.train.data.captioned import CaptionedImages
from tests.test_diffusion_data import PHOTOS, write_photos


def _mask(root, name, fill):
    """A mask the size of ``name``'s image: ``fill(h, w)`` gives the grey levels."""
    with Image.open(root / f"{name}.jpg") as im:
        h, w = im.height, im.width
    Image.fromarray(fill(h, w).astype(np.uint8)).save(root / f"{name}.mask.png")


def _left_half(h, w):
    grey = np.zeros((h, w))
    grey[:, : w // 2] = 255
    return grey


def test_mask_follows_the_flip_and_is_not_an_image(tmp_path):
    root = write_photos(tmp_path / "p", size=32)
    _mask(root, "coffee", _left_half)
    plain = CaptionedImages(str(root), resolution=16, flip_p=0.0)
    flipped = CaptionedImages(str(root), resolution=16, flip_p=1.0)
    assert len(plain) == len(PHOTOS) and not any(f.name.endswith(".mask.png") for f in plain.files)
    i = [f.stem for f in plain.files].index("coffee")
    m, mf = plain[i]["mask"], flipped[i]["mask"]
    assert m.shape == (1, 16, 16) and m[0, :, :7].min() == 1.0 and m[0, :, 9:].max() == 0.0
    assert torch.equal(mf, m.flip(-1))
    other = [k for k in range(len(plain)) if k != i][0]
    assert torch.equal(plain[other]["mask"], torch.ones(1, 16, 16))  # no mask file: every pixel counts


def test_a_mask_of_another_size_is_named(tmp_path):
    root = write_photos(tmp_path / "p", size=32)
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(root / "rocket.mask.png")
    with pytest.raises(ValueError, match=r"mask .*rocket.mask.png' is 7x5, its image rocket.jpg is"):
        CaptionedImages(str(root), resolution=16)


def test_a_mask_replaced_or_removed_mid_run_is_named(tmp_path):
    """Checked at start-up and again when read: a mask swapped for another size is not resized without a word."""
    root = write_photos(tmp_path / "p", size=32)
    _mask(root, "rocket", _left_half)
    ds = CaptionedImages(str(root), resolution=16)
    i = [f.stem for f in ds.files].index("rocket")
    assert ds[i]["mask"].shape == (1, 16, 16)
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(root / "rocket.mask.png")
    with pytest.raises(ValueError, match=r"mask .*rocket.mask.png' is 7x5 now, its image rocket.jpg is"):
        ds[i]
    (root / "rocket.mask.png").unlink()
    with pytest.raises(ValueError, match=r"mask .*rocket.mask.png' cannot be read now"):
        ds[i]


@pytest.mark.slow  # loads the SD 1.5 test pipeline three times: ~20 s on a shared 2-core CPU
def test_mask_weights_the_loss(tmp_path):
    from tests.test_diffusion_options import task_loss

    root = write_photos(tmp_path / "p", size=64)
    base, _, _ = task_loss("sd15", data_root=str(root), **{"task.min_snr_gamma": None})
    for name in PHOTOS:
        _mask(root, name, lambda h, w: np.full((h, w), 255))
    white, task, _ = task_loss("sd15", data_root=str(root), **{"task.min_snr_gamma": None})
    assert white == pytest.approx(base, rel=1e-6)  # an all-white mask is no mask
    for name in PHOTOS:
        _mask(root, name, _left_half)
    half, _, _ = task_loss("sd15", data_root=str(root), **{"task.min_snr_gamma": None})
    assert half < 0.75 * base  # about half the pixels count
    shutil.rmtree(root)
