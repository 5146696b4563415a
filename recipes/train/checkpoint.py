"""Checkpoints the engine writes and reads: atomic, and loadable with ``weights_only=True``.

Everything saved is a plain dict of tensors, numbers and strings (RNG states as uint8 tensors),
so ``torch.load(path, weights_only=True)`` reads it on any torch >= 2.4.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

LAST = "last"  # text file in the checkpoint folder naming the newest complete checkpoint
BEST = "best.pt"  # in the work dir: the weights that scored best (plain or EMA), with class names and metrics
BEST_INFO = "best.json"  # beside it: metric, value, epoch, step and which weights


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU (and CUDA) generator states, as tensors and plain values."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": py[0], "state": torch.tensor(py[1], dtype=torch.int64), "gauss": py[2]},
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },  # fmt: skip
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write to ``path.tmp``, flush to disk, then ``os.replace``: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The checkpoint named by ``ckpt_dir/last``, or None."""
    pointer = ckpt_dir / LAST
    if not pointer.is_file():
        return None
    path = ckpt_dir / pointer.read_text().strip()
    return path if path.is_file() else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with messages that say what to do."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path / "checkpoints") or latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(
                f"--resume {str(path)!r}: no checkpoint found in that folder (no 'checkpoints/last')"
            )
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"--resume: checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several kinds for a foreign file
        raise ValueError(f"checkpoint {str(path)!r} cannot be read with weights_only=True: {e}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "step" not in ckpt:
        raise ValueError(f"checkpoint {str(path)!r} was not written by tools/train.py (no 'model'/'step' entries)")
    ckpt["path"] = str(path)
    return ckpt


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], where: str, saved_model_cfg: Any) -> None:
    """``load_state_dict(strict=True)``; a mismatch says which model the checkpoint came from."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).split("\n")
        detail = "; ".join(line.strip() for line in first[1:4])
        raise ValueError(
            f"checkpoint {where!r} does not fit this model: it was saved from model={saved_model_cfg}. "
            f"Resume with the config it was trained with, or start a new work dir. ({detail[:400]})"
        ) from None
