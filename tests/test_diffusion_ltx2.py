"""LTX-2 (``LTX2Pipeline``) on its tiny real pipeline: the family's denoiser call is the video-only call the pipeline's
``__call__`` makes (its modality-isolation pass, recorded with a forward hook), the training shift is the scheduler's,
the audio input reaches no video prediction; the shipped config trains, samples, and its LoRA loaded into a fresh
pipeline with ``load_lora_weights`` gives the trained loss (tests/test_diffusion_more_families.py covers it)."""

from __future__ import annotations

import pytest
import torch

from recipes.train.diffusion.families import FAMILIES
from recipes.train.diffusion.kohya_keys import original_path
from recipes.train.diffusion.lora_io import save_lora
from recipes.train.diffusion.testing import build_test_pipeline
from tests.test_diffusion_more_families import check_ltx_latents_and_shift, denoiser_calls


@pytest.mark.slow  # a tiny pipeline with 1,024-token prompts, 3-step calls: 30-60 s on a shared CPU
def test_ltx2_prediction_is_the_pipelines_video_only_denoiser_call():
    """Each modality-isolated transformer call of a 3-step ``LTX2Pipeline.__call__`` (packed video tokens, the
    connectors' context and mask, the grid, 24 fps) is the family's call on the unpacked latents; the calls with the
    audio-to-video attention on differ (the isolation is what trains); the first timestep is the training one."""
    from diffusers import LTX2Pipeline

    pipe = build_test_pipeline("ltx2")
    fam = FAMILIES["ltx2"].for_pipeline(pipe, None)
    pipe.set_progress_bar_config(disable=True)
    assert (fam.temporal_ratio, fam.frame_rate, fam.audio_latents_per_second) == (4, 24.0, 25.0)
    x0, obj, seq, t = check_ltx_latents_and_shift(pipe, fam, LTX2Pipeline)
    with torch.no_grad():
        cond = {k: v[:1] for k, v in fam.encode_prompts(pipe, ["a photo of a cat"], torch.device("cpu")).items()}
        assert cond["prompt_embeds"].shape == (1, 1024, 16 * 3)  # Gemma's 2 layers + embeddings, 1024 tokens
        nb = obj.noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)), seq,
                       obj.shift_sigmas(t[:1], seq))  # fmt: skip
        packed = LTX2Pipeline._pack_latents(nb.noisy)
        # no classifier-free or spatio-temporal guidance: the main pass and the modality-isolation pass per step
        calls, _ = denoiser_calls(pipe, "transformer", prompt_embeds=cond["prompt_embeds"], latents=packed,
                                  prompt_attention_mask=cond["prompt_attention_mask"], num_inference_steps=3,
                                  guidance_scale=1.0, audio_guidance_scale=1.0, stg_scale=0.0, audio_stg_scale=0.0,
                                  modality_scale=2.0, height=32, width=32, num_frames=5, output_type="latent")  # fmt: skip
        assert [k["isolate_modalities"] for _, k, _ in calls] == [False, True] * 3
        assert torch.equal(calls[0][1]["hidden_states"], packed)
        for _, kwargs, got in calls:
            x = LTX2Pipeline._unpack_latents(kwargs["hidden_states"], 2, 8, 8)
            pred = fam.predict(pipe.transformer, x, kwargs["timestep"], cond, {"vae_factor": 4})
            same = torch.allclose(pred, LTX2Pipeline._unpack_latents(got, 2, 8, 8), atol=1e-5, rtol=1e-4)
            assert same == kwargs["isolate_modalities"]  # equal to the isolated pass, not to the joint one
            assert kwargs["audio_num_frames"] == fam.audio_frames(2) == 5  # 5 frames at 24 fps: 0.21 s of audio
        torch.testing.assert_close(calls[0][1]["timestep"].float(), nb.timesteps, atol=1e-3, rtol=1e-5)


@pytest.mark.slow  # builds the tiny pipeline and encodes 1,024-token prompts: 20-30 s
def test_ltx2_video_prediction_ignores_the_audio_stream_and_uses_the_prompt():
    """Isolated, the video prediction does not depend on the audio tokens (so zeros stand for them and no audio-stream
    LoRA gets a gradient), but does depend on the prompt through the connectors."""
    pipe = build_test_pipeline("ltx2")
    fam = FAMILIES["ltx2"].for_pipeline(pipe, None)
    tr = pipe.transformer
    x = torch.randn(1, 8, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500.0])
    with torch.no_grad():
        conds = fam.encode_prompts(pipe, ["a photo of a cat", "a red rocket in space"], torch.device("cpu"))
        cat, rocket = ({k: v[i : i + 1] for k, v in conds.items()} for i in range(2))
        pred = fam.predict(tr, x, t, cat, {"vae_factor": 4})
        assert not torch.allclose(pred, fam.predict(tr, x, t, rocket, {"vae_factor": 4}))
        calls = []
        hook = tr.register_forward_pre_hook(lambda m, a, k: calls.append(k), with_kwargs=True)
        fam.predict(tr, x, t, cat, {"vae_factor": 4})
        hook.remove()
        kw = dict(calls[0], audio_hidden_states=torch.randn_like(calls[0]["audio_hidden_states"]))
        torch.testing.assert_close(tr(**kw)[0], tr(**calls[0])[0])
        kw["isolate_modalities"] = False
        assert not torch.allclose(tr(**kw)[0], tr(**calls[0])[0])  # the audio matters once the streams meet
        # the task hands the mask over in the model's dtype: 301 tokens, which bf16 would count as 300 or 302
        mask = torch.zeros(1, 1024, dtype=torch.long)
        mask[:, -301:] = 1
        long = fam.context({"prompt_embeds": cat["prompt_embeds"], "prompt_attention_mask": mask})
        half = fam.context({"prompt_embeds": cat["prompt_embeds"], "prompt_attention_mask": mask.bfloat16()})
        for a, b in zip(long, half, strict=True):
            assert torch.equal(a, b)


def _tiny_transformer():
    import diffusers

    return diffusers.LTX2VideoTransformer3DModel(in_channels=8, out_channels=8, num_attention_heads=2,
                                                 attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4,
                                                 audio_out_channels=4, audio_num_attention_heads=2,
                                                 audio_attention_head_dim=4, audio_cross_attention_dim=8,
                                                 num_layers=1, caption_channels=16)  # fmt: skip


@pytest.mark.parametrize("targets", [["to_q"], ["audio_ff.net.2"], r".*av_cross_attn_video_a2v_gate\.linear"])
def test_ltx2_lora_where_the_video_loss_sends_no_gradient_is_an_error(targets):
    """``policy.targets`` reaching the audio stream or the audio-video attention (``to_q`` matches
    ``audio_attn1.to_q`` and ``audio_to_video_attn.to_q`` too) is an error naming a module; the family's default
    targets (the video stream's attn1, attn2, ff) pass."""
    from recipes.train.diffusion.adapters import add_adapter
    from recipes.train.diffusion.lora_io import ready_to_save

    fam = FAMILIES["ltx2"]
    with pytest.raises(ValueError, match=r"policy.targets: \d+ LoRA modules \(e.g. '.*(audio|av_cross).*'\) are where"):
        ready_to_save(add_adapter(_tiny_transformer(), {"r": 2, "alpha": 2, "targets": targets}, fam.lora_targets),
                      "ltx2", "diffusers")  # fmt: skip
    model = ready_to_save(add_adapter(_tiny_transformer(), {"r": 2, "alpha": 2}, fam.lora_targets), "ltx2", "kohya")
    lora = [n for n, m in model.named_modules() if hasattr(m, "lora_A")]
    assert len(lora) == 10 and all(".attn1." in n or ".attn2." in n or ".ff." in n for n in lora)


def test_ltx2_full_fine_tune_trains_what_the_video_loss_reaches():
    """``policy.type='full'`` leaves the audio stream and the cross-modal attention frozen (DDP stops on parameters
    that never get a gradient); every video-stream weight trains, and a family without such modules trains all."""
    model = FAMILIES["ltx2"].train_all(_tiny_transformer().requires_grad_(False))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all("audio" in n or "av_cross_attn" in n for n in frozen)
    assert any(n.startswith("transformer_blocks.0.attn1.") for n, p in model.named_parameters() if p.requires_grad)
    x = torch.nn.Linear(2, 2).requires_grad_(False)
    assert all(p.requires_grad for p in FAMILIES["flux"].train_all(x).parameters())


def test_ltx2_kohya_names_map_back_through_diffusers_converter_of_ltx2_loras():
    """Every linear layer of the transformer (both streams, the embedders, the modulation) has a kohya / ComfyUI name
    that diffusers' ``_convert_non_diffusers_ltx2_lora_to_diffusers`` (what ``LTX2Pipeline.load_lora_weights`` applies
    to ltx-trainer's and ComfyUI's ``diffusion_model.*`` files) maps back to the module itself."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_ltx2_lora_to_diffusers as to_diffusers

    tr = _tiny_transformer()
    names = [n for n, m in tr.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(names) == 54
    for name in names:
        original = original_path("ltx2", name)[0]
        assert list(to_diffusers({f"diffusion_model.{original}.lora_A.weight": torch.zeros(1)})) == [
            f"transformer.{name}.lora_A.weight"
        ], name
    assert original_path("ltx2", "transformer_blocks.0.attn1.to_q")[0] == "transformer_blocks.0.attn1.to_q"
    assert original_path("ltx2", "time_embed.linear")[0] == "adaln_single.linear"


@pytest.mark.slow  # builds three tiny pipelines and fuses their LoRAs: 20-40 s
def test_ltx2_kohya_file_read_as_comfyui_does_gives_the_denoiser_of_the_diffusers_file(tmp_path):
    """The kohya file (``lora_unet_<original path>``, ``.alpha``) read through ComfyUI's generic map (``lora_unet_`` +
    the path with ``_`` -> ``diffusion_model.<path>``) into ``diffusion_model.*.lora_A / lora_B`` at scale alpha / rank,
    then loaded by ``LTX2Pipeline.load_lora_weights``, fuses to the same transformer as the diffusers-format file."""
    from safetensors.torch import load_file

    from tests.test_diffusion_kohya import _fused_weights, _trained

    pipe, model = _trained("ltx2")
    cls, key = type(pipe), FAMILIES["ltx2"].lora_save_key
    save_lora(cls, model, tmp_path / "diffusers", key, "diffusers", family="ltx2")
    kohya = load_file(str(save_lora(cls, model, tmp_path / "kohya", key, "kohya", family="ltx2")))
    modules = [n for n, m in model.named_modules() if hasattr(m, "lora_A")]
    assert modules and {k.rsplit(".", 2)[0] for k in kohya} == {
        "lora_unet_" + original_path("ltx2", n)[0].replace(".", "_") for n in modules
    }
    comfy = {}
    for name in modules:
        original = original_path("ltx2", name)[0]
        stem = "lora_unet_" + original.replace(".", "_")
        down, up, alpha = kohya[f"{stem}.lora_down.weight"], kohya[f"{stem}.lora_up.weight"], kohya[f"{stem}.alpha"]
        assert float(alpha) / down.shape[0] == pytest.approx(4.0)  # the trained alpha / r = 8 / 2
        comfy[f"diffusion_model.{original}.lora_A.weight"] = down
        comfy[f"diffusion_model.{original}.lora_B.weight"] = up * float(alpha) / down.shape[0]
    fresh = build_test_pipeline("ltx2")
    fresh.load_lora_weights(comfy)
    fresh.fuse_lora()
    from_comfy = {n.replace(".base_layer", ""): p for n, p in fresh.transformer.named_parameters() if "lora_" not in n}
    from_diffusers = _fused_weights(pipe, "ltx2", tmp_path / "diffusers")
    base = dict(build_test_pipeline("ltx2").transformer.named_parameters())
    assert sum(not torch.equal(w, base[n]) for n, w in from_diffusers.items()) == len(modules)
    for name, w in from_diffusers.items():
        torch.testing.assert_close(from_comfy[name], w, atol=1e-5, rtol=1e-5, msg=name)
