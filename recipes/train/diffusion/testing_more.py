"""Test pipelines of the families in ``families_more.py`` (see ``testing.py``): real diffusers / transformers classes
at tiny sizes, with each release's scheduler class and values and its VAE's latent scaling.

Where each value comes from:

- Sana: ``scripts/convert_sana_to_diffusers.py`` (diffusers) writes the released folders: ``DPMSolverMultistepScheduler
  (flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction")`` below 4K, the DC-AE
  ``dc-ae-f32c32-sana-1.1`` (``scaling_factor`` 0.41407), a Gemma-2 decoder as text encoder (2304 channels: here 16),
  ``patch_size`` 1, ``mlp_ratio`` 2.5, ``norm_elementwise_affine`` False, ``norm_eps`` 1e-6, no attention bias.
"""

from __future__ import annotations

from typing import Any

MORE_TEST_FAMILIES = ("sana",)
RELEASED_SCHEDULERS_MORE: dict[str, tuple[str, dict[str, Any], str]] = {
    "sana": (
        "DPMSolverMultistepScheduler",
        dict(flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction"),
        "Efficient-Large-Model/Sana_1600M_1024px_diffusers (scripts/convert_sana_to_diffusers.py)",
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


def build_more(family: str) -> Any:
    """The test pipeline of ``family`` (one of ``MORE_TEST_FAMILIES``), random weights, on the CPU."""
    return {"sana": _sana}[family]()
