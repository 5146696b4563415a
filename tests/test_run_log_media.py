"""Evaluation images in TensorBoard: RunLog.media writes them, tensorboard's own reader finds them."""

from __future__ import annotations

import numpy as np
import pytest

from recipes.train.run_log import RunLog

pytest.importorskip("tensorboard")


def read_images(tb_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"images": 0})
    acc.Reload()
    return {tag: acc.Images(tag) for tag in acc.Tags()["images"]}


def test_images_and_video_frames_reach_tensorboard(tmp_path):
    from PIL import Image
    from skimage import data

    photo = data.astronaut()[::8, ::8]  # a real photo, 64 x 64
    frames = np.stack([np.roll(photo, 4 * k, axis=1) for k in range(3)])  # a short pan
    log = RunLog(tmp_path, ["g"], tensorboard=True)
    log.media(5, {"samples": photo, "clip": frames})
    log.media(9, {})  # nothing to log: no event
    log.close()
    images = read_images(tmp_path / "tb")
    assert set(images) == {"media/samples", "media/clip"}
    (event,) = images["media/samples"]
    assert (event.step, event.height, event.width) == (5, 64, 64)
    import io

    decoded = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    assert np.array_equal(decoded, photo)  # PNG: lossless
    (clip,) = images["media/clip"]
    assert clip.step == 5 and clip.height == 64 and clip.width >= 3 * 64  # the frames side by side (no moviepy)


def test_media_off_without_tensorboard_and_bad_arrays_named(tmp_path):
    log = RunLog(tmp_path, ["g"], tensorboard=False)
    log.media(1, {"samples": np.zeros((8, 8, 3), np.uint8)})  # tensorboard off: nothing written
    log.close()
    assert not (tmp_path / "tb").exists()
    log = RunLog(tmp_path, ["g"], tensorboard=True)
    with pytest.raises(ValueError, match=r"media 'x': expected uint8"):
        log.media(1, {"x": np.zeros((8, 8), np.float32)})
    log.close()
