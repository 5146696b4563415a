"""Wan 2.2 (two experts split at ``boundary_ratio``): the pipeline-step parity of each expert, the expert option's
errors, and one training run per expert on the shipped config with a LoRA that diffusers loads back."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from recipes.train.diffusion.families import FAMILIES, WanExpert
from recipes.train.diffusion.objectives import FlowObjective
from recipes.train.diffusion.testing import build_test_pipeline


@functools.cache
def pipeline():
    pipe = build_test_pipeline("wan22")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.slow  # one pipeline step per expert: 10-50 s on the shared 2-core CPU
def test_each_expert_is_one_euler_step_of_the_pipeline_on_its_side_of_the_boundary():
    """``WanPipeline.__call__`` with one sigma runs ``transformer`` for t >= 875 and ``transformer_2`` below: the
    expert's family call equals that step, the other expert does not, and the target returns x0."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = pipeline()
    obj = FlowObjective(pipe.scheduler.config)
    x0 = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cond = FAMILIES["wan"].encode_prompts(pipe, ["a cat walking on grass"], torch.device("cpu"))
        for t, expert, other in ((0.8, "transformer", "transformer_2"), (0.5, "transformer_2", "transformer")):
            fam = FAMILIES["wan"].for_pipeline(pipe, expert)
            sigma = obj.shift_sigmas(torch.tensor([t]), 0)  # 3t / (1 + 2t): 0.923 (high) and 0.75 (low)
            lo, hi = fam.sigma_range()
            assert lo <= float(sigma) < hi or (hi == 1.0 and lo <= float(sigma))
            nb = obj.noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)), 0, sigma)
            pred = fam.predict(getattr(pipe, expert), nb.noisy, nb.timesteps, cond, {})
            wrong = fam.predict(getattr(pipe, other), nb.noisy, nb.timesteps, cond, {})
            sched = pipe.scheduler
            sched.set_timesteps = functools.partial(FlowMatchEulerDiscreteScheduler.set_timesteps, sched, sigmas=[t])
            try:
                stepped = pipe(prompt_embeds=cond["prompt_embeds"], latents=nb.noisy, num_inference_steps=1,
                               guidance_scale=1.0, height=32, width=32, num_frames=5,
                               output_type="latent").frames  # fmt: skip
            finally:
                del sched.set_timesteps
            torch.testing.assert_close(sched.sigmas[:1], sigma)
            torch.testing.assert_close(stepped, nb.noisy - sigma * pred, atol=5e-5, rtol=1e-5)
            assert (stepped - (nb.noisy - sigma * wrong)).abs().max() > 1e-3  # the experts differ: the match picks one
            sched.set_timesteps(sigmas=[t])
            out = sched.step(nb.target, sched.timesteps[0], nb.noisy).prev_sample
            torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)


def test_expert_option_is_required_on_wan22_and_refused_elsewhere():
    pipe = pipeline()
    with pytest.raises(ValueError, match=r"task.expert=None: this Wan 2.2 pipeline has two experts"):
        FAMILIES["wan"].for_pipeline(pipe, None)
    with pytest.raises(ValueError, match=r"task.expert='transformer_3'"):
        FAMILIES["wan"].for_pipeline(pipe, "transformer_3")
    with pytest.raises(ValueError, match=r"task.expert='transformer' applies to two-expert pipelines"):
        FAMILIES["wan"].for_pipeline(build_test_pipeline("wan"), "transformer")
    assert FAMILIES["wan"].for_pipeline(build_test_pipeline("wan"), None) is FAMILIES["wan"]
    high, low = WanExpert("transformer", 0.875), WanExpert("transformer_2", 0.875)
    assert (high.denoiser, high.sigma_range()) == ("transformer", (0.875, 1.0))
    assert (low.denoiser, low.sigma_range()) == ("transformer_2", (0.0, 0.875))


@pytest.mark.slow  # two tiny video runs end to end: ~30 s on a shared 2-core CPU
@pytest.mark.parametrize("expert", ["transformer", "transformer_2"])
def test_wan22_config_trains_one_expert_on_its_timesteps_and_the_lora_loads_into_it(expert, tmp_path):
    """The shipped config trains the named expert only (the other keeps its weights), every training timestep lies
    on the expert's side of the boundary, and a fresh pipeline with ``load_lora_weights`` (into ``transformer_2``
    for the low-noise expert) gives the trained model's loss."""
    import diffusers

    from recipes.train.config import load_config
    from recipes.train.diffusion.testing import save_test_pipeline
    from tests.test_diffusion_task import ROOT, TMP, run, videos

    pipe_dir = TMP / "pipelines" / "wan22"
    if not (pipe_dir / "model_index.json").exists():
        save_test_pipeline("wan22", pipe_dir)
    opts = [f"model.pretrained={pipe_dir}", f"data_root={videos()}", "model.dtype=float32", "train.max_steps=2",
            "train.batch_size=1", "train.grad_accum=1", "train.progress=False", "train.tensorboard=False",
            "train.ckpt_every=1", "train.log_every=1", "task.cache_dir=None", "task.samples.steps=2",
            "task.samples.seeds=[0]", "schedule.warmup_steps=0", "data.train.resolution=(16,16)",
            "data.train.num_frames=5", f"task.expert={expert}"]  # fmt: skip
    trainer, summary = run(load_config(ROOT / "configs" / "diffusion" / "wan22_lora.py", opts), tmp_path / "wd")
    task, model = trainer.task, trainer.bare_model().eval()
    assert task.family.denoiser == expert and model is getattr(task.pipe, expert)
    other = "transformer_2" if expert == "transformer" else "transformer"
    assert not any("lora" in n for n, _ in getattr(task.pipe, other).named_parameters())
    batch = task.collate([trainer.train_set[0]])
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        ts = torch.cat([task.loss(model, batch, torch.device("cpu"), gen)[1].timesteps for _ in range(20)])
    assert bool((ts >= 875).all()) if expert == "transformer" else bool((ts < 875).all() and (ts > 0).all())
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(torch.randn_like(p) * 0.05)  # LoRA B starts at zero: make the adapter's effect visible
    saved = Path(task.final_report(model, torch.device("cpu"), None)["saved"])
    fresh = diffusers.WanPipeline.from_pretrained(str(pipe_dir))
    fresh.load_lora_weights(str(saved.parent), load_into_transformer_2=expert == "transformer_2")
    base = getattr(diffusers.WanPipeline.from_pretrained(str(pipe_dir)), expert).eval()
    with torch.no_grad():
        ref = task.loss(model, batch, torch.device("cpu"), torch.Generator().manual_seed(1))[0]
        got = task.loss(getattr(fresh, expert).eval(), batch, torch.device("cpu"), torch.Generator().manual_seed(1))[0]
        was = task.loss(base, batch, torch.device("cpu"), torch.Generator().manual_seed(1))[0]
    assert float(got) == pytest.approx(float(ref), rel=1e-5, abs=1e-7) and torch.isfinite(ref)
    assert abs(float(was) - float(ref)) > 1e-5  # the LoRA changes the prediction, so the match means something
