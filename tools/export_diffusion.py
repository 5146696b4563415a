"""Export the denoiser weights of a diffusion run's checkpoint: a LoRA diffusers loads, or a full denoiser.

    python tools/export_diffusion.py CONFIG work_dirs/my_lora/best.pt --out work_dirs/my_lora/best_lora \\
        [--cfg-options model.pretrained=/models/FLUX.1-dev ...]

The end of a run saves its last weights (``<work_dir>/lora``); this exports any other checkpoint, e.g.
``best.pt`` (the evaluation with the lowest fixed-noise loss) or ``checkpoints/step_*.pt``. The
denoiser is rebuilt as every tool rebuilds a model (``recipes.train.build.rebuild_model``: built the way
``tools/train.py`` builds it from ``model.pretrained``, with the task's LoRA), the checkpoint is read by
``read_checkpoint`` (tensors only) and loaded over it. A LoRA run's checkpoints hold
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

from recipes.train.checkpoint import read_checkpoint  # noqa: E402
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
    from recipes.train.build import rebuild_model
    from recipes.train.diffusion.lora_io import check_finite, save_lora
    from recipes.train.tasks.diffusion import DiffusionTask

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"--out {out} already holds files; give a new or empty folder (nothing is replaced)")
    # the pipeline's other parts (its class, for the LoRA file) come from model.pretrained even for a full fine-tune
    task, model = rebuild_model(cfg, read_checkpoint(checkpoint), DiffusionTask, needs_pretrained=True)
    check_finite(model)  # a NaN/inf weight is an error naming it, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    if task.lora is None:
        model.save_pretrained(str(out))
        return out
    return save_lora(type(task.pipe), model, out, task.family.lora_save_key, task.save_format, None, task.family.name)


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    path = export(cfg, args.checkpoint, args.out)
    print(f"{args.checkpoint} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
