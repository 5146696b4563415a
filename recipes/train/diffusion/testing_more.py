"""Test pipelines of the families in ``families_more.py`` (see ``testing.py``): real diffusers / transformers classes
at tiny sizes, with each release's scheduler class and values and its VAE's latent scaling.

Where each value comes from:

- Sana: ``scripts/convert_sana_to_diffusers.py`` (diffusers) writes the released folders: ``DPMSolverMultistepScheduler
  (flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction")`` below 4K, the DC-AE
  ``dc-ae-f32c32-sana-1.1`` (``scaling_factor`` 0.41407), a Gemma-2 decoder as text encoder (2304 channels: here 16),
  ``patch_size`` 1, ``mlp_ratio`` 2.5, ``norm_elementwise_affine`` False, ``norm_eps`` 1e-6, no attention bias.
- Qwen-Image: ``Qwen/Qwen-Image``'s ``scheduler_config.json`` (``FlowMatchEulerDiscreteScheduler``, dynamic shift
  ``base_shift`` 0.5 .. ``max_shift`` 0.9 over 256 .. 8192 tokens, ``shift_terminal`` 0.02, exponential); the VAE
  is ``AutoencoderKLQwenImage`` whose class defaults are the release's (16 channels): here 4 channels with the
  first 4 of its ``latents_mean`` / ``latents_std``; the transformer's ``in_channels`` are 4 x the latent channels
  (2x2 packing), ``patch_size`` 2, the text encoder a ``Qwen2_5_VLForConditionalGeneration`` (mrope sections as
  diffusers' own pipeline test), the tokenizer ``testing.qwen_tokenizer`` with the vision tokens added.
- LTX-Video: ``Lightricks/LTX-Video``'s scheduler (dynamic shift 0.95 .. 2.05 over 1024 .. 4096 tokens, terminal 0.1:
  the values ComfyUI's ``LTXVScheduler`` also uses), the T5 encoder (``testing._t5``), ``AutoencoderKLLTXVideo`` with
  two of its four blocks compressing (spatial and temporal ratio 4 here, 32 and 8 released), ``patch_size`` 1, and
  random ``latents_mean`` / ``latents_std`` buffers (the release's are stored in its weights, not its config).
- HunyuanVideo: ``hunyuanvideo-community/HunyuanVideo``'s ``FlowMatchEulerDiscreteScheduler(shift=7.0)``,
  ``AutoencoderKLHunyuanVideo`` (``scaling_factor`` 0.476986, ratios 8 / 4: the class defaults), a guidance-distilled
  transformer, a ``LlamaModel`` (3 layers: the pipeline reads the hidden state 2 before the last) and CLIP;
  the Llama tokenizer has the pipeline's template words as whole tokens, so its template takes 95 tokens, the
  ``crop_start`` of ``DEFAULT_PROMPT_TEMPLATE`` (the count Llama-3's tokenizer gives), and is cropped exactly.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

MORE_TEST_FAMILIES = ("sana", "qwen_image", "ltx_video", "hunyuan_video", "ltx2")  # LTX-2: testing_ltx2.py
RELEASED_SCHEDULERS_MORE: dict[str, tuple[str, dict[str, Any], str]] = {
    "sana": (
        "DPMSolverMultistepScheduler",
        dict(flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction"),
        "Efficient-Large-Model/Sana_1600M_1024px_diffusers (scripts/convert_sana_to_diffusers.py)",
    ),
    "qwen_image": (
        "FlowMatchEulerDiscreteScheduler",
        dict(
            num_train_timesteps=1000,
            shift=1.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=0.9,
            base_image_seq_len=256,
            max_image_seq_len=8192,
            shift_terminal=0.02,
            time_shift_type="exponential",
        ),
        "Qwen/Qwen-Image",
    ),  # fmt: skip
    "ltx_video": (
        "FlowMatchEulerDiscreteScheduler",
        dict(
            num_train_timesteps=1000,
            shift=1.0,
            use_dynamic_shifting=True,
            base_shift=0.95,
            max_shift=2.05,
            base_image_seq_len=1024,
            max_image_seq_len=4096,
            shift_terminal=0.1,
        ),
        "Lightricks/LTX-Video",
    ),  # fmt: skip
    "hunyuan_video": (
        "FlowMatchEulerDiscreteScheduler",
        dict(num_train_timesteps=1000, shift=7.0),
        "hunyuanvideo-community/HunyuanVideo",
    ),
}


def _scheduler(family: str) -> Any:
    import diffusers

    name, values, _ = RELEASED_SCHEDULERS_MORE[family]
    return getattr(diffusers, name).from_config(values)


def gemma_tokenizer(max_length: int = 2048) -> Any:
    """A ``GemmaTokenizer`` (BPE with byte fallback, ``▁`` for spaces): Gemma's special tokens, the 256 byte tokens
    and single characters, no merges; ``<bos>`` first, as the released tokenizer_config says."""
    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    vocab.update({f"<0x{b:02X}>": 5 + b for b in range(256)})
    for c in "\u2581abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'\"-()":
        vocab.setdefault(c, len(vocab))
    return GemmaTokenizer(vocab=vocab, merges=[], model_max_length=max_length, add_bos_token=True)  # as Gemma's


def _gemma2(tok: Any, hidden: int = 16) -> Any:
    from transformers import Gemma2Config, Gemma2Model

    cfg = Gemma2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=4096,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)  # fmt: skip
    return Gemma2Model(cfg).eval()


def _sana() -> Any:
    import diffusers as d

    tok = gemma_tokenizer()
    tr = d.SanaTransformer2DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=4,
                                  num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=4,
                                  cross_attention_dim=8, caption_channels=16, mlp_ratio=2.5, attention_bias=False,
                                  sample_size=16, patch_size=1, norm_elementwise_affine=False, norm_eps=1e-6)  # fmt: skip
    vae = d.AutoencoderDC(in_channels=3, latent_channels=4, attention_head_dim=2,
                          encoder_block_types=("ResBlock", "EfficientViTBlock"),
                          decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
                          decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)),
                          decoder_qkv_multiscales=((), (5,)), encoder_layers_per_block=(1, 1),
                          decoder_layers_per_block=(1, 1), downsample_block_type="conv",
                          upsample_block_type="interpolate", scaling_factor=0.41407).eval()  # fmt: skip
    return d.SanaPipeline(tokenizer=tok, text_encoder=_gemma2(tok), vae=vae, transformer=tr,
                          scheduler=_scheduler("sana"))  # fmt: skip


def _qwen_image() -> Any:
    import diffusers as d
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from recipes.train.diffusion.testing import qwen_tokenizer

    tok = qwen_tokenizer(max_length=2048)
    vision = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
    tok.add_tokens(vision, special_tokens=True)
    start, end, pad = tok.convert_tokens_to_ids(vision)
    ids = dict(
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.convert_tokens_to_ids("<|im_end|>")
    )
    text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                rope_theta=1000000.0, vocab_size=len(tok), max_position_embeddings=4096, **ids)  # fmt: skip
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=dict(depth=1, hidden_size=16, intermediate_size=16,
                           num_heads=2, out_hidden_size=16), hidden_size=16, vocab_size=len(tok),
                           vision_start_token_id=start, vision_end_token_id=end, vision_token_id=pad,
                           image_token_id=pad, **ids)  # fmt: skip
    te = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    tr = d.QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                       attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                       guidance_embeds=False, axes_dims_rope=(2, 2, 4))  # fmt: skip
    defaults = inspect.signature(d.AutoencoderKLQwenImage.__init__).parameters
    vae = d.AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                   temperal_downsample=[False, True],
                                   latents_mean=defaults["latents_mean"].default[:4],
                                   latents_std=defaults["latents_std"].default[:4]).eval()  # fmt: skip
    return d.QwenImagePipeline(scheduler=_scheduler("qwen_image"), vae=vae, text_encoder=te, tokenizer=tok,
                               transformer=tr)  # fmt: skip


def _ltx_video() -> Any:
    import diffusers as d

    from recipes.train.diffusion.testing import _t5, t5_tokenizer

    tok = t5_tokenizer(max_length=128)
    tr = d.LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2,
                                      attention_head_dim=8, cross_attention_dim=16, num_layers=2, caption_channels=32)  # fmt: skip
    vae = d.AutoencoderKLLTXVideo(latent_channels=8, block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
                                  spatio_temporal_scaling=(True, True, False, False), patch_size=1, patch_size_t=1,
                                  encoder_causal=True, decoder_causal=False).eval()  # fmt: skip
    with torch.no_grad():  # the released VAE stores per-channel latent statistics: not the identity
        vae.latents_mean.normal_(0, 0.5)
        vae.latents_std.uniform_(0.5, 2.0)
    return d.LTXPipeline(scheduler=_scheduler("ltx_video"), vae=vae, text_encoder=_t5(tok), tokenizer=tok,
                         transformer=tr)  # fmt: skip


_LLAMA_SPECIALS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
#: template words left as characters, so the template is exactly ``crop_start`` (95) tokens long
_SPELLED_OUT = {"1.", "The", "by", "main", "used"}


def llama_tokenizer() -> Any:
    """A ``LlamaTokenizer`` (BPE, byte fallback): Llama-3's text and header tokens, single characters, and each
    word of HunyuanVideo's prompt template and ``testing._WORDS`` as one token (merges built letter by letter)."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    from transformers import LlamaTokenizer

    from recipes.train.diffusion.testing import _WORDS

    vocab = {"<unk>": 0, "<|begin_of_text|>": 1, "<|end_of_text|>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for c in "\u2581abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'\"-()":
        vocab.setdefault(c, len(vocab))
    text = DEFAULT_PROMPT_TEMPLATE["template"]
    for t in _LLAMA_SPECIALS:
        text = text.replace(t, " ")
    words = ({w for w in text.split() if w != "{}"} - _SPELLED_OUT) | set(_WORDS)
    merges = []
    for w in sorted(words):
        t = "\u2581" + w
        for i in range(2, len(t) + 1):
            if t[:i] not in vocab:
                vocab[t[:i]] = len(vocab)
                merges.append((t[: i - 1], t[i - 1]))
    tok = LlamaTokenizer(vocab=vocab, merges=merges, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                         unk_token="<unk>", add_bos_token=True, model_max_length=4096,
                         padding_side="right")  # fmt: skip  # as the release's tokenizer_config: the crop is at the start
    tok.add_tokens(_LLAMA_SPECIALS, special_tokens=True)
    tok.pad_token = "<unk>"
    return tok


def _hunyuan_video() -> Any:
    import diffusers as d
    from transformers import LlamaConfig, LlamaModel

    from recipes.train.diffusion.testing import _clip, clip_tokenizer

    tok, tok2 = llama_tokenizer(), clip_tokenizer()
    llama = LlamaModel(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                   num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                   max_position_embeddings=1024, pad_token_id=0)).eval()  # fmt: skip
    tr = d.HunyuanVideoTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10,
                                          num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=1,
                                          patch_size_t=1, guidance_embeds=True, text_embed_dim=16,
                                          pooled_projection_dim=16, rope_axes_dim=(2, 4, 4))  # fmt: skip
    vae = d.AutoencoderKLHunyuanVideo(latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                                      norm_num_groups=4).eval()  # fmt: skip
    return d.HunyuanVideoPipeline(text_encoder=llama, tokenizer=tok, transformer=tr, vae=vae,
                                  scheduler=_scheduler("hunyuan_video"), text_encoder_2=_clip(tok2),
                                  tokenizer_2=tok2)  # fmt: skip


def build_more(family: str) -> Any:
    """The test pipeline of ``family`` (one of ``MORE_TEST_FAMILIES``), random weights, on the CPU."""
    from recipes.train.diffusion.testing_ltx2 import build_ltx2

    builders = {"sana": _sana, "qwen_image": _qwen_image, "ltx_video": _ltx_video, "hunyuan_video": _hunyuan_video,
                "ltx2": build_ltx2}  # fmt: skip
    return builders[family]()
