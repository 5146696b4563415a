"""Every shipped config loads, and tools/show_lr.py runs end to end on the default one."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipes.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads_and_says_what_it_does(path):
    cfg = load_config(path)
    assert {"model", "recipe", "schedule"} <= set(cfg.keys())
    first = path.read_text().lstrip().splitlines()[0]
    assert first.startswith("#"), f"{path.name}: a config starts with a comment saying what it trains"


def test_show_lr_default(tmp_path, capsys):
    from tools.show_lr import main

    assert main([str(ROOT / "configs" / "default.py"), "--out-dir", str(tmp_path), "--csv"]) == 0
    out = capsys.readouterr().out
    assert "[default] groups=" in out and "coverage: " in out
    assert (tmp_path / "lr_schedule.png").stat().st_size > 10_000
    rows = (tmp_path / "lr_schedule.csv").read_text().splitlines()
    assert rows[0].startswith("step,base_lr,") and len(rows) > 10


def test_missing_config_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="does not exist; the shipped ones are in configs/"):
        load_config(ROOT / "configs" / "nope.py")
