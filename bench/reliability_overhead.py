"""What the reliability checks cost, as ratios against the work they guard, measured in the same run.

1. The finite-gradient check before each optimizer step (one fused norm over all gradients) against
   ``AdamW.step()`` on the same gradients: timm ViT-S/16 (22 M parameters, random weights). A whole
   training step (forward + backward + step) costs several times the optimizer step, so this ratio
   is an upper bound on the check's share of a step.
2. The setup-time image check (header, size, end-of-file marker) against decoding the same files
   with PIL, which the data loader does once per epoch: the raccoon photos (200 JPEGs, ~500x400) when
   ``--images`` points at them (e.g. an extracted ``../shared/data/raccoon.tar.gz``), else
   scikit-image's bundled photos written as JPEG/PNG.

    python bench/reliability_overhead.py [--images DIR] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.timing import best_of  # noqa: E402
from recipes.train.data.checks import find_bad_images  # noqa: E402


def gradient_check_ratio(repeat: int) -> tuple[float, float]:
    import timm

    model = timm.create_model("vit_small_patch16_224", num_classes=100)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(params, lr=1e-4)
    opt.step()  # state allocated before timing

    def check() -> None:
        float(torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True))

    return best_of(check, repeat), best_of(opt.step, repeat)


def sample_images(folder: Path) -> list[Path]:
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(("chelsea", "coffee", "astronaut", "rocket", "camera", "coins") * 20):
        path = folder / f"{name}_{i}{'.png' if i % 4 == 0 else '.jpg'}"
        Image.fromarray(getattr(data, name)()).save(path)
        out.append(path)
    return out


def image_check_ratio(files: list[Path], repeat: int) -> tuple[float, float]:
    from PIL import Image

    def decode() -> None:
        for f in files:
            with Image.open(f) as im:
                im.convert("RGB")

    return best_of(lambda: find_bad_images(files), repeat), best_of(decode, repeat)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default=None, help="a folder of images (default: scikit-image's photos)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    check, step = gradient_check_ratio(args.repeat)
    print(
        f"finite-gradient check {check * 1e3:.1f} ms vs AdamW.step {step * 1e3:.1f} ms on ViT-S/16 grads: "
        f"ratio {check / step:.3f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        files = sorted(Path(args.images).glob("*.jpg")) if args.images else sample_images(Path(tmp))
        checked, decoded = image_check_ratio(files, args.repeat)
        print(
            f"setup image check {checked / len(files) * 1e3:.2f} ms/image vs PIL decode "
            f"{decoded / len(files) * 1e3:.2f} ms/image ({len(files)} files): ratio {checked / decoded:.3f}"
        )


if __name__ == "__main__":
    main()
