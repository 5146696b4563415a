"""LTX-Video and LTX-2 (audio + video): one stack of transformer blocks.

Names read from diffusers 0.42.1 (``models/transformers/transformer_ltx.py``,
``transformer_ltx2.py``). Video stream: ``attn1`` (``self_attn``), ``attn2`` on the text
(``cross_attn``), ``ff`` (``ffn``). LTX-2 adds an audio stream with its own components
(``audio_attn1`` -> ``audio_self_attn``, ``audio_attn2`` -> ``audio_cross_attn``, ``audio_ff`` ->
``audio_ffn``) and the audio<->video attention (``audio_to_video_attn``, ``video_to_audio_attn``
-> ``av_cross_attn``), so a video recipe does not move the audio weights by accident. Every
per-block ``*scale_shift_table`` and norm is ``norm``. The per-component x depth recipe's "bare ``to_q/k/v``, no
``attn.`` prefix" is wrong for both: the projections sit under ``attn1`` / ``attn2``.
"""

from __future__ import annotations

from recipes.registry import ADAPTERS
from zoo.diffusers_common import MODULATION_NO_DECAY, CaptionDiT, DiffusersAdapter, block_norms, prefixes, self_cross


@ADAPTERS.register_module("ltx_video")
class LTXVideo(CaptionDiT):
    """``LTXVideoTransformer3DModel`` (LTX-Video 2B / 13B): 28 / 48 blocks."""

    name = "ltx_video"
    upstream = "diffusers 0.42.1"
    classes = ("LTXVideoTransformer3DModel",)
    embed_modules = ("proj_in", "time_embed", "caption_projection")


_EMBED2 = prefixes(
    "proj_in", "audio_proj_in", "time_embed", "audio_time_embed", "caption_projection", "audio_caption_projection"
)
# timestep-conditioned scale/shift/gates of the audio<->video attention, shared by every block
_MOD2 = r"^av_cross_attn_\w+\."
_HEAD2 = prefixes(
    "scale_shift_table", "audio_scale_shift_table", "norm_out", "audio_norm_out", "proj_out", "audio_proj_out"
)


@ADAPTERS.register_module("ltx2")
class LTX2(DiffusersAdapter):
    """``LTX2VideoTransformer3DModel`` (LTX-2 19B): 48 audio-video blocks."""

    name = "ltx2"
    upstream = "diffusers 0.42.1"
    classes = ("LTX2VideoTransformer3DModel",)
    stacks = (("transformer_blocks", r"^transformer_blocks\.(\d+)\."),)
    embed = (_EMBED2, _MOD2)
    head = (_HEAD2,)
    components = (
        *block_norms("transformer_blocks", tables=True),
        *self_cross("transformer_blocks"),
        (r"^transformer_blocks\.\d+\.audio_attn1\.", "audio_self_attn"),
        (r"^transformer_blocks\.\d+\.audio_attn2\.", "audio_cross_attn"),
        (r"^transformer_blocks\.\d+\.audio_ff\.", "audio_ffn"),
        (r"^transformer_blocks\.\d+\.(?:audio_to_video_attn|video_to_audio_attn)\.", "av_cross_attn"),
        (_EMBED2, "embed"),
        (_MOD2, "modulation"),
        (_HEAD2, "head"),
    )
    no_decay = MODULATION_NO_DECAY
    catch_all = frozenset({"embed", "modulation", "head"})
