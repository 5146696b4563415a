"""One AdamW step with the layer-decay groups against one-group AdamW, same model and gradients.

CPU: ``foreach=True`` (fused where a GPU is available: ``--device cuda``). Prints median ms/step
and the ratio (layer-decay groups / one group).

    python bench/optim_step.py [--model vit_small_patch16_224] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402
import torch  # noqa: E402

from recipes.param_groups import build_param_groups  # noqa: E402


def time_steps(opt: torch.optim.Optimizer, steps: int, sync) -> float:
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        opt.step()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    model = timm.create_model(args.model, num_classes=100).to(dev)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    kind = {"fused": True} if dev.type == "cuda" else {"foreach": True}
    groups = build_param_groups(model, dict(type="layer_decay", lr=1e-3, decay=0.75, weight_decay=0.05))
    ld = torch.optim.AdamW(groups, **kind)
    one = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, **kind)
    for opt in (ld, one):
        time_steps(opt, 3, sync)  # state allocation
    a, b = [], []
    for _ in range(3):  # alternate to share the machine's noise
        a.append(time_steps(ld, args.steps, sync))
        b.append(time_steps(one, args.steps, sync))
    ta, tb = statistics.median(a), statistics.median(b)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.model} ({n / 1e6:.1f}M params) on {dev}, {kind}, threads {torch.get_num_threads()}")
    print(
        f"layer-decay AdamW ({len(groups)} groups) {1e3 * ta:.1f} ms/step  one group {1e3 * tb:.1f} ms/step  ratio {ta / tb:.3f}"
    )


if __name__ == "__main__":
    main()
