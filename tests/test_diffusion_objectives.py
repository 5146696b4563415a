"""Each objective's target is what the pipeline's own scheduler implies for the same noise and timestep."""

from __future__ import annotations

import pytest
import torch

from recipes.train.diffusion.objectives import DDPMObjective, FlowObjective


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddpm_target_recovers_x0_through_the_scheduler(prediction_type):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", prediction_type=prediction_type, clip_sample=False)
    obj = DDPMObjective(sched)
    x0, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([10, 500, 990])
    nb = obj.noise(x0, noise, t)
    assert torch.equal(nb.noisy, sched.add_noise(x0, noise, t))
    for i in range(3):  # the scheduler, fed the target as the model output, predicts the clean sample
        step = sched.step(nb.target[i : i + 1], int(t[i]), nb.noisy[i : i + 1])
        torch.testing.assert_close(step.pred_original_sample, x0[i : i + 1], atol=2e-4, rtol=1e-4)


def test_min_snr_weights_match_diffusers_compute_snr():
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    t = torch.tensor([1, 100, 400, 999])
    for pred in ("epsilon", "v_prediction"):
        sched = DDPMScheduler(beta_schedule="scaled_linear", prediction_type=pred)
        nb = DDPMObjective(sched, min_snr_gamma=5.0).noise(torch.randn(4, 4, 2, 2), torch.randn(4, 4, 2, 2), t)
        snr = compute_snr(sched, t)
        want = torch.clamp(snr, max=5.0) / (snr + 1 if pred == "v_prediction" else snr)
        torch.testing.assert_close(nb.weights, want)
        assert nb.weights[0] < 1.0 and nb.weights[-1] == pytest.approx(
            1.0 if pred == "epsilon" else snr[-1] / (snr[-1] + 1)
        )
    with pytest.raises(ValueError, match="min_snr_gamma"):
        DDPMObjective(sched, min_snr_gamma=0)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static_shift_sd3", "resolution_shift_flux"])
def test_flow_shift_matches_the_scheduler_and_euler_step_returns_x0(dynamic):
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=dynamic)
    obj = FlowObjective(sched.config)
    seq = 64 * 64 // 4  # a 1024 px Flux image: 4096 packed tokens
    for t in (0.1, 0.5, 0.9):
        kw = {"mu": obj.mu(seq)} if dynamic else {}
        sched.set_timesteps(sigmas=[t], **kw)
        sigma = obj.shift_sigmas(torch.tensor([t]), seq)
        torch.testing.assert_close(sigma, sched.sigmas[:1].float())
        x0, noise = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
        nb = obj.noise(x0, noise, seq, sigma)
        torch.testing.assert_close(nb.noisy, sched.scale_noise(x0, sched.timesteps[:1], noise))
        torch.testing.assert_close(nb.timesteps, sched.timesteps[:1].float())
        out = sched.step(nb.target, sched.timesteps[0], nb.noisy).prev_sample  # Euler from sigma to 0
        torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)


def test_flow_timestep_sampling_and_shift_options_change_the_sigmas():
    from diffusers import FlowMatchEulerDiscreteScheduler

    cfg = FlowMatchEulerDiscreteScheduler(shift=3.0).config
    draw = {}
    for name, kw in {"default": {}, "uniform": dict(timestep_sampling="uniform"), "no_shift": dict(shift=None),
                     "shift1.5": dict(shift=1.5), "mean1": dict(logit_mean=1.0), "std2": dict(logit_std=2.0)}.items():  # fmt: skip
        torch.manual_seed(0)
        draw[name] = FlowObjective(cfg, **kw).sample_sigmas(2000, 256, torch.device("cpu"))
    assert draw["default"].mean() > draw["no_shift"].mean() > 0.45  # shift 3 pushes towards noise
    for name in ("uniform", "no_shift", "shift1.5", "mean1", "std2"):
        assert not torch.allclose(draw[name], draw["default"]), name
    with pytest.raises(ValueError, match="timestep_sampling"):
        FlowObjective(cfg, timestep_sampling="cosmap")


@pytest.mark.parametrize(("tiny", "guidance"), [("flux2", 1.0), ("flux2_dev", 3.5)], ids=["klein", "dev"])
def test_flux2_latents_shift_and_prediction_match_the_pipeline(tiny, guidance):
    """Flux.2 (tiny [klein] and [dev] pipelines): the training latents are what the pipeline's decode undoes, the
    shifted sigma is the pipeline's (``compute_empirical_mu`` at its 50 default steps), the family's denoiser call
    (with [dev]'s guidance input) is the pipeline's: one Euler step of ``Flux2KleinPipeline`` / ``Flux2Pipeline``
    ``__call__`` from the same noisy latents; and the target returns x0."""
    from diffusers.pipelines.flux2.pipeline_flux2 import Flux2Pipeline, compute_empirical_mu

    from recipes.train.diffusion.families import FAMILIES
    from recipes.train.diffusion.testing import build_test_pipeline

    pipe, fam = build_test_pipeline(tiny), FAMILIES["flux2"]
    assert pipe.transformer.config.guidance_embeds == (tiny == "flux2_dev")
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        z = pipe.vae.encode(torch.rand(1, 3, 32, 32) * 2 - 1).latent_dist.sample(torch.Generator().manual_seed(0))
        x0 = fam.normalize(pipe.vae, z)  # (1, 4 * 4, 8, 8): 2x2 patches on channels, batch-norm statistics removed
        bn, eps = pipe.vae.bn, pipe.vae.config.batch_norm_eps

        def decode_side(x):  # the pipeline's last step before vae.decode: * sqrt(var + eps) + mean, unpatchify
            x = x * torch.sqrt(bn.running_var.view(1, -1, 1, 1) + eps) + bn.running_mean.view(1, -1, 1, 1)
            return Flux2Pipeline._unpatchify_latents(x)

        torch.testing.assert_close(decode_side(x0), z)
        assert not torch.allclose(x0, Flux2Pipeline._patchify_latents(z))  # the statistics are not the identity
        seq = fam.image_seq_len(x0, pipe.transformer)
        assert seq == pipe.prepare_latents(1, 4, 32, 32, torch.float32, "cpu", None)[0].shape[1] == 64
        obj = FlowObjective(pipe.scheduler.config, mu=fam.dynamic_mu(pipe))
        assert obj.mu(seq) == compute_empirical_mu(seq, 50) != FlowObjective(pipe.scheduler.config).mu(seq)
        cond = fam.encode_prompts(pipe, ["a photo of a cat"], torch.device("cpu"))
        for t in (0.2, 0.7):
            sigma = obj.shift_sigmas(torch.tensor([t]), seq)
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
            nb = obj.noise(x0, noise, seq, sigma)
            pred = fam.predict(pipe.transformer, nb.noisy, nb.timesteps, cond, {"guidance_scale": guidance})
            stepped = pipe(prompt_embeds=cond["prompt_embeds"], latents=nb.noisy, num_inference_steps=50, sigmas=[t],
                           guidance_scale=guidance, height=32, width=32, output_type="latent").images  # fmt: skip
            torch.testing.assert_close(pipe.scheduler.sigmas[:1], sigma)  # the pipeline shifted t the same way
            x1 = nb.noisy - sigma * pred  # one Euler step from sigma to 0 with the family's prediction
            # "latent" output: [klein] un-normalised and unpatchified, [dev] the packed tokens
            want = Flux2Pipeline._pack_latents(x1) if tiny == "flux2_dev" else decode_side(x1)
            torch.testing.assert_close(stepped, want, atol=5e-5, rtol=1e-5)
            if tiny == "flux2_dev":  # the guidance input matters: another scale, another prediction
                other = fam.predict(pipe.transformer, nb.noisy, nb.timesteps, cond, {"guidance_scale": 7.0})
                assert not torch.allclose(other, pred)
            pipe.scheduler.set_timesteps(sigmas=[t], mu=obj.mu(seq))
            out = pipe.scheduler.step(nb.target, pipe.scheduler.timesteps[0], nb.noisy).prev_sample
            torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)


def test_chroma_shift_mask_and_prediction_match_the_pipeline():
    """Chroma (tiny pipeline): Flux.1's shift, and the family's denoiser call (T5 mask extended over the image
    tokens) is one Euler step of ``ChromaPipeline.__call__`` from the same packed noisy latents."""
    from diffusers import FluxPipeline
    from diffusers.pipelines.chroma.pipeline_chroma import calculate_shift

    from recipes.train.diffusion.families import FAMILIES
    from recipes.train.diffusion.testing import build_test_pipeline

    pipe, fam = build_test_pipeline("chroma"), FAMILIES["chroma"]
    pipe.set_progress_bar_config(disable=True)
    obj = FlowObjective(pipe.scheduler.config, mu=fam.dynamic_mu(pipe))
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))  # a 16 px image's latent (VAE factor 2)
    seq = fam.image_seq_len(x0, pipe.transformer)
    assert seq == 16 and obj.mu(seq) == pytest.approx(calculate_shift(seq))
    with torch.no_grad():
        cond = fam.encode_prompts(pipe, ["a photo of a cat"], torch.device("cpu"))
        assert 0 < cond["prompt_attention_mask"].sum() < cond["prompt_attention_mask"].numel()  # padding is masked
        no_mask = dict(cond, prompt_attention_mask=torch.ones_like(cond["prompt_attention_mask"]))
        for t in (0.3, 0.8):
            sigma = obj.shift_sigmas(torch.tensor([t]), seq)
            nb = obj.noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)), seq, sigma)
            extra = {"vae_factor": pipe.vae_scale_factor}
            pred = fam.predict(pipe.transformer, nb.noisy, nb.timesteps, cond, extra)
            assert not torch.allclose(pred, fam.predict(pipe.transformer, nb.noisy, nb.timesteps, no_mask, extra))
            packed = FluxPipeline._pack_latents(nb.noisy, 1, 4, 8, 8)
            stepped = pipe(prompt_embeds=cond["prompt_embeds"], prompt_attention_mask=cond["prompt_attention_mask"],
                           latents=packed, sigmas=[t], num_inference_steps=1, guidance_scale=1.0, height=16, width=16,
                           output_type="latent").images  # fmt: skip
            torch.testing.assert_close(pipe.scheduler.sigmas[:1], sigma)
            want = FluxPipeline._pack_latents(nb.noisy - sigma * pred, 1, 4, 8, 8)
            torch.testing.assert_close(stepped, want, atol=5e-5, rtol=1e-5)  # float32 rounding of the Euler update


def test_zimage_conditions_shift_and_prediction_match_the_pipeline():
    """Z-Image (tiny pipeline): padded + masked prompt embeddings give back the pipeline's unpadded ones, the
    static shift is the scheduler's, and the family's denoiser call (list input, reversed time, negated output)
    is one Euler step of ``ZImagePipeline.__call__``; the target returns x0."""
    from recipes.train.diffusion.families import FAMILIES
    from recipes.train.diffusion.testing import build_test_pipeline

    pipe, fam = build_test_pipeline("zimage"), FAMILIES["zimage"]
    pipe.set_progress_bar_config(disable=True)
    obj = FlowObjective(pipe.scheduler.config, mu=fam.dynamic_mu(pipe))
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    seq = fam.image_seq_len(x0, pipe.transformer)
    with torch.no_grad():
        prompts = ["a photo of a cat", "a red rocket in space"]
        cond = fam.encode_prompts(pipe, prompts, torch.device("cpu"))
        ref, _ = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
        got = fam.sample_kwargs(cond)["prompt_embeds"]
        assert [len(e) for e in got] == [len(e) for e in ref] and len(got[0]) < len(got[1]) < fam.max_sequence_length
        assert all(torch.equal(a, b) for a, b in zip(got, ref, strict=True))
        one = {k: v[:1] for k, v in cond.items()}
        for t in (0.3, 0.8):
            sigma = obj.shift_sigmas(torch.tensor([t]), seq)
            nb = obj.noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)), seq, sigma)
            pred = fam.predict(pipe.transformer, nb.noisy, nb.timesteps, one, {})
            stepped = pipe(prompt_embeds=got[:1], latents=nb.noisy, sigmas=[t], num_inference_steps=1,
                           guidance_scale=0.0, height=16, width=16, output_type="latent").images  # fmt: skip
            torch.testing.assert_close(pipe.scheduler.sigmas[:1], sigma)  # static shift 3: 3t / (1 + 2t)
            torch.testing.assert_close(sigma, torch.tensor([3 * t / (1 + 2 * t)]))
            torch.testing.assert_close(stepped, nb.noisy - sigma * pred, atol=5e-5, rtol=1e-5)
            pipe.scheduler.set_timesteps(sigmas=[t])
            out = pipe.scheduler.step(nb.target, pipe.scheduler.timesteps[0], nb.noisy).prev_sample
            torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)
