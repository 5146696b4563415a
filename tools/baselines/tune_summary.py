"""A recipe search (``tools/tune.py``) as a baseline: a small committed summary and its docs/baselines.md section.

``python tools/reproduce.py NAME --import-tune STUDY_DIR`` reads the study's ``results.json`` and ``report.md``
and writes ``experiments/NAME/tune.json``: the command, trials complete / pruned, the winner's settings, the
over-seeds table (val and test mean ± std) and the verdict. The experiment declares which of its methods the
search started from (``tune = dict(method=..., size=...)``); a study whose tuned config differs from that
method's config (other than the seed, the data paths and display switches) is refused, and a summary whose
config has changed since it was imported is flagged in the docs instead of shown.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

from recipes.train.errors import BadInput
from tools.baselines import experiments as E

SUMMARY = "tune.json"
TEST_KEYS = ("test.top1", "test.nll", "test.ece")
# Keys of train that do not change what a run learns: the seed varies over seeds, the others are display switches.
NOT_RECIPE = ("seed", "progress", "tensorboard")


def summary_path(name: str) -> Path:
    return E.EXPERIMENTS / name / SUMMARY


def recipe_hash(cfg: Any) -> str:
    """Hash of the settings a run learns from: the config without its ``_`` helpers, seed and display switches."""
    from mmengine.config import Config

    d = {k: v for k, v in cfg.to_dict().items() if not k.startswith("_")}
    d["train"] = {k: v for k, v in d.get("train", {}).items() if k not in NOT_RECIPE}
    return hashlib.sha256(Config(d).pretty_text.encode()).hexdigest()[:16]


def _tune_spec(exp: dict[str, Any]) -> dict[str, Any]:
    spec = exp.get("tune")
    if not isinstance(spec, dict) or spec.get("method") not in exp["methods"] or spec.get("size") not in exp["sizes"]:
        raise BadInput(
            f"{exp['name']}: a recipe search needs `tune = dict(method=..., size=...)` in its experiment.py naming "
            f"the method the search started from (one of {list(exp['methods'])}) and a size; got {spec!r}"
        )
    return spec


def _path_keys(exp: dict[str, Any], size: str) -> dict[str, str]:
    """The size's keys whose values are data placeholders (``{cifar10}``): machine paths, not settings."""
    return {k: v for k, v in exp["sizes"][size].items() if isinstance(v, str) and v.startswith("{")}


def expected_hash(exp: dict[str, Any]) -> str:
    spec = _tune_spec(exp)
    return recipe_hash(E.cell_config(exp, spec["method"], spec["size"], 0)[0])


def tuned_hash(exp: dict[str, Any], config: str, options: dict[str, Any]) -> str:
    from recipes.train.config import load_config

    path = E.ROOT / config
    if not path.is_file():
        raise BadInput(f"{exp['name']}: the study's config {config!r} is not in this tree")
    cfg = load_config(path)
    cfg.merge_from_dict({**options, **_path_keys(exp, _tune_spec(exp)["size"])})
    return recipe_hash(cfg)


def _command(study: Path) -> list[str]:
    report = study / "report.md"
    found = re.search(r"^Command: `(.+)`$", report.read_text(), re.M) if report.is_file() else None
    if found is None:
        raise BadInput(f"{report}: no `Command: ...` line; is {str(study)!r} a tools/tune.py study folder?")
    return shlex.split(found.group(1))


def _cfg_options(argv: list[str]) -> dict[str, Any]:
    from mmengine.config import DictAction

    if "--cfg-options" not in argv:
        return {}
    opts = []
    for a in argv[argv.index("--cfg-options") + 1 :]:
        if a.startswith("--"):
            break
        opts.append(a)
    holder = type("NS", (), {})()
    DictAction(option_strings=[], dest="opts")(None, holder, opts)
    return dict(holder.opts)


def _stat(s: dict[str, Any] | None) -> dict[str, float] | None:
    return None if not s or s.get("mean") is None else {"mean": s["mean"], "std": s["std"], "n": s["n"]}


def summarise(exp: dict[str, Any], study: Path) -> dict[str, Any]:
    """The summary of the study in ``study`` (refused when its tuned config is not the experiment's method's)."""
    from recipes.train.tune.report import verdict

    path = study / "results.json"
    if not path.is_file():
        raise BadInput(f"{path} does not exist; --import-tune takes a tools/tune.py --study-dir")
    results = json.loads(path.read_text())
    argv = _command(study)
    options = _cfg_options(argv)
    paths = _path_keys(exp, _tune_spec(exp)["size"])
    options = {k: v for k, v in options.items() if k not in paths}  # machine paths: replaced by placeholders
    got, want = tuned_hash(exp, results["config"], options), expected_hash(exp)
    spec = _tune_spec(exp)
    if got != want:
        raise BadInput(
            f"{exp['name']}: the study tuned {results['config']} with {options or 'no other options'} (recipe hash "
            f"{got}), not the config of method {spec['method']!r} at size {spec['size']!r} ({want}); import a study "
            "of that config, or change the experiment's `tune`"
        )
    for i, a in enumerate(argv[:-1]):  # the command as run, with the experiment's placeholders for machine paths
        if a == "--study-dir":
            argv[i + 1] = "DIR"
    argv = [f"{a.split('=')[0]}={paths[a.split('=')[0]]}" if a.split("=")[0] in paths else a for a in argv]
    states: dict[str, int] = {}
    for t in results["trials"]:
        states[t["state"].lower()] = states.get(t["state"].lower(), 0) + 1
    seeds = {
        name: {"val": _stat(r["metric"]), **{k: _stat(r["summary"].get(k)) for k in TEST_KEYS}}
        for name, r in (results.get("seeds") or {}).items()
    }
    best = next((t for t in results["trials"] if f"trial_{t['number']:04d}" == results["winner"]), None)
    return {
        "baseline": exp["name"],
        "command": shlex.join(argv),
        "config": results["config"],
        "space": results["space"],
        "options": options,
        "recipe_hash": got,
        "method": spec["method"],
        "size": spec["size"],
        "metric": results["metric"],
        "direction": results["direction"],
        "trials": states,
        "winner": results["winner"],
        "winner_params": best["params"] if best else {},
        "winner_values": results["winner_values"],
        "seeds": seeds,
        "verdict": verdict(results) if results.get("seeds") else "No re-runs over seeds (--seeds 0).",
    }


def import_tune(name: str, study: Path) -> Path:
    exp = E.load_experiment(name)
    data = summarise(exp, study)
    out = summary_path(name)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out)
    return out


def _fmt(s: dict[str, float] | None, digits: int) -> str:
    return "-" if not s else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _setting(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: (k != "type", k))  # the type first; the LoRA targets left to the space file
        return "dict(" + ", ".join(f"{k}={_setting(v[k])}" for k in keys if k != "targets") + ")"
    return "none (full fine-tune)" if v is None else str(v)


def render(exp: dict[str, Any]) -> list[str]:
    """The docs/baselines.md lines of the experiment's recipe search ([] when it has none)."""
    path = summary_path(exp["name"])
    if not path.is_file():
        return []
    s = json.loads(path.read_text())
    out = ["### Recipe search (`tools/tune.py`)", "", f"`{s['command']}`", ""]
    out += ["(`{...}`: the experiment's extracted data, as in its cells; `DIR`: the study folder.)", ""]
    now = tuned_hash(exp, s["config"], s["options"])
    if now != s["recipe_hash"] or now != expected_hash(exp):
        return out + [
            f"Left out: `{SUMMARY}` was made with another config (recipe hash {s['recipe_hash']}, now {now}; the "
            f"method {s['method']!r} hashes to {expected_hash(exp)}); rerun the search and `--import-tune` it.",
            "",
        ]
    trials = ", ".join(f"{n} {state}" for state, n in sorted(s["trials"].items()))
    settings = "; ".join(f"`{k}` = {_setting(v)}" for k, v in sorted(s["winner_values"].items()))
    out += [
        f"Started from `{s['method']}` ({s['size']} size, `{s['config']}`); searched `{s['space']}` for the best "
        f"validation {s['metric']} ({s['direction']}). Trials: {trials}. Winner: {s['winner']}: {settings}.",
        "",
        f"| candidate | seeds | val {s['metric']} | " + " | ".join(TEST_KEYS) + " |",
        "|---|---|---|" + "---|" * len(TEST_KEYS),
    ]
    for name, r in s["seeds"].items():
        label = f"reference (`{s['method']}` as shipped)" if name == "reference" else f"winner ({name})"
        n = r["val"]["n"] if r["val"] else "-"
        cells = [_fmt(r.get(k), 3 if k != "test.top1" else 2) for k in TEST_KEYS]
        out.append(f"| {label} | {n} | {_fmt(r['val'], 2)} | " + " | ".join(cells) + " |")
    return out + ["", s["verdict"], "", "How to read it, and the plots: [docs/tuning.md](tuning.md).", ""]
