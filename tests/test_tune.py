"""tools/tune.py: spaces checked before any trial, trials as real training runs, pruning, resume, parallel workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipes.param_groups import build_strategy
from recipes.train.config import load_config
from recipes.train.tune.check import check_space
from recipes.train.tune.space import SpaceError, load_space
from recipes.train.tune.study import eval_curve, run_training, write_config

ROOT = Path(__file__).resolve().parents[1]
TUNE = ROOT / "tools" / "tune.py"
TRAIN = [sys.executable, str(ROOT / "tools" / "train.py")]
DEFAULT = ROOT / "configs" / "default.py"
# digits at test size: 1,257 images / 256 = 4 steps an epoch, 2 epochs, an evaluation after each
TINY = ["train.epochs=2", "train.batch_size=256", "schedule.warmup_epochs=0", "train.num_threads=1"]
SHIPPED = [
    ("configs/default.py", "digits_vit"),
    ("configs/classification/dinov2_s14_cifar10_layer_decay.py", "dinov2_cifar10"),
    ("configs/detection/rfdetr_nano_raccoon_dinov2.py", "rfdetr_raccoon"),
    ("configs/tracking/videomae_dinov2_cpu.py", "videomae_tracking"),
    ("configs/diffusion/sd15_lora.py", "sd15_lora"),
]


def _space(tmp_path: Path, body: str, name: str = "space.py") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


@pytest.mark.parametrize(("config", "space"), SHIPPED, ids=[s for _, s in SHIPPED])
def test_shipped_spaces_check_against_their_configs(config: str, space: str) -> None:
    metric, direction = check_space(load_config(ROOT / config), load_space(ROOT / "configs" / "tune" / f"{space}.py"))
    assert direction == ("minimize" if metric == "loss" else "maximize")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('params = {"strategy.lrr": dict(type="log_uniform", low=1e-4, high=1e-2)}', "did you mean 'strategy.lr'"),
        ('params = {"strategy.decay": dict(type="uniform", low=0.5, high=1.5)}', "decay must lie in (0, 1], got 1.5"),
        ('params = {"strategy.lr": dict(type="uniform", low=-1e-3, high=1e-3)}', ">= 0"),
        ('params = {"strategy.lr": dict(type="log_uniform", low=0, high=1e-3)}', "needs low > 0"),
        ('params = {"train.epochz": dict(type="int", low=1, high=3)}', "did you mean 'train.epochs'"),
        ('params = {"policy": dict(type="choice", choices=dict(a=dict(type="lora_everything"), b=None))}',
         "policy.type must be one of"),
        ('metric = "accuracy"\nparams = {"strategy.lr": dict(type="log_uniform", low=1e-4, high=1e-2)}',
         "not reported by the 'classification' task"),
        ('metric = "nll"\nparams = {"strategy.lr": dict(type="log_uniform", low=1e-4, high=1e-2)}', "set direction="),
        ('paramz = {}\nparams = {"strategy.lr": dict(type="log_uniform", low=1e-4, high=1e-2)}',
         "did you mean 'params'"),
        ('params = {"strategy.lr": dict(type="choice", choices=[1e-3])}', "at least two choices"),
    ],
)  # fmt: skip
def test_a_bad_space_is_named_before_any_trial(tmp_path: Path, body: str, says: str) -> None:
    with pytest.raises((SpaceError, KeyError)) as e:
        check_space(load_config(DEFAULT), load_space(_space(tmp_path, body)))
    assert says in str(e.value.args[0])


def test_the_cli_stops_on_a_bad_space_with_one_line_and_runs_nothing(tmp_path: Path) -> None:
    space = _space(tmp_path, 'params = {"strategy.decay": dict(type="uniform", low=0.5, high=1.2)}')
    study = tmp_path / "study"
    r = subprocess.run([sys.executable, str(TUNE), str(DEFAULT), "--space", str(space), "--trials", "2",
                        "--study-dir", str(study)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "strategy.decay" in lines[0] and "1.2" in lines[0]
    assert not study.exists()


def test_a_trial_config_runs_as_is_and_its_values_act(tmp_path: Path) -> None:
    """The written config is an ordinary config on top of the tuned one: nested keys merge, a chosen section
    replaces the base's whole section, ``None`` removes it; the values reach the built strategy."""
    values = {"strategy.lr": 2e-3, "strategy.component_scale.head": 4.0, "train.epochs": 3,
              "policy": {"type": "lora_only", "r": 4}}  # fmt: skip
    path = write_config(tmp_path / "t" / "config.py", DEFAULT, values, "a test trial", load_config(DEFAULT))
    cfg = load_config(path)
    assert cfg.strategy.lr == 2e-3 and cfg.strategy.decay == 0.75  # merged over the base's strategy
    assert dict(cfg.strategy.component_scale) == {"head": 4.0} and cfg.train.epochs == 3 and cfg.train.seed == 0
    assert dict(cfg.policy) == {"type": "lora_only", "r": 4}
    s = build_strategy(cfg.strategy)
    assert s.component_scale == {"head": 4.0} and s.lr == 2e-3
    base_policy = tmp_path / "with_policy.py"
    base_policy.write_text(f'_base_ = ["{DEFAULT}"]\npolicy = dict(type="norm_only")\n')
    other = {"policy": {"type": "lora_only", "r": 2}}
    replaced = write_config(tmp_path / "u" / "config.py", base_policy, other, "x", load_config(base_policy))
    assert dict(load_config(replaced).policy) == {"type": "lora_only", "r": 2}  # not merged into norm_only
    removed = write_config(tmp_path / "v" / "config.py", base_policy, {"policy": None}, "x", load_config(base_policy))
    assert load_config(removed).policy is None


@pytest.mark.slow
def test_pruning_stops_the_run_at_a_checkpoint(tmp_path: Path) -> None:
    """A pruned trial's run gets one SIGTERM at its first evaluation: it checkpoints and exits 3."""
    cfg = write_config(tmp_path / "t" / "config.py", DEFAULT, {"train.epochs": 3, "train.batch_size": 256,
                       "schedule.warmup_epochs": 0, "train.num_threads": 1}, "pruned")  # fmt: skip
    seen: list[tuple[int, float]] = []
    res = run_training(TRAIN, cfg, tmp_path / "t" / "run", "top1", lambda s, v: seen.append((s, v)) or True)
    assert res.code == 3 and len(seen) == 1 and seen[0][0] == 4
    assert len(res.curve) < 3 and (tmp_path / "t" / "run" / "checkpoints" / "last").exists()
    assert not (tmp_path / "t" / "run" / "summary.json").exists()


def _tune(tmp_path: Path, space: Path, *extra: str, options: tuple[str, ...] = (), **kw) -> subprocess.Popen:
    cmd = [sys.executable, str(TUNE), str(DEFAULT), "--space", str(space), "--study-dir", str(tmp_path / "study"),
           *extra, "--cfg-options", *TINY, *options]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


SPACE = """
sampler = dict(type="random", seed=0)
pruner = dict(type="none")
params = {
    "strategy.lr": dict(type="log_uniform", low=5e-4, high=3e-3),
    "strategy.decay": dict(type="uniform", low=0.6, high=1.0),
    "policy": dict(type="choice", choices=dict(full=None, norm_only=dict(type="norm_only"))),
}
"""


@pytest.mark.slow
def test_search_writes_a_best_config_a_report_and_seed_reruns(tmp_path: Path) -> None:
    p = _tune(tmp_path, _space(tmp_path, SPACE), "--trials", "3", "--seeds", "2", "--top", "1")
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out
    study = tmp_path / "study"
    results = json.loads((study / "results.json").read_text())
    assert [t["state"] for t in results["trials"]] == ["COMPLETE"] * 3
    assert len(results["seeds"]) == 2 and "reference" in results["seeds"]  # the reference and the --top 1 trial
    for r in results["seeds"].values():
        assert r["metric"]["n"] == 2 and "test.top1" in r["summary"]
    # seed 0 and seed 1 of one recipe are different runs
    runs = sorted((study / "seeds").glob("reference_seed*/run"))
    losses = [json.loads((r / "summary.json").read_text())["final_loss"] for r in runs]
    assert len(runs) == 2 and losses[0] != losses[1] and eval_curve(runs[0], "top1")
    best = load_config(study / "best_config.py")
    assert best.train.epochs == 2  # the --cfg-options are part of the written recipe
    for key, value in results["winner_values"].items():
        section, *rest = key.split(".")
        got = best.get(section)
        for k in rest:
            got = got[k]
        assert got == value or (value is None and not got)
    report = (study / "report.md").read_text()
    assert "history.png" in report and (study / "history.png").stat().st_size > 0
    assert "Over seeds" in report and ("beats" in report or "keep the shipped recipe" in report)


def _tune_until_first_checkpoint(tmp_path: Path) -> tuple[Path, tuple[str, ...], subprocess.Popen]:
    """A 2-trial search in its own session, returned once trial 0's run has saved a checkpoint (mid-run)."""
    space = _space(tmp_path, SPACE)
    longer = ("train.epochs=8", "train.ckpt_every=2")  # 32 steps: a signal lands mid-run, after a checkpoint
    p = _tune(tmp_path, space, "--trials", "2", "--no-reference", options=longer, start_new_session=True)
    ckpt = tmp_path / "study" / "trials" / "0000" / "run" / "checkpoints" / "last"
    deadline = time.time() + 600
    while not ckpt.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert ckpt.exists(), p.communicate()[0]
    return space, longer, p


@pytest.mark.slow
def test_ctrl_c_keeps_the_study_and_the_interrupted_trial_resumes_its_checkpoint(tmp_path: Path) -> None:
    space, longer, p = _tune_until_first_checkpoint(tmp_path)
    os.killpg(p.pid, signal.SIGINT)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 3, out
    p2 = _tune(tmp_path, space, "--trials", "2", "--no-reference", options=longer)
    out2, _ = p2.communicate(timeout=900)
    assert p2.returncode == 0, out2
    results = json.loads((tmp_path / "study" / "results.json").read_text())
    done = [t for t in results["trials"] if t["state"] == "COMPLETE"]
    resumed = [t for t in done if t["run_dir"].endswith("0000")]
    assert len(done) == 2 and len(resumed) == 1 and resumed[0]["number"] != 0
    log = (tmp_path / "study" / "trials" / "0000" / "run.log").read_text()
    assert "[resume]" in log and "interrupted" in log
    steps = [ln.split(",")[0] for ln in (tmp_path / "study/trials/0000/run/train_log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps), key=int)  # every step once: the run continued, it did not restart


@pytest.mark.slow
def test_a_trial_run_stopped_from_outside_is_requeued_not_pruned(tmp_path: Path) -> None:
    """A signal to the trial's run alone (a scheduler, ``kill``): the run checkpoints and exits 3, which the search
    did not ask for, so the trial goes back to the queue and the search stops as on Ctrl-C (it used to be
    recorded as pruned, with the run's partial curve)."""
    _, _, p = _tune_until_first_checkpoint(tmp_path)
    run = [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and _cmdline(d).count("trials/0000/run")]
    assert len(run) == 1
    os.kill(run[0], signal.SIGTERM)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 3, out
    import optuna

    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert "PRUNED" not in states and "WAITING" in states, states


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
def test_two_processes_share_one_study(tmp_path: Path) -> None:
    space = _space(tmp_path, SPACE)
    procs = [_tune(tmp_path, space, "--trials", "3", "--no-reference") for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = json.loads((tmp_path / "study" / "results.json").read_text())
    done = [t for t in results["trials"] if t["state"] == "COMPLETE"]
    assert 3 <= len(done) <= 4  # the budget is the study's: a worker may finish one trial it had started
    assert len({t["run_dir"] for t in done}) == len(done)
