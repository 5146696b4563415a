"""tools/track.py's output and progress: a video every browser plays (GIF by default, H.264 mp4 on request, none),
and one bar over the frames tracked with the rate in frames/s, for a video and for --eval.

OpenCV's TrackerMIL (no checkpoint) on moving-square sequences; the mp4 is decoded back with PyAV.
"""

from __future__ import annotations

import sys
import time

import pytest
from mmengine.config import Config

from tests.tracking_fixtures import frames_of, write_frames, write_got10k
from tools import track as track_tool


def tiny_cfg(root) -> Config:
    return Config(dict(
        data_root=str(root),
        model=dict(type="videomae_tracker", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=64, patch_size=8, num_frames=2, tubelet_size=2),
        task=dict(type="tracking", template_size=16, search_size=32),
        data=dict(val=dict(type="tracking_sequences", sequences=["a", "b"])),
        adapter="videomae",
        strategy=dict(type="layer_decay", lr=1e-3, decay=0.5),
        optimizer=dict(type="AdamW"),
        schedule=dict(type="constant"),
        train=dict(epochs=1, batch_size=2, progress=False, tensorboard=False),
    ))  # fmt: skip


@pytest.fixture
def setup(tmp_path):
    """A config over two 6-frame sequences, and a frame folder of a third."""
    for k, name in enumerate(("a", "b")):
        write_got10k(tmp_path / "root", name, n=6, seed=k)
    cfg = tmp_path / "tiny.py"
    tiny_cfg(tmp_path / "root").dump(str(cfg))
    frames, _ = frames_of(6, seed=5)
    write_frames(tmp_path / "frames", frames)
    return cfg, tmp_path / "frames"


def _track(cfg, frames, out, *extra):
    argv = [str(cfg), "--tracker", "opencv_mil", "--frames", str(frames), "--init", "6,14,12,10", "--out", str(out)]
    return track_tool.main([*argv, *extra])


def test_video_out_is_a_gif_by_default_an_h264_mp4_on_request_or_none(setup, tmp_path, capsys):
    import av
    from PIL import Image

    cfg, frames = setup
    assert _track(cfg, frames, tmp_path / "g") == 0
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["boxes.txt", "track.gif"]  # was track.mp4 (mp4v)
    with Image.open(tmp_path / "g" / "track.gif") as gif:
        assert gif.n_frames == 6 and gif.size == (64, 48)
    assert _track(cfg, frames, tmp_path / "m", "--format", "mp4") == 0
    with av.open(str(tmp_path / "m" / "track.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 6 and decoded[0].shape == (48, 64, 3)
    assert _track(cfg, frames, tmp_path / "n", "--format", "none") == 0
    assert [p.name for p in (tmp_path / "n").iterdir()] == ["boxes.txt"]
    out = capsys.readouterr().out
    assert "track.gif" in out and "track.mp4" in out


def test_mp4_without_an_h264_encoder_is_one_error_before_tracking(setup, tmp_path, capsys, monkeypatch):
    cfg, frames = setup
    monkeypatch.setitem(sys.modules, "av", None)  # PyAV not installed
    assert _track(cfg, frames, tmp_path / "m", "--format", "mp4") == 2
    err = capsys.readouterr().err
    assert "error: --format mp4 writes H.264 with PyAV, which is not installed: pip install av" in err
    assert not (tmp_path / "m").exists()
    assert track_tool.main([str(cfg), "--tracker", "opencv_mil", "--eval", "--format", "mp4"]) == 2
    assert "--format mp4 acts with --video / --frames only" in capsys.readouterr().err


def test_video_and_eval_show_frames_tracked_and_frames_per_second(setup, tmp_path, capsys):
    cfg, frames = setup
    assert _track(cfg, frames, tmp_path / "v") == 0
    err = capsys.readouterr().err
    assert "6/6 frames" in err and "frames/s" in err
    assert track_tool.main([str(cfg), "--tracker", "opencv_mil", "--eval", "--out", str(tmp_path / "e")]) == 0
    err = capsys.readouterr().err
    assert "12/12 frames" in err and "frames/s" in err  # one bar over both sequences (the eval was silent)


def test_frame_rate_keeps_decimals_below_one(monkeypatch):
    progress = track_tool.FrameProgress(10, enabled=False)
    progress.advance(4)
    now = progress.t0 + 10.0
    monkeypatch.setattr(time, "perf_counter", lambda: now)
    assert progress.rate() == "0.40"  # tqdm alone would say 2.50s/frame
    progress.advance(96)
    assert progress.rate() == "10"
