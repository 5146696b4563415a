"""Every shipped config loads, and tools/show_lr.py runs end to end on the default one."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipes.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
def test_config_loads_and_says_what_it_does(path):
    import warnings

    from recipes.train.config import check_config

    cfg = load_config(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_config(cfg)  # every section and train.* key of a shipped config is read by something
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


def test_old_recipe_section_is_a_clear_error(tmp_path):
    cfg = tmp_path / "old.py"
    cfg.write_text('model = dict(type="timm")\nrecipe = dict(type="flat", lr=1e-3)\nschedule = dict(type="constant")\n')
    with pytest.raises(KeyError, match="now called `strategy`"):
        load_config(cfg)
