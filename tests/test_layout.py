"""The library core (``recipes/`` outside ``train/`` and ``integrations/``) stands alone.

It imports nothing from the training framework or the integrations, and names no architecture:
everything architecture-specific lives in ``zoo/`` (adapters) or ``recipes/train/models/``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = sorted(p for p in (ROOT / "recipes").glob("*.py"))
# Architecture / upstream-package names that belong in zoo/ or recipes/train/models/, never in the core.
ARCHITECTURES = re.compile(
    r"\b(vit|deit|beit|eva|dinov2|swin|convnext|resnet|efficientnet|rfdetr|rf-detr|lwdetr|videomae|flux|"
    r"unet|sdxl|sd3|wan|ltx|qwen|pixart|sana|chroma|hunyuan|zimage|llama|bert)\b",
    re.IGNORECASE,
)


def _imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
    return mods


@pytest.mark.parametrize("path", CORE, ids=[p.name for p in CORE])
def test_core_imports_neither_train_nor_integrations(path):
    bad = {m for m in _imports(path) if m.startswith(("recipes.train", "recipes.integrations"))}
    assert not bad, f"{path.name} imports {sorted(bad)}: the core must not depend on the training framework"


@pytest.mark.parametrize("path", CORE, ids=[p.name for p in CORE])
def test_core_names_no_architecture(path):
    code = []  # identifiers and string literals, not comments and docstrings about conventions
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            code.append(node.id)
        elif isinstance(node, ast.Attribute):
            code.append(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            code.append(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            code.append(node.value)
    docstrings = {
        ast.get_docstring(n, clean=False)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
    }
    hits = sorted({m.group(0) for text in code if text not in docstrings for m in ARCHITECTURES.finditer(text)})
    assert not hits, f"{path.name} names architectures {hits}: move that knowledge to zoo/ or recipes/train/models/"


def test_importing_the_core_loads_no_training_module():
    code = (
        "import sys, recipes; from recipes import build_param_groups, build_schedule; "
        "bad = sorted(m for m in sys.modules if m.startswith(('recipes.train', 'recipes.integrations', "
        "'albumentations', 'tensorboard', 'sklearn', 'rfdetr'))); print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
