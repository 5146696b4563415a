"""Export the denoiser weights of a diffusion run's checkpoint: a LoRA diffusers loads, or a full denoiser.

    python tools/export_diffusion.py CONFIG work_dirs/my_lora/best.pt --out work_dirs/my_lora/best_lora \\
        [--cfg-options model.pretrained=/models/FLUX.1-dev ...]

The end of a run saves its last weights (``<work_dir>/lora``); this exports any other checkpoint, e.g.
``best.pt`` (the evaluation with the lowest fixed-noise loss) or ``checkpoints/step_*.pt``. The
denoiser is built the way ``tools/train.py`` builds it (``model.pretrained``, the task's LoRA), the
checkpoint is read by ``safe_load`` (tensors only) and loaded over it. A LoRA run's checkpoints hold
only the LoRA tensors (``frozen_omitted``): the frozen denoiser comes from ``model.pretrained`` and
must match the fingerprint the run saved. Output: ``task.save_format`` (diffusers'
``pytorch_lora_weights.safetensors`` for ``pipeline.load_lora_weights(OUT)``, or kohya's names), or
``save_pretrained`` of the whole denoiser for a full fine-tune. ``--out`` must be a new or empty
folder. Exit status: 0 done, 2 bad input, 4 unexpected.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.train.checkpoint import safe_load  # noqa: E402
from recipes.train.config import load_config  # noqa: E402
from recipes.train.errors import BadInput, cli  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("checkpoint", help="a diffusion run's best.pt or checkpoints/step_*.pt")
    ap.add_argument("--out", required=True, help="a new or empty folder")
    ap.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    return ap.parse_args(argv)


def export(cfg: Any, checkpoint: str | Path, out: str | Path) -> Path:
    """Write the checkpoint's denoiser weights to ``out``; returns the written file or folder."""
    from recipes.train.build import build_model
    from recipes.train.config import check_config, train_options
    from recipes.train.diffusion.lora_io import check_finite, save_lora
    from recipes.train.tasks.base import build_task
    from recipes.train.tasks.diffusion import DiffusionTask
    from recipes.train.trainable_state import frozen_fingerprint, load_model

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"--out {out} already holds files; give a new or empty folder (nothing is replaced)")
    ckpt = safe_load(checkpoint)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise BadInput(f"checkpoint {str(checkpoint)!r} was not written by tools/train.py (no 'model' entry)")
    if not cfg.model.get("pretrained"):
        what = "holds only the LoRA tensors (frozen_omitted)" if ckpt.get("frozen_omitted") else "is a diffusion run's"
        raise BadInput(f"checkpoint {str(checkpoint)!r} {what}; set model.pretrained to the pipeline folder the run "
                       "trained from (--cfg-options model.pretrained=DIR)")  # fmt: skip
    check_config(cfg)
    task = build_task(cfg)
    if not isinstance(task, DiffusionTask):
        raise BadInput(f"task.type={cfg.task.get('type')!r}: tools/export_diffusion.py exports a diffusion config")
    model = build_model(cfg, task, train_options(cfg))
    load_model(model, {**ckpt, "path": str(checkpoint)}, frozen_fingerprint(model))
    check_finite(model)  # a NaN/inf weight is an error naming it, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    if task.lora is None:
        model.save_pretrained(str(out))
        return out
    return save_lora(type(task.pipe), model, out, task.family.lora_save_key, task.save_format)


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    path = export(cfg, args.checkpoint, args.out)
    print(f"{args.checkpoint} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
