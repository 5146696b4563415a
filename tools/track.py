"""Run a trained tracker (or OpenCV's TrackerMIL) on a video, a frame folder, or the config's eval sequences.

    python tools/track.py CONFIG CKPT --video clip.mp4 --init x,y,w,h [--out DIR] [--gif]
    python tools/track.py CONFIG CKPT --frames DIR --init x,y,w,h
    python tools/track.py CONFIG CKPT --eval [--cfg-options data_root=DIR]      # one-pass evaluation
    python tools/track.py CONFIG --tracker opencv_mil --eval                    # the same, OpenCV TrackerMIL
    python tools/track.py CONFIG CKPT --eval --split test                       # data.test (withheld: submission)

A video / frame folder gives ``boxes.txt`` (x,y,w,h per frame) and an annotated ``track.mp4`` (or
``track.gif`` with --gif). ``--eval`` gives ``metrics.json``, ``per_sequence.md``, the success and
precision plots (PNG) and one ``<sequence>.txt`` per sequence; on a split whose boxes are withheld (GOT-10k
test, TrackingNet TEST) the evaluation server's ``submission/`` folder and ``submission.zip`` instead. ``--out`` must be a new or empty folder:
nothing already written is replaced. Exit status: 0 done, 2 bad input, 4 unexpected.

The model is built as ``tools/train.py`` builds it (the task's ``build_model``, the trainable policy; every
``task.*`` key checked) and the checkpoint is read by ``safe_load`` (tensors only: nothing in it runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from recipes.train.checkpoint import safe_load  # noqa: E402
from recipes.train.config import load_config  # noqa: E402
from recipes.train.errors import BadInput, cli  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("checkpoint", nargs="?", help="a run's best.pt or checkpoints/step_*.pt (not for opencv_mil)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="a video file (anything OpenCV decodes)")
    src.add_argument("--frames", help="a folder of frames (sorted by name)")
    src.add_argument("--eval", action="store_true", help="one-pass evaluation on the config's data.val (--split)")
    ap.add_argument(
        "--split",
        default="val",
        choices=["val", "test"],
        help="with --eval: data.val or data.test; a split whose boxes are withheld (GOT-10k test, "
        "TrackingNet TEST) gives the evaluation server's submission folder and zip instead of scores",
    )
    ap.add_argument("--init", help="x,y,w,h of the target in the first frame (with --video / --frames)")
    ap.add_argument("--tracker", default="model", choices=["model", "opencv_mil"])
    ap.add_argument("--out", default=None, help="a new or empty folder (default: work_dirs/track/<name>)")
    ap.add_argument("--gif", action="store_true", help="write track.gif instead of track.mp4")
    ap.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    return ap.parse_args(argv)


def parse_init(text: str | None) -> tuple[float, float, float, float]:
    if text is None:
        raise ValueError("--init x,y,w,h is required with --video / --frames (the target's first-frame box)")
    try:
        vals = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise ValueError(f"--init {text!r}: expected four numbers x,y,w,h") from None
    if len(vals) != 4:
        raise ValueError(f"--init {text!r}: expected four numbers x,y,w,h, got {len(vals)}")
    return vals  # type: ignore[return-value]


def fresh_dir(path: Path) -> Path:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"--out {path} already holds files; give a new or empty folder (nothing is replaced)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_checkpoint(path: str) -> dict[str, Any]:
    """A run's ``best.pt`` / ``checkpoints/step_*.pt`` or a bare state dict, loaded by ``safe_load`` (no code runs)."""
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict):
        raise BadInput(f"checkpoint {path!r}: expected a dict of tensors, got {type(ckpt).__name__}")
    if not isinstance(ckpt.get("model"), dict):
        ckpt = {"model": ckpt}
    return {**ckpt, "path": str(path)}


def build_tracker(cfg: Any, ckpt_path: str | None, kind: str) -> Any:
    """A function ``seqs -> list of (N, 4) boxes``.

    The model is built by the path ``tools/train.py`` uses (the task's ``build_model``, the trainable
    policy). A full checkpoint holds every weight, so ``model.init`` is not needed; a trainable-only one
    (``frozen_omitted``: a step checkpoint, or the ``best.pt`` of a mostly frozen run under
    ``train.save_frozen='auto'``) needs the run's own ``model.init`` and is checked against it.
    """
    from recipes.train.build import build_model
    from recipes.train.config import check_config, train_options
    from recipes.train.tasks.base import build_task
    from recipes.train.tasks.tracking import TrackingTask, track
    from recipes.train.tasks.tracking_online import track_opencv_mil
    from recipes.train.trainable_state import frozen_fingerprint, load_model

    if kind == "opencv_mil":
        if ckpt_path is not None:
            raise BadInput("--tracker opencv_mil takes no checkpoint; remove it (or use --tracker model)")
        return lambda seqs: [track_opencv_mil(s) for s in seqs]
    if ckpt_path is None:
        raise BadInput("a checkpoint is required with --tracker model (or use --tracker opencv_mil)")
    ckpt = read_checkpoint(ckpt_path)
    if ckpt.get("frozen_omitted"):
        if cfg.model.get("init") is None:
            raise BadInput(f"checkpoint {ckpt_path!r} holds only the trainable tensors (frozen_omitted); give the "
                           "weights the run started from (--cfg-options model.init=...)")  # fmt: skip
    else:
        cfg.model["init"] = None  # the checkpoint holds every weight: no pretrained folder needed
    check_config(cfg)
    task = build_task(cfg)
    if not isinstance(task, TrackingTask):
        raise BadInput(f"task.type={cfg.task.get('type')!r}: tools/track.py runs a tracking config")
    model = build_model(cfg, task, train_options(cfg))
    load_model(model, ckpt, frozen_fingerprint(model))
    model.eval()
    return lambda seqs: track(model, seqs, task.tracker_options, torch.device("cpu"))


def write_boxes(path: Path, boxes: np.ndarray) -> None:
    path.write_text("".join(f"{x:.2f},{y:.2f},{w:.2f},{h:.2f}\n" for x, y, w, h in boxes))


def write_video(seq: Any, boxes: np.ndarray, out: Path, gif: bool, fps: float = 25.0) -> Path:
    import cv2

    frames = []
    for i in range(len(seq)):
        img = np.ascontiguousarray(seq.read(i))
        x, y, w, h = (int(round(v)) for v in boxes[i])
        cv2.rectangle(img, (x, y), (x + w, y + h), (255, 40, 40), 2)
        frames.append(img)
    if gif:
        from PIL import Image

        ims = [Image.fromarray(f) for f in frames]
        path = out / "track.gif"
        ims[0].save(path, save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0)
        return path
    path = out / "track.mp4"
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    return path


def run_eval(cfg: Any, run: Any, out: Path, name: str, split: str = "val") -> dict[str, Any]:
    from recipes.train.metrics.tracking import per_sequence_table, plot_curves
    from recipes.train.tasks.tracking_online import eval_sequences, evaluate_tracker

    data = eval_sequences(cfg, split)
    if data.withheld:  # GOT-10k test / TrackingNet TEST: only the server can score it
        from recipes.train.data.tracking_roots import write_submission

        t0 = time.perf_counter()
        boxes = run(data.seqs)
        frames, wall = sum(len(s) for s in data.seqs), time.perf_counter() - t0
        path = write_submission(data.kind, data.seqs, boxes, [wall * len(s) / frames for s in data.seqs],
                                out / "submission")  # fmt: skip
        print(f"[eval] {len(data.seqs)} {split} sequences, boxes withheld: submission {out / 'submission'} and {path}")
        return {"submission": str(path)}
    seqs, boxes, per_seq, metrics = evaluate_tracker(cfg, run, split)
    for s, b in zip(seqs, boxes, strict=True):
        write_boxes(out / f"{s.name}.txt", b)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "per_sequence.md").write_text(per_sequence_table(per_seq) + "\n")
    plot_curves({name: per_seq}, str(out))
    print(per_sequence_table(per_seq))
    print("[eval] " + "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics


@cli
def main(argv: list[str] | None = None) -> int:
    from recipes.train.data.tracking import load_frames, load_video

    args = parse_args(argv)
    if args.split != "val" and not args.eval:
        raise BadInput(f"--split {args.split} acts with --eval only (a video or frame folder has no split)")
    cfg = load_config(args.config, args.cfg_options)
    name = args.tracker if args.tracker != "model" else Path(args.checkpoint or "model").parent.name or "model"
    run = build_tracker(cfg, args.checkpoint, args.tracker)
    source = Path(args.video or args.frames or "eval").stem
    out = fresh_dir(Path(args.out or Path("work_dirs") / "track" / f"{name}_{source}"))
    if args.eval:
        run_eval(cfg, run, out, name, args.split)
    else:
        init = parse_init(args.init)
        seq = load_video(args.video, init) if args.video else load_frames(args.frames, init)
        t0 = time.perf_counter()
        boxes = run([seq])[0]
        fps = (len(seq) - 1) / max(time.perf_counter() - t0, 1e-9)
        write_boxes(out / "boxes.txt", boxes)
        path = write_video(seq, boxes, out, args.gif, float(seq.meta.get("fps") or 25.0))
        print(f"[track] {len(seq)} frames at {fps:.1f} frames/s: {out / 'boxes.txt'}, {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
