"""tools/train.py on configs/diffusion/<family>_lora.py with tiny pipelines saved to disk and real photos.

Each pipeline folder is written with ``save_pretrained`` and loaded through diffusers' own
``from_pretrained``; photos are scikit-image's sample photos with written captions.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest
import torch

from recipes.train.config import load_config
from recipes.train.diffusion.testing import save_test_pipeline
from recipes.train.engine import Trainer
from tests.test_diffusion_data import BUCKET_PHOTOS, write_photos, write_video

pytest.importorskip("skimage.data", reason="scikit-image ships the sample photos")
ROOT = Path(__file__).resolve().parents[1]
TMP = Path(__import__("tempfile").mkdtemp(prefix="diffusion_tests_"))
pytestmark = pytest.mark.slow  # each test trains a tiny pipeline end to end: 10-60 s on a shared 2-core CPU


@functools.cache
def pipeline_dir(family: str) -> str:
    return str(save_test_pipeline(family, TMP / "pipelines" / family))


@functools.cache
def photos() -> str:
    return str(write_photos(TMP / "photos", size=64))


@functools.cache
def bucket_photos() -> str:
    return str(write_photos(TMP / "bucket_photos", names=BUCKET_PHOTOS, size=96))


@functools.cache
def videos() -> str:
    root = TMP / "videos"
    root.mkdir()
    for i, cap in enumerate(["a cat, camera panning right", "a cat close up"]):
        write_video(root / f"clip{i}.mp4")
        (root / f"clip{i}.txt").write_text(cap)
    return str(root)


CONFIG_OF = {"flux2_dev": "flux2"}  # tiny pipelines trained with another family's shipped config


def config(family: str, steps: int = 2, **options):
    """The shipped config of ``family`` with a tiny pipeline, photos, float32 and a short run."""
    data = videos() if family == "wan" else photos()
    res = "data.train.resolution=(16,16) data.train.num_frames=5" if family == "wan" else "data.train.resolution=32"
    opts = [f"model.pretrained={pipeline_dir(family)}", f"data_root={data}", "model.dtype=float32",
            f"train.max_steps={steps}", "train.batch_size=2", "train.grad_accum=1", "train.progress=False",
            "train.tensorboard=False", "train.ckpt_every=1", "train.log_every=1", "task.cache_dir=None",
            "task.samples.steps=2", "task.samples.seeds=[0]", "schedule.warmup_steps=0", *res.split()]  # fmt: skip
    opts += [f"{k}={v}" for k, v in options.items()]
    return load_config(ROOT / "configs" / "diffusion" / f"{CONFIG_OF.get(family, family)}_lora.py", opts)


def run(cfg, work_dir, resume=None):
    trainer = Trainer(cfg, work_dir, resume=resume).setup()
    return trainer, trainer.train()


def assert_sd15_lora_reproduces(model, lora_dir, atol: float, min_change: float) -> None:
    """A fresh SD 1.5 pipeline with ``load_lora_weights(lora_dir)`` gives ``model``'s U-Net output; the base does not."""
    import diffusers

    fresh = diffusers.StableDiffusionPipeline.from_pretrained(pipeline_dir("sd15"))
    fresh.load_lora_weights(str(lora_dir))
    x, t, ctx = torch.randn(1, 4, 16, 16), torch.tensor([500]), torch.randn(1, 77, 16)
    with torch.no_grad():
        want = model(x, t, encoder_hidden_states=ctx).sample
        got = fresh.unet(x, t, encoder_hidden_states=ctx).sample
        base = diffusers.UNet2DConditionModel.from_pretrained(pipeline_dir("sd15"), subfolder="unet")(
            x, t, encoder_hidden_states=ctx).sample  # fmt: skip
    torch.testing.assert_close(got, want, atol=atol, rtol=atol)
    assert (base - want).abs().max() > min_change


def resave_with_visible_lora(trainer, work_dir):
    """The trained model with its LoRA B nudged off zero (so the adapter's effect is large enough to see), exported
    again by the task into ``work_dir/lora``; returns (model, task)."""
    model, task = trainer.bare_model().eval(), trainer.task
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(torch.randn_like(p) * 0.05)
    shutil.rmtree(work_dir / "lora")
    task.final_report(model, torch.device("cpu"), None)
    return model, task


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd3", "flux", "flux2", "flux2_dev", "chroma", "zimage", "wan"])
def test_shipped_config_trains_samples_and_saves_a_lora_diffusers_loads(family, tmp_path):
    """One short run per family; then a fresh pipeline + load_lora_weights predicts what the trained model does."""
    import diffusers

    from tests.test_run_log_media import read_images

    opts = {
        "train.batch_size": 1 if family == "wan" else 2,
        "task.cache_dir": str(tmp_path / "cache"),  # not in the work dir
        "train.tensorboard": True,
    }
    trainer, summary = run(
        config(family, steps=2, **opts), tmp_path / "wd"
    )  # cached, so samples run without text encoders
    assert Path(summary["saved"]).is_file() and torch.isfinite(torch.tensor(summary["final_loss"]))
    assert trainer.task.pipe.text_encoder is None
    pngs = sorted((tmp_path / "wd" / "samples").glob("step_*.png"))
    assert pngs
    if family == "wan":
        assert list((tmp_path / "wd" / "samples").glob("step_*_p0.gif"))
    images = read_images(tmp_path / "wd" / "tb")  # the sample grid of each evaluation, as TensorBoard reads it
    (h, w), prompts = trainer.task.sample_size(), len(trainer.task.samples["prompts"])
    grid = images["media/samples"]
    assert [(e.height, e.width) for e in grid] == [(h * prompts, w)] * len(pngs)  # rows = prompts, one seed
    if family == "wan":  # each prompt's frames, side by side (moviepy absent) or as a video
        assert images["media/samples/p0"][0].width >= trainer.task.train_frames() * w
    model, task = resave_with_visible_lora(trainer, tmp_path / "wd")
    fresh = getattr(diffusers, type(task.pipe).__name__).from_pretrained(pipeline_dir(family))
    fresh.load_lora_weights(str(tmp_path / "wd" / "lora"))
    batch = task.collate([trainer.train_set[0]])
    with torch.no_grad():
        ref, nb = task.loss(model, batch, torch.device("cpu"), torch.Generator().manual_seed(1))
        got, _ = task.loss(getattr(fresh, task.family.denoiser).eval(), batch, torch.device("cpu"),
                           torch.Generator().manual_seed(1))  # fmt: skip
        base, _ = task.loss(getattr(type(task.pipe).from_pretrained(pipeline_dir(family)), task.family.denoiser).eval(),
                            batch, torch.device("cpu"), torch.Generator().manual_seed(1))  # fmt: skip
    assert float(got) == pytest.approx(float(ref), rel=1e-5, abs=1e-7)
    assert abs(float(base) - float(ref)) > 1e-5  # the LoRA changes the prediction, so the match means something


def test_lora_round_trip_sd15_prediction_equal(tmp_path):
    """Fast variant on SD 1.5: the reloaded pipeline's U-Net output equals the trained in-memory model's."""

    trainer, summary = run(config("sd15", steps=1, **{"task.samples.prompts": "[]"}), tmp_path)
    model, task = trainer.bare_model().eval(), trainer.task
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(torch.randn_like(p) * 0.05)
    shutil.rmtree(tmp_path / "lora")
    task.final_report(model, torch.device("cpu"), None)
    assert_sd15_lora_reproduces(model, tmp_path / "lora", atol=1e-5, min_change=1e-4)


BUCKETS = {
    "data_root": bucket_photos,
    "data.train.resolution": 64,
    "data.train.buckets": True,
    "data.train.bucket_step": 16,
}  # 2 square + 3 landscape photos: 3 batches of 2, 2 and 1 per epoch


@pytest.mark.parametrize("data", ["square", "buckets"])
def test_exact_resume(tmp_path, data):
    """4 steps in one go == resuming that run's step-2 checkpoint for the last 2: the same LoRA, bit for bit.

    The checkpoint holds the LoRA tensors only (``train.save_frozen='auto'``): the frozen U-Net comes back
    from ``model.pretrained`` on resume. Rank 1: the tiny U-Net's layers are 8-16 wide, so a rank-16 LoRA
    would outweigh them (and the engine would then save everything). ``buckets``: aspect-ratio buckets at
    batch size 2 with the latent cache; 3 steps per epoch, so step 2 is in the middle of the first epoch.
    """
    opts = {"task.samples.prompts": "[]", "task.caption_dropout": 0.5, "policy.r": 1, "policy.alpha": 1}
    if data == "buckets":
        opts.update({k: v() if callable(v) else v for k, v in BUCKETS.items()}, **{"task.cache_dir": tmp_path / "c"})
    straight, _ = run(config("sd15", steps=4, **opts), tmp_path / "a")
    if data == "buckets":
        assert straight.steps_per_epoch == 3 and len({tuple(t) for t in straight.train_set.targets}) == 2
    ckpt_path = tmp_path / "a" / "checkpoints" / "step_0000002.pt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    denoiser = straight.bare_model()
    lora = {n for n, p in denoiser.named_parameters() if p.requires_grad}
    assert ckpt["frozen_omitted"] and lora and all("lora_" in n for n in lora)
    assert lora <= set(ckpt["model"]) and set(ckpt["model"]) - lora <= {n for n, _ in denoiser.named_buffers()}
    full_bytes = sum(p.numel() * p.element_size() for p in denoiser.parameters())
    saved = sum(t.numel() * t.element_size() for t in ckpt["model"].values())
    assert saved < 0.05 * full_bytes, (saved, full_bytes)  # 1.9K of 67K parameters
    assert ckpt_path.stat().st_size < full_bytes  # the whole file (optimizer, RNG states, config) too
    resumed, _ = run(config("sd15", steps=4, **opts), tmp_path / "b",
                     resume=tmp_path / "a" / "checkpoints" / "step_0000002.pt")  # fmt: skip
    a = {n: p for n, p in straight.bare_model().named_parameters() if p.requires_grad}
    b = dict(resumed.bare_model().named_parameters())
    assert a and all(torch.equal(p, b[n]) for n, p in a.items())
    assert [x[1] for x in straight.history[2:]] == [x[1] for x in resumed.history]


def test_loss_falls_when_overfitting_real_photos(tmp_path):
    cfg = config("sd15", steps=40, **{"task.samples.prompts": "[]", "policy": None, "task.min_snr_gamma": None,
                                      "train.ckpt_every": None})  # fmt: skip
    cfg.strategy = dict(type="flat", lr=3e-3)  # full fine-tune of the tiny U-Net, fast enough to see in 40 steps
    trainer = Trainer(cfg, tmp_path).setup()
    loader = trainer.eval_loader(trainer.val_set)
    before = trainer.task.evaluate(trainer.bare_model(), loader, trainer.device)["loss"]
    trainer.train()
    after = trainer.task.evaluate(trainer.bare_model(), loader, trainer.device)["loss"]
    assert after < 0.8 * before, (before, after)


def test_cache_reuses_and_reencodes_changed_files(tmp_path, capsys):
    data = write_photos(tmp_path / "photos", names=["chelsea", "coffee"], size=64)
    cache = tmp_path / "cache"
    opts = {"task.cache_dir": str(cache), "task.samples.prompts": "[]", "data_root": str(data)}
    uncached, _ = run(config("sd15", steps=1, **{**opts, "task.cache_dir": None}), tmp_path / "u")
    first, _ = run(config("sd15", steps=1, **opts), tmp_path / "c1")
    assert "0 reused" in capsys.readouterr().out
    assert first.history[0][1] == pytest.approx(uncached.history[0][1], rel=1e-5)  # same draws, cached inputs
    assert first.task.pipe.text_encoder is None  # released after encoding
    (data / "coffee.txt").write_text("a cup of coffee on a wooden table")
    run(config("sd15", steps=1, **opts), tmp_path / "c2")
    out = capsys.readouterr().out
    assert "[cache]" in out and " 1 encoded" in out  # only the changed caption
    run(config("sd15", steps=1, **{**opts, "data.train.resolution": 64}), tmp_path / "c3")
    assert ": 2 reused, 4 encoded" in capsys.readouterr().out  # new size: both latents x 2 flips again, texts kept
    from safetensors.torch import load_file, save_file

    for entry in cache.rglob("latent/*.safetensors"):  # files that do not belong under their keys
        save_file(load_file(entry), str(entry), metadata={"model": "someone-else"})
    with pytest.raises(ValueError, match="was written for another input"):
        run(config("sd15", steps=1, **opts), tmp_path / "c4")


def test_kohya_format_loads_in_diffusers(tmp_path):
    import diffusers

    trainer, summary = run(config("sd15", steps=1, **{"task.samples.prompts": "[]", "task.save_format": "kohya"}),
                           tmp_path)  # fmt: skip
    keys = __import__("safetensors.torch").torch.load_file(summary["saved"])
    assert any(k.startswith("lora_unet_down_blocks_1_attentions_0") and k.endswith(".lora_down.weight") for k in keys)
    fresh = diffusers.StableDiffusionPipeline.from_pretrained(pipeline_dir("sd15"))
    fresh.load_lora_weights(str(Path(summary["saved"]).parent))  # diffusers' kohya converter accepts it
    assert sum("lora" in n for n, _ in fresh.unet.named_parameters()) == sum(
        "lora" in n for n, _ in trainer.bare_model().named_parameters()
    )


def test_bad_input_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(pipeline_dir("sd15"), broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(FileNotFoundError, match=r"component 'vae' \(AutoencoderKL\) .* is missing"):
        Trainer(config("sd15", **{"model.pretrained": str(broken)}), tmp_path / "a").setup()
    with pytest.raises(ValueError, match=r"sizes \[\(31, 31\)\] are not multiples of 2"):
        Trainer(config("sd15", **{"data.train.resolution": 31}), tmp_path / "b").setup()
    with pytest.raises(ValueError, match=r"not multiples of 4 .*flux"):  # VAE factor 2 x Flux's 2x2 packing
        Trainer(config("flux", **{"data.train.resolution": 34}), tmp_path / "c").setup()
    with pytest.raises(ValueError, match=r"not multiples of 4 .*flux2"):  # Flux.2 folds 2x2 latent patches too
        Trainer(config("flux2", **{"data.train.resolution": 34}), tmp_path / "c2").setup()
    with pytest.raises(ValueError, match=r"policy.targets='nothing_here' match no module"):
        Trainer(config("sd15", **{"policy.targets": "nothing_here"}), tmp_path / "d").setup()
    with pytest.raises(
        ValueError, match=r"model.preset='flux1-dev' is FluxTransformer2DModel, but .* UNet2DConditionModel"
    ):
        Trainer(config("sd15", **{"model.preset": "flux1-dev"}), tmp_path / "e").setup()
    with pytest.raises(KeyError, match=r"`task.min_snr` is not read by anything \(did you mean 'min_snr_gamma'"):
        Trainer(config("sd15", **{"task.min_snr": 5}), tmp_path / "f").setup()
    with pytest.raises(ValueError, match=r"task.cache_dir=.* is inside the work dir"):
        Trainer(config("sd15", **{"task.cache_dir": str(tmp_path / "h" / "cache")}), tmp_path / "h").setup()
    with pytest.raises(ValueError, match=r"task.min_snr_gamma applies to DDPM families"):
        Trainer(config("flux", **{"task.min_snr_gamma": 5}), tmp_path / "g").setup()


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd3", "flux", "flux2", "chroma", "zimage", "wan"])
def test_show_lr_path_sees_the_tasks_lora(family):
    """``prepare_run`` without data or weights (tools/show_lr.py): the full-size denoiser on the meta device
    with the task's LoRA, so the groups and the optimizer hold the LoRA tensors only."""
    from recipes.train.build import prepare_run

    cfg = load_config(ROOT / "configs" / "diffusion" / f"{family}_lora.py",
                      ["model.device=meta", "model.pretrained=None"])  # fmt: skip
    plan = prepare_run(cfg, data=False)
    grouped = [p for g in plan.groups for p in g["params"]]
    trainable = [p for p in plan.model.parameters() if p.requires_grad]
    assert len(grouped) == len(trainable) > 0 and {id(p) for p in grouped} == {id(p) for p in trainable}
    names = [n for n, p in plan.model.named_parameters() if p.requires_grad]
    assert all("lora_A" in n or "lora_B" in n for n in names)
    assert sum(p.numel() for p in trainable) < 0.05 * sum(p.numel() for p in plan.model.parameters())
    with pytest.raises(ValueError, match=r"model.preset='nope'"):
        prepare_run(load_config(ROOT / "configs" / "diffusion" / f"{family}_lora.py",
                                ["model.device=meta", "model.pretrained=None", "model.preset=nope"]), data=False)  # fmt: skip


def test_best_pt_of_a_lora_run_is_lora_only_and_exports_to_diffusers(tmp_path, capsys):
    """best.pt follows train.save_frozen: the LoRA tensors and the frozen fingerprint; tools/export_diffusion.py
    completes it from model.pretrained into a LoRA that diffusers loads, predicting what the trained model does."""

    from tools import export_diffusion

    opts = {"task.samples.prompts": "[]", "policy.r": 1, "policy.alpha": 1}
    trainer, summary = run(config("sd15", steps=2, **opts), tmp_path / "wd")  # 2 steps = 1 epoch: one evaluation
    best_path = tmp_path / "wd" / "best.pt"
    best = torch.load(best_path, weights_only=True)
    model = trainer.bare_model().eval()
    lora = {n for n, p in model.named_parameters() if p.requires_grad}
    assert best["frozen_omitted"] and best["frozen_fingerprint"].numel() > 0 and best["step"] == 2
    assert lora <= set(best["model"]) and not set(best["model"]) - lora - {n for n, _ in model.named_buffers()}
    assert all(best["model"][n].abs().max() > 0 for n in lora if "lora_B" in n)  # trained, not the zero init
    cfg_file = tmp_path / "wd" / "config.py"  # the run's resolved config
    out = tmp_path / "best_lora"
    assert export_diffusion.main([str(cfg_file), str(best_path), "--out", str(out)]) == 0
    assert_sd15_lora_reproduces(model, out, atol=1e-6, min_change=0.0)
    capsys.readouterr()
    assert export_diffusion.main([str(cfg_file), str(best_path), "--out", str(out)]) == 2  # never replaces files
    assert "already holds files" in capsys.readouterr().err
    none = ["--cfg-options", "model.pretrained=None"]
    assert export_diffusion.main([str(cfg_file), str(best_path), "--out", str(tmp_path / "x"), *none]) == 2
    assert (
        "holds only the trainable tensors (frozen_omitted) of its run; set model.pretrained" in capsys.readouterr().err
    )
    other = save_test_pipeline("sd15", tmp_path / "other_sd15", seed=1)
    wrong = ["--cfg-options", f"model.pretrained={other}"]
    assert export_diffusion.main([str(cfg_file), str(best_path), "--out", str(tmp_path / "y"), *wrong]) == 2
    assert "different frozen weights" in capsys.readouterr().err
