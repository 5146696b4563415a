"""Reproducible baselines: experiment definitions, one matrix cell through the engine, results, docs.

``experiments/NAME/experiment.py`` declares ``title``, ``methods`` (name -> config path, or
``dict(config=..., options={...})``; ``run="module:function"`` evaluates a reference method without
training: the function gets the cell's config and returns its metrics), ``seeds``, ``sizes`` (name -> ``{dotted key: value}``
overrides, e.g. a CPU-sized and a GPU-sized matrix), ``default_size``, ``data`` (placeholder ->
archive in the data folder; a size's ``per_method`` holds overrides for some methods only), ``columns`` (table label -> metric path), ``metric`` (the reported
figure with ``expected`` and ``tolerance``), ``hardware`` (where the expected value was measured).
String values ``"{placeholder}"`` in a config are filled with the extracted data paths only when a
cell runs; the config hash is taken before, so it does not depend on where the data lives.
``tools/reproduce.py`` drives these functions; docs/baselines.md is written from results only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

from recipes.train.errors import BadInput

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
DOCS = ROOT / "docs" / "baselines.md"
FIGURES = ROOT / "docs" / "baselines"
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
        raise BadInput(f"{exp['name']} {method}: a method is a config path or dict(config=..., options=..., "
                       f"run=...); got keys {sorted(spec)}")  # fmt: skip
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


def _fill(value: Any, paths: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("{") and "}" in value:
        key, rest = value[1:].split("}", 1)
        if key in paths:
            return paths[key] + rest
    if isinstance(value, dict):
        return {k: _fill(v, paths) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_fill(v, paths) for v in value)
    return value


# ------------------------------------------------------------------------------------------- one cell
def run_cell(cfg: Any, paths: dict[str, str], work_dir: Path, exp: dict[str, Any], method: str = "") -> dict[str, Any]:
    """Train one cell in this process; its summary, per-epoch curve, LR curves and reliability bins.

    A method with ``run="module:function"`` is not trained: the function scores it (a reference such as
    OpenCV's tracker) and its metrics stand for both the final and the best epoch.
    """
    import importlib

    from mmengine.config import Config

    from recipes.train.engine import Trainer

    cfg = Config(_fill(cfg.to_dict(), paths))
    spec = exp["methods"].get(method) if method else None
    if isinstance(spec, dict) and spec.get("run"):
        module, _, fn = str(spec["run"]).partition(":")
        try:
            evaluate = getattr(importlib.import_module(module), fn)
        except (ImportError, AttributeError):
            raise BadInput(f"{exp['name']} {method}: run={spec['run']!r} is not an importable function") from None
        scores = _plain(evaluate(cfg))
        return {"metrics": {"val": scores, "best": scores}, "curve": [], "lr": {}}
    trainer = Trainer(cfg, work_dir).setup()
    summary = trainer.train()
    cell: dict[str, Any] = {"metrics": _plain(summary), "curve": _eval_curve(work_dir), "lr": _lr_curves(work_dir)}
    best = work_dir / "best.json"  # the best epoch's metrics (what best.pt scored)
    if best.is_file():
        cell["metrics"]["best"] = _plain(json.loads(best.read_text()).get("metrics", {}))
    if hasattr(trainer.task, "logits") and summary.get("temperature"):
        cell["reliability"] = _reliability(trainer, summary["temperature"]["T"])
    return cell


def _plain(d: Any) -> Any:
    if isinstance(d, dict):
        return {str(k): _plain(v) for k, v in d.items()}
    if isinstance(d, list | tuple):
        return [_plain(v) for v in d]
    if isinstance(d, bool | int | str) or d is None:
        return d
    return float(d)


def _eval_curve(work_dir: Path) -> list[dict[str, float]]:
    path = work_dir / "eval_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _lr_curves(work_dir: Path, points: int = 120) -> dict[str, list[list[float]]]:
    """Every group's LR over the run, from train_log.csv, thinned to about ``points`` steps."""
    path = work_dir / "train_log.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    every = max(1, len(rows) // points)
    keep = rows[::every] + ([rows[-1]] if rows and (len(rows) - 1) % every else [])
    groups = [k for k in (rows[0] if rows else {}) if k.startswith("lr/")]
    return {g[3:]: [[int(float(r["step"])), float(r[g])] for r in keep] for g in groups}


def _reliability(trainer: Any, temperature: float, bins: int = 15) -> dict[str, Any]:
    """Confidence/accuracy per bin on the test split (else val) before and after temperature scaling."""
    task = trainer.task
    data = task.dataset("test") or task.dataset("val")
    logits, labels = task.logits(trainer._bare_model(), trainer._evaluate_split(data), trainer.device)
    out: dict[str, Any] = {"T": temperature}
    for name, lg in (("before", logits), ("after", logits / temperature)):
        conf, pred = lg.float().softmax(1).max(1)
        correct = (pred == labels).float()
        rows = []
        for b in range(bins):
            lo, hi = b / bins, (b + 1) / bins
            inside = (conf > lo) & (conf <= hi)
            n = int(inside.sum())
            rows.append([lo, hi, n, float(correct[inside].mean()) if n else None,
                         float(conf[inside].mean()) if n else None])  # fmt: skip
        out[name] = rows
    return out


def provenance() -> dict[str, Any]:
    """Git commit (and whether tracked files differ from it), package versions, hardware."""
    import importlib.metadata as md

    import torch

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""

    dirty = [ln for ln in git("status", "--porcelain", "--untracked-files=no").splitlines()
             if "results.json" not in ln and "docs/baselines" not in ln]  # fmt: skip
    versions = {}
    for pkg in ("torch", "timm", "transformers", "peft", "rfdetr", "numpy", "albumentations", "mmengine"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    hw = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
          "torch_threads": torch.get_num_threads(), "cpu": _cpu_name()}  # fmt: skip
    if torch.cuda.is_available():
        hw["gpu"] = torch.cuda.get_device_name(0)
    return {"commit": git("rev-parse", "HEAD").strip() or "unknown", "dirty": bool(dirty), "versions": versions,
            "hardware": hw}  # fmt: skip


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


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
        raise BadInput(f"{path}: not valid JSON ({e}); is it truncated? restore it with `git checkout {path}` "
                       "or move it aside to start the matrix again") from None  # fmt: skip
    if not isinstance(data, dict) or data.get("baseline") != name or not isinstance(data.get("cells"), dict):
        raise BadInput(f"{path}: not the results of baseline {name!r} (it says {data.get('baseline')!r})")
    if data.get("schema") != SCHEMA:
        raise BadInput(f"{path}: results schema {data.get('schema')!r}, this tool writes {SCHEMA}")
    for key, cell in data["cells"].items():  # a hand edit or a bad merge: name the cell and the key
        missing = [k for k in ("config_hash", "commit", "method", "seed") if not isinstance(cell, dict) or k not in cell]
        if missing:
            raise BadInput(f"{path}: cell {key!r} has no {', '.join(missing)}; the file is damaged: restore it with "
                           f"`git checkout {path}`, or delete that cell to run it again")  # fmt: skip
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


# ------------------------------------------------------------------------------------------- docs
def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    digits = 0 if abs(mean) >= 1000 else 2 if abs(mean) >= 1 else 3
    if len(values) == 1:
        return f"{mean:,.{digits}f}"
    return f"{mean:,.{digits}f} ± {statistics.stdev(values):,.{digits}f}"


def _table(exp: dict[str, Any], cells: dict[str, dict], size: str) -> list[str]:
    head = ["method", "seeds", *[label for label, _ in exp["columns"]]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in exp["methods"]:
        runs = [c for c in cells.values() if c["method"] == method and c["size"] == size]
        if not runs:
            lines.append(f"| {method} | not run |" + " |" * (len(head) - 2))
            continue
        vals = [_fmt([v for c in runs if (v := metric(c, where)) is not None]) for _, where in exp["columns"]]
        seeds = ",".join(str(c["seed"]) for c in sorted(runs, key=lambda c: c["seed"]))
        lines.append(f"| {method} | {seeds} | " + " | ".join(vals) + " |")
    return lines


def write_docs() -> Path:
    """docs/baselines.md and its PNGs, from every ``experiments/*/results.json`` (nothing else is read)."""
    out = ["# Baselines on real pretrained weights", "",
           "Generated by `python tools/reproduce.py --docs` from `experiments/*/results.json`; do not edit by hand.",
           "Each table: mean ± std over the seeds that have run (one seed: the value alone). Rerun a matrix with",
           "`python tools/reproduce.py NAME [--size cpu|gpu]`; finished cells are skipped.", ""]  # fmt: skip
    FIGURES.mkdir(parents=True, exist_ok=True)
    for name in baseline_names():
        exp = load_experiment(name)
        cells = read_results(name)["cells"] if results_path(name).is_file() else {}
        cells, stale = current_cells(exp, cells)
        out += [f"## {name}: {exp['title']}", "", exp.get("description", "").strip(), ""]
        m = exp["metric"]
        out += [f"Reported figure: {m['label']} of `{m['method']}` ({m['size']} size), expected {m['expected']} ± "
                f"{m['tolerance']} (measured on {exp['hardware']}).", ""]  # fmt: skip
        for size in exp["sizes"]:
            these = {k: c for k, c in cells.items() if c["size"] == size}
            out += [f"### {size} size", "", f"`python tools/reproduce.py {name} --size {size}`", ""]
            out += _table(exp, these, size) + [""]
            if stale.get(size):
                out += [f"Left out: {len(stale[size])} result(s) made with another config of this size "
                        f"({', '.join(sorted(stale[size]))}); `--rerun` replaces them.", ""]  # fmt: skip
            if these:
                out += _provenance_line(these) + [""]
                for kind, png in _plots(name, size, exp, these).items():
                    out += [f"![{kind}](baselines/{png})", ""]
        gone = sorted(k for size, keys in stale.items() if size not in exp["sizes"] for k in keys)
        if gone:
            out += [f"Left out: {len(gone)} result(s) of a size {name} no longer declares ({', '.join(gone)}).", ""]
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    tmp = DOCS.with_name(DOCS.name + ".tmp")
    tmp.write_text("\n".join(out).rstrip() + "\n")
    os.replace(tmp, DOCS)
    return DOCS


def current_cells(exp: dict[str, Any], cells: dict[str, dict]) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """The cells made with the experiment's present config for their (method, size, seed), and per size the keys
    of the others (a method or size since removed, a recipe or size since changed, extra ``--cfg-options``).

    Tables and plots are built from the first only, so a changed recipe never averages with its old results.
    """
    kept: dict[str, dict] = {}
    stale: dict[str, list[str]] = {}
    for key, c in cells.items():
        if (
            c.get("method") in exp["methods"]
            and c.get("size") in exp["sizes"]
            and cell_config(exp, c["method"], c["size"], int(c["seed"]))[1] == c.get("config_hash")
        ):
            kept[key] = c
        else:
            stale.setdefault(str(c.get("size")), []).append(key)
    return kept, stale


def _provenance_line(cells: dict[str, dict]) -> list[str]:
    commits = sorted({c["commit"][:10] + ("+dirty" if c.get("dirty") else "") for c in cells.values()})
    hw = sorted({c["hardware"].get("gpu") or f"{c['hardware']['cpu']} ({c['hardware']['cpus']} cores)"
                 for c in cells.values()})  # fmt: skip
    wall = sum(c["wall_s"] for c in cells.values())
    versions = next(iter(cells.values()))["versions"]
    return [f"Commits {', '.join(commits)}; hardware {'; '.join(hw)}; {len(cells)} runs, {wall / 60:.1f} min "
            f"in all; " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."]  # fmt: skip


def _plots(name: str, size: str, exp: dict[str, Any], cells: dict[str, dict]) -> dict[str, str]:
    """Accuracy per epoch per method, every group's LR over the run, reliability before/after T (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    first = {}  # each method's lowest seed, in the experiment's method order
    for method in exp["methods"]:
        runs = sorted((c for c in cells.values() if c["method"] == method), key=lambda c: c["seed"])
        if runs:
            first[method] = runs[0]
    key = exp.get("curve_metric", "top1")
    made: dict[str, str] = {}
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in exp["methods"]:
        runs = [c for c in cells.values() if c["method"] == method and c["curve"]]
        if runs:
            by_epoch: dict[int, list[float]] = {}
            for c in runs:
                for row in c["curve"]:
                    if isinstance(row.get(key), int | float):
                        by_epoch.setdefault(int(row["epoch"]), []).append(float(row[key]))
            xs = sorted(by_epoch)
            ax.plot(xs, [statistics.fmean(by_epoch[x]) for x in xs], marker="o", label=method)
    ax.set(xlabel="epoch", ylabel=f"val {key} (mean over seeds)", title=f"{name} ({size})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.legend(fontsize=7)
    made["accuracy per epoch"] = _save(fig, f"{name}_{size}_curve.png")
    trained = {m: c for m, c in first.items() if c["lr"]}  # a reference method (run=...) has no LR curves
    n = len(trained)
    if n:
        fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3), squeeze=False)
        for ax, (method, c) in zip(axes[0], trained.items(), strict=False):
            for group, pts in c["lr"].items():
                ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.8, label=group if len(c["lr"]) <= 8 else None)
            ax.set(title=f"{method} ({len(c['lr'])} groups)", xlabel="step", yscale="log")
            if len(c["lr"]) <= 8:
                ax.legend(fontsize=5)
        axes[0][0].set_ylabel("lr")
        made["every group's LR over the run"] = _save(fig, f"{name}_{size}_lr.png")
    rel = {m: c["reliability"] for m, c in first.items() if c.get("reliability")}
    if rel:
        fig, axes = plt.subplots(1, len(rel), figsize=(3.2 * len(rel), 3.2), squeeze=False)
        for ax, (method, r) in zip(axes[0], rel.items(), strict=False):
            ax.plot([0, 1], [0, 1], "k:", lw=0.8)
            for when, style in (("before", "o-"), ("after", "s-")):
                pts = [(row[4], row[3]) for row in r[when] if row[2]]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, ms=3, label=f"{when} T" + (
                    f"={r['T']:.2f}" if when == "after" else ""))  # fmt: skip
            ax.set(title=method, xlabel="confidence", xlim=(0, 1), ylim=(0, 1))
            ax.legend(fontsize=6)
        axes[0][0].set_ylabel("accuracy")
        made["reliability before / after temperature scaling"] = _save(fig, f"{name}_{size}_reliability.png")
    return made


def _save(fig: Any, filename: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(FIGURES / filename, dpi=90)
    plt.close(fig)
    return filename


def within(expected: float, tolerance: float, value: float | None) -> bool:
    return value is not None and math.isfinite(value) and abs(value - expected) <= tolerance


# ------------------------------------------------------------------------------------------- data preparers
def _coco_from_csv(cache: Path, images: str, train_csv: str, val_csv: str, out: str) -> Path:
    """A COCO-format dataset root (train/, valid/) from box CSVs, made once with tools/voc2coco.py."""
    import sys

    dest = cache / out
    if (dest / "valid" / "_annotations.coco.json").is_file():
        return dest
    sys.path.insert(0, str(ROOT))
    from tools.voc2coco import main as voc2coco

    for split, labels in (("train", train_csv), ("valid", val_csv)):
        if voc2coco(["csv", labels, "--images", images, "--out", str(dest / split)]) != 0:
            raise BadInput(f"converting {labels} to COCO failed")
    return dest


PREPARERS = {"coco_from_csv": _coco_from_csv}
