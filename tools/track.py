"""Run a trained tracker (or OpenCV's TrackerMIL) on a video, a frame folder, or the config's eval sequences.

    python tools/track.py CONFIG CKPT --video clip.mp4 --init x,y,w,h [--out DIR] [--format gif|mp4|none]
    python tools/track.py CONFIG CKPT --frames DIR --init x,y,w,h
    python tools/track.py CONFIG CKPT --eval [--cfg-options data_root=DIR]      # one-pass evaluation
    python tools/track.py CONFIG --tracker opencv_mil --eval                    # the same, OpenCV TrackerMIL
    python tools/track.py CONFIG CKPT --eval --split test                       # data.test (withheld: submission)

A video / frame folder gives ``boxes.txt`` (x,y,w,h per frame) and the frames with the box drawn, in a
form every browser plays: ``track.gif`` (default), ``track.mp4`` in H.264 with ``--format mp4`` (PyAV's
libx264; an error naming the fix where that encoder is missing), or none with ``--format none``. A bar
shows the frames tracked and the rate in frames/s (decimals below 1), for ``--eval`` over every sequence. ``--eval`` gives ``metrics.json``, ``per_sequence.md``, the success and
precision plots (PNG) and one ``<sequence>.txt`` per sequence; on a split whose boxes are withheld (GOT-10k
test, TrackingNet TEST) the evaluation server's ``submission/`` folder and ``submission.zip`` instead. ``--out`` must be a new or empty folder:
nothing already written is replaced. Exit status: 0 done, 2 bad input, 4 unexpected.

The model is rebuilt as every tool rebuilds one (``recipes.train.build.rebuild_model``: built as
``tools/train.py`` builds it, the whole config checked first) and the checkpoint is read by
``read_checkpoint`` (tensors only: nothing in it runs).
"""

from __future__ import annotations

import argparse
import json
import re
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
    ap.add_argument(
        "--format",
        default="gif",
        choices=["gif", "mp4", "none"],
        help="the annotated video: track.gif (default), track.mp4 in H.264 (needs PyAV), or none",
    )
    ap.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    argv = list(sys.argv[1:] if argv is None else argv)
    for i in range(len(argv) - 1):  # `--init -10,20,30,40`: a box left of the frame, not an option
        if argv[i] == "--init" and re.match(r"-\d|-\.\d", argv[i + 1]):
            argv[i : i + 2] = [f"--init={argv[i + 1]}", ""]
    return ap.parse_args([a for a in argv if a != ""])


def parse_init(text: str | None) -> tuple[float, float, float, float]:
    if text is None:
        raise ValueError("--init x,y,w,h is required with --video / --frames (the target's first-frame box)")
    try:
        vals = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise ValueError(f"--init {text!r}: expected four numbers x,y,w,h") from None
    if len(vals) != 4:
        raise ValueError(f"--init {text!r}: expected four numbers x,y,w,h, got {len(vals)}")
    if not all(v == v and abs(v) != float("inf") for v in vals) or vals[2] <= 0 or vals[3] <= 0:
        raise ValueError(f"--init {text!r}: the width and height must be > 0 and every number finite")
    return vals  # type: ignore[return-value]


class FrameProgress:
    """One bar over every frame tracked (a video, or all of ``--eval``'s sequences) with the rate in frames/s:
    decimals below 1 (a big model on a CPU tracks 0.43 frames/s, which tqdm would show as 2.33s/frame)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        from tqdm import tqdm

        self.done, self.t0 = 0, time.perf_counter()
        self.bar = tqdm(total=total, desc="track", unit="frame", dynamic_ncols=True, mininterval=1.0,
                        disable=not enabled, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                        "frames [{elapsed}<{remaining}{postfix}]")  # fmt: skip

    def advance(self, n: int) -> None:
        self.done += n
        self.bar.set_postfix_str(f"{self.rate()} frames/s", refresh=False)
        self.bar.update(n)

    def rate(self) -> str:
        return per_second(self.done / max(time.perf_counter() - self.t0, 1e-9))

    def close(self) -> None:
        self.bar.set_postfix_str(f"{self.rate()} frames/s", refresh=False)
        self.bar.close()


class FramesWithProgress:
    """A sequence whose frame reads advance a :class:`FrameProgress`; everything else is the sequence's."""

    def __init__(self, seq: Any, progress: FrameProgress) -> None:
        self.seq, self.progress, self.done = seq, progress, -1

    def __len__(self) -> int:
        return len(self.seq)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.seq, name)

    def read(self, i: int) -> Any:
        frame = self.seq.read(i)
        if i > self.done:
            self.progress.advance(i - self.done)
            self.done = i
        return frame


def with_progress(run: Any) -> Any:
    """``run`` (sequences -> boxes) with one bar over all the frames it reads."""

    def shown(seqs: list[Any]) -> list[np.ndarray]:
        progress = FrameProgress(sum(len(s) for s in seqs))
        try:
            return run([FramesWithProgress(s, progress) for s in seqs])
        finally:
            progress.close()

    return shown


def fresh_dir(path: Path) -> Path:
    check_output_folder(path, "--out")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"--out {path} already holds files; give a new or empty folder (nothing is replaced)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_tracker(cfg: Any, ckpt_path: str | None, kind: str) -> Any:
    """A function ``seqs -> list of (N, 4) boxes``.

    The model is rebuilt by ``recipes.train.build.rebuild_model``, the one path every tool shares (built
    as ``tools/train.py`` builds it). A full checkpoint holds every weight, so ``model.pretrained`` is not
    needed; a trainable-only one (``frozen_omitted``: a step checkpoint, or the ``best.pt`` of a mostly
    frozen run under ``train.save_frozen='auto'``) needs the run's own ``model.pretrained`` and is checked
    against it.
    """
    from recipes.train.build import rebuild_model
    from recipes.train.tasks.tracking import TrackingTask, track
    from recipes.train.tasks.tracking_online import track_opencv_mil

    if kind == "opencv_mil":
        if ckpt_path is not None:
            raise BadInput("--tracker opencv_mil takes no checkpoint; remove it (or use --tracker model)")
        return lambda seqs: [track_opencv_mil(s) for s in seqs]
    if ckpt_path is None:
        raise BadInput("a checkpoint is required with --tracker model (or use --tracker opencv_mil)")
    task, model = rebuild_model(cfg, read_checkpoint(ckpt_path), TrackingTask)
    return lambda seqs: track(model, seqs, task.tracker_options, torch.device("cpu"))


def write_boxes(path: Path, boxes: np.ndarray) -> None:
    path.write_text("".join(f"{x:.2f},{y:.2f},{w:.2f},{h:.2f}\n" for x, y, w, h in boxes))


def write_video(seq: Any, boxes: np.ndarray, out: Path, fmt: str, fps: float = 25.0) -> Path:
    """The frames with their box drawn: ``track.gif``, or ``track.mp4`` in H.264 (yuv420p), both browser-playable."""
    import cv2

    frames = []
    for i in range(len(seq)):
        img = np.ascontiguousarray(seq.read(i))
        x, y, w, h = (int(round(v)) for v in boxes[i])
        cv2.rectangle(img, (x, y), (x + w, y + h), (255, 40, 40), 2)
        frames.append(img)
    if fmt == "gif":
        from PIL import Image

        ims = [Image.fromarray(f) for f in frames]
        path = out / "track.gif"
        ims[0].save(path, save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0)
        return path
    return write_h264(frames, out / "track.mp4", fps)


def h264_encoder() -> str:
    """The name of PyAV's H.264 encoder, or an error saying how to get one (OpenCV's wheels write only mp4v,
    which browsers do not play)."""
    try:
        import av
    except ImportError:
        raise BadInput("--format mp4 writes H.264 with PyAV, which is not installed: pip install av (its wheels "
                       "carry libx264), or use --format gif") from None  # fmt: skip
    for name in ("libx264", "libopenh264"):
        if name in av.codecs_available:
            return name
    raise BadInput("--format mp4: this PyAV has no H.264 encoder (libx264 / libopenh264); install PyAV's own wheel "
                   "(pip install --force-reinstall av) or use --format gif")  # fmt: skip


def write_h264(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    """H.264 in yuv420p (even sides: the last row / column of an odd frame is dropped), ``faststart`` mp4."""
    import av

    encoder = h264_encoder()
    h, w = (frames[0].shape[0] // 2) * 2, (frames[0].shape[1] // 2) * 2
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream(encoder, rate=max(1, round(fps)))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h, :w]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
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
    seqs, boxes, per_seq, metrics = evaluate_tracker(cfg, run, split, data)
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
    if args.format != "gif" and args.eval:
        raise BadInput(f"--format {args.format} acts with --video / --frames only (--eval writes no video)")
    if args.format == "mp4":
        h264_encoder()  # before any tracking: a missing encoder is known now
    cfg = load_config(args.config, args.cfg_options)
    name = args.tracker if args.tracker != "model" else Path(args.checkpoint or "model").parent.name or "model"
    run = with_progress(build_tracker(cfg, args.checkpoint, args.tracker))
    source = Path(args.video or args.frames or "eval").stem
    out = fresh_dir(Path(args.out or Path("work_dirs") / "track" / f"{name}_{source}"))
    if args.eval:
        run_eval(cfg, run, out, name, args.split)
    else:
        init = parse_init(args.init)
        seq = load_video(args.video, init) if args.video else load_frames(args.frames, init)
        t0 = time.perf_counter()
        boxes = run([seq])[0]
        fps = per_second((len(seq) - 1) / max(time.perf_counter() - t0, 1e-9))  # the first frame is given
        write_boxes(out / "boxes.txt", boxes)
        written = [out / "boxes.txt"]
        if args.format != "none":
            written.append(write_video(seq, boxes, out, args.format, float(seq.meta.get("fps") or 25.0)))
        print(f"[track] {len(seq)} frames at {fps} frames/s: {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
