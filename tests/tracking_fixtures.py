"""Tiny real sequences written to disk (JPEG frames of a moving textured square) for the tracking tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def frames_of(n: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` RGB frames with a textured 12x10 square moving 2 px right per frame, and its boxes x,y,w,h."""
    rng = np.random.default_rng(seed)
    w, h = size
    bg = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    patch = rng.integers(150, 255, (10, 12, 3), dtype=np.uint8)
    frames, boxes = [], []
    for i in range(n):
        img = bg.copy()
        x, y = 6 + 2 * i, 14 + (i % 3)
        img[y : y + 10, x : x + 12] = patch
        frames.append(img)
        boxes.append((x, y, 12, 10))
    return frames, np.asarray(boxes, dtype=np.float64)


def write_frames(folder: Path, frames: list[np.ndarray], first: int = 1, digits: int = 8) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(frames):
        cv2.imwrite(str(folder / f"{first + k:0{digits}d}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def write_got10k(root: Path, name: str, n: int = 6, seed: int = 0, absent: tuple[int, ...] = ()) -> Path:
    frames, boxes = frames_of(n, seed=seed)
    seq = root / name
    write_frames(seq, frames)
    lines = ["0,0,0,0" if i in absent else ",".join(f"{v:g}" for v in b) for i, b in enumerate(boxes)]
    (seq / "groundtruth.txt").write_text("\n".join(lines) + "\n")
    if absent:
        (seq / "absence.label").write_text("".join(f"{int(i in absent)}\n" for i in range(n)))
    return seq
