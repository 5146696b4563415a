"""Search a config's recipe: layer decay, per-component LRs, policy, LoRA rank, warm-up... with Optuna.

    python tools/tune.py CONFIG --space configs/tune/SPACE.py --trials 24 [--study-dir DIR] [--seeds 3]
    python tools/tune.py CONFIG --space SPACE.py --trials 24 --storage postgresql://host/db   # many machines

Each trial is an ordinary ``tools/train.py`` run of a config written on top of CONFIG (same checks, engine and
exact resume), in ``<study-dir>/trials/NNNN/``; its validation metric is reported at each evaluation to a
median (or successive-halving) pruner, which stops poor runs early. The study lives in
``<study-dir>/study.db``: run the same command again after Ctrl-C or a crash and it continues (an
interrupted trial resumes from its checkpoint); run it in several shells (or machines sharing ``--storage``)
and they share the study, ``--trials`` being the study's total. The tuned config as shipped is trained once as
the reference. ``--seeds K`` re-runs the reference and the ``--top`` best trials over K seeds before naming a
winner. Output: ``best_config.py`` (runs as is), ``report.md`` with PNGs, ``results.json``.
Exit status: 0 done, 2 bad input (one ``error:`` line, before any trial runs), 3 interrupted.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.train.config import load_config  # noqa: E402
from recipes.train.errors import BadInput, cli  # noqa: E402

TRAIN = Path(__file__).resolve().parent / "train.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--space", required=True, help="a search-space file (shipped ones: configs/tune/)")
    ap.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    ap.add_argument("--study-dir", default=None, help="default: work_dirs/tune/<config name>")
    ap.add_argument("--storage", default=None, help="an Optuna database URL shared by several machines")
    ap.add_argument("--seeds", type=int, default=0, help="re-run the reference and the top trials over K seeds")
    ap.add_argument("--top", type=int, default=3, help="how many of the best trials --seeds re-runs (default 3)")
    ap.add_argument("--no-reference", action="store_true", help="do not train the config as shipped")
    ap.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                    help="overrides applied to every run (data_root, weights, size)")  # fmt: skip
    args = ap.parse_args(argv)
    for name in ("trials", "top"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1")
    if args.seeds < 0 or args.seeds == 1:
        ap.error("--seeds must be 0 (no re-runs) or >= 2 (a spread needs two seeds)")
    return args


def _options(cfg_options: list[str]) -> dict:
    """``--cfg-options`` as dotted keys with parsed values (what mmengine's DictAction makes of them)."""
    from mmengine.config import DictAction

    class _NS:
        opts: dict

    holder = _NS()
    DictAction(option_strings=[], dest="opts")(None, holder, cfg_options)
    return dict(holder.opts) if cfg_options else {}


@cli
def main(argv: list[str] | None = None) -> int:
    import logging

    from recipes.train.tune.report import write_report
    from recipes.train.tune.search import Search, save_results, winner
    from recipes.train.tune.space import SpaceError, load_space
    from recipes.train.tune.study import TrialBadInput, write_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    config = Path(args.config)
    cfg = load_config(config, args.cfg_options)
    study_dir = Path(args.study_dir or Path("work_dirs") / "tune" / config.stem)
    try:
        space = load_space(args.space)
        search = Search(config, cfg, space, study_dir, [sys.executable, str(TRAIN)], _options(args.cfg_options),
                        storage=args.storage)  # fmt: skip
    except (SpaceError, KeyError) as e:
        raise BadInput(e.args[0] if e.args else str(e)) from None
    command = "python tools/tune.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print(f"[tune] {len(space.params)} parameters, objective {search.direction} {search.metric}; study {study_dir}")
    try:
        reference = None if args.no_reference else search.reference()
        if reference is not None:
            print(f"[tune] reference config: {search.metric} = {reference.best(search.maximize)}")
        study = search.optimize(args.trials)
        reseeded = search.reseed(search.candidates(study, args.top), args.seeds) if args.seeds else None
    except TrialBadInput as e:
        raise BadInput(str(e)) from None
    except KeyboardInterrupt:
        print(f"[tune] interrupted: run the same command again to continue (study {study_dir})", file=sys.stderr)
        return 3
    win = winner(search, study, reseeded)
    results_path = save_results(search, study, reseeded, win)
    best = write_config(study_dir / "best_config.py", config, {**search.cfg_options, **win[1]},
                        f"the recipe tools/tune.py found ({win[0]}); {command}", cfg)  # fmt: skip
    importances = None
    try:
        import optuna

        importances = dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError) as e:  # too few complete trials, or one value only
        print(f"[tune] no parameter importances: {e}")
    import json

    results = json.loads(results_path.read_text())
    win_dir = None
    if win[0].startswith("trial_"):
        match = [t for t in results["trials"] if t["number"] == int(win[0][6:])]
        win_dir = Path(match[0]["run_dir"]) / "run" if match and match[0]["run_dir"] else None
    report = write_report(study_dir, results, command, reference, win_dir, importances)
    print(f"[tune] winner {win[0]}: {best}\n[tune] report: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
