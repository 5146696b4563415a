"""docs/architecture.md's registry table lists every registered name, and nothing that is not registered."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _doc_rows() -> dict[str, set[str]]:
    """``{registry: names}`` from the table under "## Registries" (backticked words without a slash)."""
    text = (ROOT / "docs" / "architecture.md").read_text().split("## Registries", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = set(re.findall(r"`([A-Za-z0-9_]+)`", cells[2]))
    return rows


def _registries() -> dict[str, object]:
    from recipes import registry as core
    from recipes.train import registry as train

    for package in ("recipes", "zoo", "recipes.train.data", "recipes.train.tasks", "recipes.train.models"):
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__):
            if not info.ispkg:
                importlib.import_module(f"{package}.{info.name}")
    names = ("ADAPTERS", "STRATEGIES", "SCHEDULES")
    return {n: getattr(core, n) for n in names} | {n: getattr(train, n) for n in ("MODELS", "DATASETS", "TASKS")}


@pytest.mark.parametrize("name", ["ADAPTERS", "STRATEGIES", "SCHEDULES", "MODELS", "DATASETS", "TASKS"])
def test_registry_table_lists_every_registered_name(name):
    rows = _doc_rows()
    assert name in rows, f"docs/architecture.md has no row for {name}"
    registered = set(_registries()[name].module_dict)
    assert rows[name] == registered, (
        f"docs/architecture.md, {name}: missing {sorted(registered - rows[name])}, "
        f"not registered {sorted(rows[name] - registered)}"
    )
