"""Running a search: an Optuna study whose trials are ordinary ``tools/train.py`` runs.

Each trial writes a config file on top of the tuned one (``_base_`` + the trial's values) and trains it in its
own work dir, as a user would, so the same checks, engine and exact resume apply. The trial reads the run's
``eval_log.jsonl`` while it trains, reports each evaluation to the pruner, and stops a pruned run with SIGTERM
(the run saves a checkpoint, exit 3). The study lives in ``<study-dir>/study.db`` (SQLite) or a database URL, so:

- Ctrl-C (or a crash) keeps every finished trial; the interrupted one is queued again with its work dir, and the
  next ``tools/tune.py`` resumes its checkpoint exactly (a crashed process's trial is found by Optuna's heartbeat).
- several processes, or machines sharing a database URL, run trials of one study; ``--trials`` is the study's total.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from pprint import pformat
from typing import Any

from recipes.train.tune.space import Space, nested

log = logging.getLogger("recipes.tune")
EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 3


class TrialBadInput(Exception):
    """A trial's run stopped on bad input (exit 2): the whole search stops, with the run's own error line."""


@dataclass
class RunResult:
    """One finished run: its exit code, each evaluation's metric, and its summary.json (if it finished)."""

    code: int
    curve: list[tuple[int, float]]
    summary: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False  # this process stopped it (pruned); exit 3 without it: interrupted from outside

    def best(self, maximize: bool) -> float | None:
        values = [v for _, v in self.curve]
        if not values:
            return None
        return max(values) if maximize else min(values)


def write_config(path: Path, base: Path, values: dict[str, Any], header: str, base_cfg: Any = None) -> Path:
    """A config file ``tools/train.py`` runs as is: ``_base_`` = the tuned config (``base_cfg``, loaded), then
    the values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rel = Path(_relpath(base.resolve(), path.parent.resolve()))
    lines = [f"# {ln}" if ln else "#" for ln in header.splitlines()]
    lines.append(f"_base_ = [{str(rel)!r}]")
    for section, value in nested(values, base_cfg).items():
        lines.append(f"{section} = {pformat(value, width=100, sort_dicts=False)}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def _relpath(target: Path, start: Path) -> str:
    import os

    return os.path.relpath(target, start)


def eval_curve(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    """``(step, value)`` of ``metric`` at each validation of a run so far (``eval_log.jsonl``)."""
    path = run_dir / "eval_log.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # the line being written
            continue
        if row.get("split", "val") == "val" and isinstance(row.get(metric), (int, float)):
            out.append((int(row["step"]), float(row[metric])))
    return out


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "last").exists()


def run_training(
    train_cmd: Sequence[str],
    config: Path,
    run_dir: Path,
    metric: str,
    on_eval: Callable[[int, float], bool] | None = None,
    poll_s: float = 1.0,
) -> RunResult:
    """Train ``config`` into ``run_dir`` (resuming its checkpoint if it has one); ``on_eval(step, value)``
    returning True stops the run (SIGTERM: it checkpoints and exits 3). The run's output goes to
    ``run_dir.parent / (run_dir.name + '.log')``."""
    if (run_dir / "summary.json").is_file():  # finished earlier (a resumed search): read, do not retrain
        return RunResult(0, eval_curve(run_dir, metric), json.loads((run_dir / "summary.json").read_text()))
    cmd = [*train_cmd, str(config), "--work-dir", str(run_dir)]
    if has_checkpoint(run_dir):
        cmd.append("--resume")
    log_path = run_dir.parent / f"{run_dir.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    seen = 0
    with open(log_path, "a") as out:
        # its own session: a Ctrl-C reaches this process only, which passes exactly one SIGTERM on (a second
        # signal would stop the run without its step-boundary checkpoint)
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        stopped = False
        try:
            while True:
                code = proc.poll()
                curve = eval_curve(run_dir, metric)
                for step, value in curve[seen:]:
                    if on_eval is not None and not stopped and on_eval(step, value):
                        proc.send_signal(signal.SIGTERM)
                        stopped = True
                seen = len(curve)
                if code is not None:
                    break
                time.sleep(poll_s)
        except BaseException:  # Ctrl-C or a crash here: the run checkpoints at its step boundary and stops
            try:
                if proc.poll() is None and not stopped:
                    proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=600)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
            raise
    summary = run_dir / "summary.json"
    res = RunResult(code, eval_curve(run_dir, metric), json.loads(summary.read_text()) if summary.is_file() else {},
                    stopped)  # fmt: skip
    if code == EXIT_BAD_INPUT:
        lines = [ln for ln in log_path.read_text().splitlines() if ln.startswith("error:")]
        why = lines[-1][len("error:") :].strip() if lines else "the run stopped on bad input"
        raise TrialBadInput(f"{why} (run log: {log_path})")
    return res


def make_study(space: Space, study_dir: Path, name: str, direction: str, storage: str | None) -> Any:
    """The Optuna study: TPE or random sampler, median / successive-halving / no pruner, RDB storage with a
    heartbeat (a trial whose process died is failed and queued again with its work dir)."""
    import optuna
    from optuna.storages import RDBStorage

    study_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    # SQLite: wait for another worker's write instead of failing with "database is locked"
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    for attempt in range(5):  # two workers creating the schema at once: one of them retries
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna 5
                warnings.simplefilter("ignore")
                rdb = RDBStorage(url, engine_kwargs=engine, heartbeat_interval=30, grace_period=120,
                                 heartbeat_stale_trial_callback=_requeue_crashed)  # fmt: skip
            break
        except Exception:  # sqlalchemy's OperationalError / IntegrityError of the losing worker
            if attempt == 4:
                raise
            time.sleep(1.0 + attempt)
    s = dict(space.sampler)
    kind = s.pop("type")
    sampler = optuna.samplers.TPESampler(**s) if kind == "tpe" else optuna.samplers.RandomSampler(**s)
    p = dict(space.pruner)
    kind = p.pop("type")
    pruner = {
        "median": lambda: optuna.pruners.MedianPruner(**p),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(**p),
        "none": lambda: optuna.pruners.NopPruner(),
    }[kind]()
    return optuna.create_study(
        study_name=name, storage=rdb, sampler=sampler, pruner=pruner, direction=direction, load_if_exists=True
    )


def _requeue_crashed(study: Any, trial: Any) -> None:
    """Optuna's heartbeat found a trial whose process died: run it again from its work dir's checkpoint."""
    requeue(study, trial.params, trial.user_attrs.get("run_dir"), trial.number)


def requeue(study: Any, params: dict[str, Any], run_dir: str | None, number: int) -> None:
    study.enqueue_trial(params, user_attrs={"run_dir": run_dir, "resumes_trial": number}, skip_if_exists=False)
    log.info(f"[tune] trial {number} queued again; it resumes from {run_dir}")


def finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def value_maximized(direction: str) -> bool:
    return direction == "maximize"


def header(what: str, values: dict[str, Any]) -> str:
    shown = "\n".join(f"  {k} = {v!r}" for k, v in values.items())
    return f"Written by tools/tune.py: {what}.\n{shown}" if shown else f"Written by tools/tune.py: {what}."
