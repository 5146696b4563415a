"""Group-building time and group count against timm, full-size models on the meta device.

    .venv/bin/python bench/build_time.py [--repeat 30]

For each model both builders run in the same process, interleaved, best-of-N wall time;
the ratio is ours / timm.optim.param_groups_layer_decay (goal <= 1.0). Group counts: goal <= timm's.
timm's side calls ``model.no_weight_decay()`` inside the timed call, as its ``create_optimizer_v2``
does (ours calls it inside ``build_param_groups``); on Swin and EVA that call is most of timm's time.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import timm
import torch
from timm.optim import param_groups_layer_decay

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.timing import best_of  # noqa: E402
from recipes import build_param_groups  # noqa: E402

MODELS = [
    *("vit_base_patch16_224", "vit_large_patch16_224", "eva02_large_patch14_224", "vit_giant_patch14_dinov2"),
    *(
        "resnet50",
        "convnext_base",
        "swin_base_patch4_window7_224",
        "efficientnet_b3",
        "regnety_040",
        "maxvit_tiny_tf_224",
    ),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    recipe = dict(type="layer_decay", lr=1e-3, decay=0.75, weight_decay=0.05)
    print("| model | tensors | ours (ms) | timm (ms) | ratio | groups ours | groups timm |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ratios = []
    for name in MODELS:
        with torch.device("meta"):
            model = timm.create_model(name)

        def ours(model=model):
            return build_param_groups(model, recipe)

        def theirs(model=model):
            nwd = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
            return param_groups_layer_decay(model, weight_decay=0.05, no_weight_decay_list=nwd, layer_decay=0.75)

        ours(), theirs()  # warm caches and imports
        t_ours, t_timm = best_of(ours, args.repeat), best_of(theirs, args.repeat)
        n = sum(1 for _ in model.parameters())
        ratios.append(t_ours / t_timm)
        print(
            f"| {name} | {n} | {t_ours * 1e3:.2f} | {t_timm * 1e3:.2f} | {t_ours / t_timm:.2f} | {len(ours())} | {len(theirs())} |"
        )

    print(f"geometric mean ratio over {len(ratios)} models: {math.prod(ratios) ** (1 / len(ratios)):.2f}")


if __name__ == "__main__":
    main()
