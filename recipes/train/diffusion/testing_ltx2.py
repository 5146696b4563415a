"""The LTX-2 test pipeline (``LTX2Pipeline``): real diffusers / transformers classes at tiny sizes, with the release's
scheduler and the structure of its components (see ``testing.py`` for the other families).

Where each value comes from (diffusers ``scripts/convert_ltx2_to_diffusers.py``, ``--version 2.0``, which writes the
released ``Lightricks/LTX-2`` folder):

- scheduler: ``FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
  base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)``, as written there;
- transformer: ``LTX2VideoTransformer3DModel`` with the 2.0 settings (``rope_type`` "split", double-precision RoPE,
  ``timestep_scale_multiplier`` and ``cross_attn_timestep_scale_multiplier`` 1000, ``qk_norm`` across heads, patch
  size 1) at 2 blocks and 16 / 8 channels per stream; ``caption_channels`` is the text encoder's width and
  ``vae_scale_factors`` the tiny VAE's (the release: Gemma-3's 3840, the VAE's (8, 32, 32));
- connectors: ``LTX2TextConnectors`` as released (video and audio connectors, 128 learnable registers that replace
  the padding, ``text_proj_in_factor`` = the encoder's hidden states: its layers + 1, 49 for Gemma-3-12B), at 1 layer;
- text encoder: ``Gemma3ForConditionalGeneration`` (2 layers of 16 channels, a 1-layer SigLIP tower the pipeline
  does not use) with ``testing_more.gemma_tokenizer``; the pipeline pads on the left to ``max_sequence_length`` 1024;
- video VAE: ``AutoencoderKLLTX2Video`` (causal encoder, non-causal decoder, residual upsampling) with two
  spatio-temporal blocks (ratios 4 and 4; the release 32 and 8: patch size 4 and four blocks) and random per-channel
  ``latents_mean`` / ``latents_std`` (the release's are in its weights); upsampling by 1 in channels (the release's
  factor 2 needs its wider decoder);
- audio VAE and vocoder: ``AutoencoderKLLTX2Audio`` (mel spectrogram, 16 kHz, hop 160, causal, latent 4x in time and
  mel bins) and ``LTX2Vocoder`` at the sizes of diffusers' own LTX-2 pipeline tests.
"""

from __future__ import annotations

from typing import Any

import torch

LTX2_SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                      base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)  # fmt: skip


def _gemma3(tok: Any, hidden: int = 16, layers: int = 2) -> Any:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    text = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=2048,
                sliding_window=64, **ids)  # fmt: skip
    vision = dict(hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)  # fmt: skip
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=3, **ids)
    return Gemma3ForConditionalGeneration(cfg).eval()


def build_ltx2() -> Any:
    import diffusers as d
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    from recipes.train.diffusion.testing_more import gemma_tokenizer

    tok = gemma_tokenizer(max_length=1024)
    te = _gemma3(tok)
    width, layers = te.config.text_config.hidden_size, te.config.text_config.num_hidden_layers
    tr = d.LTX2VideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                       num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                                       vae_scale_factors=(4, 4, 4), audio_in_channels=4, audio_out_channels=4,
                                       audio_num_attention_heads=2, audio_attention_head_dim=4,
                                       audio_cross_attention_dim=8, num_layers=2, caption_channels=width,
                                       rope_type="split", rope_double_precision=True,
                                       timestep_scale_multiplier=1000, cross_attn_timestep_scale_multiplier=1000)  # fmt: skip
    connectors = LTX2TextConnectors(caption_channels=width, text_proj_in_factor=layers + 1,
                                    video_connector_num_attention_heads=2, video_connector_attention_head_dim=8,
                                    video_connector_num_layers=1, video_connector_num_learnable_registers=128,
                                    audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=8,
                                    audio_connector_num_layers=1, audio_connector_num_learnable_registers=128,
                                    connector_rope_base_seq_len=4096, rope_type="split").eval()  # fmt: skip
    vae = d.AutoencoderKLLTX2Video(latent_channels=8, block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                                   down_block_types=("LTX2VideoDownBlock3D",) * 2, layers_per_block=(1, 1, 1),
                                   decoder_layers_per_block=(1, 1, 1), spatio_temporal_scaling=(True, True),
                                   decoder_spatio_temporal_scaling=(True, True), decoder_inject_noise=(False,) * 3,
                                   downsample_type=("spatiotemporal",) * 2, upsample_type=("spatiotemporal",) * 2,
                                   upsample_residual=(True, True), upsample_factor=(1, 1), patch_size=1,
                                   encoder_causal=True, decoder_causal=False).eval()  # fmt: skip
    with torch.no_grad():  # the released VAE stores per-channel latent statistics: not the identity
        vae.latents_mean.normal_(0, 0.5)
        vae.latents_std.uniform_(0.5, 2.0)
    audio_vae = d.AutoencoderKLLTX2Audio(base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1,
                                         attn_resolutions=None, in_channels=2, resolution=32, latent_channels=2,
                                         norm_type="pixel", causality_axis="height", dropout=0.0,
                                         mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160,
                                         is_causal=True, mel_bins=8).eval()  # fmt: skip
    vocoder = LTX2Vocoder(in_channels=2 * 8, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4],
                          upsample_factors=[2, 2], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
                          leaky_relu_negative_slope=0.1, output_sampling_rate=16000).eval()  # fmt: skip
    return d.LTX2Pipeline(scheduler=d.FlowMatchEulerDiscreteScheduler.from_config(LTX2_SCHEDULER), vae=vae,
                          audio_vae=audio_vae, text_encoder=te, tokenizer=tok, connectors=connectors, transformer=tr,
                          vocoder=vocoder)  # fmt: skip
