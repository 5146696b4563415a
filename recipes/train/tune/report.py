"""The search's report: ``report.md`` beside PNGs (history, importances, curves, each run's LR grid)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from recipes.report import plot_lr

REPORT = "report.md"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(results: dict[str, Any], reference: float | None, path: Path) -> None:
    plt = _plt()
    maximize = results["direction"] == "maximize"
    fig, ax = plt.subplots(figsize=(8, 4.5))
    done = [t for t in results["trials"] if t["state"] == "COMPLETE"]
    pruned = [t for t in results["trials"] if t["state"] == "PRUNED" and t["intermediate"]]
    ax.scatter([t["number"] for t in done], [t["value"] for t in done], color="tab:blue", label="complete", zorder=3)
    ax.scatter([t["number"] for t in pruned], [t["intermediate"][-1][1] for t in pruned], color="tab:gray",
               marker="x", label="pruned (last evaluation)", zorder=3)  # fmt: skip
    best, xs, ys = None, [], []
    for t in sorted(done, key=lambda t: t["number"]):
        if best is None or (t["value"] > best if maximize else t["value"] < best):
            best = t["value"]
        xs.append(t["number"])
        ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="tab:red", label="best so far")
    if reference is not None:
        ax.axhline(reference, color="black", ls="--", lw=1, label="reference config")
    ax.set_xlabel("trial")
    ax.set_ylabel(results["metric"])
    ax.set_title("Optimisation history")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_importances(importances: dict[str, float], path: Path) -> None:
    plt = _plt()
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (fANOVA)")
    ax.set_title("Parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(curves: dict[str, list[tuple[int, float]]], metric: str, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, curve in curves.items():
        if curve:
            ax.plot([s for s, _ in curve], [v for _, v in curve], marker="o", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("Validation curves")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lr_rows(run_dir: Path) -> list[dict[str, float]]:
    """Each logged step's per-group LR from a run's ``train_log.csv``, in :func:`recipes.report.plot_lr`'s form."""
    path = run_dir / "train_log.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{"step": float(r["step"]), "base_lr": float(r["base_lr"]),
             **{k[3:]: float(r[k]) for k in r if k.startswith("lr/") and r[k]}} for r in rows]  # fmt: skip


def _fmt(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{stat['mean']:.4g} +- {stat['std']:.2g}" if stat["n"] > 1 else f"{stat['mean']:.4g}"


def write_report(out: Path, results: dict[str, Any], command: str, reference: Any, winner_dir: Path | None,
                 importances: dict[str, float] | None) -> Path:  # fmt: skip
    """``report.md`` and its PNGs in ``out``."""
    metric, maximize = results["metric"], results["direction"] == "maximize"
    ref_value = reference.best(maximize) if reference is not None else None
    plot_history(results, ref_value, out / "history.png")
    lines = [f"# Recipe search: {results['config']}", "", f"Command: `{command}`", "",
             f"Objective: the best validation `{metric}` of each run ({results['direction']}); space "
             f"`{results['space']}`.", "", "![history](history.png)", ""]  # fmt: skip
    states: dict[str, int] = {}
    for t in results["trials"]:
        states[t["state"]] = states.get(t["state"], 0) + 1
    lines += [f"Trials: {', '.join(f'{v} {k.lower()}' for k, v in sorted(states.items()))}. Reference config "
              f"(as shipped, one run): {metric} = {ref_value if ref_value is None else f'{ref_value:.4g}'}.", ""]  # fmt: skip
    if importances:
        plot_importances(importances, out / "importances.png")
        lines += ["![importances](importances.png)", ""]
    done = sorted((t for t in results["trials"] if t["state"] == "COMPLETE"), key=lambda t: t["value"],
                  reverse=maximize)  # fmt: skip
    keys = sorted({k for t in done for k in t["params"]})
    lines += ["## Best trials", "", "| trial | " + metric + " | " + " | ".join(f"`{k}`" for k in keys) + " |",
              "|---|---|" + "---|" * len(keys)]  # fmt: skip
    for t in done[:10]:
        lines.append(
            f"| {t['number']} | {t['value']:.4g} | " + " | ".join(_short(t["params"].get(k)) for k in keys) + " |"
        )
    seeds = results.get("seeds")
    if seeds:
        extra = sorted({k for r in seeds.values() for k in r["summary"] if k.startswith("test.")})[:3]
        lines += ["", "## Over seeds", "", f"| candidate | val {metric} (mean +- std) | "
                  + " | ".join(extra) + " |", "|---|---|" + "---|" * len(extra)]  # fmt: skip
        for name, r in seeds.items():
            lines.append(
                f"| {name} | {_fmt(r['metric'])} | " + " | ".join(_fmt(r["summary"].get(k)) for k in extra) + " |"
            )
        lines += ["", verdict(results)]
    lines += ["", f"Winner: **{results['winner']}**, written to `best_config.py` (runs as is with tools/train.py)."]
    curves = {}
    if reference is not None:
        curves["reference"] = reference.curve
    if winner_dir is not None and results["winner"] != "reference":
        from recipes.train.tune.study import eval_curve

        curves[results["winner"]] = eval_curve(winner_dir, metric)
        for name, d in (("winner", winner_dir), ("reference", out / "reference" / "run")):
            rows = lr_rows(d)
            if rows and len(rows[0]) > 2:
                plot_lr(rows, str(out / f"lr_{name}.png"), title=f"{name}: every group's LR")
                lines += ["", f"![LR of the {name}](lr_{name}.png)"]
    if curves:
        plot_curves(curves, metric, out / "curves.png")
        lines += ["", "![curves](curves.png)"]
    path = out / REPORT
    path.write_text("\n".join(lines) + "\n")
    return path


def verdict(results: dict[str, Any]) -> str:
    """Does the winner beat the reference by more than the seed spread? Said in words."""
    seeds = results["seeds"]
    ref, win = seeds.get("reference", {}).get("metric"), seeds.get(results["winner"], {}).get("metric")
    if results["winner"] == "reference":
        return "No searched recipe beat the reference config's mean over seeds: keep the shipped recipe."
    if not ref or not win or ref["mean"] is None or win["mean"] is None:
        return "The reference config has no result over seeds to compare with."
    gap = abs(win["mean"] - ref["mean"])
    spread = max(ref["std"], win["std"])
    beats = "beats" if gap > spread else "does not beat"
    return (f"The winner {beats} the reference config by more than the seed spread: mean gap {gap:.4g}, larger "
            f"std {spread:.2g} over {win['n']} seeds.")  # fmt: skip


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return str(v.get("type", v))
    return str(v)
