"""Model bytes per checkpoint with ``train.save_frozen='auto'`` vs the whole model (the ViT-S/16 CIFAR-100 PEFT configs).

    python bench/checkpoint_size.py

Builds each ``configs/classification/vit_s16_cifar100_*.py`` model through the engine's setup path
(random init, 100 classes, no data needed) and serialises what a checkpoint's ``model`` entry holds.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.train.build import prepare_run  # noqa: E402
from recipes.train.config import load_config  # noqa: E402
from recipes.train.trainable_state import model_state, saves_frozen  # noqa: E402


def megabytes(state: dict[str, torch.Tensor]) -> float:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.tell() / 1e6


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    for name in ("full", "lora_only", "deep_lora", "norm_only"):
        cfg = load_config(root / f"configs/classification/vit_s16_cifar100_{name}.py", ["model.num_classes=100"])
        plan = prepare_run(cfg, steps_per_epoch=390, data=False)
        whole = megabytes(model_state(plan.model, True))
        auto = megabytes(model_state(plan.model, saves_frozen(plan.model, "auto")))
        print(f"{name:10s} whole model {whole:6.2f} MB  save_frozen='auto' {auto:6.2f} MB  ratio {auto / whole:.4f}")


if __name__ == "__main__":
    main()
