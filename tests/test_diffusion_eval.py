"""Evaluation on its own clock: ``train.eval_every`` / ``task.sample_every`` in steps, a held-out validation split
(``data.train.val_split`` or a ``data.val`` folder) scored at fixed timesteps with fixed noise, best.pt picked by it."""

from __future__ import annotations

import json

import pytest
import torch

from recipes.train.data.captioned import CaptionedImages, validation_set
from recipes.train.tasks.base import build_task
from tests.test_diffusion_data import PHOTOS, write_photos
from tests.test_diffusion_task import config, run


def test_val_split_holds_out_the_same_files_whatever_the_seed_or_order(tmp_path):
    root = str(write_photos(tmp_path / "p", size=32))
    splits = []
    for seed in (0, 7):
        train = CaptionedImages(root, resolution=32, flip_p=1.0, crop="random", seed=seed, val_split=0.5)
        val = validation_set(train, None)
        assert len(train) == len(val) == 2 and not set(train.files) & set(val.files)
        assert (val.flip_p, val.crop) == (0.0, "center") and train.flip_p == 1.0  # validation sees fixed pixels
        assert [val.captions[i] == PHOTOS[f.stem] for i, f in enumerate(val.files)] == [True, True]
        splits.append(sorted(val.files))
    assert splits[0] == splits[1]
    every = CaptionedImages(root, resolution=32)
    held = CaptionedImages(root, resolution=32, val_split=1).split_off_val()  # the file whose sha256 sorts first
    assert held.files == [every.files[min(range(len(every)), key=every.keys.__getitem__)]]


def test_without_a_validation_set_the_training_set_is_used_with_a_warning(tmp_path, caplog):
    train = CaptionedImages(str(write_photos(tmp_path / "p", size=32)), resolution=32)
    assert validation_set(train, None) is train
    assert "no validation set (data.val or data.train.val_split)" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"val_split": 4}, r"val_split=4 holds out 4 of the 4 images .* leave at least one to train on"),
     ({"val_split": 1.5}, r"data.train.val_split must be a fraction in \(0, 1\) or a whole count, got 1.5"),
     ({"val_split": -1}, r"data.train.val_split must be a fraction"),
     ({"val_split": True}, r"data.train.val_split must be a fraction")],
)  # fmt: skip
def test_bad_val_split_is_an_error_naming_it(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CaptionedImages(str(write_photos(tmp_path / "p", size=32)), resolution=32, **kwargs)


def test_val_folder_must_be_another_folder_and_only_one_validation_source(tmp_path):
    root = str(write_photos(tmp_path / "p", size=32))
    with pytest.raises(ValueError, match=r"data.val.root=.* is the training folder"):
        validation_set(CaptionedImages(root, resolution=32), CaptionedImages(root, resolution=32))
    other = str(write_photos(tmp_path / "q", names=["chelsea"], size=32))
    with pytest.raises(ValueError, match=r"data.train.val_split and data.val both give a validation set"):
        validation_set(CaptionedImages(root, resolution=32, val_split=1), CaptionedImages(other, resolution=32))
    given = CaptionedImages(other, resolution=32)
    assert validation_set(CaptionedImages(root, resolution=32), given) is given


def test_sample_every_is_checked():
    with pytest.raises(ValueError, match=r"task.sample_every must be a whole number of steps >= 1, got 0"):
        build_task(config("sd15", **{"task.sample_every": 0}))
    with pytest.raises(ValueError, match=r"task.sample_every does nothing without task.samples.prompts"):
        build_task(config("sd15", **{"task.sample_every": 2, "task.samples.prompts": []}))


def test_eval_every_is_checked():
    from recipes.train.config import train_options

    with pytest.raises(ValueError, match=r"train.eval_every"):
        train_options(config("sd15", **{"train.eval_every": 0}))


@pytest.mark.slow  # loads the tiny SD 1.5 pipeline: ~10 s on a shared 2-core CPU
def test_validation_loss_is_fixed_per_weights_and_held_out():
    """Two evaluations of the same weights give the same loss (fixed timesteps, fixed noise); the held-out split
    scores other images than the training set, so it gives another loss."""
    cfg = config("sd15", **{"data.train.val_split": 1, "task.samples.prompts": []})
    task = build_task(cfg)
    train, val = task.build_datasets()
    model = task.build_model()
    assert len(train) == 3 and len(val) == 1
    loader = [task.collate([val[0]])]
    first, again = task.evaluate(model, loader, torch.device("cpu")), task.evaluate(model, loader, torch.device("cpu"))
    assert first == again and set(first) == {"loss", "loss_t25", "loss_t50", "loss_t75"}
    assert first["loss"] == pytest.approx((first["loss_t25"] + first["loss_t50"] + first["loss_t75"]) / 3)
    assert len({first["loss_t25"], first["loss_t50"], first["loss_t75"]}) == 3  # three points of the schedule
    on_train = task.evaluate(model, [task.collate([train[0]])], torch.device("cpu"))
    assert on_train["loss"] != pytest.approx(first["loss"], rel=1e-4)


@pytest.mark.slow  # trains the tiny SD 1.5 pipeline twice for 4 steps: ~40 s on a shared 2-core CPU
def test_eval_every_and_sample_every_run_on_steps_and_best_pt_follows_the_held_out_loss(tmp_path):
    opts = {"data.train.val_split": 1, "train.batch_size": 1, "train.ckpt_every": None, "task.min_snr_gamma": None}
    run(config("sd15", steps=4, **opts), tmp_path / "epochs")  # 3 training photos: an epoch is 3 steps
    epochs = [json.loads(line) for line in (tmp_path / "epochs" / "eval_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in epochs] == [3, 4]
    opts.update({"train.eval_every": 2, "task.sample_every": 4})
    trainer, summary = run(config("sd15", steps=4, **opts), tmp_path / "steps")
    evals = [json.loads(line) for line in (tmp_path / "steps" / "eval_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [2, 4]
    assert [p.name for p in sorted((tmp_path / "steps" / "samples").glob("step_*.png"))] == ["step_0000004.png"]
    best = json.loads((tmp_path / "steps" / "best.json").read_text())
    lowest = min(evals, key=lambda e: e["loss"])
    assert (best["step"], best["value"]) == (lowest["step"], pytest.approx(lowest["loss"]))
    assert len(trainer.val_set) == 1 and trainer.val_set.files[0] not in trainer.train_set.files
