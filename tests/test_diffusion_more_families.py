"""The families of ``families_more.py`` on their tiny real pipelines: each family's denoiser call is the one its
pipeline's ``__call__`` makes (recorded with a forward hook at each step) and one step from sigma 1 is an Euler step on
its prediction; the shipped config trains, samples, and its LoRA loaded into a fresh pipeline gives the trained loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recipes.train.diffusion.families import FAMILIES
from recipes.train.diffusion.objectives import FlowObjective
from recipes.train.diffusion.testing import build_test_pipeline

pytestmark = pytest.mark.slow  # tiny pipelines with long prompts (Sana: a 1,000-token instruction): 10-60 s each


def denoiser_calls(pipe, name: str, **call) -> tuple[list[tuple[tuple, dict, torch.Tensor]], torch.Tensor]:
    """``pipe(**call)``'s output and each call of its denoiser ``name``: (args, kwargs, output)."""
    calls = []
    hook = getattr(pipe, name).register_forward_hook(
        lambda m, args, kwargs, out: calls.append((args, kwargs, out[0])), with_kwargs=True
    )
    try:
        out = pipe(**call, return_dict=False)[0]  # images or frames
    finally:
        hook.remove()
    return calls, out


def flow_steps(pipe, fam, x0: torch.Tensor, steps: int) -> tuple[FlowObjective, torch.Tensor]:
    """The training objective on ``pipe``'s scheduler; asserts its shifted sigmas are the pipeline's schedule."""
    obj = FlowObjective(pipe.scheduler.config, mu=fam.dynamic_mu(pipe))
    seq = fam.image_seq_len(x0, getattr(pipe, fam.denoiser))
    pipe.scheduler.set_timesteps(steps)
    t = torch.linspace(1.0 - 1.0 / 1000, 0.0, steps + 1)[:-1]  # the flow sigmas before the shift (use_flow_sigmas)
    torch.testing.assert_close(obj.shift_sigmas(t, seq), pipe.scheduler.sigmas[:-1].float(), atol=1e-5, rtol=1e-5)
    return obj, obj.shift_sigmas(t, seq)


def test_sana_prediction_is_the_pipelines_denoiser_call_and_one_step_is_euler():
    pipe, fam = build_test_pipeline("sana"), FAMILIES["sana"]
    pipe.set_progress_bar_config(disable=True)
    x0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))  # a 32 px image (DC-AE factor 2 here)
    obj, sigmas = flow_steps(pipe, fam, x0, 3)
    assert pipe.scheduler.config.flow_shift == 3.0
    with torch.no_grad():
        cond = fam.encode_prompts(pipe, ["a photo of a cat", ""], torch.device("cpu"))
        chi, _, _, _ = pipe.encode_prompt("a photo of a cat", False, device="cpu", complex_human_instruction=None)
        assert not torch.allclose(cond["prompt_embeds"][:1], chi)  # the instruction is prepended for prompts ...
        empty, mask, _, _ = pipe.encode_prompt("", False, device="cpu", complex_human_instruction=None)
        torch.testing.assert_close(cond["prompt_embeds"][1:], empty)  # ... not for the empty (negative) prompt
        assert cond["prompt_attention_mask"][1].sum() == mask.sum() == 1  # <bos> only
        one = {k: v[:1] for k, v in cond.items()}
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
        nb = obj.noise(x0, noise, 0, sigmas[:1])
        calls, _ = denoiser_calls(pipe, "transformer", prompt_embeds=one["prompt_embeds"], latents=nb.noisy,
                                  prompt_attention_mask=one["prompt_attention_mask"], num_inference_steps=3,
                                  guidance_scale=1.0, height=32, width=32, use_resolution_binning=False,
                                  output_type="latent")  # fmt: skip
        assert len(calls) == 3 and torch.equal(calls[0][0][0], nb.noisy)
        for (args, kwargs, out), sigma in zip(calls, sigmas, strict=True):
            t = kwargs["timestep"]
            # DPM-Solver keeps integer timesteps: sigma * 1000 rounded down (training gives the exact float)
            assert t.tolist() == [int(sigma * 1000)] and pipe.transformer.config.timestep_scale == 1.0
            torch.testing.assert_close(fam.predict(pipe.transformer, args[0], t, one, {}), out)
        _, (sigma,) = flow_steps(pipe, fam, x0, 1)
        nb = obj.noise(x0, noise, 0, sigma.view(1))
        stepped = pipe(prompt_embeds=one["prompt_embeds"], prompt_attention_mask=one["prompt_attention_mask"],
                       latents=nb.noisy, num_inference_steps=1, guidance_scale=1.0, height=32, width=32,
                       use_resolution_binning=False, output_type="latent").images  # fmt: skip
        pred = fam.predict(pipe.transformer, nb.noisy, pipe.scheduler.timesteps.float(), one, {})
        # DPM-Solver++ to sigma 0 is the Euler step x - sigma * v: the prediction is the flow velocity
        torch.testing.assert_close(stepped, nb.noisy - sigma * pred, atol=5e-5, rtol=1e-5)
        z = fam.latent_params(pipe.vae, torch.rand(1, 3, 16, 16) * 2 - 1)
        assert torch.equal(fam.sample_latents(z), z)  # DC-AE: deterministic latents


@pytest.mark.parametrize("family", ["sana", "qwen_image", "ltx_video", "hunyuan_video", "ltx2"])
def test_shipped_config_trains_samples_and_its_lora_loads_into_a_fresh_pipeline(family, tmp_path):
    import diffusers

    from tests.test_diffusion_task import config, pipeline_dir, resave_with_visible_lora, run, videos

    opts = {"train.batch_size": 2, "task.cache_dir": str(tmp_path / "cache")}
    if FAMILIES[family].video:  # 5-frame clips of 32 px (the tiny VAEs compress 4x in time)
        opts.update({"data_root": videos(), "data.train.resolution": "(32,32)", "data.train.num_frames": 5})
    cfg = config(family, steps=2, **opts)
    trainer, summary = run(cfg, tmp_path / "wd")
    assert Path(summary["saved"]).is_file() and torch.isfinite(torch.tensor(summary["final_loss"]))
    assert trainer.task.family.name == family and list((tmp_path / "wd" / "samples").glob("step_*.png"))
    model, task = resave_with_visible_lora(trainer, tmp_path / "wd")
    fresh = getattr(diffusers, type(task.pipe).__name__).from_pretrained(pipeline_dir(family))
    fresh.load_lora_weights(str(tmp_path / "wd" / "lora"))
    base = type(task.pipe).from_pretrained(pipeline_dir(family))
    batch = task.collate([trainer.train_set[0]])
    losses = []
    with torch.no_grad():
        for m in (model, getattr(fresh, fam_denoiser(family)).eval(), getattr(base, fam_denoiser(family)).eval()):
            losses.append(float(task.loss(m, batch, torch.device("cpu"), torch.Generator().manual_seed(1))[0]))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-7)
    assert abs(losses[2] - losses[0]) > 1e-5  # the LoRA changes the prediction, so the match means something


def fam_denoiser(family: str) -> str:
    return FAMILIES[family].denoiser


def test_qwen_image_prediction_is_the_pipelines_denoiser_call_and_its_last_step_is_euler():
    """Padded + masked prompt embeddings give what the pipeline's unpadded ones give; each transformer call of a
    3-step ``__call__`` is the family's call on the unpacked latents; the last step is Euler on that prediction; the
    training shift is the scheduler's resolution-dependent one (its ``shift_terminal`` stretches only the grid)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

    pipe, fam = build_test_pipeline("qwen_image"), FAMILIES["qwen_image"]
    pipe.set_progress_bar_config(disable=True)
    f = pipe.vae_scale_factor
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))  # a 32 px image (VAE factor 4 here)
    obj = FlowObjective(pipe.scheduler.config, mu=fam.dynamic_mu(pipe))
    seq = fam.image_seq_len(x0, pipe.transformer)
    no_terminal = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift_terminal=None)
    t = torch.linspace(1.0, 1 / 3, 3)
    no_terminal.set_timesteps(sigmas=t.tolist(), mu=obj.mu(seq))
    torch.testing.assert_close(obj.shift_sigmas(t, seq), no_terminal.sigmas[:-1], atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        cond = fam.encode_prompts(pipe, ["a photo of a cat", "a red rocket in space"], torch.device("cpu"))
        one = {k: v[:1] for k, v in cond.items()}
        ref, ref_mask = pipe.encode_prompt(["a photo of a cat"], device="cpu")
        n = int(one["prompt_embeds_mask"].sum())
        assert ref_mask is None and ref.shape[1] == n < cond["prompt_embeds"].shape[1] == 512
        assert torch.equal(one["prompt_embeds"][0, :n], ref[0]) and not one["prompt_embeds"][0, n:].any()
        nb = obj.noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)), seq,
                       obj.shift_sigmas(t[:1], seq))  # fmt: skip
        packed = QwenImagePipeline._pack_latents(nb.noisy, 1, 4, 8, 8)
        calls, out = denoiser_calls(pipe, "transformer", prompt_embeds=ref, latents=packed, num_inference_steps=3,
                                    height=32, width=32, output_type="latent")  # fmt: skip
        assert len(calls) == 3 and torch.equal(calls[0][1]["hidden_states"], packed)
        for _, kwargs, got in calls:
            x = QwenImagePipeline._unpack_latents(kwargs["hidden_states"], 32, 32, f).squeeze(2)
            pred = fam.predict(pipe.transformer, x, kwargs["timestep"] * 1000, one, {"vae_factor": f})
            torch.testing.assert_close(pred, QwenImagePipeline._unpack_latents(got, 32, 32, f).squeeze(2),
                                       atol=1e-5, rtol=1e-4)  # fmt: skip
        last = pipe.scheduler.sigmas[-2]
        assert float(last) == pytest.approx(0.02)  # the release's shift_terminal
        torch.testing.assert_close(out, calls[-1][1]["hidden_states"] - last * calls[-1][2], atol=1e-5, rtol=1e-5)
        assert float(calls[0][1]["timestep"]) == pytest.approx(float(nb.sigmas), rel=1e-5)  # first sigma unstretched


def check_ltx_latents_and_shift(pipe, fam, pipeline_cls):
    """LTX-Video / LTX-2 on their tiny pipelines: the family's latent normalisation is what ``pipeline_cls``'s decode
    step undoes, the token count is the pipeline's, and the training shift is the scheduler's (without the inference
    grid's ``shift_terminal``). Returns the 5-frame 32 px latents, the objective, the token count and 3 sigmas."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    vae = pipe.vae
    z = torch.randn(1, 8, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    back = pipeline_cls._denormalize_latents(fam.normalize(vae, z), vae.latents_mean, vae.latents_std,
                                             vae.config.scaling_factor)  # fmt: skip
    torch.testing.assert_close(back, z)  # what the pipeline's decode step undoes
    x0 = torch.randn(1, 8, 2, 8, 8, generator=torch.Generator().manual_seed(0))  # 5 frames of 32 px (ratios 4, 4)
    obj = FlowObjective(pipe.scheduler.config, mu=fam.dynamic_mu(pipe))
    seq = fam.image_seq_len(x0, pipe.transformer)
    assert seq == 2 * 8 * 8
    no_terminal = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift_terminal=None)
    t = torch.linspace(1.0, 1 / 3, 3)
    no_terminal.set_timesteps(sigmas=t.tolist(), mu=obj.mu(seq))
    torch.testing.assert_close(obj.shift_sigmas(t, seq), no_terminal.sigmas[:-1], atol=1e-6, rtol=1e-5)
    return x0, obj, seq, t


def test_ltx_video_prediction_is_the_pipelines_denoiser_call_and_its_last_step_is_euler():
    """Each transformer call of a 3-step ``LTXPipeline.__call__`` (packed video tokens, grid, RoPE scale at the
    call's frame rate) is the family's call on the unpacked latents; the last step is Euler on that prediction; the
    training shift is the scheduler's over the video's token count; latents are normalised as the pipeline does."""
    from diffusers import LTXPipeline

    pipe = build_test_pipeline("ltx_video")
    fam = FAMILIES["ltx_video"].for_pipeline(pipe, None)
    pipe.set_progress_bar_config(disable=True)
    assert (fam.temporal_ratio, fam.frame_rate) == (pipe.vae_temporal_compression_ratio, 25.0)
    x0, obj, seq, t = check_ltx_latents_and_shift(pipe, fam, LTXPipeline)
    with torch.no_grad():
        cond = {k: v[:1] for k, v in fam.encode_prompts(pipe, ["a photo of a cat"], torch.device("cpu")).items()}
        nb = obj.noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)), seq,
                       obj.shift_sigmas(t[:1], seq))  # fmt: skip
        packed = LTXPipeline._pack_latents(nb.noisy)
        calls, out = denoiser_calls(pipe, "transformer", prompt_embeds=cond["prompt_embeds"], latents=packed,
                                    prompt_attention_mask=cond["prompt_attention_mask"], num_inference_steps=3,
                                    guidance_scale=1.0, height=32, width=32, num_frames=5, output_type="latent")  # fmt: skip
        assert len(calls) == 3 and torch.equal(calls[0][1]["hidden_states"], packed)
        for _, kwargs, got in calls:
            x = LTXPipeline._unpack_latents(kwargs["hidden_states"], 2, 8, 8)
            pred = fam.predict(pipe.transformer, x, kwargs["timestep"], cond, {"vae_factor": 4})
            torch.testing.assert_close(pred, LTXPipeline._unpack_latents(got, 2, 8, 8), atol=1e-5, rtol=1e-4)
        no_mask = dict(cond, prompt_attention_mask=torch.ones_like(cond["prompt_attention_mask"]))
        x = LTXPipeline._unpack_latents(calls[0][1]["hidden_states"], 2, 8, 8)
        assert not torch.allclose(fam.predict(pipe.transformer, x, calls[0][1]["timestep"], no_mask, {"vae_factor": 4}),
                                  LTXPipeline._unpack_latents(calls[0][2], 2, 8, 8))  # the mask is used  # fmt: skip
        last = pipe.scheduler.sigmas[-2]
        assert float(last) == pytest.approx(0.1)  # the release's shift_terminal
        torch.testing.assert_close(out, calls[-1][1]["hidden_states"] - last * calls[-1][2], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(calls[0][1]["timestep"].float(), nb.timesteps, atol=1e-3, rtol=1e-5)


def test_one_sample_step_on_a_scheduler_with_a_terminal_shift_is_an_error(tmp_path):
    """Qwen-Image's and LTX-Video's schedulers stretch the sigmas to ``shift_terminal``: with one step that is 0 / 0
    (NaN samples for Qwen-Image), so ``task.samples.steps=1`` is an error naming the option; 2 steps train."""
    from recipes.train.engine import Trainer
    from tests.test_diffusion_task import config

    with pytest.raises(ValueError, match=r"task.samples.steps=1: .*shift_terminal=0.02"):
        Trainer(config("qwen_image", steps=1, **{"task.samples.steps": 1}), tmp_path / "wd").setup()


@pytest.mark.parametrize("guidance", [1.0, 6.0])
def test_hunyuan_video_step_is_euler_on_the_family_prediction(guidance):
    """One step of ``HunyuanVideoPipeline.__call__`` (``sigmas=[t]``, the static shift 7 applied) from the same noisy
    latent equals Euler on the family's prediction with ``task.guidance_scale`` = the call's ``guidance_scale``; the
    template is cropped exactly (the tiny tokenizer spends ``crop_start`` tokens on it)."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    pipe = build_test_pipeline("hunyuan_video")
    fam = FAMILIES["hunyuan_video"].for_pipeline(pipe, None)
    pipe.set_progress_bar_config(disable=True)
    prefix = DEFAULT_PROMPT_TEMPLATE["template"].split("{}")[0]
    assert len(pipe.tokenizer(prefix).input_ids) == DEFAULT_PROMPT_TEMPLATE["crop_start"]
    obj = FlowObjective(pipe.scheduler.config, mu=fam.dynamic_mu(pipe))
    x0 = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))  # 5 frames of 32 px (ratios 8, 4)
    with torch.no_grad():
        cond = fam.encode_prompts(pipe, ["a photo of a cat", ""], torch.device("cpu"))
        assert cond["prompt_attention_mask"].sum(1).tolist() == [6, 1]  # 5 words + <|eot_id|>; the template cropped
        one = {k: v[:1] for k, v in cond.items()}
        extra = {"vae_factor": 8, "guidance_scale": guidance}
        for t in (0.3, 0.8):
            sigma = obj.shift_sigmas(torch.tensor([t]), 0)
            torch.testing.assert_close(sigma, torch.tensor([7 * t / (1 + 6 * t)]))
            nb = obj.noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)), 0, sigma)
            pred = fam.predict(pipe.transformer, nb.noisy, nb.timesteps, one, extra)
            stepped = pipe(**fam.sample_kwargs(one), latents=nb.noisy, sigmas=[t], num_inference_steps=1,
                           guidance_scale=guidance, height=32, width=32, num_frames=5,
                           output_type="latent").frames  # fmt: skip
            torch.testing.assert_close(pipe.scheduler.sigmas[:1], sigma)
            torch.testing.assert_close(stepped, nb.noisy - sigma * pred, atol=5e-5, rtol=1e-5)
        other = fam.predict(pipe.transformer, nb.noisy, nb.timesteps, one, dict(extra, guidance_scale=guidance + 1))
        assert not torch.allclose(other, pred)  # the guidance input acts
