"""Every shipped config loads, and tools/show_lr.py runs end to end on the default one."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipes.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
def test_config_loads_and_says_what_it_does(path):
    from recipes.train.config import check_config
    from recipes.train.registry import TASKS
    from recipes.train.tasks.base import task_options

    cfg = load_config(path)
    check_config(cfg)  # every section and train.* key of a shipped config is read by something
    task = dict(cfg.get("task") or {})
    known = task_options(TASKS.lookup(task.pop("type", "classification")))
    assert set(task) <= known, f"{path.name}: task options {set(task) - known} are not declared by the task"
    first = path.read_text().lstrip().splitlines()[0]
    assert first.startswith("#"), f"{path.name}: a config starts with a comment saying what it trains"


TINY = ["model.depth=1", "model.embed_dim=12", "model.num_heads=1", "data.train.holdout=0.9", "data.train.part=main"]


@pytest.mark.parametrize(
    "option, message",
    [
        (
            "task.label_smooting=0.3",
            r"`task.label_smooting` is not read by anything \(did you mean 'label_smoothing'\?\)",
        ),
        ("data.train.holdut=0.5", r"`data.train.holdut` is not read by anything \(did you mean 'holdout'\?\)"),
        ("data.tset.type=digits", r"`data.tset` is not read by anything \(did you mean 'test'\?\)"),
        ("train.epochz=3", r"`train.epochz` is not read by anything \(did you mean 'epochs'\?\)"),
        ("train.drop_last=False", r"`train.drop_last`: the engine always drops each rank's last partial batch"),
        ("trian.epochs=3", r"`trian` is not read by anything \(did you mean 'train'\?\)"),
        ("model.dept=3", r"`model.dept` is not read by anything"),
        ("optimizer.betaz=[0.9,0.99]", r"`optimizer.betaz` is not read by anything \(did you mean 'betas'\?\)"),
        ("optimizer.lr=0.1", r"`optimizer.lr` would be ignored"),
        ("strategy.decy=0.5", r"unknown keys \['decy'\]"),
        ("schedule.warmup_epochz=1", r"warmup_epochz"),
        ("policy.type=full", None),  # a valid policy: no error
        ("policy.type=full policy.rr=4", r"policy: unknown keys \['rr'\]"),
        ("train.freeze.param=blocks", r"`train.freeze.param` is not read by anything \(did you mean 'params'\?\)"),
        ("train.save_frozen=sometimes", r"train.save_frozen must be 'auto', True or False"),
        ("train.steps_per_epoch=5", r"train.steps_per_epoch=5 but the training data gives 3 per epoch"),
        ("train.epochs=2.5", r"train.epochs must be a whole number >= 1, got 2.5"),
        ("task.type=detection", r"`task.label_smoothing` is not read by anything; known: expanded_scales"),
    ],
)
def test_every_key_nothing_reads_is_an_error_naming_it(option, message):
    """Unknown keys are errors in every section (the README says so), with the nearest known key."""
    from recipes.train.build import prepare_run

    cfg = load_config(ROOT / "configs" / "default.py", [*TINY, *option.split()])
    if message is None:
        prepare_run(cfg)
        return
    with pytest.raises((KeyError, ValueError, TypeError), match=message):
        prepare_run(cfg)


def test_show_lr_default_shows_the_model_train_py_trains(tmp_path, capsys):
    """The default config trains 10 digit classes: show_lr builds that head (it printed a 1000-class one)."""
    from tools.show_lr import main

    assert main([str(ROOT / "configs" / "default.py"), "--out-dir", str(tmp_path), "--csv"]) == 0
    out = capsys.readouterr().out
    assert "[default] groups=" in out and "coverage: " in out
    head = [line.split() for line in out.splitlines() if line.strip().startswith("head.")]
    assert sorted(t for row in head for t in row if t.startswith("params=")) == [
        "params=10",
        "params=960",
    ]  # 96 x 10 weights, 10 biases
    assert (tmp_path / "lr_schedule.png").stat().st_size > 10_000
    rows = (tmp_path / "lr_schedule.csv").read_text().splitlines()
    assert rows[0].startswith("step,base_lr,") and len(rows) > 10


def test_missing_config_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="does not exist; the shipped ones are in configs/"):
        load_config(ROOT / "configs" / "nope.py")


def test_old_recipe_section_is_a_clear_error(tmp_path):
    cfg = tmp_path / "old.py"
    cfg.write_text('model = dict(type="timm")\nrecipe = dict(type="flat", lr=1e-3)\nschedule = dict(type="constant")\n')
    with pytest.raises(KeyError, match="now called `strategy`"):
        load_config(cfg)
