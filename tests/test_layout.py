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


# Block / layer names of architectures (as regexes and names in tables): zoo/ holds them, never the core.
BLOCK_NAMES = re.compile(
    r"transformer_blocks|single_transformer_blocks|double_blocks|single_blocks|down_blocks|up_blocks|mid_block"
    r"|input_blocks|output_blocks|middle_block|encoder\\?\.layer|(?:^|[^\w])(?:blocks|layers|stages|h)\\?\."
    r"|\b(?:IN|OUT)\d\d\b|\bMID\d?\b"
)


def _code_strings(path: Path) -> list[str]:
    """Identifiers and string literals of ``path``; docstrings and comments are prose, left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        ast.get_docstring(n, clean=False)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
    }
    code = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            code.append(node.id)
        elif isinstance(node, ast.Attribute):
            code.append(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            code.append(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value not in docstrings:
            code.append(node.value)
    return code


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
    hits = sorted({m.group(0) for text in _code_strings(path) for m in ARCHITECTURES.finditer(text)})
    assert not hits, f"{path.name} names architectures {hits}: move that knowledge to zoo/ or recipes/train/models/"


@pytest.mark.parametrize("path", CORE, ids=[p.name for p in CORE])
def test_core_holds_no_block_names(path):
    hits = sorted({m.group(0) for text in _code_strings(path) for m in BLOCK_NAMES.finditer(text)})
    assert not hits, f"{path.name} holds block names {hits}: an architecture's names belong in its zoo/ adapter"


@pytest.mark.parametrize(
    "text,hit",
    [
        (r"^transformer_blocks\.(\d+)\.", True),
        (r"^(?:down_blocks|mid_block|up_blocks)\.", True),
        (r"^blocks\.(\d+)\.", True),
        ("model.layers.0.mlp", True),
        (r"encoder\.layer\.(\d+)", True),
        ("IN05", True),
        ("MID", True),
        ("blocks", False),  # a word, not a name inside a model
        ("num_blocks", False),
        ("lora_blocks", False),
        ("the layer's id", False),
    ],
)
def test_block_name_rule(text, hit):
    assert bool(BLOCK_NAMES.search(text)) is hit


def test_importing_the_core_loads_no_training_module():
    code = (
        "import sys, recipes; from recipes import build_param_groups, build_schedule; "
        "bad = sorted(m for m in sys.modules if m.startswith(('recipes.train', 'recipes.integrations', "
        "'albumentations', 'tensorboard', 'sklearn', 'rfdetr'))); print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


LIBRARY = sorted([*(ROOT / "recipes").rglob("*.py"), *(ROOT / "zoo").rglob("*.py")])


def _process_state_writes(path: Path) -> list[str]:
    """``os.environ`` / ``sys.path`` changed (assigned, deleted, or a mutating method called) and ``os.putenv``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [getattr(node, "target", None)]
        for t in targets:
            if isinstance(t, ast.Subscript) and ast.unparse(t.value) in ("os.environ", "sys.path"):
                found.append(f"line {node.lineno}: {ast.unparse(t)}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner, method = ast.unparse(node.func.value), node.func.attr
            mutating = {"setdefault", "update", "pop", "clear", "insert", "append", "extend", "remove", "popitem"}
            if (owner in ("os.environ", "sys.path") and method in mutating) or ast.unparse(node.func) == "os.putenv":
                found.append(f"line {node.lineno}: {ast.unparse(node.func)}")
    return found


@pytest.mark.parametrize("path", LIBRARY, ids=[str(p.relative_to(ROOT)) for p in LIBRARY])
def test_library_code_leaves_the_environment_and_sys_path_alone(path):
    """Settings travel as arguments and return values, not through the process (``HF_HUB_OFFLINE``, ``sys.path``)."""
    assert not _process_state_writes(path), (
        f"{path.relative_to(ROOT)} changes process state: {_process_state_writes(path)}"
    )


def test_the_process_state_check_finds_each_kind_of_write(tmp_path):
    code = "import os, sys\nos.environ['A'] = '1'\nos.environ.setdefault('B', '1')\nsys.path.insert(0, 'x')\n"
    (tmp_path / "m.py").write_text(code + "os.putenv('C', '1')\nx = os.environ.get('D')\n")
    assert [w.split(":")[0] for w in _process_state_writes(tmp_path / "m.py")] == [
        "line 2",
        "line 3",
        "line 4",
        "line 5",
    ]


@pytest.mark.parametrize("folder", ["recipes", "tools"])
def test_files_stay_under_400_lines(folder):
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / folder).rglob("*.py")}
    long = {name: n for name, n in sizes.items() if n >= 400}
    assert not long, f"split these (the project keeps files under 400 lines): {long}"


def test_no_merge_conflict_markers_in_tracked_files():
    """A merge left ``<<<<<<<`` / ``>>>>>>>`` blocks in README.md and docs/diffusion.md once; no test read them."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True)
    marker = re.compile(r"^(<{7} |>{7} |={7}$)", re.MULTILINE)
    hits = []
    for name in files.stdout.splitlines():
        path = ROOT / name
        if path.suffix in {".py", ".md", ".toml", ".cfg", ".txt", ".sh", ".yml", ".yaml"} and path.is_file():
            if marker.search(path.read_text(errors="replace")):
                hits.append(name)
    assert not hits, hits
