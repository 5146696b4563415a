"""A pipeline folder's weight files checked before diffusers reads them, so a truncated or damaged file is one
error naming it (diffusers says ``Unable to load weights from checkpoint file`` as an ``OSError``).

A ``.safetensors`` file starts with an 8-byte little-endian header length and a JSON header giving each
tensor's ``data_offsets`` from the end of the header: the file must hold at least the largest end offset.
Reading the header costs a few KiB per file, whatever the weights' size.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

MAX_HEADER = 100 << 20  # safetensors refuses headers over 100 MB too


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a complete safetensors file, or None when its header and length agree."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{size} bytes, too short for a safetensors header"
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER, size - 8):
            return f"truncated: its header claims {n} bytes, the file has {size} in all"
        try:
            header = json.loads(f.read(n))
            need = 8 + n + max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                               default=0)  # fmt: skip
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            return f"its header is not safetensors JSON ({type(e).__name__})"
    if size < need:
        return f"truncated: {size} of the {need} bytes its header lists"
    return None


def check_weight_files(root: Path, components: list[str]) -> None:
    """Every ``*.safetensors`` in the components' folders is complete; else an error naming the first bad file."""
    for name in components:
        for path in sorted((root / name).glob("*.safetensors")):
            problem = safetensors_problem(path)
            if problem is not None:
                raise ValueError(f"model.pretrained: {str(path)!r} is damaged ({problem}); copy or download that "
                                 "file again")  # fmt: skip
