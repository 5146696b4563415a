"""Every diffusion task option changes the training loss (same batch, same random draws), or fails by name."""

from __future__ import annotations

import pytest
import torch

from recipes.train.build import build_model
from recipes.train.config import train_options
from recipes.train.tasks.base import build_task
from tests.test_diffusion_task import config

pytestmark = pytest.mark.slow  # loads tiny pipelines several times: ~30 s on a shared 2-core CPU


def task_loss(family: str, **opts):
    cfg = config(family, **opts)
    task = build_task(cfg)
    train, _ = task.build_datasets()
    model = build_model(cfg, task, train_options(cfg))  # as tools/train.py builds it (train.grad_checkpointing)
    batch = task.collate([train[0], train[1]])
    with torch.no_grad():
        loss, _ = task.loss(model, batch, torch.device("cpu"), torch.Generator().manual_seed(0))
    return float(loss), task, model


@pytest.mark.parametrize(
    ("family", "option", "value"),
    [("sd15", "task.prediction_type", "v_prediction"), ("sd15", "task.min_snr_gamma", 1.0),
     ("sd15", "task.caption_dropout", 0.9), ("flux", "task.guidance_scale", 10.0), ("flux", "task.shift", 1.0),
     ("flux", "task.timestep_sampling", "uniform"), ("flux", "task.logit_mean", 1.5), ("flux", "task.logit_std", 2.5), ("flux2", "task.shift", 1.0),
     ("flux2", "task.caption_dropout", 0.9), ("flux2_dev", "task.guidance_scale", 10.0), ("chroma", "task.caption_dropout", 0.9), ("zimage", "task.caption_dropout", 0.9),
     ("sd15", "data.train.flip_p", 1.0), ("sd15", "data.train.crop", "random"),
     ("sd15", "data.train.instance_prompt", "a photo of sks thing"), ("sd15", "task.noise_offset", 0.1),
     ("flux", "task.noise_offset", 0.1), ("sd15", "data.train.trigger_word", "ohwx")],
)  # fmt: skip
def test_option_changes_the_loss(family, option, value):
    base, _, _ = task_loss(family, **{"task.min_snr_gamma": None} if family == "sd15" else {})
    changed, _, _ = task_loss(family, **{option: value, **({"task.min_snr_gamma": None} if family == "sd15" and option != "task.min_snr_gamma" else {})})  # fmt: skip
    assert changed != pytest.approx(base, rel=1e-6), option


def test_lora_options_shape_the_adapter():
    _, _, model = task_loss("sd15", **{"policy.r": 2, "policy.targets": ["to_q"]})
    names = [n for n, _ in model.named_parameters() if "lora_A" in n]
    assert names and all(".to_q." in n for n in names)
    assert all(p.shape[0] == 2 for n, p in model.named_parameters() if "lora_A" in n)
    _, _, dora = task_loss("sd15", **{"policy.dora": True})
    assert any("lora_magnitude_vector" in n for n, _ in dora.named_parameters())
    _, _, full = task_loss("sd15", **{"policy": None})
    assert all(p.requires_grad for p in full.parameters()) and not any("lora" in n for n, _ in full.named_parameters())


def test_gradient_checkpointing_same_loss_and_grads():
    a, _, ma = task_loss("flux", **{"policy.dropout": 0.0})
    b, _, mb = task_loss("flux", **{"policy.dropout": 0.0, "train.grad_checkpointing": True})
    assert mb.is_gradient_checkpointing and not ma.is_gradient_checkpointing
    assert a == pytest.approx(b, rel=1e-6)


def test_guidance_scale_acts_or_fails():
    """It feeds a guidance-distilled denoiser (default 1.0, as the peers train); on a denoiser without a guidance
    input it is an error."""
    _, flux, _ = task_loss("flux")
    assert flux.guidance_scale == 1.0 and flux.pipe.transformer.config.guidance_embeds  # the shipped config's value
    _, dev, _ = task_loss("flux2_dev")  # configs/diffusion/_base_/flux2.py leaves it unset: the default
    assert dev.guidance_scale == 1.0 and dev.pipe.transformer.config.guidance_embeds
    _, klein, _ = task_loss("flux2")
    assert klein.guidance_scale is None and not klein.pipe.transformer.config.guidance_embeds
    with pytest.raises(ValueError, match=r"task.guidance_scale=7.0 does nothing: this flux2 denoiser has no guidance"):
        task_loss("flux2", **{"task.guidance_scale": 7.0})


def test_noise_offset_is_checked_and_cache_refuses_changing_captions():
    with pytest.raises(ValueError, match=r"task.noise_offset must lie in \[0, 1\)"):
        build_task(config("sd15", **{"task.noise_offset": -0.1}))
    task = build_task(config("sd15", **{"data.train.shuffle_tags": True, "task.cache_dir": "/tmp/never_written"}))
    with pytest.raises(ValueError, match=r"data.shuffle_tags / data.tag_dropout change a file's caption each epoch"):
        task.build_datasets()
