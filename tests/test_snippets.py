"""Every fenced ``python`` block in README.md and docs/*.md runs as written.

The blocks of one document run in order, each in a fresh namespace, in one scratch folder (the
current directory). A block right after a ``<!-- file: PATH -->`` line is not run: it is written to
PATH in that folder (a config, a module of the user's own), for the blocks after it to use. That is
the only marker; there is no way to skip a block.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?:<!-- file: (?P<file>\S+) -->\n)?```python\n(?P<code>.*?)```", re.S)
SLOW = {"README.md", "integrations.md", "zoo_vision.md"}  # they train or build real models: 5-60 s each


def blocks(doc: Path) -> list[tuple[str | None, str, int]]:
    """(file to write or None, code, line number) of every python block, in order."""
    text = doc.read_text()
    return [(m["file"], m["code"], text.count("\n", 0, m.start("code")) + 1) for m in FENCE.finditer(text)]


def test_every_python_block_is_found_and_markers_are_only_files():
    found = {doc.name: len(blocks(doc)) for doc in DOCS}
    assert found["README.md"] >= 4 and found["integrations.md"] >= 5
    for doc in DOCS:
        text = doc.read_text()
        assert text.count("```python") == len(blocks(doc)), doc.name
        assert set(re.findall(r"<!-- (\w+):", text)) <= {"file"}, doc.name


WITH_BLOCKS = [d for d in DOCS if blocks(d)]


@pytest.mark.parametrize(
    "doc", [pytest.param(d, marks=pytest.mark.slow) if d.name in SLOW else d for d in WITH_BLOCKS], ids=lambda d: d.name
)
def test_snippets_run_as_written(doc, tmp_path, monkeypatch, capsys):
    todo = blocks(doc)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # `python script.py` from this folder: its modules import
    monkeypatch.setattr(sys, "argv", ["snippet"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for file, code, line in todo:
            if file is not None:
                (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / file).write_text(code)
                continue
            try:
                exec(compile(code, f"{doc.name}:{line}", "exec"), {"__name__": "__main__"})
            except Exception as e:
                raise AssertionError(f"{doc.name}, block at line {line}: {type(e).__name__}: {e}") from e
    finally:
        torch.set_num_threads(threads)
