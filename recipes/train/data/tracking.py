"""Single-object tracking data: GOT-10k, LaSOT and OTB sequence folders, video files, pair sampling.

Layouts read (auto-detected per sequence folder):

* GOT-10k: ``<seq>/00000001.jpg ...``, ``groundtruth.txt`` (x,y,w,h per frame), optional
  ``absence.label`` (1 = target absent) and ``cover.label`` (0 = fully occluded);
* LaSOT: ``<seq>/img/00000001.jpg ...``, ``groundtruth.txt``, ``full_occlusion.txt`` and
  ``out_of_view.txt`` (one comma-separated line of 0/1 flags);
* OTB: ``<seq>/img/0001.jpg ...``, ``groundtruth_rect.txt`` with comma, tab or space delimiters; the
  first frame need not be 0001 (David starts at 0300): lines follow the sorted frame files.

A frame flagged absent (or whose box is NaN / zero-sized *and* flagged) is kept in the sequence
with ``visible=False``: it is never a training target and the metrics skip it, as GOT-10k's toolkit
does. An unflagged NaN or zero-size box, fewer box lines than frames, a box wholly outside the
image, or an empty sequence is an error naming the file and line. Boxes partly outside the image are
clipped to it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
_SPLIT = re.compile(r"[,\t ]+")


@dataclass
class Sequence:
    """One annotated sequence: frame files (or a video), boxes x,y,w,h (float, pixels), visibility."""

    name: str
    frames: list[Path]
    boxes: np.ndarray  # (N, 4) x, y, w, h
    visible: np.ndarray  # (N,) bool
    size: tuple[int, int]  # (width, height) of the frames
    gt_file: Path | None = None
    video: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.boxes)

    def read(self, i: int) -> np.ndarray:
        """Frame ``i`` as an RGB uint8 array."""
        if self.video is not None:
            return self.meta["cache"][i]
        return read_rgb(self.frames[i])


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: the image cannot be read (missing, empty or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def parse_boxes(path: Path, n_frames: int | None = None) -> tuple[np.ndarray, list[int]]:
    """``(boxes, line numbers)`` from a ground-truth file; commas, tabs or spaces between numbers."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ground-truth file not found")
    rows, lines = [], []
    for k, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p for p in _SPLIT.split(line.strip()) if p]
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"{path}:{k}: expected 4 numbers x,y,w,h, got {line.strip()!r}") from None
        if len(vals) != 4:
            raise ValueError(f"{path}:{k}: expected 4 numbers x,y,w,h, got {len(vals)} ({line.strip()!r})")
        rows.append(vals)
        lines.append(k)
    if n_frames is not None and len(rows) < n_frames:
        raise ValueError(
            f"{path}: {len(rows)} box lines for {n_frames} frames (line {len(rows) + 1} missing); "
            "every frame needs a line (use 0,0,0,0 plus an absence flag for frames without the target)"
        )
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)[: n_frames or None], lines


def parse_flags(path: Path, n: int) -> np.ndarray:
    """0/1 flags, one per frame, one per line (GOT-10k) or comma-separated on one line (LaSOT)."""
    vals = [v for v in _SPLIT.split(path.read_text().replace("\n", ",")) if v.strip()]
    if len(vals) < n:
        raise ValueError(f"{path}: {len(vals)} flags for {n} frames; one 0/1 flag per frame expected")
    try:
        return np.asarray([int(float(v)) for v in vals[:n]], dtype=np.int64)
    except ValueError:
        raise ValueError(f"{path}: flags must be 0 or 1 numbers") from None


def list_frames(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def detect_layout(seq_dir: Path) -> str:
    if (seq_dir / "groundtruth_rect.txt").is_file():
        return "otb"
    if (seq_dir / "img").is_dir() and (seq_dir / "groundtruth.txt").is_file():
        return "lasot"
    if (seq_dir / "groundtruth.txt").is_file():
        return "got10k"
    raise ValueError(
        f"{seq_dir}: not a sequence folder: expected groundtruth.txt (GOT-10k, LaSOT with img/) or "
        "groundtruth_rect.txt (OTB)"
    )


def load_sequence(seq_dir: str | Path, layout: str = "auto") -> Sequence:
    """Read one sequence folder in the GOT-10k, LaSOT or OTB layout (``layout='auto'`` detects it)."""
    seq_dir = Path(seq_dir)
    if not seq_dir.is_dir():
        raise FileNotFoundError(f"{seq_dir}: sequence folder not found")
    layout = detect_layout(seq_dir) if layout == "auto" else layout
    if layout not in ("got10k", "lasot", "otb"):
        raise ValueError(f"layout must be 'auto', 'got10k', 'lasot' or 'otb', got {layout!r}")
    img_dir = seq_dir if layout == "got10k" else seq_dir / "img"
    gt = seq_dir / ("groundtruth_rect.txt" if layout == "otb" else "groundtruth.txt")
    frames = list_frames(img_dir) if img_dir.is_dir() else []
    if not frames:
        raise ValueError(f"{img_dir}: empty sequence: no {'/'.join(IMAGE_EXTS)} frames")
    boxes, lines = parse_boxes(gt, len(frames))
    absent = np.zeros(len(frames), dtype=bool)
    if layout == "got10k":
        if (seq_dir / "absence.label").is_file():
            absent |= parse_flags(seq_dir / "absence.label", len(frames)) == 1
        if (seq_dir / "cover.label").is_file():
            absent |= parse_flags(seq_dir / "cover.label", len(frames)) == 0
    elif layout == "lasot":
        for name in ("full_occlusion.txt", "out_of_view.txt"):
            if (seq_dir / name).is_file():
                absent |= parse_flags(seq_dir / name, len(frames)) == 1
    first = read_rgb(frames[0])
    size = (first.shape[1], first.shape[0])
    boxes, visible = check_boxes(boxes, absent, size, gt, lines)
    return Sequence(seq_dir.name, frames, boxes, visible, size, gt_file=gt, meta={"layout": layout})


def check_boxes(boxes: np.ndarray, absent: np.ndarray, size: tuple[int, int], gt: Path | str,
                lines: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Clip boxes to the image; error on an unflagged NaN, zero-size or wholly-outside box."""
    w_img, h_img = size
    boxes = boxes.copy()
    for i, (x, y, w, h) in enumerate(boxes):
        where = f"{gt}:{lines[i] if lines else i + 1}"
        bad = None
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            bad = "a NaN/inf box"
        elif w <= 0 or h <= 0:
            bad = f"a zero-size box ({w:g}x{h:g})"
        elif x >= w_img or y >= h_img or x + w <= 0 or y + h <= 0:
            bad = f"a box wholly outside the {w_img}x{h_img} image"
        if bad is None:
            x0, y0 = max(0.0, x), max(0.0, y)
            boxes[i] = (x0, y0, min(x + w, w_img) - x0, min(y + h, h_img) - y0)
        elif absent[i]:
            boxes[i] = np.nan
        else:
            raise ValueError(f"{where}: {bad} ({x:g},{y:g},{w:g},{h:g}) on a frame not flagged absent; fix the line "
                             "or flag the frame (GOT-10k absence.label, LaSOT out_of_view.txt)")  # fmt: skip
    visible = ~absent & np.isfinite(boxes).all(1)
    if not visible[0]:
        raise ValueError(f"{gt}:{lines[0] if lines else 1}: the first frame's target is absent; a tracker needs it")
    return boxes, visible


def load_video(path: str | Path, init_box: tuple[float, float, float, float]) -> Sequence:
    """A video file (decoded into memory) with a first-frame box; no ground truth after frame 1."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video file not found")
    cap = cv2.VideoCapture(str(path))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    frames = []
    while cap.isOpened():
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise ValueError(
            f"{path}: the video cannot be decoded (no frame read); convert it to mp4/H.264 or a frame folder"
        )
    size = (frames[0].shape[1], frames[0].shape[0])
    boxes = np.full((len(frames), 4), np.nan)
    boxes[0] = init_box
    check_init_box(init_box, size, str(path))
    visible = np.zeros(len(frames), dtype=bool)
    visible[0] = True
    return Sequence(path.stem, [], boxes, visible, size, video=path, meta={"cache": frames, "fps": fps})


def load_frames(folder: str | Path, init_box: tuple[float, float, float, float]) -> Sequence:
    """A plain frame folder with a first-frame box (inference without ground truth)."""
    folder = Path(folder)
    frames = list_frames(folder) if folder.is_dir() else []
    if not frames:
        raise ValueError(f"{folder}: no {'/'.join(IMAGE_EXTS)} frames")
    first = read_rgb(frames[0])
    size = (first.shape[1], first.shape[0])
    check_init_box(init_box, size, str(frames[0]))
    boxes = np.full((len(frames), 4), np.nan)
    boxes[0] = init_box
    visible = np.zeros(len(frames), dtype=bool)
    visible[0] = True
    return Sequence(folder.name, frames, boxes, visible, size)


def check_init_box(box: tuple[float, ...], size: tuple[int, int], where: str) -> None:
    x, y, w, h = box
    if not (w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= size[0] and y + h <= size[1]):
        raise ValueError(f"--init {x:g},{y:g},{w:g},{h:g}: the box must have w, h > 0 and lie inside the "
                         f"{size[0]}x{size[1]} first frame of {where}")  # fmt: skip


def sequence_names(root: Path, sequences: list[str] | str | None) -> list[str]:
    """Names from a list, from a list file (relative to root), or every sequence folder under root."""
    if sequences is None:
        if (root / "list.txt").is_file():
            return [s.strip() for s in (root / "list.txt").read_text().splitlines() if s.strip()]
        return sorted(p.name for p in root.iterdir() if p.is_dir())
    if isinstance(sequences, str):
        path = Path(sequences) if Path(sequences).is_absolute() else root / sequences
        return [s.strip() for s in path.read_text().splitlines() if s.strip()]
    return list(sequences)


def load_sequences(root: str | Path, sequences: list[str] | str | None = None, exclude: list[str] = (),
                   layout: str = "auto") -> list[Sequence]:  # fmt: skip
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a folder (set data_root=...)")
    if exclude is None or isinstance(exclude, str):
        raise ValueError(f"data.exclude: expected a list of sequence names (or []), got {exclude!r}")
    names = [n for n in sequence_names(root, sequences) if n not in set(exclude)]
    unknown = [n for n in exclude if not (root / n).is_dir()]
    if unknown:
        raise ValueError(f"data: exclude names sequences not under {root}: {unknown}")
    if not names:
        raise ValueError(f"{root}: no sequences selected")
    return [load_sequence(root / n, layout) for n in names]
