"""Per-parameter parity with timm on every timm architecture, full size on the meta device, timed.

    .venv/bin/python bench/timm_sweep.py                     # every current name (1,371 in timm 1.0.31)
    .venv/bin/python bench/timm_sweep.py --one-per-module    # the first name of each timm module
    .venv/bin/python bench/timm_sweep.py --filter 'swin*' --jsonl /tmp/sweep.jsonl

For each architecture: ``timm.create_model(name)`` on ``torch.device("meta")``, then timm's
``param_groups_layer_decay(model, 0.05, no_weight_decay_list=model.no_weight_decay(), layer_decay=0.75)``
and ours (``layer_decay``, same numbers, ``adapter="auto"``), compared per parameter (``lr_scale``
and weight decay, exactly). Both builders run once per model, interleaved, so the summed times are
a ratio measured in the same run. An architecture timm itself cannot build or group on meta is
counted apart, with timm's error. The 209 deprecated names (1,580 in all) build the same
architecture as the current name they point to (``timm.models.get_deprecated_models()``), so they
share its result and are not built twice.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import timm
import torch
from timm.optim import param_groups_layer_decay
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recipes import build_param_groups  # noqa: E402
from recipes.param_groups import resolve_adapter  # noqa: E402

DECAY, WEIGHT_DECAY = 0.75, 0.05


def architectures(one_per_module: bool = False) -> list[str]:
    """Every current name ``timm.create_model`` accepts, or the first name of each timm module."""
    if one_per_module:
        return [names[0] for m in timm.list_modules() if (names := timm.list_models(module=m))]
    return timm.list_models()


def deprecated_names() -> dict[str, str]:
    """Deprecated name -> the current name whose architecture it builds (``name.tag`` stripped)."""
    return {old: new.split(".")[0] for old, new in timm.models.get_deprecated_models().items()}


def meta_model(name: str) -> nn.Module:
    """``timm.create_model(name)`` with its parameters on the meta device (no memory, no init cost)."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return timm.create_model(name)


def timm_per_param(model: nn.Module) -> dict[str, tuple[float, float]]:
    """{name: (lr_scale, weight_decay)} from timm's own builder."""
    nwd = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    groups = param_groups_layer_decay(model, WEIGHT_DECAY, no_weight_decay_list=nwd, layer_decay=DECAY)
    return _per_param(model, groups)


def ours_per_param(model: nn.Module, adapter: str = "auto") -> dict[str, tuple[float, float]]:
    recipe = dict(type="layer_decay", lr=1.0, decay=DECAY, weight_decay=WEIGHT_DECAY)
    return _per_param(model, build_param_groups(model, recipe, adapter))


def _per_param(model: nn.Module, groups: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    by_id = {id(p): (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}
    return {n: by_id[id(p)] for n, p in model.named_parameters() if p.requires_grad}


def differences(model: nn.Module, adapter: str = "auto") -> list[str]:
    """Parameters whose (lr_scale, weight_decay) differ from timm's, as readable lines (empty: parity)."""
    theirs, ours = timm_per_param(model), ours_per_param(model, adapter)
    return [f"{n}: ours {ours.get(n)} timm {t}" for n, t in theirs.items() if ours.get(n) != t]


def check(name: str) -> dict[str, Any]:
    """One architecture: status (parity / differs / ours_error / timm_error), times, adapter."""
    rec: dict[str, Any] = {"name": name}
    try:
        t = time.perf_counter()
        model = meta_model(name)
        rec["create_s"] = time.perf_counter() - t
        t = time.perf_counter()
        theirs = timm_per_param(model)
        rec["timm_s"] = time.perf_counter() - t
    except Exception as e:  # timm itself cannot build or group it: an exclusion, with the reason
        return {**rec, "status": "timm_error", "error": f"{type(e).__name__}: {str(e)[:160]}"}
    try:
        t = time.perf_counter()
        ours = ours_per_param(model)
        rec["ours_s"] = time.perf_counter() - t
        rec["adapter"] = resolve_adapter(model).name
    except Exception as e:
        return {**rec, "status": "ours_error", "error": f"{type(e).__name__}: {str(e)[:160]}"}
    diff = [n for n, v in theirs.items() if ours.get(n) != v]
    rec["params"] = len(theirs)
    rec["status"] = "differs" if diff else "parity"
    if diff:
        rec["error"] = f"{len(diff)} differ, e.g. {diff[0]}: ours {ours.get(diff[0])} timm {theirs[diff[0]]}"
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--filter", default="*", help="fnmatch pattern on the model name")
    ap.add_argument("--one-per-module", action="store_true")
    ap.add_argument("--jsonl", help="append every record here as it is made (one JSON object a line)")
    args = ap.parse_args()
    names = [n for n in architectures(args.one_per_module) if fnmatch.fnmatch(n, args.filter)]
    check(names[0])  # imports and caches warm, outside the timings
    t0 = time.perf_counter()
    records = []
    for n in names:
        records.append(check(n))
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(records[-1]) + "\n")
    wall = time.perf_counter() - t0
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    groupable = len(records) - counts.get("timm_error", 0)
    print(
        f"architectures: {len(records)}; timm groups {groupable} on meta; parity {counts.get('parity', 0)} of {groupable}"
    )
    print(f"statuses: {counts}; sweep wall {wall:.1f} s")
    if not args.one_per_module and args.filter == "*":
        status = {r["name"]: r["status"] for r in records}
        old = [status.get(new, "missing") for new in deprecated_names().values()]
        print(f"deprecated names: {len(old)}, their architectures: {dict((s, old.count(s)) for s in set(old))}")
    timed = [r for r in records if "ours_s" in r]
    ours_s, timm_s = sum(r["ours_s"] for r in timed), sum(r["timm_s"] for r in timed)
    print(
        f"group building summed over {len(timed)} models: ours {ours_s:.2f} s, timm {timm_s:.2f} s, ratio {ours_s / timm_s:.2f}"
    )
    adapters: dict[str, int] = {}
    for r in timed:
        adapters[r["adapter"]] = adapters.get(r["adapter"], 0) + 1
    print(f"adapters chosen by auto: {adapters}")
    for r in records:
        if r["status"] != "parity":
            print(f"  {r['status']}: {r['name']}: {r.get('error')}")


if __name__ == "__main__":
    main()
