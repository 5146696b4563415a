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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recipes.train.errors import BadInput

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
LAYOUTS = ("got10k", "lasot", "otb", "trackingnet")
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
    labels: np.ndarray | None = None  # (N, 4) the boxes as the ground-truth file gives them (before clipping)

    @property
    def truth(self) -> np.ndarray:
        """The boxes the metrics score against: the file's own (unclipped), as the toolkits read them."""
        return self.boxes if self.labels is None else self.labels

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
    if n_frames is not None and len(rows) != n_frames:
        what, hint = (f"line {len(rows) + 1} missing", "every frame needs a line (0,0,0,0 plus an absence flag for "
                      "a frame without the target)") if len(rows) < n_frames else (
                      f"lines {n_frames + 1}-{len(rows)} have no frame", "frames missing at the end, or lines of "
                      "another sequence")  # fmt: skip
        raise BadInput(f"{path}: {len(rows)} box lines for {n_frames} frames ({what}): {hint}; "
                       "train.bad_images='skip' cannot tell which frame a line belongs to: fix the file or the frames")  # fmt: skip
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4), lines


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


def numbered_frames(folder: Path) -> list[Path]:
    """Frame files in number order, a gap in the numbering standing as the missing file's path (which does not
    exist), so that line k of the ground truth stays with frame ``first + k - 1``; unnumbered names: sorted."""
    frames = list_frames(folder) if folder.is_dir() else []
    if not frames or not all(p.stem.isdigit() for p in frames):
        return frames
    by_number = {int(p.stem): p for p in frames}
    first, digits, ext = min(by_number), len(frames[0].stem), frames[0].suffix
    return [by_number.get(k, folder / f"{k:0{digits}d}{ext}") for k in range(first, max(by_number) + 1)]


def check_frames(name: str, frames: list[Path], bad_images: str = "error") -> tuple[tuple[int, int], list[int]]:
    """(the first frame's size, indices of unusable frames): each frame looked at once, cheaply (it exists, its
    header parses, a JPEG is whole, its size is the first frame's). ``bad_images='skip'`` returns the bad ones
    to drop with their ground-truth lines; otherwise the first is an error naming the sequence and the frame."""
    from recipes.train.data.checks import image_problem

    first = image_problem(frames[0])
    if first is not None:
        raise BadInput(f"{name}: first frame {frames[0]}: {first}; the tracker is given the target there")
    from PIL import Image

    with Image.open(frames[0]) as im:
        size = im.size
    bad = [(i, why) for i, f in enumerate(frames) if (why := image_problem(f, size)) is not None]
    if bad and bad_images != "skip":
        i, why = bad[0]
        more = f" (and {len(bad) - 1} more frames)" if len(bad) > 1 else ""
        raise BadInput(f"{name}: frame {i + 1} {frames[i]}: {why}{more}; boxes are matched to frames by number, so "
                       "fix the frame or set train.bad_images='skip' to leave it and its ground-truth line out")  # fmt: skip
    if bad:
        shown = ", ".join(f"{frames[i].name} ({why})" for i, why in bad[:3])
        msg = f"data: {name}: skipping {len(bad)} unusable frames and their boxes (train.bad_images='skip'): {shown}"
        warnings.warn(msg, stacklevel=2)
        print(f"WARNING: {msg}")
    return size, [i for i, _ in bad]


def detect_layout(seq_dir: Path) -> str:
    if seq_dir.parent.name == "frames" and (seq_dir.parent.parent / "anno" / f"{seq_dir.name}.txt").is_file():
        return "trackingnet"
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


def sequence_files(seq_dir: Path, layout: str) -> tuple[Path, Path]:
    """(frame folder, ground-truth file) of a sequence folder in ``layout``."""
    if layout == "trackingnet":
        return seq_dir, seq_dir.parent.parent / "anno" / f"{seq_dir.name}.txt"
    img_dir = seq_dir if layout == "got10k" else seq_dir / "img"
    return img_dir, seq_dir / ("groundtruth_rect.txt" if layout == "otb" else "groundtruth.txt")


def load_sequence(seq_dir: str | Path, layout: str = "auto", bad_images: str = "error",
                  withheld: bool = False) -> Sequence:  # fmt: skip
    """Read one sequence folder in the GOT-10k, LaSOT, OTB or TrackingNet layout (``layout='auto'`` detects it);
    frames are checked against the labels (:func:`check_frames`, ``bad_images`` as ``train.bad_images``).
    ``withheld``: a test split whose file gives only the first box (``meta['withheld']``, nothing to score)."""
    seq_dir = Path(seq_dir)
    if not seq_dir.is_dir():
        raise FileNotFoundError(f"{seq_dir}: sequence folder not found")
    layout = detect_layout(seq_dir) if layout == "auto" else layout
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'auto' or one of {LAYOUTS}, got {layout!r}")
    img_dir, gt = sequence_files(seq_dir, layout)
    frames = numbered_frames(img_dir)
    if not frames:
        raise ValueError(f"{img_dir}: empty sequence: no {'/'.join(IMAGE_EXTS)} frames")
    boxes, lines = parse_boxes(gt, 1 if withheld else len(frames))
    size, bad = check_frames(seq_dir.name, frames, bad_images)
    if withheld:
        if bad:
            raise BadInput(f"{seq_dir.name}: frame {frames[bad[0]]} is unusable in a test split (every frame is "
                           "submitted); fix it")  # fmt: skip
        check_boxes(boxes, np.zeros(1, bool), size, gt, lines)
        return with_first_box(Sequence(seq_dir.name, frames, boxes, np.ones(1, bool), size, gt_file=gt,
                                       meta={"layout": layout, "withheld": True}))  # fmt: skip
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
    if bad:
        keep = np.setdiff1d(np.arange(len(frames)), bad)
        frames, boxes, absent, lines = [frames[i] for i in keep], boxes[keep], absent[keep], [lines[i] for i in keep]
    labels = boxes.copy()
    boxes, visible = check_boxes(boxes, absent, size, gt, lines)
    return Sequence(seq_dir.name, frames, boxes, visible, size, gt_file=gt, meta={"layout": layout}, labels=labels)


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
    return with_first_box(Sequence(folder.name, frames, np.asarray([init_box], np.float64), np.ones(1, bool), size))


def with_first_box(seq: Sequence) -> Sequence:
    """``seq`` with its one (first-frame) box spread to every frame: NaN and not visible after the first."""
    boxes = np.full((len(seq.frames), 4), np.nan)
    boxes[0] = seq.boxes[0]
    seq.boxes, seq.visible = boxes, np.arange(len(boxes)) == 0
    return seq


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
                   layout: str = "auto", bad_images: str = "error", split: str | None = None) -> list[Sequence]:  # fmt: skip
    """The selected sequences of a plain folder of sequences (``split=None``) or of one split of an official
    GOT-10k / LaSOT / TrackingNet root (:mod:`recipes.train.data.tracking_roots`); ``sequences`` and ``exclude``
    then choose among the split's sequences."""
    from recipes.train.data.tracking_roots import root_kind, split_sequences

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a folder (set data_root=...)")
    withheld, kind = False, root_kind(root)
    if split is None and kind != "folder":
        raise BadInput(f"data: {root} is a {kind} root; set split='train', 'val' or 'test' in data.train / data.val "
                       "(configs/tracking/videomae_dinov2_cpu.py does)")  # fmt: skip
    if split is None:
        dirs = {n: root / n for n in sequence_names(root, sequences)}
    else:
        kind, found, withheld = split_sequences(root, split)
        dirs = {p.name: p for p in found}
        if sequences is not None:
            listed = sequence_names(root, sequences)
            missing = [n for n in listed if n not in dirs]
            if missing:
                raise BadInput(f"data: sequences not in the {split} split of {root}: {missing[:5]}")
            dirs = {n: dirs[n] for n in listed}
    known = dirs if split is not None else {p.name for p in root.iterdir() if p.is_dir()}
    unknown = [n for n in exclude if n not in known]
    if unknown:
        raise ValueError(f"data: exclude names sequences not under {root}{'' if split is None else ' ' + split}: "
                         f"{unknown}")  # fmt: skip
    names = [n for n in dirs if n not in set(exclude)]
    if not names:
        raise ValueError(f"{root}: no sequences selected")
    return [load_sequence(dirs[n], layout, bad_images, withheld) for n in names]
