"""``tools/tune.py``'s driver: the reference run, the trials, the seed re-runs, the best config and the report."""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmengine import Config

from recipes.train.tune.check import check_space
from recipes.train.tune.space import Space
from recipes.train.tune.study import (
    RunResult,
    finished,
    header,
    make_study,
    requeue,
    run_training,
    value_maximized,
    write_config,
)

log = logging.getLogger("recipes.tune")
REFERENCE = "reference"


@dataclass
class Search:
    """One search: the tuned config, its space, where the study lives and how trials train."""

    config_path: Path
    cfg: Config
    space: Space
    study_dir: Path
    train_cmd: Sequence[str]
    cfg_options: dict[str, Any]
    storage: str | None = None
    study_name: str | None = None

    def __post_init__(self) -> None:
        self.metric, self.direction = check_space(self.cfg, self.space)
        self.maximize = value_maximized(self.direction)
        self.name = self.study_name or self.config_path.stem

    # --------------------------------------------------------------------------------------------- runs
    def config_for(self, folder: Path, values: dict[str, Any], what: str) -> Path:
        return write_config(
            folder / "config.py", self.config_path, {**self.cfg_options, **values}, header(what, values), self.cfg
        )

    def train(self, folder: Path, values: dict[str, Any], what: str, on_eval: Any = None) -> RunResult:
        config = self.config_for(folder, values, what)
        return run_training(self.train_cmd, config, folder / "run", self.metric, on_eval)

    def reference(self) -> RunResult:
        """The tuned config as it is, trained once (the yardstick in the report)."""
        return self.train(self.study_dir / REFERENCE, {}, f"the reference run of {self.config_path}")

    # ------------------------------------------------------------------------------------------- trials
    def optimize(self, n_trials: int) -> Any:
        """Run trials until the study holds ``n_trials`` finished ones (complete or pruned), across processes."""
        import optuna
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState

        study = make_study(self.space, self.study_dir, self.name, self.direction, self.storage)
        study.set_user_attr("config", str(self.config_path))
        study.set_user_attr("metric", self.metric)

        def objective(trial: optuna.Trial) -> float:
            values = {p.key: p.suggest(trial) for p in self.space.params}
            folder = Path(trial.user_attrs.get("run_dir") or self.study_dir / "trials" / f"{trial.number:04d}")
            folder = folder.parent if folder.name == "run" else folder
            trial.set_user_attr("run_dir", str(folder))

            def on_eval(step: int, value: float) -> bool:
                trial.report(value, step)
                return trial.should_prune()

            try:
                res = self.train(folder, values, f"trial {trial.number} of study {self.name!r}", on_eval)
            except KeyboardInterrupt:
                requeue(study, dict(trial.params), str(folder), trial.number)
                raise
            if res.code == 3 and not res.stopped:  # the run was interrupted from outside (a signal to it alone):
                requeue(study, dict(trial.params), str(folder), trial.number)  # not a pruned trial; stop as Ctrl-C
                raise KeyboardInterrupt
            trial.set_user_attr("exit", res.code)
            best = res.best(self.maximize)
            if res.code == 1:
                trial.set_user_attr("stopped", "a NaN/inf loss or gradient")
                raise optuna.TrialPruned("the run diverged (NaN/inf)")
            if trial.should_prune() or res.code == 3:
                raise optuna.TrialPruned(f"pruned at step {res.curve[-1][0] if res.curve else 0}")
            if res.code != 0 or best is None:
                raise RuntimeError(f"trial {trial.number}: the run exited {res.code} with no {self.metric} "
                                   f"(log: {folder / 'run.log'})")  # fmt: skip
            return best

        left = n_trials - finished(study)
        if left > 0:
            study.optimize(
                objective,
                callbacks=[MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))],
                catch=(RuntimeError,),
            )
        return study

    # -------------------------------------------------------------------------------------------- seeds
    def candidates(self, study: Any, top: int) -> list[tuple[str, dict[str, Any]]]:
        """The reference config and the ``top`` best complete trials, as (name, config values)."""
        from optuna.trial import TrialState

        done = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.value is not None]
        done.sort(key=lambda t: t.value, reverse=self.maximize)
        out = [(REFERENCE, {})]
        for t in done[:top]:
            out.append((f"trial_{t.number:04d}", self.values_of(t.params)))
        return out

    def values_of(self, params: dict[str, Any]) -> dict[str, Any]:
        by_key = {p.key: p for p in self.space.params}
        return {k: by_key[k].value_of(v) for k, v in params.items()}

    def reseed(self, candidates: list[tuple[str, dict[str, Any]]], seeds: int) -> dict[str, dict[str, Any]]:
        """Each candidate over ``seeds`` seeds (resumable, run by run): mean and std of the metric and of every
        number in the runs' summaries (test figures included)."""
        out = {}
        for name, values in candidates:
            runs = []
            for s in range(seeds):
                folder = self.study_dir / "seeds" / f"{name}_seed{s}"
                res = self.train(folder, {**values, "train.seed": s}, f"{name}, seed {s}")
                runs.append(res)
            bests = [r.best(self.maximize) for r in runs if r.best(self.maximize) is not None]
            out[name] = {"values": values, "metric": _mean_std(bests), "per_seed": bests,
                         "summary": _summary_stats([r.summary for r in runs])}  # fmt: skip
        return out


def _mean_std(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def _summary_stats(summaries: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean / std of every numeric leaf the runs' summary.json files share (e.g. ``test.top1``)."""
    flat = [_flatten(s) for s in summaries if s]
    if not flat:
        return {}
    keys = set.intersection(*(set(f) for f in flat))
    return {k: _mean_std([f[k] for f in flat]) for k in sorted(keys)}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def winner(search: Search, study: Any, reseeded: dict[str, dict[str, Any]] | None) -> tuple[str, dict[str, Any]]:
    """The recipe to ship: the best mean over seeds when re-run, else the study's best trial."""
    if reseeded:
        scored = [(n, r) for n, r in reseeded.items() if r["metric"]["mean"] is not None]
        name, res = (max if search.maximize else min)(scored, key=lambda nr: nr[1]["metric"]["mean"])
        return name, res["values"]
    best = study.best_trial
    return f"trial_{best.number:04d}", search.values_of(best.params)


def save_results(search: Search, study: Any, reseeded: dict[str, Any] | None, win: tuple[str, dict]) -> Path:
    from optuna.trial import TrialState

    trials = [
        {"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
         "values": search.values_of(t.params),
         "intermediate": sorted(t.intermediate_values.items()), "run_dir": t.user_attrs.get("run_dir")}
        for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    ]  # fmt: skip
    out = {"config": str(search.config_path), "space": str(search.space.path), "metric": search.metric,
           "direction": search.direction, "trials": trials, "seeds": reseeded, "winner": win[0],
           "winner_values": win[1]}  # fmt: skip
    path = search.study_dir / "results.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1, default=str))
    tmp.replace(path)
    return path
