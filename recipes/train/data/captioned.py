"""Captioned image and video folders for diffusion fine-tuning: the registered ``captioned_images`` and
``captioned_videos`` (folder conventions, captions, sizes and crops: ``captioned_folder.py``; several folders
with weights and regularisation images: ``captioned_mix.py``)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recipes.train.data.captioned_folder import (  # noqa: F401 - re-exported: the captioned datasets' one import
    CROPS,
    IMAGE_EXTS,
    MASK_SUFFIX,
    VIDEO_EXTS,
    _CaptionedFolder,
    _place,
    _size,
    _to_tensor,
    aspect_buckets,
    validation_set,
)
from recipes.train.registry import DATASETS


@DATASETS.register_module("captioned_images")
class CaptionedImages(_CaptionedFolder):
    """Images with captions; see the module docstring. ``buckets=True`` turns on aspect-ratio buckets."""

    exts, kind = IMAGE_EXTS, "image"

    def __init__(self, root: str, resolution: int | tuple[int, int] = 512, buckets: bool = False,
                 bucket_step: int = 64, bucket_drop_last: bool = False, **kw: Any) -> None:  # fmt: skip
        super().__init__(root, resolution, **kw)
        self.buckets: list[tuple[int, int]] = []
        if bucket_drop_last and not buckets:
            raise ValueError(
                "data.bucket_drop_last applies to aspect-ratio buckets; set data.buckets=True or remove it"
            )
        #: leave out each bucket's last, partial batch (every batch full) instead of training on it
        self.bucket_drop_last = bool(bucket_drop_last)
        if bucket_step != 64 and not buckets:
            raise ValueError("data.bucket_step applies to aspect-ratio buckets; set data.buckets=True or remove it")
        if buckets:
            if not isinstance(resolution, int):
                raise ValueError(
                    "data.buckets=True needs an int data.resolution (the side of the square of equal area)"
                )
            if isinstance(bucket_step, bool) or not isinstance(bucket_step, int) or not 1 <= bucket_step <= resolution:
                raise ValueError(f"data.bucket_step must be a whole number of pixels in [1, resolution={resolution}] "
                                 f"(e.g. 64: the VAE factor x patch size divides it), got {bucket_step!r}")  # fmt: skip
            self.buckets = aspect_buckets(resolution, bucket_step)
            self.targets = [min(self.buckets, key=lambda b: abs(math.log(b[1] / b[0]) - math.log(w / h)))
                            for h, w in self.sizes]  # fmt: skip
        self.bucket_step = bucket_step
        self.masks = self._find_masks()
        self.per_sample = (*self.per_sample, "masks")
        self._finish_init()

    def _find_masks(self) -> list[Path | None]:
        """``<name>.mask.png`` beside each image (same size; read as grey levels / 255), else None."""
        from PIL import Image

        masks: list[Path | None] = []
        for f, (h, w) in zip(self.files, self.sizes, strict=True):
            m = f.with_name(f.stem + MASK_SUFFIX + ".png")
            if m.is_file():
                try:
                    with Image.open(m) as im:
                        size = (im.height, im.width)
                except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a bad file
                    raise ValueError(f"data: mask {str(m)!r} is not a readable image ({type(e).__name__})") from None
                if size != (h, w):
                    raise ValueError(f"data: mask {str(m)!r} is {size[1]}x{size[0]}, its image {f.name} is {w}x{h}; "
                                     "a mask must have its image's size")  # fmt: skip
            masks.append(m if m.is_file() else None)
        return masks

    def bucket_keys(self) -> list[tuple[int, int]]:
        """Each sample's target (height, width): batches are made within one size (``recipes/train/sampling.py``)."""
        return list(self.targets)

    def image_files(self) -> list[Path]:
        """One path per sample, for the engine's setup-time image check (``recipes/train/data/checks.py``)."""
        return list(self.files)

    def _probe(self, path: Path, data: bytes) -> tuple[int, int]:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return im.height, im.width
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a bad file
            raise ValueError(f"data: {str(path)!r} is not a readable image ({type(e).__name__}: {e}); remove or "
                             "replace it") from None  # fmt: skip

    def __getitem__(self, index: int) -> dict[str, Any]:
        from PIL import Image

        with Image.open(self.files[index]) as im:
            img = np.asarray(im.convert("RGB"))
        self.check_unchanged(index, img.shape[:2])
        placement = self._placement(index, img.shape[:2], self._rng(index))
        sample = self.sample_dict(index, _to_tensor(_place(img, placement)), placement)
        if any(m is not None for m in self.masks):
            sample["mask"] = self.mask_of(index, placement)
        return sample

    def mask_of(self, index: int, placement: tuple[Any, ...]) -> torch.Tensor:
        """Sample ``index``'s loss weights ``(1, H, W)`` in [0, 1], cropped and flipped as its pixels; all ones
        for an image without a mask file (masked and plain images can share a folder)."""
        from PIL import Image

        if self.masks[index] is None:
            return torch.ones(1, *placement[2])
        try:
            with Image.open(self.masks[index]) as im:
                grey = np.asarray(im.convert("L"))
        except OSError as e:  # removed or damaged after start-up
            raise ValueError(f"data: mask {str(self.masks[index])!r} cannot be read now ({type(e).__name__}); it was "
                             "at start-up: put it back, or restart the run") from None  # fmt: skip
        if grey.shape != tuple(self.sizes[index]):  # replaced after start-up: it would no longer match its image
            (h, w), (mh, mw) = self.sizes[index], grey.shape
            raise ValueError(f"data: mask {str(self.masks[index])!r} is {mw}x{mh} now, its image "
                             f"{self.files[index].name} is {w}x{h}; a mask must have its image's size")  # fmt: skip
        return torch.from_numpy(np.ascontiguousarray(_place(grey, placement))).float().div_(255.0)[None]


@DATASETS.register_module("captioned_videos")
class CaptionedVideos(_CaptionedFolder):
    """Videos (``.mp4`` ...) with captions: ``num_frames`` frames every ``frame_stride``-th from the start."""

    exts, kind = VIDEO_EXTS, "video"

    def __init__(self, root: str, resolution: int | tuple[int, int] = 480, num_frames: int = 17,
                 frame_stride: int = 1, **kw: Any) -> None:  # fmt: skip
        if num_frames < 1 or frame_stride < 1:
            raise ValueError(f"data.num_frames and data.frame_stride must be >= 1, got {num_frames}, {frame_stride}")
        self.num_frames, self.frame_stride = int(num_frames), int(frame_stride)
        super().__init__(root, resolution, **kw)
        self._finish_init()

    def _read(self, path: Path) -> np.ndarray:
        import cv2

        cap = cv2.VideoCapture(str(path))
        frames, need = [], (self.num_frames - 1) * self.frame_stride + 1
        try:
            while cap.isOpened() and len(frames) < need:
                ok, frame = cap.read()
                if not ok:
                    break
                frames.append(frame[:, :, ::-1])  # BGR -> RGB
        finally:
            cap.release()
        if len(frames) < need:
            raise ValueError(f"data: {str(path)!r} gave {len(frames)} frames, {need} are needed (num_frames="
                             f"{self.num_frames}, frame_stride={self.frame_stride}); the file is unreadable or too short")  # fmt: skip
        return np.stack(frames[:: self.frame_stride])

    def _probe(self, path: Path, data: bytes) -> tuple[int, int]:
        return self._read(path).shape[1:3]

    def __getitem__(self, index: int) -> dict[str, Any]:
        video = self._read(self.files[index])
        self.check_unchanged(index, video.shape[1:3])
        placement = self._placement(index, video.shape[1:3], self._rng(index))
        return self.sample_dict(index, _to_tensor(np.stack([_place(f, placement) for f in video])), placement)
