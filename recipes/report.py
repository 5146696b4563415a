"""The LR grid: one line per group, in the style of seed 001's start-up log, plus coverage."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Any

from torch import nn

from recipes.schedules import Schedule


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def format_lr_grid(groups: Sequence[dict[str, Any]], model: nn.Module | None = None, title: str = "lr_grid") -> str:
    """One line per group (name, lr, lr_scale, weight decay, tensors, parameters), then coverage.

    >>> print(format_lr_grid([]).splitlines()[0])
    [lr_grid] groups=0 tensors=0 params=0
    """
    tensors = sum(len(g["params"]) for g in groups)
    numel = sum(p.numel() for g in groups for p in g["params"])
    lines = [f"[{title}] groups={len(groups)} tensors={tensors} params={_count(numel)}"]
    width = max([len(g.get("name", "")) for g in groups] + [24]) + 2
    for g in groups:
        n = sum(p.numel() for p in g["params"])
        lines.append(
            f"  {g.get('name', '?'):<{width}}lr={g['lr']:.6g}  scale={g.get('lr_scale', 1.0):.4g}  "
            f"wd={g.get('weight_decay', 0.0):.4g}  tensors={len(g['params'])}  params={_count(n)}"
        )
    if model is not None:
        seen = {id(p) for g in groups for p in g["params"]}
        everything = list(model.parameters())
        frozen = [p for p in everything if id(p) not in seen]
        total = sum(p.numel() for p in everything) or 1
        lines.append(
            f"  coverage: {tensors}/{len(everything)} tensors in groups, trainable {_count(numel)} of "
            f"{_count(total)} parameters ({100.0 * numel / total:.2f}%), {len(frozen)} frozen tensors left out"
        )
    return "\n".join(lines)


def lr_table(groups: Sequence[dict[str, Any]], schedule: Schedule, every: int = 1) -> list[dict[str, float]]:
    """Each group's LR at every ``every``-th step of the schedule (for plots and CSV)."""
    rows = []
    for step in list(range(0, schedule.total_steps, every)) + [schedule.total_steps]:
        row: dict[str, float] = {"step": step, "base_lr": schedule.value(step)}
        for g in groups:
            row[g["name"]] = schedule.group_lr(step, g.get("lr_scale", 1.0))
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, float]], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def plot_lr(rows: list[dict[str, float]], path: str, title: str = "") -> None:
    """Every group's LR over the schedule, on a log axis, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    names = [k for k in rows[0] if k not in ("step", "base_lr")]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    cmap = plt.get_cmap("viridis")
    for i, name in enumerate(names):
        ax.plot(steps, [r[name] for r in rows], color=cmap(i / max(1, len(names) - 1)), lw=0.9, alpha=0.8)
    ax.plot(steps, [r["base_lr"] for r in rows], color="black", lw=2, ls="--", label="base (lr_scale 1.0)")
    positive = [r[n] for r in rows for n in names + ["base_lr"] if r[n] > 0]
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("global step")
    ax.set_ylabel("learning rate")
    ax.set_title(title or f"{len(names)} parameter groups")
    ax.legend(loc="best")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
