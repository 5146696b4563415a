"""Time to build parameter groups with LoRA on every linear layer, full-size models on the meta device.

    .venv/bin/python bench/build_lora_ltx2.py [--repeat 10]

LTX-2 (about 3,500 base tensors) is the goal case (under 100 ms on 2 CPU cores), Flux.1-dev and
Qwen-Image beside it. LoRA (rank 16, peft) wraps every ``nn.Linear`` of the model; the recipe is
the per-component x depth LR grid with LoRA+; best-of-N wall time of ``build_param_groups``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.timing import best_of  # noqa: E402
from recipes.param_groups import build_param_groups  # noqa: E402
from recipes.train.models.diffusers import build_diffusers_model  # noqa: E402

RECIPE = dict(
    type="component_depth",
    component_lr={"self_attn": 4e-4, "cross_attn": 1.5e-4, "ffn": 2.5e-4},
    default_lr=2.5e-4,
    loraplus_ratio=16,
)


def lora_everywhere(model: torch.nn.Module) -> torch.nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    targets = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    with torch.device("meta"):
        inject_adapter_in_model(LoraConfig(r=16, lora_alpha=16, target_modules=targets), model)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    print("| model | base tensors | tensors with LoRA | trainable | groups | build (ms, best of N) |")
    print("|---|---:|---:|---:|---:|---:|")
    for preset in ("ltx2", "flux1-dev", "qwen-image"):
        model = build_diffusers_model(preset, device="meta")
        base = sum(1 for _ in model.parameters())
        lora_everywhere(model)
        total = sum(1 for _ in model.parameters())
        trainable = sum(1 for p in model.parameters() if p.requires_grad)
        groups = build_param_groups(model, RECIPE)  # warm imports and caches
        ms = best_of(lambda model=model: build_param_groups(model, RECIPE), args.repeat) * 1e3
        print(f"| {preset} | {base} | {total} | {trainable} | {len(groups)} | {ms:.1f} |")


if __name__ == "__main__":
    main()
