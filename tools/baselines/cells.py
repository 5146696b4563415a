"""One cell of a baseline's matrix: trained through the engine (or scored by a reference function), with its
curves, reliability bins and provenance; and the data preparers an experiment's ``prepare`` names."""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from recipes.train.errors import BadInput
from tools.baselines.experiments import ROOT, fill_paths


def run_cell(cfg: Any, paths: dict[str, str], work_dir: Path, exp: dict[str, Any], method: str = "") -> dict[str, Any]:
    """Train one cell in this process; its summary, per-epoch curve, LR curves and reliability bins.

    A method with ``run="module:function"`` is not trained: the function scores it (a reference such as
    OpenCV's tracker) and its metrics stand for both the final and the best epoch. It returns one metrics dict,
    or ``{"val": ..., "test": ...}`` (the ``test`` figures then sit where a trained cell's final test ones do).
    """
    import importlib

    from mmengine.config import Config

    from recipes.train.engine import Trainer

    cfg = Config(fill_paths(cfg.to_dict(), paths))
    spec = exp["methods"].get(method) if method else None
    if isinstance(spec, dict) and spec.get("run"):
        module, _, fn = str(spec["run"]).partition(":")
        try:
            evaluate = getattr(importlib.import_module(module), fn)
        except (ImportError, AttributeError):
            raise BadInput(f"{exp['name']} {method}: run={spec['run']!r} is not an importable function") from None
        scores = _plain(evaluate(cfg))
        splits = scores if isinstance(scores.get("val"), dict) else {"val": scores}
        return {"metrics": {**splits, "best": splits["val"]}, "curve": [], "lr": {}}
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
    logits, labels = task.logits(trainer.bare_model(), trainer.eval_loader(data), trainer.device)
    out: dict[str, Any] = {"T": temperature}
    for name, lg in (("before", logits), ("after", logits / temperature)):
        conf, pred = lg.float().softmax(1).max(1)
        correct = (pred == labels).float()
        rows = []
        for b in range(bins):
            lo, hi = b / bins, (b + 1) / bins
            inside = (conf > lo) & (conf <= hi)
            n = int(inside.sum())
            rows.append(
                [lo, hi, n, float(correct[inside].mean()) if n else None, float(conf[inside].mean()) if n else None]
            )
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

    dirty = [
        ln
        for ln in git("status", "--porcelain", "--untracked-files=no").splitlines()
        if "results.json" not in ln and "docs/baselines" not in ln
    ]
    versions = {}
    for pkg in ("torch", "timm", "transformers", "peft", "rfdetr", "numpy", "albumentations", "mmengine"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    hw = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
    }
    if torch.cuda.is_available():
        hw["gpu"] = torch.cuda.get_device_name(0)
    return {
        "commit": git("rev-parse", "HEAD").strip() or "unknown",
        "dirty": bool(dirty),
        "versions": versions,
        "hardware": hw,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ------------------------------------------------------------------------------------------- data preparers
def _coco_from_csv(cache: Path, images: str, train_csv: str, val_csv: str, out: str) -> Path:
    """A COCO-format dataset root (train/, valid/) from box CSVs, made once with tools/voc2coco.py."""
    from tools.voc2coco import main as voc2coco

    dest = cache / out
    if (dest / "valid" / "_annotations.coco.json").is_file():
        return dest

    for split, labels in (("train", train_csv), ("valid", val_csv)):
        if voc2coco(["csv", labels, "--images", images, "--out", str(dest / split)]) != 0:
            raise BadInput(f"converting {labels} to COCO failed")
    return dest


PREPARERS = {"coco_from_csv": _coco_from_csv}
