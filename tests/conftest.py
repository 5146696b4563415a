"""Shared test helpers: the ../shared data folder (tests skip cleanly without it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ZOO_SHARED_DATA", ROOT.parent / "shared" / "data"))  # env: another checkout
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` or a skip that says why."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs {SHARED_DATA} (the project's shared data folder); not present here")
    return SHARED_DATA


def _all_registries() -> list:
    from recipes.registry import ADAPTERS, SCHEDULES, STRATEGIES
    from recipes.train.registry import DATASETS, MODELS, OPTIMIZERS, TASKS

    return [ADAPTERS, STRATEGIES, SCHEDULES, MODELS, DATASETS, TASKS, OPTIMIZERS]


@pytest.fixture
def registries():
    """Every global registry, restored after the test: a test may register into them freely.

    The lazy imports run first, so what they register stays (their modules are imported once per process).
    """
    regs = _all_registries()
    saved = []
    for reg in regs:
        reg.import_from_location()
        saved.append(dict(reg._module_dict))
    yield regs
    for reg, entries in zip(regs, saved, strict=True):
        reg._module_dict.clear()
        reg._module_dict.update(entries)
