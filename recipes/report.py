"""What the groups say, for people: the LR grid, a per-parameter table, LR curves and a heatmap.

* :func:`format_lr_grid`: one line per group, in the style of the per-component x depth recipe's start-up log, plus coverage;
* :func:`param_table` / :func:`write_table`: one row per parameter (name, group, layer id and its
  label, component, lr, lr_scale, weight decay) as JSON or CSV;
* :func:`lr_table` / :func:`plot_lr`: every group's LR over the schedule, each curve labelled
  (groups on the same curve share one label);
* :func:`lr_grid` / :func:`plot_lr_heatmap`: peak LR per component (rows) and block (columns), one
  panel per block stack plus one for what sits outside the stacks (embeddings, head) and one per tower. Columns carry
  the family's own layer names where its adapter gives them (``ModelMap.labels``), with a rule
  between name families (IN | MID | OUT).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from torch import nn

from recipes.adapter import Adapter, ModelMap, ParamInfo
from recipes.names import canonical_name
from recipes.param_groups import describe_model, resolve_adapter
from recipes.schedules import Schedule


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def format_lr_grid(
    groups: Sequence[dict[str, Any]],
    model: nn.Module | None = None,
    title: str = "lr_grid",
    mmap: ModelMap | None = None,
) -> str:
    """One line per group (name, lr, lr_scale, weight decay, tensors, parameters), then coverage.

    With the model's ``mmap`` each line also says which layers the group spans, by the names every
    report uses (:meth:`ModelMap.layer_label`: ``IN05``, ``blocks.03``, ``head``).

    >>> print(format_lr_grid([]).splitlines()[0])
    [lr_grid] groups=0 tensors=0 params=0
    """
    tensors = sum(len(g["params"]) for g in groups)
    numel = sum(p.numel() for g in groups for p in g["params"])
    lines = [f"[{title}] groups={len(groups)} tensors={tensors} params={_count(numel)}"]
    width = max([len(g.get("name", "")) for g in groups] + [24]) + 2
    for g in groups:
        n = sum(p.numel() for p in g["params"])
        where = f"  layers={group_layers(g, mmap)}" if mmap is not None else ""
        lines.append(
            f"  {g.get('name', '?'):<{width}}lr={g['lr']:.6g}  scale={g.get('lr_scale', 1.0):.4g}  "
            f"wd={g.get('weight_decay', 0.0):.4g}  tensors={len(g['params'])}  params={_count(n)}{where}"
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


def group_layers(group: dict[str, Any], mmap: ModelMap) -> str:
    """The layers a group spans: ``IN05``, or ``IN04..OUT02 (9)`` (first..last by layer id, count)."""
    found = {
        (i.tower or "", i.layer_id): i
        for n in group.get("param_names", [])
        if (i := mmap.params.get(canonical_name(n)[0]))
    }
    if not found:
        return "?"
    first, last = found[min(found)], found[max(found)]  # the main model's layers first, then each tower's
    if len(found) == 1:
        return layer_of(first, mmap)
    return f"{layer_of(first, mmap)}..{layer_of(last, mmap)} ({len(found)})"


def layer_of(info: ParamInfo, mmap: ModelMap) -> str:
    """:meth:`ModelMap.layer_label` of the parameter's layer id, or its tower's (``text_encoder.07``)."""
    return mmap.layer_label(info.layer_id) if info.tower is None else mmap.param_label(info)


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


def write_table(rows: Sequence[dict[str, Any]], path: str) -> None:
    """``rows`` (from :func:`param_table` or :func:`lr_table`) to ``.json`` or ``.csv`` by suffix."""
    if not rows:
        raise ValueError(f"{path}: nothing to write (no rows)")
    if path.endswith(".json"):
        with open(path, "w") as f:
            json.dump(list(rows), f, indent=1)
    elif path.endswith(".csv"):
        write_csv(list(rows), path)
    else:
        raise ValueError(f"{path}: write a .json or a .csv file")


def describe_for_report(model: nn.Module, adapter: str | Adapter | type = "auto", strategy: Any = None) -> ModelMap:
    """The map of ``model`` the groups were built from (every parameter, frozen ones too).

    ``strategy``: the one the groups came from, where its options change the map (a ``prefix``). Groups
    from :func:`~recipes.param_groups.build_param_groups` carry their map already (``groups.model_map``).
    """
    if strategy is not None:  # the builder's own path (prefix, the any-module fallback)
        return describe_model(model, strategy, adapter)[1]
    return resolve_adapter(model, adapter).describe(model)


def param_table(
    groups: Sequence[dict[str, Any]], model: nn.Module, adapter: str | Adapter | type | ModelMap = "auto"
) -> list[dict[str, Any]]:
    """One row per parameter in ``groups``: where it sits and what it gets.

    ``adapter``: the one the groups were built with, or its :class:`ModelMap`; groups from
    ``build_param_groups`` carry their own map, which is used where no map is given. A parameter no
    rule classified (``on_unmatched='default'``) has ``layer_id`` and ``component`` None.
    """
    if isinstance(adapter, ModelMap):
        mmap = adapter
    elif getattr(groups, "model_map", None) is not None and adapter == "auto":
        mmap = groups.model_map
    else:
        mmap = describe_for_report(model, adapter)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    rows = []
    for g in groups:
        names = g.get("param_names") or [None] * len(g["params"])
        for name, p in zip(names, g["params"], strict=True):
            canon, lora = canonical_name(name) if name else (None, None)
            info = mmap.params.get(canon) if canon else None
            rows.append({
                "name": name, "group": g.get("name"),
                "layer_id": None if info is None else info.layer_id,
                "layer": None if info is None else layer_of(info, mmap),
                "component": None if info is None else info.component, "lora": lora,
                "lr": g["lr"], "lr_scale": g.get("lr_scale", 1.0), "weight_decay": g.get("weight_decay", 0.0),
                "shape": "x".join(map(str, shapes.get(name, tuple(p.shape)))), "numel": p.numel(),
            })  # fmt: skip
    return rows


def _curve_label(names: list[str], limit: int = 3) -> str:
    """Groups on one curve: their names without the decay suffix, ranges folded (``blocks.03-05``)."""
    stems = list(dict.fromkeys(re.sub(r"\.(?:no_)?decay(?:#\d+)?$", "", n) for n in names))
    if len(stems) <= limit:
        return ", ".join(stems)
    return f"{', '.join(stems[: limit - 1])} +{len(stems) - limit + 1} more"


def plot_lr(rows: list[dict[str, float]], path: str, title: str = "", max_labels: int = 36) -> list[str]:
    """Every group's LR over the schedule on a log axis, each curve labelled at its right end.

    Groups with the same LR at every step (decay / no-decay pairs, same-scale blocks) are one curve
    with one label; with more than ``max_labels`` curves every k-th one is labelled. Returns the
    labels drawn, lowest curve first.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    names = [k for k in rows[0] if k not in ("step", "base_lr")]
    curves: dict[tuple, list[str]] = {}
    for n in names:
        curves.setdefault(tuple(round(r[n], 15) for r in rows), []).append(n)
    order = sorted(curves, key=lambda c: max(c))
    fig, ax = plt.subplots(figsize=(11, 6.5))
    cmap = plt.get_cmap("viridis")
    every = max(1, math.ceil(len(order) / max_labels))
    labelled = []
    for i, curve in enumerate(order):
        color = cmap(0.85 * i / max(1, len(order) - 1))  # viridis up to green: its pale yellow end fades on white
        ax.plot(steps, curve, color=color, lw=1.0, alpha=0.9)
        if i % every == 0 or i == len(order) - 1:
            labelled.append((curve[-1] if curve[-1] > 0 else max(curve), _curve_label(curves[curve]), color))
    ax.plot(
        steps, [r["base_lr"] for r in rows], color="black", lw=1.4, ls="--", label="base LR (lr_scale 1.0)", zorder=1
    )
    log = any(r[n] > 0 for r in rows for n in names)
    if log:
        ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    for y, (end, text, color) in zip(_spread([e for e, _, _ in labelled], lo, hi, log), labelled, strict=True):
        ax.annotate(text, (steps[-1], end), xytext=(1.02, y), textcoords=("axes fraction", "data"), fontsize=7,
                    color=color, va="center", arrowprops=dict(arrowstyle="-", color=color, lw=0.5))  # fmt: skip
    ax.set_ylim(lo, hi)
    ax.set_xlim(steps[0], steps[-1] if steps[-1] > steps[0] else steps[0] + 1)
    ax.set_xlabel("global step")
    ax.set_ylabel("learning rate")
    shown = f"{len(order)} distinct curves" + (f", every {every}th labelled" if every > 1 else "")
    ax.set_title(f"{title} ({shown})" if title else f"LR per group ({len(names)} groups, {shown})")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    # a right margin as wide as the longest label (7 pt text, about 0.6 em a character), so none leaves the figure
    longest = max((len(text) for _, text, _ in labelled), default=0)
    margin = (longest * 7 * 0.62 + 24) / 72 / fig.get_figwidth()
    fig.tight_layout(rect=(0, 0, max(0.4, 1 - margin), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [text for _, text, _ in labelled]


def _spread(ys: list[float], lo: float, hi: float, log: bool, gap: float = 1 / 40) -> list[float]:
    """Label heights, in order, at least ``gap`` of the axis (``lo``..``hi``, log when ``log``) apart."""
    if not ys:
        return []
    f = (lambda v: math.log10(max(v, 1e-300))) if log else (lambda v: v)
    pos, top = [f(y) for y in ys], f(hi)
    step = (top - f(lo)) * gap
    order = sorted(range(len(pos)), key=pos.__getitem__)
    out = list(pos)
    for a, b in zip(order, order[1:], strict=False):  # up from the lowest label
        out[b] = max(out[b], out[a] + step)
    out[order[-1]] = min(out[order[-1]], top - step / 2)  # then back down from the top of the axis
    for a, b in zip(order[-2::-1], order[:0:-1], strict=True):
        out[a] = min(out[a], out[b] - step)
    return [10**v if log else v for v in out]


def lr_grid(groups: Sequence[dict[str, Any]], mmap: ModelMap) -> dict[str, Any]:
    """Peak LR per (component, column), per panel: each block stack, ``outside`` the stacks, then each tower.

    Returns ``{"panels": {panel: {"columns": [...labels], "components": [...], "lr": {(comp, col): lr}}}}``;
    a cell holds the largest LR of the tensors there (they differ only with per-role LRs or LoRA+).
    """
    panels: dict[str, dict[str, Any]] = {}
    first = 1
    for stack, size in mmap.stack_sizes.items():
        ids = range(first, first + size)
        first += size
        panels[stack] = {"columns": [mmap.layer_label(i) for i in ids], "components": [], "lr": {}}
    panels["outside"] = {"columns": [], "components": [], "lr": {}}
    for g in groups:
        for name in g.get("param_names", []):
            info = mmap.params.get(canonical_name(name)[0])
            if info is None:
                continue
            if info.tower is not None:  # a panel per tower, its layers by its own ids
                panel = panels.setdefault(info.tower, {"columns": [], "components": [], "lr": {}})
            elif info.stack is not None:
                panel = panels[info.stack]
            elif 1 <= info.layer_id < mmap.max_layer_id and mmap.num_layers:
                panel = panels[mmap.block_at(info.layer_id - 1)[0]]  # a non-block tensor at a block's depth
            else:
                panel = panels["outside"]
            col = layer_of(info, mmap)
            if col not in panel["columns"]:
                panel["columns"].append(col)
            if info.component not in panel["components"]:
                panel["components"].append(info.component)
            key = (info.component, col)
            panel["lr"][key] = max(panel["lr"].get(key, 0.0), g["lr"])
    for tower in mmap.towers:  # a tower's columns in layer order, however the groups come
        if tower in panels:
            order = [mmap.tower_label(tower, k) for k in range(mmap.towers[tower] + 2)]
            panels[tower]["columns"].sort(key=order.index)
    return {"panels": {k: v for k, v in panels.items() if v["lr"]}}


def _families(columns: list[str]) -> list[int]:
    """Indices where the alphabetic prefix of the column labels changes (IN05 | MID | OUT00)."""
    stems = [re.sub(r"[\d.]+$", "", c) for c in columns]
    return [i for i in range(1, len(stems)) if stems[i] != stems[i - 1]]


def plot_lr_heatmap(groups: Sequence[dict[str, Any]], mmap: ModelMap, path: str, title: str = "") -> None:
    """Component x depth heatmap of peak LRs (log colour scale), one panel per stack, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    panels = lr_grid(groups, mmap)["panels"]
    if not panels:
        raise ValueError("plot_lr_heatmap: no parameter of the groups is known to the model map")
    values = [v for p in panels.values() for v in p["lr"].values() if v > 0]
    norm = LogNorm(min(values), max(values) * (1.0001 if min(values) == max(values) else 1.0)) if values else None
    widths = [max(2, len(p["columns"])) for p in panels.values()]
    rows = max(len(p["components"]) for p in panels.values())
    narrow = sum(widths) > 39  # the figure stops at 26 in: narrower cells, values written upright
    fig, axes = plt.subplots(1, len(panels), figsize=(min(26, 2.5 + 0.6 * sum(widths)), 1.8 + 0.5 * rows),
                             gridspec_kw={"width_ratios": widths}, squeeze=False)  # fmt: skip
    image = None
    for ax, (name, p) in zip(axes[0], panels.items(), strict=True):
        grid = [[p["lr"].get((c, col), math.nan) for col in p["columns"]] for c in p["components"]]
        image = ax.imshow(grid, aspect="auto", cmap="magma", norm=norm, interpolation="nearest")
        ax.set_xticks(range(len(p["columns"])), p["columns"], rotation=90, fontsize=7)
        ax.set_yticks(range(len(p["components"])), p["components"], fontsize=8)
        ax.set_title(name, fontsize=9)
        for i in _families(p["columns"]) if name != "outside" else ():
            ax.axvline(i - 0.5, color="deepskyblue", lw=2.5)
        if len(p["columns"]) <= 24:  # values in the cells while they fit
            for r, row in enumerate(grid):
                for c, v in enumerate(row):
                    if not math.isnan(v) and v > 0:
                        dark = norm(v) < 0.55
                        ax.text(c, r, f"{v:.1e}".replace("e-0", "e-"), ha="center", va="center", fontsize=6,
                                rotation=90 if narrow or len(p["columns"]) > 12 else 0, color="white" if dark else "black")  # fmt: skip
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), shrink=0.9, label="peak LR")
    fig.suptitle(title or f"peak LR per component and block ({mmap.adapter})", fontsize=10, y=1.03)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
