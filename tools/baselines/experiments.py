"""Reproducible baselines: experiment definitions, one matrix cell through the engine, results, docs.

``experiments/NAME/experiment.py`` declares ``title``, ``methods`` (name -> config path, or
``dict(config=..., options={...})``; ``run="module:function"`` evaluates a reference method without
training: the function gets the cell's config and returns its metrics), ``seeds``, ``sizes`` (name -> ``{dotted key: value}``
overrides, e.g. a CPU-sized and a GPU-sized matrix), ``default_size``, ``data`` (placeholder ->
archive in the data folder; a size's ``per_method`` holds overrides for some methods only), ``columns`` (table label -> metric path), ``metric`` (the reported
figure with ``expected`` and ``tolerance``), ``hardware`` (where the expected value was measured).
String values ``"{placeholder}"`` in a config are filled with the extracted data paths only when a
cell runs; the config hash is taken before, so it does not depend on where the data lives.
``tools/reproduce.py`` drives these functions (one cell: ``cells.py``); docs/baselines.md is written
from results only (``docs.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from recipes.train.errors import BadInput

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
SCHEMA = 1
REQUIRED = ("title", "methods", "seeds", "sizes", "default_size", "columns", "metric", "hardware")


# ------------------------------------------------------------------------------------------- experiments
def baseline_names() -> list[str]:
    return sorted(p.parent.name for p in EXPERIMENTS.glob("*/experiment.py"))


def load_experiment(name: str) -> dict[str, Any]:
    """``experiments/NAME/experiment.py`` as a dict (validated); an unknown name lists the known ones."""
    from mmengine.config import Config

    path = EXPERIMENTS / name / "experiment.py"
    if "/" in name or not path.is_file():
        raise BadInput(f"baseline {name!r} does not exist; known: {', '.join(baseline_names())}")
    exp = Config.fromfile(str(path)).to_dict()
    missing = [k for k in REQUIRED if k not in exp]
    if missing:
        raise BadInput(f"{path}: missing {missing}")
    if exp["default_size"] not in exp["sizes"]:
        raise BadInput(f"{path}: default_size {exp['default_size']!r} is not one of sizes {list(exp['sizes'])}")
    exp["name"] = name
    return exp


def cell_key(method: str, size: str, seed: int) -> str:
    return f"{size}/{method}/seed{seed}"


def cell_config(exp: dict[str, Any], method: str, size: str, seed: int, options: list[str] = ()) -> tuple[Any, str]:
    """(config, config hash) of one cell: the method's config, the size's overrides, the seed, ``options``."""
    from mmengine.config import DictAction

    from recipes.train.config import load_config

    spec = exp["methods"][method]
    spec = {"config": spec} if isinstance(spec, str) else dict(spec)
    unknown = sorted(set(spec) - {"config", "options", "run"})
    if unknown or "config" not in spec:
        raise BadInput(
            f"{exp['name']} {method}: a method is a config path or dict(config=..., options=..., "
            f"run=...); got keys {sorted(spec)}"
        )
    path = ROOT / spec["config"]
    if not path.is_file():
        raise BadInput(
            f"{exp['name']} {method}: config {spec['config']!r} is not in this tree ({exp.get('needs', '')})"
        )
    cfg = load_config(path)
    size_options = dict(exp["sizes"][size])
    per_method = size_options.pop("per_method", {})
    cfg.merge_from_dict(size_options)
    cfg.merge_from_dict(dict(per_method.get(method, {})))
    cfg.merge_from_dict(dict(spec.get("options", {})))
    cfg.merge_from_dict({"train.seed": int(seed), "train.progress": False, "train.tensorboard": False})
    if options:
        holder = type("NS", (), {})()
        DictAction(option_strings=[], dest="opts")(None, holder, list(options))
        cfg.merge_from_dict(holder.opts)
    return cfg, hashlib.sha256(cfg.pretty_text.encode()).hexdigest()[:16]


def fill_paths(value: Any, paths: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("{") and "}" in value:
        key, rest = value[1:].split("}", 1)
        if key in paths:
            return paths[key] + rest
    if isinstance(value, dict):
        return {k: fill_paths(v, paths) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(fill_paths(v, paths) for v in value)
    return value


# ------------------------------------------------------------------------------------------- results
def results_path(name: str) -> Path:
    return EXPERIMENTS / name / "results.json"


def read_results(name: str) -> dict[str, Any]:
    """The baseline's results (an empty set when none); a broken or foreign file is an error."""
    path = results_path(name)
    if not path.is_file():
        return {"baseline": name, "schema": SCHEMA, "cells": {}}
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise BadInput(
            f"{path}: not valid JSON ({e}); is it truncated? restore it with `git checkout {path}` "
            "or move it aside to start the matrix again"
        ) from None
    if not isinstance(data, dict) or data.get("baseline") != name or not isinstance(data.get("cells"), dict):
        raise BadInput(f"{path}: not the results of baseline {name!r} (it says {data.get('baseline')!r})")
    if data.get("schema") != SCHEMA:
        raise BadInput(f"{path}: results schema {data.get('schema')!r}, this tool writes {SCHEMA}")
    for key, cell in data["cells"].items():  # a hand edit or a bad merge: name the cell and the key
        missing = [
            k for k in ("config_hash", "commit", "method", "seed") if not isinstance(cell, dict) or k not in cell
        ]
        if missing:
            raise BadInput(
                f"{path}: cell {key!r} has no {', '.join(missing)}; the file is damaged: restore it with "
                f"`git checkout {path}`, or delete that cell to run it again"
            )
    return data


def write_results(name: str, data: dict[str, Any]) -> Path:
    path = results_path(name)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def add_cell(name: str, key: str, cell: dict[str, Any]) -> Path:
    """Add one cell to the baseline's results: read, update and replace the file under an exclusive lock."""
    import fcntl

    with open(results_path(name).with_name(".results.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_results(name)
        data["cells"][key] = cell
        return write_results(name, data)


def metric(cell: dict[str, Any], where: str) -> float | None:
    """A dotted path into the cell's metrics (``test.top1``), else into the cell (``wall_s``).

    Keys may hold dots themselves (``best.SR0.50``): at each level the longest key the path starts with wins.
    """

    def find(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            return None
        if path in value:
            return value[path]
        for key in sorted((k for k in value if isinstance(k, str) and path.startswith(k + ".")), key=len, reverse=True):
            if (found := find(value[key], path[len(key) + 1 :])) is not None:
                return found
        return None

    for root in (cell.get("metrics", {}), cell):
        value = find(root, where)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def headline(exp: dict[str, Any], cell: dict[str, Any]) -> dict[str, float]:
    return {label: v for label, where in exp["columns"] if (v := metric(cell, where)) is not None}


def current_cells(exp: dict[str, Any], cells: dict[str, dict]) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """The cells made with the experiment's present config for their (method, size, seed), and per size the keys
    of the others (a method or size since removed, a recipe or size since changed, extra ``--cfg-options``).

    A cell made before a key rename with the same settings counts as present (:mod:`tools.baselines.legacy`); its
    ``renamed`` entry (set on the returned copy, not in results.json) says which renames. Tables and plots are built
    from the first only, so a changed recipe never averages with its old results.
    """
    from tools.baselines.legacy import same_settings

    kept: dict[str, dict] = {}
    stale: dict[str, list[str]] = {}
    for key, c in cells.items():
        why = None
        if c.get("method") in exp["methods"] and c.get("size") in exp["sizes"]:
            cfg, digest = cell_config(exp, c["method"], c["size"], int(c["seed"]))
            why = same_settings(cfg, digest, str(c.get("config_hash")))
        if why is None:
            stale.setdefault(str(c.get("size")), []).append(key)
        else:
            kept[key] = (
                c if why == "same config hash" else {**c, "renamed": why.removeprefix("made before the renames: ")}
            )
    return kept, stale


def within(expected: float, tolerance: float, value: float | None) -> bool:
    return value is not None and math.isfinite(value) and abs(value - expected) <= tolerance
