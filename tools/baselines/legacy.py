"""Results made before a config key was renamed still count as made with today's config.

A cell's ``config_hash`` is the hash of its resolved config's text. Renaming a key (``model.init`` ->
``model.pretrained``, ``task.lora=False`` -> no policy) changes that text without changing a setting, so the
stored hashes of cells made before the rename no longer match. :func:`legacy_hashes` writes today's config back
in each old spelling and hashes it: a stored hash equal to one of them was made with the same settings under
the old names. A cell whose settings really differ (another epoch count, another split) matches none of them
and still reads as made with another config.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from typing import Any

# Each rename as (new dotted key, old dotted key, when): today's key written back under its old name.
# Commit ea0011d made ``model.pretrained`` the one starting-weights key.
PRETRAINED_OLD_NAMES = (
    ("model.pretrained", "model.pretrained_file"),
    ("model.pretrained", "model.pretrain_weights"),
    ("model.pretrained", "model.init"),
)
# ``task.lora=False`` (no LoRA) was written by the detection task's base config; commit 916a5d5 made the policy the
# one LoRA switch, and no policy trains the same parameters as ``lora=False`` did.
TASK_LORA_OFF = "task.lora=False"


def config_hash(cfg_dict: dict[str, Any]) -> str:
    """The hash ``tools/reproduce.py`` stores: sha256 of the config's text, first 16 hex digits."""
    from mmengine.config import Config

    return hashlib.sha256(Config(cfg_dict).pretty_text.encode()).hexdigest()[:16]


def _rename(cfg: dict[str, Any], new: str, old: str) -> bool:
    section, key = new.split(".")
    old_section, old_key = old.split(".")
    if not isinstance(cfg.get(section), dict) or key not in cfg[section]:
        return False
    cfg[old_section][old_key] = cfg[section].pop(key)
    return True


def _with_task_lora_off(cfg: dict[str, Any]) -> bool:
    task = cfg.get("task")
    if not isinstance(task, dict) or task.get("type") != "detection" or "lora" in task or cfg.get("policy"):
        return False
    task["lora"] = False
    return True


def legacy_hashes(cfg: Any) -> dict[str, str]:
    """``{hash: the renames that give it}`` for today's ``cfg`` written in every old spelling (at least one rename).

    >>> from mmengine.config import Config
    >>> cfg = Config(dict(model=dict(type="x", pretrained="w"), train=dict(epochs=1)))
    >>> sorted(legacy_hashes(cfg).values())[0]
    'model.init -> model.pretrained (ea0011d)'
    """
    base = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    found: dict[str, str] = {}
    for rename, lora_off in itertools.product((None, *PRETRAINED_OLD_NAMES), (False, True)):
        legacy = copy.deepcopy(base)
        notes = []
        if rename is not None:
            if not _rename(legacy, rename[0], rename[1]):
                continue
            notes.append(f"{rename[1]} -> {rename[0]} (ea0011d)")
        if lora_off:
            if not _with_task_lora_off(legacy):
                continue
            notes.append(f"{TASK_LORA_OFF} -> no policy (916a5d5)")
        if notes:
            found.setdefault(config_hash(legacy), "; ".join(notes))
    return found


def same_settings(cfg: Any, digest: str, stored: str) -> str | None:
    """Why a stored hash counts as today's config: ``"same config hash"``, the renames that explain it, or None."""
    if stored == digest:
        return "same config hash"
    note = legacy_hashes(cfg).get(stored)
    return f"made before the renames: {note}" if note else None
