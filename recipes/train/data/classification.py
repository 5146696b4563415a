"""Image-classification datasets in the standard on-disk formats, with albumentations pipelines.

Registered in ``DATASETS``: ``digits`` (scikit-learn's 8x8 digits, ships in its wheel),
``cifar10`` / ``cifar100`` (torchvision's on-disk python pickles, read by an unpickler that admits
only dicts, lists, strings, numbers and numpy arrays; nothing is downloaded),
``idx`` (MNIST / Fashion-MNIST idx files, ``.gz`` or not) and ``image_folder``
(``root/<split>/<class>/*.jpg``). Every dataset yields ``(CHW float tensor, int label)`` and has
``classes``. ``pipeline`` is a list of albumentations transforms as dicts::

    pipeline=[dict(type="RandomResizedCrop", size=(224, 224)), dict(type="HorizontalFlip"),
              dict(type="Normalize", mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))]

Without a ``Normalize`` step, uint8 images are scaled to [0, 1]. Random augmentations are seeded
per sample from (seed, epoch, index), so the data a run sees does not depend on worker count
or on being resumed.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from recipes.options import forwards_kwargs
from recipes.train.data.safe_pickle import load_plain_pickle
from recipes.train.errors import BadInput
from recipes.train.registry import DATASETS

IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def build_pipeline(steps: Sequence[dict[str, Any]] | None) -> Any:
    """``albumentations.Compose`` from ``[dict(type=name, **kwargs), ...]`` (None: no transform)."""
    if not steps:
        return None
    import albumentations as A

    ops = []
    for i, step in enumerate(steps):
        kw = dict(step)
        name = kw.pop("type", None)
        cls = getattr(A, name, None) if isinstance(name, str) else None
        if cls is None:
            raise KeyError(
                f"data pipeline[{i}]: {name!r} is not an albumentations transform (albumentations {A.__version__})"
            )
        ops.append(cls(**kw))
    return A.Compose(ops)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"data: {what} {str(path)!r} does not exist; set data_root (or data.<split>.root) to your copy"
        )
    return path


class ArrayDataset(Dataset):
    """Images (N x H x W [x C] uint8, or paths) and labels, with an optional pipeline and a holdout split.

    ``holdout``: fraction of the samples set aside by a fixed permutation (``holdout_seed``);
    ``part="main"`` keeps the rest, ``part="holdout"`` only those (e.g. a validation set for
    temperature scaling cut out of a train split).
    """

    def __init__(self, images: Any, labels: Sequence[int], classes: Sequence[str], pipeline: Any = None,
                 seed: int = 0, holdout: float = 0.0, part: str = "main", holdout_seed: int = 0) -> None:  # fmt: skip
        self.images, self.labels, self.classes = images, np.asarray(labels, dtype=np.int64), list(classes)
        self.pipeline = build_pipeline(pipeline) if isinstance(pipeline, (list, tuple)) else pipeline
        self.seed, self.epoch = int(seed), 0
        self.index = np.arange(len(self.labels))
        if holdout:
            if part not in ("main", "holdout"):
                raise ValueError(f"data: part must be 'main' or 'holdout', got {part!r}")
            perm = np.random.default_rng(holdout_seed).permutation(len(self.labels))
            cut = int(round(holdout * len(perm)))
            self.index = np.sort(perm[:cut] if part == "holdout" else perm[cut:])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def load(self, i: int) -> np.ndarray:
        return self.images[i]

    def image_files(self) -> list[Path] | None:
        """One file per sample for the setup-time data check (None: the images are in memory)."""
        paths = getattr(self.images, "paths", None)
        return None if paths is None else [paths[i] for i in self.index]

    def drop_samples(self, positions: Sequence[int]) -> None:
        """Leave out samples (positions in the current order), e.g. unreadable files."""
        self.index = np.delete(self.index, list(positions))

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        i = int(self.index[idx])
        img = self.load(i)
        if self.pipeline is not None:
            self.pipeline.set_random_seed(((self.seed * 1_000_003 + self.epoch) * 1_000_003 + idx) % 2**32)
            img = self.pipeline(image=img)["image"]
        return to_tensor(img), int(self.labels[i])


def to_tensor(img: Any) -> torch.Tensor:
    """HWC / HW numpy (uint8 -> [0, 1]) or an already-converted tensor to a CHW float tensor."""
    if isinstance(img, torch.Tensor):
        return img.float()
    if img.ndim == 2:
        img = img[:, :, None]
    arr = np.ascontiguousarray(img.transpose(2, 0, 1))
    t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # idx files are read-only buffers
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()


FILLED = ("images", "labels", "classes")  # what each builder below gives ArrayDataset itself


@DATASETS.register_module("digits")
@forwards_kwargs(ArrayDataset, filled=FILLED)
def digits(split: str = "train", val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0,
           **kw: Any) -> ArrayDataset:  # fmt: skip
    """scikit-learn's 1,797 8x8 digits (grey, 0..16 scaled to uint8), split train / val / test, stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "val", "test"):
        raise ValueError(f"digits: split must be 'train', 'val' or 'test', got {split!r}")
    d = load_digits()
    images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]
    idx = np.arange(len(d.target))
    rest, test = train_test_split(idx, test_size=test_fraction, random_state=split_seed, stratify=d.target)
    train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), random_state=split_seed,
                                  stratify=d.target[rest])  # fmt: skip
    pick = np.sort({"train": train, "val": val, "test": test}[split])
    return ArrayDataset(images[pick], d.target[pick], [str(i) for i in range(10)], **kw)


def _cifar(root: str | Path, split: str, variant: int, **kw: Any) -> ArrayDataset:
    folder = {10: "cifar-10-batches-py", 100: "cifar-100-python"}[variant]
    root = _require(Path(root).expanduser(), f"cifar{variant} root")
    base = root if root.name == folder else _require(root / folder, f"cifar{variant} folder (torchvision layout)")
    if split not in ("train", "test"):
        raise ValueError(f"cifar{variant}: split must be 'train' or 'test', got {split!r}")
    if variant == 10:
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        meta, key, label_key = "batches.meta", "label_names", "labels"
    else:
        files, meta, key, label_key = [split], "meta", "fine_label_names", "fine_labels"
    data, labels = [], []
    for name in files:
        entry = load_plain_pickle(_require(base / name, "CIFAR batch file"), "CIFAR batch file")
        data.append(_cifar_field(entry, "data", base / name))
        labels += list(_cifar_field(entry, label_key, base / name))
    classes = _cifar_field(
        load_plain_pickle(_require(base / meta, "CIFAR meta file"), "CIFAR meta file"), key, base / meta
    )
    images = np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return ArrayDataset(np.ascontiguousarray(images), labels, classes, **kw)


def _cifar_field(entry: Any, key: str, path: Path) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise BadInput(f"CIFAR file {str(path)!r} has no {key!r} entry; is it torchvision's python version of CIFAR?")
    return entry[key]


@DATASETS.register_module("cifar10")
@forwards_kwargs(ArrayDataset, filled=FILLED)
def cifar10(root: str | Path, split: str = "train", **kw: Any) -> ArrayDataset:
    """CIFAR-10 from torchvision's ``cifar-10-batches-py`` folder (give it or its parent)."""
    return _cifar(root, split, 10, **kw)


@DATASETS.register_module("cifar100")
@forwards_kwargs(ArrayDataset, filled=FILLED)
def cifar100(root: str | Path, split: str = "train", **kw: Any) -> ArrayDataset:
    """CIFAR-100 (fine labels) from torchvision's ``cifar-100-python`` folder (give it or its parent)."""
    return _cifar(root, split, 100, **kw)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (``.gz`` or raw): magic, dims, big-endian payload."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{str(path)!r} is not an idx file (bad magic {raw[:4]!r})")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[raw[2]]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * raw[3]).reshape(dims)


@DATASETS.register_module("idx")
@forwards_kwargs(ArrayDataset, filled=FILLED)
def idx(root: str | Path, split: str = "train", classes: Sequence[str] | None = None, **kw: Any) -> ArrayDataset:
    """MNIST / Fashion-MNIST idx files: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` in ``root``."""
    root = _require(Path(root).expanduser(), "idx root")
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"idx: split must be 'train' or 'test', got {split!r}")
    found = {}
    for what, stem in (("images", f"{prefix}-images-idx3-ubyte"), ("labels", f"{prefix}-labels-idx1-ubyte")):
        cands = [root / stem, root / f"{stem}.gz"]
        path = next((c for c in cands if c.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"idx: neither {cands[0].name} nor {cands[1].name} in {str(root)!r}")
        found[what] = read_idx(path)
    labels = found["labels"].astype(np.int64)
    names = list(classes) if classes else [str(i) for i in range(int(labels.max()) + 1)]
    return ArrayDataset(found["images"][..., None], labels, names, **kw)


class _FolderImages:
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __getitem__(self, i: int) -> np.ndarray:
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return np.asarray(im.convert("RGB"))


@DATASETS.register_module("image_folder")
@forwards_kwargs(ArrayDataset, filled=FILLED)
def image_folder(root: str | Path, split: str | None = "train", per_class: int | None = None, per_class_start: int = 0,
                 subset_seed: int = 0, **kw: Any) -> ArrayDataset:  # fmt: skip
    """``root/<split>/<class name>/<image>``; classes are the sorted sub-folder names.

    ``per_class=N``: a class-balanced subset, N images of each class drawn by a fixed permutation
    (``subset_seed``, independent of the training seed, so every seed sees the same images);
    ``per_class_start=S`` takes positions S..S+N-1 of that permutation, so a validation subset cut from the
    same folder (``per_class_start`` = the training subset's ``per_class``) shares no image with it.
    """
    base = _require(Path(root).expanduser() / (split or ""), "image folder")
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"image_folder: {str(base)!r} has no class sub-folders (expected <split>/<class>/<image>)")
    paths, labels = [], []
    for c, name in enumerate(classes):
        files = sorted(p for p in (base / name).rglob("*") if p.suffix.lower() in IMG_EXT)
        if per_class is not None:
            if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
                raise ValueError(f"image_folder: per_class must be an int >= 1, got {per_class!r}")
            if per_class_start + per_class > len(files):
                raise ValueError(f"image_folder: per_class_start={per_class_start} + per_class={per_class} but "
                                 f"class {name!r} has {len(files)} images")  # fmt: skip
            perm = np.random.default_rng([subset_seed, c]).permutation(len(files))
            pick = perm[per_class_start : per_class_start + per_class]
            files = [files[i] for i in sorted(pick)]
        paths += files
        labels += [c] * len(files)
    if per_class_start and per_class is None:
        raise ValueError("image_folder: per_class_start needs per_class")
    if not paths:
        raise ValueError(f"image_folder: no images ({', '.join(IMG_EXT)}) under {str(base)!r}")
    return ArrayDataset(_FolderImages(paths), labels, classes, **kw)
