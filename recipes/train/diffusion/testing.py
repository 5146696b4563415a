"""Test pipelines: small diffusers pipelines with random weights, saved with ``save_pretrained`` (a testing aid
for tests, benchmarks and smoke runs; not a model to train for real).

``save_test_pipeline("flux", DIR)`` writes a complete pipeline folder (``model_index.json``, one
subfolder per component) that ``FluxPipeline.from_pretrained(DIR)`` loads, so a config's
``model.pretrained=DIR`` goes through the same loading code as a released checkpoint. The text
encoders are real transformers classes (CLIP, T5, UMT5, Qwen3 for Flux.2 [klein] and Z-Image, Mistral-3
with its Pixtral processor for Flux.2 [dev]) at a hidden size of 16-32, with tokenizers built from a small
vocabulary (CLIP, Qwen, Mistral: the byte alphabet, no merges, plus the chat tokens and a chat template
reduced to what the pipelines send; T5: a few hundred words). Flux.2's decoder-only encoders have as many
layers as the pipelines read hidden states from (27 / 30).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from recipes.train.diffusion.testing_more import MORE_TEST_FAMILIES, build_more

FAMILIES = ("sd15", "sdxl", "sd3", "flux", "flux2", "flux2_dev", "chroma", "zimage", "wan", "wan22", "pixart",
            *MORE_TEST_FAMILIES)  # fmt: skip
_WORDS = ("a photo of the cat dog coffee cup astronaut woman man rocket red blue green small big sitting on table "
          "in space with hat style painting portrait close up sks person camera grass white black brown").split()  # fmt: skip

#: each family's released scheduler: (class, its scheduler_config.json values, the folder they come from);
#: the sources and the VAE values are listed in docs/diffusion.md ("Each release's own settings")
_SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 steps_offset=1, set_alpha_to_one=False)  # fmt: skip
_FLUX_SHIFT = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_image_seq_len=256,
                   max_image_seq_len=4096, base_shift=0.5, max_shift=1.15)  # fmt: skip
RELEASED_SCHEDULERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "sd15": (
        "PNDMScheduler",
        dict(_SD_BETAS, skip_prk_steps=True, clip_sample=False),
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
    ),  # fmt: skip
    "sdxl": (
        "EulerDiscreteScheduler",
        dict(
            _SD_BETAS,
            interpolation_type="linear",
            prediction_type="epsilon",
            timestep_spacing="leading",
            use_karras_sigmas=False,
        ),
        "stabilityai/stable-diffusion-xl-base-1.0",
    ),  # fmt: skip
    "sd3": (
        "FlowMatchEulerDiscreteScheduler",
        dict(num_train_timesteps=1000, shift=3.0),
        "stabilityai/stable-diffusion-3-medium-diffusers",
    ),  # fmt: skip
    "flux": ("FlowMatchEulerDiscreteScheduler", _FLUX_SHIFT, "black-forest-labs/FLUX.1-dev"),
    "chroma": ("FlowMatchEulerDiscreteScheduler", _FLUX_SHIFT, "lodestones/Chroma1-HD"),
    "flux2": ("FlowMatchEulerDiscreteScheduler", _FLUX_SHIFT, "black-forest-labs/FLUX.2-klein-4B"),
    "flux2_dev": ("FlowMatchEulerDiscreteScheduler", _FLUX_SHIFT, "black-forest-labs/FLUX.2-dev"),
    "zimage": (
        "FlowMatchEulerDiscreteScheduler",
        dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False),
        "Tongyi-MAI/Z-Image-Turbo",
    ),  # fmt: skip
    "wan": (
        "UniPCMultistepScheduler",
        dict(
            num_train_timesteps=1000,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=3.0,
            solver_order=2,
            solver_type="bh2",
            predict_x0=True,
            lower_order_final=True,
            final_sigmas_type="zero",
        ),
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    ),  # fmt: skip
}
#: the released VAEs' latent scaling (AutoencoderKL); WAN's per-channel latents_mean / latents_std are
#: AutoencoderKLWan's defaults, Flux.2's batch-norm statistics are drawn at random below
RELEASED_VAE = {"sd15": dict(scaling_factor=0.18215), "sdxl": dict(scaling_factor=0.13025, force_upcast=True),
                "sd3": dict(scaling_factor=1.5305, shift_factor=0.0609),
                **{f: dict(scaling_factor=0.3611, shift_factor=0.1159) for f in ("flux", "chroma", "zimage")}}  # fmt: skip


def released_scheduler(family: str) -> Any:
    """The scheduler ``family``'s released pipeline folder ships (class and config values)."""
    import diffusers

    name, values, _ = RELEASED_SCHEDULERS[family]
    return getattr(diffusers, name).from_config(values)  # as from_pretrained: keys the class lacks are ignored


def _byte_alphabet() -> list[str]:
    """GPT-2 / CLIP byte-level BPE alphabet: printable bytes as themselves, the rest shifted past 255."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    shifted = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(shifted))]


def clip_tokenizer(max_length: int = 77) -> Any:
    from transformers import CLIPTokenizer

    chars = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({f"{c}</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def t5_tokenizer(max_length: int = 32) -> Any:
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(f"\u2581{w}", -1.0) for w in _WORDS] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789.,"]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


#: Qwen3's chat template, reduced to what a text-to-image prompt uses (one user turn; thinking off)
_QWEN_CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and "
              "enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")  # fmt: skip


def qwen_tokenizer(max_length: int = 64) -> Any:
    """A byte-level BPE ``Qwen2Tokenizer`` (the byte alphabet, no merges) with Qwen's chat tokens and template."""
    from transformers import Qwen2Tokenizer

    chars = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(chars)}
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    vocab.update({t: len(chars) + i for i, t in enumerate(specials)})
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=max_length)
    tok.add_special_tokens({"additional_special_tokens": specials[1:]})
    tok.chat_template = _QWEN_CHAT
    return tok


def _qwen3(tok: Any, layers: int, hidden: int = 16) -> Any:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)  # fmt: skip
    return Qwen3ForCausalLM(cfg).eval()


_MISTRAL_SPECIALS = ["</s>", "<s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]",
                     "[IMG_BREAK]", "[IMG_END]"]  # fmt: skip
#: Mistral-3's chat template, reduced to system + user text turns (Flux2Pipeline's ``format_input``)
_MISTRAL_CHAT = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{% for c in "
                 "m['content'] %}{{ c['text'] }}{% endfor %}[/SYSTEM_PROMPT]{% else %}[INST]{% for c in m['content'] %}"
                 "{% if c['type'] == 'text' %}{{ c['text'] }}{% else %}[IMG]{% endif %}{% endfor %}[/INST]{% endif %}"
                 "{% endfor %}")  # fmt: skip


def _mistral3(layers: int = 30, hidden: int = 16) -> tuple[Any, Any]:
    """A tiny ``Mistral3ForConditionalGeneration`` (Pixtral vision tower + Mistral text model) and its
    ``PixtralProcessor`` (byte-level tokenizer with Mistral's control tokens and a chat template)."""
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        MistralConfig,
        PixtralImageProcessor,
        PixtralProcessor,  # fmt: skip
        PixtralVisionConfig,
        Qwen2Tokenizer,
    )

    chars = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({t: len(chars) + i for i, t in enumerate(_MISTRAL_SPECIALS)})
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token="</s>", eos_token="</s>", bos_token="<s>", pad_token="<pad>",
                         model_max_length=512)  # fmt: skip
    tok.add_special_tokens({"additional_special_tokens": _MISTRAL_SPECIALS[3:]})
    proc = PixtralProcessor(image_processor=PixtralImageProcessor(), tokenizer=tok, chat_template=_MISTRAL_CHAT,
                            patch_size=16, spatial_merge_size=2)  # fmt: skip
    vision = PixtralVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                                 num_attention_heads=2, image_size=32, patch_size=16, head_dim=8)  # fmt: skip
    text = MistralConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=1024,
                         pad_token_id=tok.pad_token_id)  # fmt: skip
    cfg = Mistral3Config(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("[IMG]"),
                         spatial_merge_size=2)  # fmt: skip
    return Mistral3ForConditionalGeneration(cfg).eval(), proc


def _clip(tok: Any, projection: bool = False, hidden: int = 16) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, projection_dim=hidden,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def _t5(tok: Any, d_model: int = 32, umt5: bool = False) -> Any:
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    kw = dict(vocab_size=len(tok), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2, num_heads=2,
              relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1)  # fmt: skip
    return (UMT5EncoderModel(UMT5Config(**kw)) if umt5 else T5EncoderModel(T5Config(**kw))).eval()


def _vae(latent_channels: int = 4, **extra: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(8, 16), layers_per_block=1, latent_channels=latent_channels,
                         norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32, **extra).eval()  # fmt: skip


def _unet(cross: int, **extra: Any) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, norm_num_groups=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross,
                                attention_head_dim=2, **extra)  # fmt: skip


def build_test_pipeline(family: str, seed: int = 0) -> Any:
    """A diffusers pipeline of ``family`` (one of ``FAMILIES``) with random weights, on the CPU."""
    import diffusers as d

    if family not in FAMILIES:
        raise KeyError(f"test pipeline: unknown family {family!r}; known: {FAMILIES}")
    torch.manual_seed(seed)
    if family == "sd15":
        tok = clip_tokenizer()
        return d.StableDiffusionPipeline(vae=_vae(**RELEASED_VAE["sd15"]), text_encoder=_clip(tok), tokenizer=tok, unet=_unet(16),
                                         scheduler=released_scheduler("sd15"),
                                         safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    if family == "sdxl":
        tok, tok2 = clip_tokenizer(), clip_tokenizer()
        unet = _unet(32, addition_embed_type="text_time", addition_time_embed_dim=8,
                     projection_class_embeddings_input_dim=6 * 8 + 16, use_linear_projection=True)  # fmt: skip
        return d.StableDiffusionXLPipeline(vae=_vae(**RELEASED_VAE["sdxl"]), text_encoder=_clip(tok), text_encoder_2=_clip(tok2, True),
                                           tokenizer=tok, tokenizer_2=tok2, unet=unet,
                                           scheduler=released_scheduler("sdxl"))  # fmt: skip
    if family == "sd3":
        tok, tok2, tok3 = clip_tokenizer(), clip_tokenizer(), t5_tokenizer()
        tr = d.SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                     attention_head_dim=4, num_attention_heads=2, joint_attention_dim=32,
                                     caption_projection_dim=8, pooled_projection_dim=32, pos_embed_max_size=32)  # fmt: skip
        return d.StableDiffusion3Pipeline(transformer=tr, scheduler=released_scheduler("sd3"),
                                          vae=_vae(**RELEASED_VAE["sd3"]),
                                          text_encoder=_clip(tok, True), tokenizer=tok,
                                          text_encoder_2=_clip(tok2, True), tokenizer_2=tok2,
                                          text_encoder_3=_t5(tok3), tokenizer_3=tok3)  # fmt: skip
    if family == "flux":
        tok, tok2 = clip_tokenizer(), t5_tokenizer()
        tr = d.FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=2,
                                      attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                      pooled_projection_dim=16, guidance_embeds=True, axes_dims_rope=(2, 2, 4))  # fmt: skip
        return d.FluxPipeline(scheduler=released_scheduler("flux"), vae=_vae(**RELEASED_VAE["flux"]),
                              text_encoder=_clip(tok), tokenizer=tok, text_encoder_2=_t5(tok2), tokenizer_2=tok2,
                              transformer=tr)  # fmt: skip
    if family == "chroma":  # Flux.1's layout without the pooled CLIP vector and guidance input: one T5 encoder
        tok = t5_tokenizer()
        tr = d.ChromaTransformer2DModel(in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=8,
                                        num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(2, 2, 4),
                                        approximator_num_channels=8, approximator_hidden_dim=16, approximator_layers=1)  # fmt: skip
        return d.ChromaPipeline(scheduler=released_scheduler("chroma"), vae=_vae(**RELEASED_VAE["chroma"]),
                                text_encoder=_t5(tok), tokenizer=tok, transformer=tr)  # fmt: skip
    if family == "zimage":  # Qwen3 text encoder (second-to-last hidden state), Flux.1-style VAE, static shift 3
        tok = qwen_tokenizer()
        tr = d.ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=16, n_layers=2,
                                        n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=16,
                                        axes_dims=[2, 2, 4], axes_lens=[1024, 64, 64])  # fmt: skip
        return d.ZImagePipeline(scheduler=released_scheduler("zimage"), vae=_vae(**RELEASED_VAE["zimage"]), text_encoder=_qwen3(tok, layers=2),
                                tokenizer=tok, transformer=tr)  # fmt: skip
    if family in ("flux2", "flux2_dev"):
        # [klein]: Qwen3 text encoder (hidden states 9, 18, 27 stacked), classifier-free guidance;
        # [dev]: Mistral-3 (hidden states 10, 20, 30 stacked), the guidance scale as a transformer input
        dev = family == "flux2_dev"
        tr = d.Flux2Transformer2DModel(in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=8,
                                       num_attention_heads=2, joint_attention_dim=3 * 16, timestep_guidance_channels=16,
                                       axes_dims_rope=(2, 2, 2, 2), guidance_embeds=dev)  # fmt: skip
        vae = d.AutoencoderKLFlux2(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                                   down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                                   sample_size=32).eval()  # fmt: skip
        with torch.no_grad():  # released VAEs carry batch-norm statistics of their latents; not the identity
            vae.bn.running_mean.normal_(0, 0.5)
            vae.bn.running_var.uniform_(0.5, 2.0)
        sched = released_scheduler(family)
        if dev:
            te, tok = _mistral3()
            return d.Flux2Pipeline(scheduler=sched, vae=vae, text_encoder=te, tokenizer=tok, transformer=tr)
        tok = qwen_tokenizer()
        return d.Flux2KleinPipeline(scheduler=sched, vae=vae, text_encoder=_qwen3(tok, layers=27), tokenizer=tok,
                                    transformer=tr)  # fmt: skip
    if family == "wan22":
        return _wan22()
    if family == "pixart":
        return _pixart_sigma()
    if family in MORE_TEST_FAMILIES:
        return build_more(family)
    tok = t5_tokenizer()
    tr = d.WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=16,
                                 out_channels=16, text_dim=32, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32)  # fmt: skip
    vae = d.AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                             temperal_downsample=[False, True, True]).eval()  # fmt: skip
    return d.WanPipeline(tokenizer=tok, text_encoder=_t5(tok, umt5=True), vae=vae, transformer=tr,
                         scheduler=released_scheduler("wan"))  # fmt: skip


def _wan22() -> Any:
    """Wan 2.2 T2V-A14B's layout: two experts of one transformer config, ``boundary_ratio`` 0.875 (its
    model_index.json), the Wan 2.1 VAE and UMT5 encoder; each expert a separate random initialisation."""
    import diffusers as d

    tok = t5_tokenizer()
    kw = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=16, out_channels=16,
              text_dim=32, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32)  # fmt: skip
    vae = d.AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                             temperal_downsample=[False, True, True]).eval()  # fmt: skip
    high, low = d.WanTransformer3DModel(**kw), d.WanTransformer3DModel(**kw)
    return d.WanPipeline(tokenizer=tok, text_encoder=_t5(tok, umt5=True), vae=vae, transformer=high,
                         transformer_2=low, boundary_ratio=0.875,
                         scheduler=d.FlowMatchEulerDiscreteScheduler(shift=3.0))  # fmt: skip


def _pixart_sigma() -> Any:
    """PixArt-Sigma's layout: T5 encoder, SDXL's VAE scaling, a learned-sigma transformer (8 output channels) without
    resolution conditions, and the release's DPM-Solver++ scheduler config (linear betas 1e-4..0.02, epsilon).
    ``sample_size`` 32 selects the pipeline's 256-px aspect-ratio bins for samples."""
    import diffusers as d

    tok = t5_tokenizer()
    tr = d.PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                    num_layers=2, norm_num_groups=4, cross_attention_dim=16, sample_size=32,
                                    caption_channels=32, use_additional_conditions=False)  # fmt: skip
    sched = d.DPMSolverMultistepScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                          prediction_type="epsilon", solver_order=2, algorithm_type="dpmsolver++")  # fmt: skip
    return d.PixArtSigmaPipeline(tokenizer=tok, text_encoder=_t5(tok), vae=_vae(scaling_factor=0.13025),
                                 transformer=tr, scheduler=sched)  # fmt: skip


def save_test_pipeline(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build the test pipeline and ``save_pretrained`` it to ``out_dir`` (which must not hold a pipeline yet)."""
    out = Path(out_dir)
    if (out / "model_index.json").exists():
        raise FileExistsError(f"{out} already holds a pipeline (model_index.json); pick an empty folder")
    build_test_pipeline(family, seed).save_pretrained(str(out))
    return out
