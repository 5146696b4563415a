"""Official dataset roots for single-object tracking: which sequence folders a split names, and the
evaluation servers' submission formats.

* GOT-10k: ``<root>/{train,val,test}/list.txt`` and ``<root>/<split>/<seq>/``; the test split's
  ``groundtruth.txt`` holds only the first box (the rest are withheld by the evaluation server).
* LaSOT: ``<root>/<class>/<class>-<n>/`` with the official lists ``training_set.txt`` / ``testing_set.txt``
  (one ``<class>-<n>`` a line) in the root; there is no official validation split.
* TrackingNet: ``<root>/TRAIN_<k>/`` chunks and ``<root>/TEST/``, each with ``anno/<video>.txt`` and
  ``frames/<video>/<i>.jpg`` (numbered from 0); ``TEST`` gives only the first box. No validation split.
* anything else: a plain folder of sequence folders (``split`` must then be left unset).

A missing list file or split folder is an error naming it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from recipes.train.errors import BadInput

SPLITS = ("train", "val", "test")
LASOT_LISTS = {"train": "training_set.txt", "test": "testing_set.txt"}


def root_kind(root: Path) -> str:
    """``'got10k'``, ``'lasot'``, ``'trackingnet'`` or ``'folder'`` (a plain folder of sequences)."""
    if sum((root / s).is_dir() for s in SPLITS) >= 2 or any((root / s / "list.txt").is_file() for s in SPLITS):
        return "got10k"
    if any((root / f).is_file() for f in LASOT_LISTS.values()):
        return "lasot"
    if (root / "TEST").is_dir() or any(p.is_dir() for p in root.glob("TRAIN_*")):
        return "trackingnet"
    classes = [p for p in root.iterdir() if p.is_dir()]
    if classes and all((c / f"{c.name}-1").is_dir() for c in classes[:3]):
        return "lasot"  # <class>/<class>-1 without its lists: named as missing by split_sequences
    return "folder"


def read_list(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise BadInput(f"{path}: not found; {what}")
    names = [s.strip() for s in path.read_text().splitlines() if s.strip()]
    if not names:
        raise BadInput(f"{path}: the list is empty; {what}")
    return names


def split_sequences(root: Path, split: str) -> tuple[str, list[Path], bool]:
    """``(root kind, sequence folders of the split, whether its boxes after the first are withheld)``."""
    if split not in SPLITS:
        raise BadInput(f"data split={split!r}: expected one of {SPLITS}")
    kind = root_kind(root)
    if kind == "folder":
        raise BadInput(f"data split={split!r}: {root} is not a GOT-10k, LaSOT or TrackingNet root (no train/ val/ "
                       "test/ with list.txt, no training_set.txt / testing_set.txt, no TRAIN_* / TEST); for a plain "
                       "folder of sequences set split=None and name them with sequences / exclude (as "
                       "configs/tracking/videomae_dinov2_cpu_shared.py does)")  # fmt: skip
    if kind == "got10k":
        names = read_list(root / split / "list.txt", f"a GOT-10k root has {split}/list.txt naming its sequences")
        return kind, [root / split / n for n in names], split == "test"
    if split == "val":
        raise BadInput(f"data split='val': {kind} {root} has no official validation split; pick validation "
                       "sequences out of the training split (split='train' with sequences=[...], and exclude them "
                       "from data.train)")  # fmt: skip
    if kind == "lasot":
        names = read_list(root / LASOT_LISTS[split], f"LaSOT's official {split} list (one <class>-<n> a line)")
        return kind, [root / n.rsplit("-", 1)[0] / n for n in names], False
    chunks = [root / "TEST"] if split == "test" else sorted(p for p in root.glob("TRAIN_*") if p.is_dir())
    if not chunks or not all((c / "anno").is_dir() for c in chunks):
        raise BadInput(f"{chunks[0] / 'anno' if chunks else root / 'TRAIN_0'}: not found; a TrackingNet {split} "
                       "chunk holds anno/<video>.txt and frames/<video>/")  # fmt: skip
    seqs = [c / "frames" / a.stem for c in chunks for a in sorted((c / "anno").glob("*.txt"))]
    return kind, seqs, split == "test"


def write_submission(kind: str, seqs: list, boxes: list[np.ndarray], seconds: list[float], out: Path) -> Path:
    """The evaluation server's format, zipped beside ``out`` (a new folder): GOT-10k ``<seq>/<seq>_001.txt`` and
    ``<seq>/<seq>_time.txt`` (seconds a frame); TrackingNet and others ``<seq>.txt``; boxes x,y,w,h, 3 decimals."""
    for path in (out, out.with_name(out.name + ".zip")):
        if path.exists():
            raise BadInput(f"{path}: already exists; the submission goes to a new folder and zip")
    for seq, b, wall in zip(seqs, boxes, seconds, strict=True):
        path = out / seq.name / f"{seq.name}_001.txt" if kind == "got10k" else out / f"{seq.name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(path, np.asarray(b, dtype=np.float64), fmt="%.3f", delimiter=",")
        if kind == "got10k":
            per_frame = np.full(len(b), wall / max(len(b), 1))
            np.savetxt(out / seq.name / f"{seq.name}_time.txt", per_frame, fmt="%.8f")
    return Path(shutil.make_archive(str(out), "zip", root_dir=out))
