"""A recipe search's summary (experiments/NAME/tune.json): imported from a study folder, rendered in the docs,
refused when the study tuned another config, flagged when the experiment's config changed since."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recipes.train.errors import BadInput
from tools.baselines import docs as D
from tools.baselines import experiments as B
from tools.baselines.tune_summary import import_tune, render
from tools.reproduce import main

ROOT = Path(__file__).resolve().parents[1]
NAME = "dinov2_cifar10"
CONFIG = "configs/classification/dinov2_s14_cifar10_layer_decay_cpu.py"


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    (tmp_path / "experiments" / NAME / "tune.json").unlink(missing_ok=True)
    monkeypatch.setattr(B, "EXPERIMENTS", tmp_path / "experiments")
    monkeypatch.setattr(D, "DOCS", tmp_path / "docs" / "baselines.md")
    monkeypatch.setattr(D, "FIGURES", tmp_path / "docs" / "baselines")
    return tmp_path


def _stat(mean, std):
    return {"mean": mean, "std": std, "n": 3}


def _study(root: Path, options: str = "data_root=/data/cifar10 model.pretrained=/w/dinov2") -> Path:
    """A study folder as tools/tune.py leaves it: results.json and report.md's command line."""
    study = root / "study"
    study.mkdir()
    trial = {"strategy.lr": 0.004, "policy": {"type": "lora_only", "r": 8}}
    results = {
        "config": CONFIG,
        "space": "configs/tune/dinov2_cifar10.py",
        "metric": "top1",
        "direction": "maximize",
        "trials": [
            {"number": 0, "state": "COMPLETE", "value": 70.0, "params": {"strategy.lr": 0.001, "policy": "full"}},
            {"number": 1, "state": "COMPLETE", "value": 80.0, "params": {"strategy.lr": 0.004, "policy": "lora_r8"}},
            {"number": 2, "state": "PRUNED", "value": None, "params": {"strategy.lr": 0.0002, "policy": "full"}},
        ],
        "seeds": {
            "reference": {"metric": _stat(73.0, 3.5), "summary": {"test.top1": _stat(71.5, 5.5)}},
            "trial_0001": {
                "metric": _stat(78.0, 1.0),
                "summary": {"test.top1": _stat(75.25, 1.25), "test.nll": _stat(0.8, 0.05)},
            },
        },
        "winner": "trial_0001",
        "winner_values": trial,
    }
    (study / "results.json").write_text(json.dumps(results))
    command = (
        f"python tools/tune.py {CONFIG} --space x.py --trials 3 --seeds 3 --study-dir {study} --cfg-options {options}"
    )
    (study / "report.md").write_text(f"# Recipe search\n\nCommand: `{command}`\n")
    return study


def test_a_study_renders_as_a_baseline_section(sandbox):
    out = import_tune(NAME, _study(sandbox))
    summary = json.loads(out.read_text())
    assert summary["trials"] == {"complete": 2, "pruned": 1} and summary["winner"] == "trial_0001"
    assert "'data_root={cifar10}' 'model.pretrained={dinov2}'" in summary["command"]  # no machine path
    assert "/data/cifar10" not in out.read_text() and "--study-dir DIR" in summary["command"]
    lines = render(B.load_experiment(NAME))
    text = "\n".join(lines)
    assert "Trials: 2 complete, 1 pruned. Winner: trial_0001: `policy` = dict(type=lora_only, r=8)" in text
    assert "| reference (`full_layer_decay` as shipped) | 3 | 73.00 ± 3.50 | 71.50 ± 5.50 | - | - |" in lines
    assert "| winner (trial_0001) | 3 | 78.00 ± 1.00 | 75.25 ± 1.25 | 0.800 ± 0.050 | - |" in lines
    assert "The winner beats the reference config by more than the seed spread: mean gap 5" in text


@pytest.mark.slow
def test_the_generated_docs_hold_the_search_section(sandbox):
    """docs/baselines.md regenerated (every baseline's tables and plots, ~25 s on 2 cores) carries the section."""
    import_tune(NAME, _study(sandbox))
    doc = D.write_docs().read_text()
    section = doc.split(f"## {NAME}:")[1].split("\n## ")[0]
    assert "### Recipe search (`tools/tune.py`)" in section and "| winner (trial_0001) | 3 | 78.00 ± 1.00 |" in section


def test_a_study_of_another_config_is_refused(sandbox, capsys):
    study = _study(sandbox, "data_root=/d model.pretrained=/w train.epochs=5")
    with pytest.raises(BadInput, match=r"tuned .*_cpu.py with \{'train.epochs': 5\} .*not the config of method"):
        import_tune(NAME, study)
    assert main([NAME, "--import-tune", str(study)]) == 2 and "error:" in capsys.readouterr().err
    assert not (sandbox / "experiments" / NAME / "tune.json").exists()


def test_a_summary_is_flagged_once_the_experiment_changes(sandbox, monkeypatch):
    import_tune(NAME, _study(sandbox))
    exp = B.load_experiment(NAME)
    assert any(line.startswith("| winner") for line in render(exp))
    exp["sizes"]["cpu"]["train.epochs"] = 5  # the experiment's recipe moved on; the study did not
    lines = render(exp)
    assert not any(line.startswith("| winner") for line in lines)
    assert any(line.startswith("Left out: `tune.json` was made with another config") for line in lines)
