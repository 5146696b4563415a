"""Coverage table of the diffusers adapters: every full-size preset on the meta device.

    .venv/bin/python bench/zoo_diffusers_coverage.py [--templates]

Per preset: adapter chosen by ``adapter="auto"``, tensors, blocks per stack, share of tensors per
component, unmatched tensors (goal 0). ``--templates`` also lists the catch-all name templates.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recipes.param_groups import resolve_adapter  # noqa: E402
from recipes.train.models.diffusers import PRESETS, build_diffusers_model  # noqa: E402


def template(name: str) -> str:
    """The name with every numeric index masked (``blocks.#.attn``)."""
    return re.sub(r"(?<=\.)\d+(?=\.)", "#", name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--templates", action="store_true")
    args = ap.parse_args()
    print("| preset | adapter | tensors | stacks | components (share of tensors) | unmatched |")
    print("|---|---|---:|---|---|---:|")
    for preset in PRESETS:
        model = build_diffusers_model(preset, device="meta")
        adp = resolve_adapter(model)
        mmap = adp.describe(model)
        comps = Counter(i.component for i in mmap.params.values())
        n = len(mmap.params) + len(mmap.unmatched)
        share = ", ".join(f"{c} {100 * k / n:.1f}%" for c, k in comps.most_common())
        stacks = " + ".join(f"{s} {k}" for s, k in mmap.stack_sizes.items())
        print(f"| {preset} | {adp.name} | {n} | {stacks} | {share} | {len(mmap.unmatched)} |")
        if args.templates:
            catch = sorted({template(k) for k, i in mmap.params.items() if i.component in adp.catch_all})
            print("    catch-all:", catch)
            if mmap.unmatched:
                print("    UNMATCHED:", sorted({template(k) for k in mmap.unmatched}))


if __name__ == "__main__":
    main()
