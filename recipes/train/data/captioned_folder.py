"""The folder side of the captioned datasets (``captioned.py``): files, captions, sizes, crops, the validation split.

The folders follow diffusers' imagefolder convention.

Captions: ``metadata.jsonl`` (one ``{"file_name": ..., "text": ...}`` per line) when the folder has
one, else a ``.txt`` beside each file; ``instance_prompt`` gives every file one fixed prompt
(DreamBooth); ``default_caption`` fills files that have none (without it, a missing caption is an
error naming the files). Every file is opened once at start-up, so a corrupt image or video is an
error before training, not in the middle of it.

Sizes: ``resolution`` (square side, or ``(height, width)``); ``buckets=True`` gives aspect-ratio
buckets of about ``resolution**2`` pixels with sides multiples of ``bucket_step`` (each image goes to
the bucket of nearest aspect ratio); the engine then batches each bucket on its own
(``recipes/train/sampling.py``: a partial last batch per bucket, or none with ``bucket_drop_last=True``).
An image is resized to cover its target size, then cropped
(``crop='center'`` or ``'random'``) and flipped with probability ``flip_p``; the random draws come
from ``(seed, epoch, index)``, so a resumed run sees the same crops.

A sample is a dict: ``pixels`` (float, [-1, 1], ``C,H,W`` or ``C,F,H,W`` for video), ``caption``,
``key`` (sha256 of the file's bytes), ``original_size``, ``crop_top_left``, ``flipped``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from recipes.train.data.captions import CaptionOptions, read_text

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
VIDEO_EXTS = (".mp4", ".mov", ".webm", ".avi", ".mkv")
CROPS = ("center", "random")
MASK_SUFFIX = ".mask"  # <name>.mask.png beside <name>.jpg: a loss weight per pixel (white 1, black 0)


def aspect_buckets(resolution: int, step: int = 64, max_ratio: float = 2.0) -> list[tuple[int, int]]:
    """(height, width) buckets of at most ``resolution**2`` pixels, sides multiples of ``step``, ratio <= max_ratio."""
    out = set()
    for w in range(step, 4 * resolution + 1, step):
        h = (resolution * resolution // w) // step * step
        if h >= step and max(w / h, h / w) <= max_ratio:
            out.add((h, w))
    return sorted(out)


def _size(resolution: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    size = None
    if isinstance(resolution, int) and not isinstance(resolution, bool):
        size = resolution, resolution
    elif isinstance(resolution, (tuple, list)) and len(resolution) == 2 and all(isinstance(v, int) for v in resolution):
        size = int(resolution[0]), int(resolution[1])
    if size is None or min(size) <= 0:
        raise ValueError(f"data.resolution must be a whole number > 0 or (height, width) of them, got {resolution!r}")
    return size


class _CaptionedFolder(Dataset):
    exts: tuple[str, ...] = ()
    kind = "file"

    #: the lists with one entry per sample, subset together (``drop_samples``, ``split_off_val``)
    per_sample = ("files", "captions", "keys", "sizes", "targets")

    def __init__(self, root: str, resolution: int | tuple[int, int] = 512, crop: str = "center", flip_p: float = 0.0,
                 instance_prompt: str | None = None, default_caption: str | None = None, seed: int = 0,
                 val_split: float = 0, repeats: int = 1, trigger_word: str | list[str] | None = None,
                 shuffle_tags: bool = False, keep_tokens: int = 0, tag_dropout: float = 0.0) -> None:  # fmt: skip
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root={str(root)!r} is not a folder of {self.kind}s with captions")
        if crop not in CROPS:
            raise ValueError(f"data.crop must be one of {CROPS}, got {crop!r}")
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"data.flip_p must lie in [0, 1], got {flip_p}")
        self.size, self.crop, self.flip_p, self.seed, self.epoch = _size(resolution), crop, float(flip_p), seed, 0
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in self.exts
                            and not p.stem.endswith(MASK_SUFFIX))  # fmt: skip
        if not self.files:
            raise FileNotFoundError(f"data.root={str(root)!r} holds no {self.kind}s ({', '.join(self.exts)})")
        self.caption_options = CaptionOptions.build(trigger_word, shuffle_tags, keep_tokens, tag_dropout)
        self.captions = [self.caption_options.with_trigger(c) for c in self._captions(instance_prompt, default_caption)]
        self.keys, self.sizes = [], []
        for f in self.files:
            data = f.read_bytes()
            self.keys.append(hashlib.sha256(data).hexdigest())
            self.sizes.append(self._probe(f, data))
        self.targets = [self.size] * len(self.files)
        self.val_split = self._val_count(val_split)
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"data.repeats must be a whole number >= 1 (each file seen that often per epoch), got "
                             f"{repeats!r}")  # fmt: skip
        self.repeats, self.held_out = repeats, None

    def _finish_init(self) -> None:
        """Once every sample's target size is known (subclasses' ``__init__``): the validation files held out,
        then each training file listed ``repeats`` times (each copy its own index: its own crop and flip draws)."""
        self.held_out = self._hold_out()
        if self.repeats > 1:
            self._subset(list(range(len(self.files))) * self.repeats)

    def _val_count(self, val_split: float) -> int:
        """``val_split``: a fraction in (0, 1) of the files, or a whole number of them, held out for validation."""
        if not val_split:
            return 0
        n, bad = len(self.files), isinstance(val_split, bool) or not isinstance(val_split, (int, float))
        if not bad and 0 < val_split < 1:
            count = max(1, round(val_split * n))
        elif not bad and val_split >= 1 and val_split == int(val_split):
            count = int(val_split)
        else:
            raise ValueError(f"data.train.val_split must be a fraction in (0, 1) or a whole count, got {val_split!r}")
        if count >= n:
            raise ValueError(f"data.train.val_split={val_split!r} holds out {count} of the {n} {self.kind}s in "
                             f"{str(self.root)!r}; leave at least one to train on")  # fmt: skip
        return count

    def _subset(self, keep: list[int]) -> None:
        for name in self.per_sample:
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in keep])

    def drop_samples(self, indices: list[int]) -> None:
        """Leave samples out (``train.bad_images='skip'``)."""
        drop = set(indices)
        self._subset([i for i in range(len(self.files)) if i not in drop])

    def split_off_val(self) -> _CaptionedFolder | None:
        """The ``val_split`` held-out samples (see ``_hold_out``), None without ``val_split``."""
        return self.held_out

    def _hold_out(self) -> _CaptionedFolder | None:
        """The ``val_split`` held-out samples as a dataset of their own (center crop, no flip, no tag shuffle or
        dropout, no repeats), removed from this one. They are the files whose content hash (sha256) sorts first:
        the same files in every run and seed, however the folder is ordered or renamed."""
        if not self.val_split:
            return None
        import copy

        order = sorted(range(len(self.files)), key=lambda i: self.keys[i])
        held = set(order[: self.val_split])
        val = copy.copy(self)
        val._subset(sorted(held))
        val.crop, val.flip_p, val.val_split, val.repeats = "center", 0.0, 0, 1
        val.caption_options = CaptionOptions(trigger_word=self.caption_options.trigger_word)
        self._subset([i for i in range(len(self.files)) if i not in held])
        return val

    def _captions(self, instance_prompt: str | None, default_caption: str | None) -> list[str]:
        """One caption per file; a bad row or caption file is an error naming it (see ``_metadata``)."""
        self.unmatched_rows = 0  # metadata.jsonl rows naming no file of the folder: counted in the setup report
        if instance_prompt is not None:
            return [instance_prompt] * len(self.files)
        meta = self.root / "metadata.jsonl"
        if meta.is_file():
            given = self._metadata(meta)
        else:
            given = {f.resolve(): (read_text(f.with_suffix(".txt")).strip(), f.with_suffix(".txt").name)
                     for f in self.files if f.with_suffix(".txt").is_file()}  # fmt: skip
        empty = [where for text, where in given.values() if not text]
        if empty:
            raise ValueError(f"data: {len(empty)} empty caption(s) in {str(self.root)!r}, e.g. {empty[:3]}; write "
                             "them, or remove them and set data.default_caption")  # fmt: skip
        missing = [f for f in self.files if f.resolve() not in given]
        if missing and default_caption is None:
            where = "metadata.jsonl" if meta.is_file() else "a .txt beside it"
            shown = ", ".join(str(m.relative_to(self.root)) for m in missing[:5])
            raise ValueError(f"data: {len(missing)} of {len(self.files)} {self.kind}s in {str(self.root)!r} have no "
                             f"caption ({where}), e.g. {shown}; add captions, or set data.default_caption / "
                             "data.instance_prompt")  # fmt: skip
        return [given[f.resolve()][0] if f.resolve() in given else default_caption or "" for f in self.files]

    def _metadata(self, meta: Path) -> dict[Path, tuple[str, str]]:
        """``{file: (caption, "metadata.jsonl:<line>")}``; ``text`` must be a string and each file named once."""
        given: dict[Path, tuple[str, str]] = {}
        for n, line in enumerate(read_text(meta).splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                path, text = (self.root / row["file_name"]).resolve(), row["text"]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{meta}:{n}: expected {{'file_name': ..., 'text': ...}}, got {line[:80]!r} ({e})") from None  # fmt: skip
            if not isinstance(text, str):
                raise ValueError(f"{meta}:{n}: `text` must be a string, got {text!r} for {row['file_name']!r}")
            if path in given:
                raise ValueError(f"{meta}:{n}: {row['file_name']!r} already has a caption at {given[path][1]}; keep "
                                 "one row per file")  # fmt: skip
            given[path] = (text.strip(), f"metadata.jsonl:{n}")
        files = {f.resolve() for f in self.files}
        self.unmatched_rows = sum(p not in files for p in given)
        return given

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _placement(self, index: int, src_hw: tuple[int, int], rng: np.random.Generator) -> tuple[Any, ...]:
        """(resized (h, w), crop (top, left), target (h, w), flipped) for one sample."""
        th, tw = self.targets[index]
        h, w = src_hw
        scale = max(th / h, tw / w)
        rh, rw = max(th, round(h * scale)), max(tw, round(w * scale))
        if self.crop == "random":
            top, left = int(rng.integers(0, rh - th + 1)), int(rng.integers(0, rw - tw + 1))
        else:
            top, left = (rh - th) // 2, (rw - tw) // 2
        flipped = bool(self.flip_p > 0 and rng.random() < self.flip_p)
        return (rh, rw), (top, left), (th, tw), flipped

    def check_unchanged(self, index: int, hw: tuple[int, int]) -> None:
        """A file read in training still has the size it had at start-up (buckets, crops, cache keys follow it)."""
        if tuple(hw) != tuple(self.sizes[index]):
            (h, w), (nh, nw) = self.sizes[index], hw
            raise ValueError(f"data: {str(self.files[index])!r} is {nw}x{nh} now but was {w}x{h} when the run "
                             "started (its bucket, crop and cache key follow that size); put the original back, or "
                             "restart the run to train on the new file")  # fmt: skip

    def sample_dict(self, index: int, pixels: torch.Tensor, placement: tuple[Any, ...]) -> dict[str, Any]:
        caption = self.caption_options.augment(self.captions[index], self.seed, self.epoch, index)
        return {"pixels": pixels, "caption": caption, "key": self.keys[index],
                "original_size": tuple(self.sizes[index]), "crop_top_left": placement[1], "flipped": placement[3],
                "index": index}  # fmt: skip


def validation_set(train: _CaptionedFolder, given: _CaptionedFolder | None) -> _CaptionedFolder:
    """``data.train.val_split`` held out of the training folder, or the ``data.val`` folder; without either, the
    training set (then best.pt follows the training loss, which favours the most overfit step: a warning)."""
    held = train.split_off_val()
    if held is not None and given is not None:
        raise ValueError("data.train.val_split and data.val both give a validation set; keep one")
    train_roots = {p.root.resolve() for p in getattr(train, "parts", [train])}  # captioned_mix: every part's folder
    for p in getattr(given, "parts", [given]) if given is not None else []:
        if p.root.resolve() in train_roots:
            which = "one of data.train.datasets' folders" if hasattr(train, "parts") else "the training folder"
            raise ValueError(f"data.val.root={str(p.root)!r} is {which}: its loss is a training loss; "
                             "give a folder of held-out files, or data.train.val_split instead")  # fmt: skip
    if held is None and given is None:
        logging.getLogger("recipes.train").warning(
            "no validation set (data.val or data.train.val_split): the evaluation loss and best.pt use the training "
            f"{train.kind}s"
        )
    return held if held is not None else given if given is not None else train


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` -> float in [-1, 1], channels first (``C,H,W`` or ``C,F,H,W``)."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).float().div_(127.5).sub_(1.0)
    return t.permute(2, 0, 1) if t.dim() == 3 else t.permute(3, 0, 1, 2)


def _place(img: np.ndarray, placement: tuple[Any, ...]) -> np.ndarray:
    import cv2

    (rh, rw), (top, left), (th, tw), flipped = placement
    if img.shape[:2] != (rh, rw):
        img = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_AREA)
    img = img[top : top + th, left : left + tw]
    return img[:, ::-1] if flipped else img
