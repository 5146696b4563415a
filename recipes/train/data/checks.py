"""The setup-time data check: every image a dataset names is looked at once, cheaply, before training.

A dataset takes part by having ``image_files()`` (one path per sample, in sample order), optionally
``expected_sizes()`` (``(width, height)`` or None per sample, e.g. from a COCO json) and
``drop_samples(indices)``. For each file the check reads only what is cheap: that it exists (a
dangling link does not), is a file (not a folder named like an image), is not empty, that its
header parses (PIL opens it without decoding the pixels), that its size matches the annotation, and
that it is complete (a JPEG ends with its end-of-image marker, a PNG's chunks and CRCs are whole).

``train.bad_images`` decides what happens, the same in every task: ``"error"`` (default) stops at
once naming the files; ``"skip"`` drops them from the split with a warning naming them. An empty
split, or one left empty, is an error either way, so an empty or corrupt validation split fails at
setup, not after an epoch of training.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recipes.train.errors import BadInput

ORIENTATION = 0x0112  # the EXIF tag of a photo's rotation
JPEG_TAIL = 1024  # the end-of-image marker must be within the last KiB (some cameras append a little data)


def image_problem(path: Path, expected: tuple[int, int] | None = None) -> str | None:
    """Why ``path`` cannot be used as an image (short text), or None when it looks fine."""
    from PIL import Image

    if not path.exists():
        return "a link to a missing file" if path.is_symlink() else "missing"
    if not path.is_file():
        return "a folder, not an image file"
    size = path.stat().st_size
    if size == 0:
        return "empty (0 bytes)"
    try:
        with Image.open(path) as im:
            fmt, dims = im.format, im.size
            if expected is not None and tuple(expected) == dims[::-1] and im.getexif().get(ORIENTATION) in (5, 6, 7, 8):
                dims = dims[::-1]  # the json gives the size after the EXIF rotation (as Roboflow exports do)
            if fmt == "PNG":
                im.verify()  # chunk CRCs up to IEND: catches a cut-off PNG without decoding it
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a file that is not an image
        return f"not a readable image ({' '.join(str(e).split())[:120]})"
    if fmt == "JPEG":
        with open(path, "rb") as f:
            f.seek(max(0, size - JPEG_TAIL))
            if b"\xff\xd9" not in f.read():
                return "truncated (no JPEG end-of-image marker)"
    if expected is not None and tuple(expected) != tuple(dims):
        return f"{dims[0]}x{dims[1]} pixels but the annotations say {expected[0]}x{expected[1]}"
    return None


def find_bad_images(
    files: Sequence[Path], sizes: Sequence[tuple[int, int] | None] | None = None
) -> list[tuple[int, Path, str]]:
    """``[(sample index, path, problem), ...]`` for every unusable file."""
    bad = []
    for i, path in enumerate(files):
        problem = image_problem(Path(path), sizes[i] if sizes is not None else None)
        if problem is not None:
            bad.append((i, Path(path), problem))
    return bad


def check_dataset(dataset: Any, split: str, mode: str = "error") -> list[tuple[int, Path, str]]:
    """Check one split (see the module docstring); returns the problems found (dropped when ``skip``)."""
    if dataset is None:
        return []
    if len(dataset) == 0:
        raise BadInput(f"data: the {split} split is empty; check data.{split} and data_root")
    if not hasattr(dataset, "image_files"):  # in-memory arrays (digits, CIFAR, idx): nothing on disk to check
        return []
    files = dataset.image_files()
    if files is None:
        return []
    sizes = dataset.expected_sizes() if hasattr(dataset, "expected_sizes") else None
    bad = find_bad_images(files, sizes)
    if not bad:
        return bad
    shown = "; ".join(f"{p} ({why})" for _, p, why in bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
    if mode != "skip":
        raise BadInput(
            f"data: {len(bad)} of {len(dataset)} {split} images cannot be used: {shown}. Fix or remove them, or set "
            "train.bad_images='skip' to leave them out"
        )
    dataset.drop_samples([i for i, _, _ in bad])
    if len(dataset) == 0:
        raise BadInput(f"data: every {split} image is unusable ({shown})")
    msg = f"data: skipping {len(bad)} unusable {split} images (train.bad_images='skip'): {shown}"
    warnings.warn(msg, stacklevel=2)
    print(f"WARNING: {msg}")
    return bad


def check_datasets(train: Any, val: Any, mode: str = "error") -> None:
    """The engine's setup-time check of the training and validation splits."""
    check_dataset(train, "train", mode)
    check_dataset(val, "val", mode)
