"""Draw a trained detector's boxes on images (one PNG per image).

    python tools/detect.py configs/rfdetr_ft.py work_dirs/rfdetr_ft/best.pt img1.jpg img2.jpg \\
        [--out-dir work_dirs/detect] [--threshold 0.3] [--ema] [--cfg-options key=value ...]

The model is rebuilt the way every tool rebuilds one (``recipes.train.build.rebuild_model``: the
config's model and task, built as ``tools/train.py`` builds it; the checkpoint read by
``read_checkpoint``, tensors only). The class count comes from the checkpoint's class names, else from
its classification head; the names from the checkpoint, or the config's training set when
``data_root`` is set, else ``class 0``, ``class 1``... The checkpoint may be a run's (``best.pt``,
``checkpoints/step_*.pt``) or a plain state dict (``--ema``: its EMA weights). A run's ``best.pt``
already holds the weights (plain or EMA) that scored best: no ``--ema`` needed.

Nothing is overwritten: each drawing is ``<image name>.png`` in ``--out-dir``, or ``<name>-1.png``,
``<name>-2.png``... where that name is taken (a file already there, an input image itself, or another
input of the same name in this run).

A checkpoint of a mostly frozen run (encoder LoRA; ``frozen_omitted``: the trainable tensors only,
as ``train.save_frozen='auto'`` writes them) is completed from the config's ``model.pretrained`` and
checked against the run's fingerprint of the frozen weights; without ``model.pretrained`` it is an
error that says so.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from recipes.train.checkpoint import read_checkpoint  # noqa: E402
from recipes.train.config import load_config  # noqa: E402
from recipes.train.errors import BadInput, cli  # noqa: E402
from recipes.train.run_log import per_second  # noqa: E402
from recipes.train.workdir import check_output_folder  # noqa: E402

COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]


def class_names(cfg: Any, ckpt: dict[str, Any], n: int) -> list[str]:
    names = ckpt.get("class_names") or (ckpt.get("meta") or {}).get("class_names")
    if not names and cfg.get("data_root"):
        from recipes.train.registry import TASKS

        opts = dict(cfg.task)
        names = TASKS.lookup(opts.pop("type"))(cfg, **opts).dataset_classes()
    names = list(names or [])
    if len(names) != n:
        names = [f"class {k}" for k in range(n)]
    return names


def free_path(out_dir: Path, stem: str) -> Path:
    """``out_dir/<stem>.png``, or the first ``<stem>-<k>.png`` that does not exist yet."""
    path, k = out_dir / f"{stem}.png", 0
    while path.exists() or path.is_symlink():
        k += 1
        path = out_dir / f"{stem}-{k}.png"
    return path


def save_new(image: Any, out_dir: Path, stem: str) -> Path:
    """Save ``image`` as PNG under a name no file holds (opened with O_EXCL: never replaces one)."""
    while True:
        path = free_path(out_dir, stem)
        try:
            f = open(path, "xb")  # noqa: SIM115 - closed below, removed if the write fails
        except FileExistsError:  # another process took the name between the check and the open
            continue
        try:
            with f:
                image.save(f, format="PNG")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path


def draw(image: Any, result: dict[str, torch.Tensor], names: list[str], threshold: float) -> Any:
    from PIL import ImageDraw

    image = image.copy()
    pen = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 300))
    for box, label, score in zip(
        result["boxes"].tolist(), result["labels"].tolist(), result["scores"].tolist(), strict=True
    ):
        if score < threshold:
            continue
        colour = COLOURS[label % len(COLOURS)]
        pen.rectangle(box, outline=colour, width=width)
        name = names[label] if 0 <= label < len(names) else str(label)
        text = f"{name} {score:.2f}"
        x, y = box[0], max(0, box[1] - 12)
        pen.rectangle(pen.textbbox((x, y), text), fill=colour)
        pen.text((x, y), text, fill="white")
    return image


@cli
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("checkpoint")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--out-dir", default="work_dirs/detect")
    ap.add_argument("--threshold", type=float, default=0.3, help="score below which boxes are not drawn")
    ap.add_argument("--ema", action="store_true", help="use the checkpoint's EMA weights")
    ap.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out_dir = check_output_folder(args.out_dir, "--out-dir")

    from PIL import Image

    from recipes.train.build import rebuild_model
    from recipes.train.data.coco_detection import build_transform
    from recipes.train.tasks.detection import DetectionTask

    cfg = load_config(args.config, args.cfg_options)
    ckpt = read_checkpoint(args.checkpoint, args.ema)
    if "class_embed.bias" not in ckpt["model"]:
        raise BadInput(f"{args.checkpoint}: no 'class_embed.bias' in the checkpoint; is it an RF-DETR checkpoint?")
    n = ckpt["model"]["class_embed.bias"].shape[0] - 1  # rfdetr's head has num_classes + 1 outputs
    if not ckpt.get("class_names"):
        cfg.model["num_classes"] = n
    logging.getLogger("recipes.detection").setLevel(logging.ERROR)  # "random weights": they come from the checkpoint
    task, model = rebuild_model(cfg, ckpt, DetectionTask)
    post, resolution = task.postprocess, task.model_config.resolution
    names = class_names(cfg, ckpt, n)
    transform = build_transform(False, resolution)
    out_dir.mkdir(parents=True, exist_ok=True)
    from rfdetr.utilities.tensors import nested_tensor_from_tensor_list

    failed, t0 = [], time.perf_counter()
    for k, path in enumerate(args.images, 1):
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (OSError, ValueError) as e:  # missing, not an image, truncated: report it and go on
            failed.append(path)
            print(f"{path}: skipped, it cannot be read as an image ({' '.join(str(e).split())[:200]})", file=sys.stderr)
            continue
        arr = transform(image=np.asarray(image), bboxes=np.zeros((0, 4)), labels=[])["image"]
        x = nested_tensor_from_tensor_list([torch.from_numpy(arr.transpose(2, 0, 1).copy())])
        with torch.no_grad():
            result = post(model(x), torch.tensor([[image.height, image.width]]))[0]
        keep = int((result["scores"] >= args.threshold).sum())
        dst = save_new(draw(image, result, names, args.threshold), out_dir, Path(path).stem)
        rate = per_second(k / max(time.perf_counter() - t0, 1e-9))
        print(f"[{k}/{len(args.images)}, {rate} img/s] {path}: {keep} boxes >= {args.threshold} -> {dst}", flush=True)
    if failed:
        raise BadInput(
            f"{len(failed)} of {len(args.images)} images could not be read (the others were drawn): {failed[:5]}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
