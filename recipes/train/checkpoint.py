"""Checkpoints the engine writes and reads: atomic, durable, and loaded without running code.

Everything saved is a plain dict of tensors, numbers and strings (RNG states as uint8 tensors), so
``torch.load(path, weights_only=True)`` reads it on any torch >= 2.4. Every file the engine writes
goes to ``<name>.tmp``, is fsynced, renamed over ``<name>`` and the folder is fsynced: a crash or
a full disk leaves the old file or the new one, never half of one. :func:`safe_load` is the only
way the project reads a torch file: ``weights_only=True``, plus an explicit allow-list for the
upstream formats that need one (:data:`SAFE_GLOBALS`); :func:`read_checkpoint` is the only reader of
weights files (resume and every tool that rebuilds a trained model).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import random
import re
import shutil
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recipes.train.checkpoint_entries import check_training_entries, check_weights_entries
from recipes.train.errors import BadInput

LAST = "last"  # text file in the checkpoint folder naming the newest complete checkpoint
BEST = "best.pt"  # in the work dir: the weights that scored best (plain or EMA), with class names and metrics
BEST_INFO = "best.json"  # beside it, derived from best.pt: metric, value, epoch, step and which weights
TMP_SUFFIX = ".tmp"  # what save_atomic / write_text_atomic write before the rename

# Non-tensor classes a real upstream checkpoint carries, admitted by ``safe_load``: RF-DETR's published
# weights hold their training arguments as an ``argparse.Namespace`` (rfdetr's own loader,
# ``rfdetr.utilities.io``, admits the same two). Both only hold attributes; neither runs code on load.
SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace, types.SimpleNamespace)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators (a run seeds ``train.seed + rank``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def set_rng_state(state: dict[str, Any], path: Any = "checkpoint") -> None:
    """Restore :func:`rng_state`; a damaged entry is a :class:`BadInput` naming ``path``."""
    try:
        _set_rng_state(state)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
        raise BadInput(f"checkpoint {str(path)!r}: entry 'rng' (the generator states) is damaged ({type(e).__name__}: "
                       f"{e}); resume from another checkpoint") from None  # fmt: skip


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------- writing
def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace_durably(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    fsync_dir(path.parent)


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write to ``path.tmp``, fsync, ``os.replace``, fsync the folder: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        tmp.unlink(missing_ok=True)  # a full disk must not leave a partial file behind
        if _disk_full(e):
            raise _disk_full_error(path) from None
        raise
    _replace_durably(tmp, path)


def _disk_full_error(path: Path) -> BadInput:
    free = shutil.disk_usage(path.parent).free / 2**20
    return BadInput(
        f"cannot write {path}: the disk is full ({free:.0f} MB free); nothing was replaced and the "
        "earlier checkpoints are intact: free some space, then run again with --resume"
    )


def _disk_full(e: BaseException) -> bool:
    """ENOSPC, or how torch's zip writer reports it (``unexpected pos`` / ``file write failed``)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(e, RuntimeError) and ("unexpected pos" in str(e) or "file write failed" in str(e))


def write_text_atomic(path: Path, text: str) -> None:
    """The same for a small text file (the ``last`` pointer, ``best.json``, logs rewritten on resume)."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if _disk_full(e):
            raise _disk_full_error(path) from None
        raise
    _replace_durably(tmp, path)


def remove_stale_tmp(work_dir: Path, names: tuple[str, ...]) -> list[Path]:
    """Delete ``<name>.tmp`` files an interrupted write left behind (only names the engine writes)."""
    removed = []
    for folder in (work_dir, work_dir / "checkpoints"):
        if not folder.is_dir():
            continue
        for tmp in folder.glob(f"*{TMP_SUFFIX}"):
            stem = tmp.name[: -len(TMP_SUFFIX)]
            ours = stem in names or (folder.name == "checkpoints" and (stem == LAST or _is_step_name(stem)))
            if ours and tmp.is_file() and not tmp.is_symlink():
                tmp.unlink()
                removed.append(tmp)
    return removed


def _is_step_name(name: str) -> bool:
    return name.startswith("step_") and name.endswith(".pt") and name[5:-3].isdigit()


def all_finite(state: dict[str, Any]) -> str | None:
    """The name of the first floating tensor holding NaN or inf in a (nested) state dict, else None."""
    for key, value in state.items():
        if isinstance(value, dict):
            bad = all_finite(value)
            if bad is not None:
                return f"{key}.{bad}"
        elif (
            isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and not torch.isfinite(value.dequantize()).all()
        ):
            return str(key)
    return None


# ----------------------------------------------------------------------------------------- reading
def safe_load(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` admitting only :data:`SAFE_GLOBALS`; every failure is a :class:`BadInput`.

    A file that needs any other class (a crafted pickle, a whole pickled model) is refused before any
    of its code can run; the message says what the file asked for.
    """
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{what} {str(path)!r} does not exist")
    if not path.is_file():
        raise BadInput(f"{what} {str(path)!r} is not a file")
    if path.stat().st_size == 0:
        raise BadInput(f"{what} {str(path)!r} is empty (0 bytes): an interrupted copy or a full disk?")
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several kinds for a foreign or damaged file
        text = " ".join(str(e).split())
        if "weights only load failed" in text.lower() or "weights_only" in text:
            asked = re.search(r"(?:unsupported global:?|unsupported GLOBAL) (?:GLOBAL )?([\w.]+)", text, re.IGNORECASE)
            detail = f" (it asks for {asked.group(1)})" if asked else ""
            raise BadInput(
                f"{what} {str(path)!r} holds more than tensors and plain values{detail}; it was refused without "
                "running any of it (torch.load weights_only=True). Only tensors, numbers, strings and "
                "argparse.Namespace load"
            ) from None
        raise BadInput(f"{what} {str(path)!r} is truncated or not a torch file ({text[:200]})") from None


def is_complete(path: Path) -> bool:
    """Cheap check that a torch zip checkpoint was written to the end (its zip directory is readable)."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return False
        with zipfile.ZipFile(path) as z:
            return bool(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def latest_checkpoint(ckpt_dir: Path, say: bool = False) -> Path | None:
    """The checkpoint named by ``ckpt_dir/last``; when that is empty, missing or names a damaged file,
    the newest complete ``step_*.pt`` instead (``say``: print why). None when there is none.
    """
    pointer = ckpt_dir / LAST
    named = pointer.read_text().strip() if pointer.is_file() else ""
    target = ckpt_dir / named if named else None
    if target is not None and is_complete(target):
        return target
    candidates = sorted((p for p in ckpt_dir.glob("step_*.pt") if p != target), reverse=True)
    found = next((p for p in candidates if is_complete(p)), None)
    if say and found is not None:
        why = (f"names {named!r}, which is missing or truncated" if named
               else "is empty" if pointer.is_file() else "is missing")  # fmt: skip
        msg = f"{pointer} {why}; falling back to the newest complete checkpoint {found.name}"
        logging.getLogger("recipes").warning(msg)
    return found


def read_checkpoint(path: str | Path, ema: bool = False, what: str = "checkpoint") -> dict[str, Any]:
    """The one reader of a weights file: a checkpoint ``tools/train.py`` wrote (``best.pt``, ``step_N.pt``) or
    another trainer's (a bare state dict, or one under ``model`` / ``state_dict``), by :func:`safe_load`.

    Returns the file's dict with ``model`` (the state dict, without DDP / ``torch.compile`` prefixes) and
    ``path``. ``ema``: the EMA weights (``ema`` / ``ema_model``) instead; a run's ``best.pt`` already holds
    whichever of the two scored best.
    """
    ckpt = safe_load(path, what)
    if not isinstance(ckpt, dict):
        raise BadInput(f"{what} {str(path)!r}: expected a dict of tensors, got {type(ckpt).__name__}")
    keys = ("ema", "ema_model") if ema else ("model", "state_dict")
    state = next((ckpt[k] for k in keys if isinstance(ckpt.get(k), dict) and (ckpt[k] or not ema)), None)
    if state is None and ema:
        raise BadInput(f"{what} {str(path)!r}: --ema given but it holds no EMA weights ('ema' / 'ema_model')")
    if state is None:
        if not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raise BadInput(f"{what} {str(path)!r} holds no weights ('model' / 'state_dict', or only tensors)")
        state, ckpt = ckpt, {}
    if isinstance(state.get("module"), dict):  # an EMA wrapper's own state dict
        state = state["module"]
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    check_weights_entries(ckpt, state, path)
    return {**ckpt, "model": state, "path": str(path)}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by ``tools/train.py`` (a file, or a work dir: its newest good checkpoint), to resume."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path / "checkpoints", say=True) or latest_checkpoint(path, say=True)
        if found is None:
            raise BadInput(f"--resume {str(path)!r}: no complete checkpoint in that folder (checkpoints/step_*.pt)")
        path = found
    elif not path.exists():
        raise BadInput(f"--resume: checkpoint {str(path)!r} does not exist")
    ckpt = read_checkpoint(path)
    if "step" not in ckpt:
        raise BadInput(f"checkpoint {str(path)!r} was not written by tools/train.py (no 'model'/'step' entries)")
    check_training_entries(ckpt)
    return ckpt


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], where: str, saved_model_cfg: Any) -> None:
    """``load_state_dict(strict=True)``; a mismatch says which model the checkpoint came from.

    A tensor whose kind differs (integer weights for a floating parameter) is refused too: torch would cast it.
    """
    own = model.state_dict()
    for name, value in state.items():
        if name in own and value.is_floating_point() != own[name].is_floating_point():
            raise BadInput(f"checkpoint {where!r}: {name!r} is a {value.dtype} tensor where the model holds "
                           f"{own[name].dtype}; the file is damaged or belongs to another model")  # fmt: skip
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).split("\n")
        detail = "; ".join(line.strip() for line in first[1:4])
        raise ValueError(
            f"checkpoint {where!r} does not fit this model: it was saved from model={saved_model_cfg}. "
            f"Resume with the config it was trained with, or start a new work dir. ({detail[:400]})"
        ) from None
