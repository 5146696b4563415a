"""What a checkpoint's entries must be before any of them is used: a crafted or hand-edited file is one error.

:func:`check_weights_entries` runs in every reader (``read_checkpoint``: resume, ``detect``, ``track``,
``export_diffusion``), :func:`check_training_entries` on resume, :func:`load_optimizer` loads the
optimizer's state after checking that every moment buffer has its parameter's shape (torch would accept a
mis-shaped one and fail at the first step). Each error names the file and the entry, and says what was expected.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import torch

from recipes.train.errors import BadInput

# torch optimizers' per-parameter buffers that have the parameter's own shape (Adam(W), SGD, RMSprop, Adagrad,
# Adadelta, Adamax, NAdam, RAdam, ASGD, Rprop); the others (``step``, factored Adafactor rows...) are not checked.
SHAPED_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "acc_delta",
                "grad_avg", "sum", "exp_inf", "ax", "prev", "step_size")  # fmt: skip


def _bad(path: Any, entry: str, expected: str, found: Any) -> BadInput:
    shown = f"{type(found).__name__} {found!r}"[:80] if not isinstance(found, torch.Tensor) else (
        f"a {found.dtype} tensor of shape {tuple(found.shape)}")  # fmt: skip
    return BadInput(f"checkpoint {str(path)!r}: entry {entry!r} must be {expected}, found {shown}; the file is "
                    "damaged or was not written by tools/train.py (resume from another checkpoint)")  # fmt: skip


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_weights_entries(ckpt: Mapping[str, Any], state: Mapping[str, Any], path: Any) -> None:
    """The weights (``state``: name -> tensor) and the entries every tool reads with them."""
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise _bad(path, f"model[{name!r}]", "a tensor", value)
    names = ckpt.get("class_names")
    if names is not None and not (isinstance(names, list | tuple) and all(isinstance(n, str) for n in names)):
        raise _bad(path, "class_names", "a list of strings", names)
    if "frozen_omitted" in ckpt and not isinstance(ckpt["frozen_omitted"], bool):
        raise _bad(path, "frozen_omitted", "True or False", ckpt["frozen_omitted"])
    fingerprint = ckpt.get("frozen_fingerprint")
    if fingerprint is not None and not (isinstance(fingerprint, torch.Tensor) and fingerprint.ndim == 2):
        raise _bad(path, "frozen_fingerprint", "a 2-D tensor", fingerprint)
    for key in ("model_cfg", "config"):
        if ckpt.get(key) is not None and not isinstance(ckpt[key], str):
            raise _bad(path, key, "a string", ckpt[key])


def check_training_entries(ckpt: Mapping[str, Any]) -> None:
    """The entries ``--resume`` reads besides the weights: step, schedule, optimizer, RNG, best score, task, EMA."""
    path = ckpt.get("path")
    if not _is_int(ckpt["step"]) or ckpt["step"] < 0:
        raise _bad(path, "step", "a whole number >= 0", ckpt["step"])
    for key in ("total_steps", "steps_per_epoch", "world_size"):
        if ckpt.get(key) is not None and not (_is_int(ckpt[key]) and ckpt[key] >= 1):
            raise _bad(path, key, "a whole number >= 1", ckpt[key])
    optimizer = ckpt.get("optimizer", {"state": {}, "param_groups": []})  # absent: load_optimizer says so
    if not (isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
            and isinstance(optimizer.get("param_groups"), list)):  # fmt: skip
        raise _bad(path, "optimizer", "a dict with 'state' (a dict) and 'param_groups' (a list)", optimizer)
    for i, group in enumerate(optimizer["param_groups"]):
        if not (isinstance(group, dict) and isinstance(group.get("params"), list)):
            raise _bad(path, f"optimizer.param_groups[{i}]", "a dict with a 'params' list", group)
    for index, entry in optimizer["state"].items():
        values = entry.values() if isinstance(entry, dict) else [entry]
        if not isinstance(entry, dict) or not all(isinstance(v, torch.Tensor | numbers.Number) for v in values):
            raise _bad(path, f"optimizer.state[{index!r}]", "a dict of tensors and numbers", entry)
    rng = ckpt.get("rng", [{}])  # absent: set_rng_state says so
    if not (isinstance(rng, list) and rng and all(isinstance(r, dict) for r in rng)):
        raise _bad(path, "rng", "a non-empty list of generator states (one per process)", rng)
    best = ckpt.get("best")
    if best is not None and not (
        isinstance(best, list | tuple) and len(best) in (2, 3) and isinstance(best[0], numbers.Real)
        and _is_int(best[1]) and (len(best) == 2 or best[2] in ("model", "ema"))
    ):  # fmt: skip
        raise _bad(path, "best", "None or [score, epoch, 'model' or 'ema']", best)
    for key in ("task", "ema", "scaler"):
        if ckpt.get(key) is not None and not isinstance(ckpt[key], dict):
            raise _bad(path, key, "a dict (or None)", ckpt[key])
    if ckpt.get("ema") and not all(isinstance(v, torch.Tensor) for v in ckpt["ema"].values()):
        raise _bad(path, "ema", "a dict of tensors", next(v for v in ckpt["ema"].values()))


def load_optimizer(optimizer: torch.optim.Optimizer, saved: Mapping[str, Any] | None, path: Any) -> None:
    """``optimizer.load_state_dict(saved)`` once the groups and every moment buffer fit this optimizer's parameters."""
    if saved is None:
        raise BadInput(f"checkpoint {str(path)!r} holds no optimizer state ('optimizer'); it cannot be resumed, only "
                       "loaded as weights (model.pretrained)")  # fmt: skip
    groups, saved_groups = optimizer.param_groups, saved["param_groups"]
    counts, saved_counts = [len(g["params"]) for g in groups], [len(g["params"]) for g in saved_groups]
    if counts != saved_counts:
        raise BadInput(f"checkpoint {str(path)!r}: its optimizer holds {len(saved_counts)} groups of {saved_counts} "
                       f"parameters, this config builds {len(counts)} of {counts}; resume with the config it was "
                       "trained with (same strategy, policy and model)")  # fmt: skip
    params = {i: p for g, sg in zip(groups, saved_groups, strict=True) for i, p in zip(sg["params"], g["params"],
                                                                                       strict=True)}  # fmt: skip
    for index, entry in saved["state"].items():
        param = params.get(index)
        if param is None:
            raise BadInput(f"checkpoint {str(path)!r}: optimizer.state[{index!r}] belongs to no parameter group")
        for key, value in entry.items():
            if key in SHAPED_STATE and isinstance(value, torch.Tensor) and value.shape != param.shape:
                raise _bad(path, f"optimizer.state[{index}][{key!r}]", f"of the parameter's shape {tuple(param.shape)}",
                           value)  # fmt: skip
    try:
        optimizer.load_state_dict(dict(saved))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise BadInput(f"checkpoint {str(path)!r}: its optimizer state does not load ({e}); resume with the config "
                       "it was trained with") from None  # fmt: skip
