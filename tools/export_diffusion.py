"""Export the denoiser weights of a diffusion run's checkpoint: a LoRA diffusers loads, or a full denoiser.

    python tools/export_diffusion.py CONFIG work_dirs/my_lora/best.pt --out work_dirs/my_lora/best_lora \\
        [--format kohya] [--cfg-options model.pretrained=/models/FLUX.1-dev ...]

The end of a run saves its last weights (``<work_dir>/lora``); this exports any other checkpoint, e.g.
``best.pt`` (the evaluation with the lowest fixed-noise loss) or ``checkpoints/step_*.pt``. The
denoiser is rebuilt as every tool rebuilds a model (``recipes.train.build.rebuild_model``: built the way
``tools/train.py`` builds it from ``model.pretrained``, with the task's LoRA), the checkpoint is read by
``read_checkpoint`` (tensors only) and loaded over it. A LoRA run's checkpoints hold
only the LoRA tensors (``frozen_omitted``): the frozen denoiser comes from ``model.pretrained`` and
must match the fingerprint the run saved. Output: ``task.save_format`` (diffusers'
``pytorch_lora_weights.safetensors`` for ``pipeline.load_lora_weights(OUT)``, or kohya's names; ``--format``
overrides it, so a run saved in one layout exports in the other, text-encoder LoRA included), or
``save_pretrained`` of the whole denoiser for a full fine-tune. ``--out`` must be a new or empty
folder. A run with ``train.ema`` exports its EMA weights, as its end of run does (``--weights model``:
the plain ones of a ``step_*.pt``); ``best.pt`` holds whichever scored best. Exit status: 0 done,
2 bad input (a LoRA of another rank than ``policy.r``, a mis-shaped tensor, a NaN, an ``--out``
that holds files or links nowhere), 4 unexpected.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.train.checkpoint import read_checkpoint  # noqa: E402
from recipes.train.config import load_config  # noqa: E402
from recipes.train.errors import BadInput, cli  # noqa: E402

WEIGHTS = ("ema", "model")
FORMATS = ("diffusers", "kohya")  # recipes.train.diffusion.lora_io.FORMATS (imported lazily: it pulls in torch)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("checkpoint", help="a diffusion run's best.pt or checkpoints/step_*.pt")
    ap.add_argument("--out", required=True, help="a new or empty folder")
    ap.add_argument("--weights", choices=WEIGHTS, default=None,
                    help="a step_*.pt of a run with train.ema holds both: export its EMA (the default, as the end of "
                         "the run does) or the plain weights; best.pt holds the ones that scored best")  # fmt: skip
    ap.add_argument("--format", choices=FORMATS, default=None,
                    help="the LoRA's layout: diffusers' (pipeline.load_lora_weights) or kohya's (lora_unet_ / "
                         "lora_te_ names, ComfyUI / kohya / musubi); default: the config's task.save_format")  # fmt: skip
    ap.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    return ap.parse_args(argv)


def with_format(options: list[str], fmt: str | None) -> list[str]:
    """``--cfg-options`` with ``--format`` as ``task.save_format``; both given and different is an error."""
    if fmt is None:
        return options
    given = [o.partition("=")[2] for o in options if o.partition("=")[0] == "task.save_format"]
    if given and given[-1].strip("'\"") != fmt:
        raise BadInput(f"--format {fmt} and --cfg-options task.save_format={given[-1]} disagree; give one of them")
    return [*options, f"task.save_format={fmt}"]


def check_out(out: Path) -> None:
    """``--out`` must be a new folder or an empty one; a link to nowhere or a file is named, never written through."""
    if out.is_symlink() and not out.exists():
        raise BadInput(f"--out {out} is a symbolic link to {os.readlink(out)!r}, which does not exist; give a new "
                       "or empty folder")  # fmt: skip
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file; give a new or empty folder (nothing is replaced)")
    if out.exists() and any(out.iterdir()):
        raise BadInput(f"--out {out} already holds files; give a new or empty folder (nothing is replaced)")


def chosen_weights(ckpt: dict[str, Any], weights: str | None) -> tuple[dict[str, Any], str]:
    """The checkpoint with ``model`` = the weights to export, and which they are (``ema`` / ``model``)."""
    ema = ckpt.get("ema")
    if isinstance(ema, dict) and ema:  # a step checkpoint of a run with train.ema
        return ({**ckpt, "model": ema}, "ema") if weights in (None, "ema") else (ckpt, "model")
    held = ckpt.get("weights", "model")  # best.pt says which it holds; other files hold plain weights
    if weights not in (None, held):
        raise BadInput(f"{ckpt['path']}: --weights {weights} given, but it holds only the {held} weights"
                       + (" (they scored best); export a checkpoints/step_*.pt for the others" if "weights" in ckpt
                          else " (its run had no train.ema)"))  # fmt: skip
    return ckpt, held


def check_lora_rank(cfg: Any, ckpt: dict[str, Any]) -> None:
    """The checkpoint's LoRA rank is the config's ``policy.r`` (peft would stop on a size mismatch)."""
    from recipes.train.diffusion.adapters import adapter_settings

    lora = adapter_settings(cfg.get("policy"))
    ranks = {k: v.shape[0] for k, v in ckpt["model"].items() if ".lora_A." in k and v.dim() == 2}
    if ranks and lora is None:
        raise BadInput(f"{ckpt['path']} holds LoRA tensors (e.g. {next(iter(ranks))!r}), but the config trains "
                       "the whole denoiser (no LoRA policy): export with the config the run was trained with")  # fmt: skip
    lora = dict(lora or {})
    text_r = (lora.get("text_encoder") or {}).get("r")  # policy.text_encoder: the encoders' tensors have their own
    for key, rank in ranks.items():
        text = key.startswith("text_encoder")
        if text and text_r is None:
            raise BadInput(f"{ckpt['path']}: {key!r} is a text-encoder LoRA tensor, but the config has no "
                           "policy.text_encoder: export with the config the run was trained with")  # fmt: skip
        option, r = ("policy.text_encoder.r", text_r) if text else ("policy.r", int(lora.get("r", 16)))
        if rank != r:
            raise BadInput(f"{ckpt['path']}: the LoRA tensor {key!r} has rank {rank}, the config says {option}={r}; "
                           f"export with the rank it was trained with (--cfg-options {option}={rank})")  # fmt: skip


def export(cfg: Any, checkpoint: str | Path, out: str | Path, weights: str | None = None,
           fmt: str | None = None) -> tuple[Path, str]:  # fmt: skip
    """Write the checkpoint's denoiser weights to ``out``; returns the written file or folder and which weights
    (``ema`` / ``model``) they are. ``fmt``: the ``--format`` given (already in ``cfg`` as ``task.save_format``)."""
    from recipes.train.build import rebuild_model
    from recipes.train.diffusion.adapters import adapter_settings
    from recipes.train.diffusion.lora_io import check_finite, save_lora
    from recipes.train.tasks.diffusion import DiffusionTask

    out = Path(out)
    check_out(out)
    if fmt is not None and adapter_settings(cfg.get("policy")) is None:
        raise BadInput(f"--format {fmt}: the config fine-tunes the whole denoiser (no LoRA policy), which is saved "
                       "with save_pretrained in one layout; leave --format out")  # fmt: skip
    ckpt, which = chosen_weights(read_checkpoint(checkpoint), weights)
    check_lora_rank(cfg, ckpt)
    # the pipeline's other parts (its class, for the LoRA file) come from model.pretrained even for a full fine-tune
    task, model = rebuild_model(cfg, ckpt, DiffusionTask, needs_pretrained=True)
    check_finite(model)  # a NaN/inf weight is an error naming it, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    if task.lora is None:
        model.save_pretrained(str(out))
        return out, which
    family = task.family
    return save_lora(type(task.pipe), model, out, family.lora_save_key, task.save_format, family=family.name), which


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, with_format(args.cfg_options, args.format))
    path, which = export(cfg, args.checkpoint, args.out, args.weights, args.format)
    print(f"{args.checkpoint} ({which} weights) -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
