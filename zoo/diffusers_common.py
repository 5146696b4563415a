"""What every diffusers adapter shares: recognition by class, and the block rules all DiTs repeat.

Not a family: it registers nothing. The family modules (``zoo/flux.py``, ``zoo/sd3.py``, ...) build
their tables from the small helpers here so that one naming convention reads the same everywhere:

* ``self_attn``: the image (or video) stream's attention projections;
* ``cross_attn``: attention over the text (``attn2``), and in double-stream joint-attention blocks
  (Flux, SD3, Chroma, HunyuanVideo, Qwen-Image) the whole text stream (``add_*_proj``,
  ``to_add_out``, ``ff_context`` / ``txt_mlp``), as the per-component x depth recipe maps Flux;
* ``ffn``: the image stream's MLP;
* ``norm``: every norm inside a block, including the block's adaLN modulation (``norm1.linear``,
  ``scale_shift_table``, ``img_mod``), which scales and shifts that norm;
* catch-alls outside the blocks: ``embed`` (layer 0), ``modulation`` (shared adaLN / guidance
  networks, layer 0), ``head`` (final norm and projection, layer N+1).
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from recipes.adapter import Adapter

# Modules named "*norm*" inside a block: norm1, norm1_context, attn.norm_q, norm_added_k, ffn_norm1.
_NORM_IN_BLOCK = r"\.\d+\.(?:\w+\.)*?\w*norm\w*\."
# adaLN modulation tables are 2-D/3-D tensors, so the engine's 1-D rule does not spare them.
MODULATION_NO_DECAY = (r"scale_shift_table$",)


def block_norms(stacks: str, tables: bool = False, affine: bool = True) -> tuple[tuple[str, str], ...]:
    """Norms inside the blocks of ``stacks`` (a regex alternation of stack prefixes).

    ``tables``: the blocks also carry adaLN ``*scale_shift_table`` parameters (PixArt, WAN, LTX).
    ``affine``: False where no block norm has weights (PixArt, Sana), so no rule is dead.
    """
    rules = ((rf"^(?:{stacks}){_NORM_IN_BLOCK}", "norm"),) if affine else ()
    if tables:
        rules += ((rf"^(?:{stacks})\.\d+\.(?:\w+_)?scale_shift_table$", "norm"),)
    return rules


def double_stream(stack: str, ff: str = "ff", ff_context: str = "ff_context") -> tuple[tuple[str, str], ...]:
    """An MMDiT joint-attention block: image stream ``self_attn`` / ``ffn``, text stream ``cross_attn``."""
    return (
        (rf"^{stack}\.\d+\.attn\.(?:to_[qkv]|to_out)\.", "self_attn"),
        (rf"^{stack}\.\d+\.attn\.(?:add_[qkv]_proj|to_add_out)\.", "cross_attn"),
        (rf"^{stack}\.\d+\.{ff}\.", "ffn"),
        (rf"^{stack}\.\d+\.{ff_context}\.", "cross_attn"),
    )


def self_cross(stack: str, ff: str = "ff") -> tuple[tuple[str, str], ...]:
    """A classic block: ``attn1`` self-attention, ``attn2`` cross-attention on the text, an MLP."""
    return (
        (rf"^{stack}\.\d+\.attn1\.", "self_attn"),
        (rf"^{stack}\.\d+\.attn2\.", "cross_attn"),
        (rf"^{stack}\.\d+\.{ff}\.", "ffn"),
    )


def prefixes(*names: str) -> str:
    """``^(?:a|b)\\.``: a rule for whole top-level modules."""
    return rf"^(?:{'|'.join(names)})(?:\.|$)"


class DiffusersAdapter(Adapter):
    """Recognises exactly the diffusers classes listed in ``classes`` (by name and module)."""

    classes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        kind = type(model)
        return kind.__name__ in cls.classes and kind.__module__.startswith("diffusers.")


class CaptionDiT(DiffusersAdapter):
    """One stack of DiT blocks with ``attn1`` self- and ``attn2`` cross-attention on the caption, an
    MLP and per-block adaLN ``scale_shift_table`` (PixArt, Sana, LTX-Video, WAN).

    A subclass names its modules; the tables follow: ``block_stack`` (the blocks' module list),
    ``ff_module`` (the MLP inside a block), ``affine_block_norms`` (False where no block norm has
    weights, so no rule is dead), ``embed_modules`` (layer 0, ``embed``), ``modulation_modules``
    (a shared timestep network, if any: layer 0, ``modulation``), ``head_modules`` (layer N+1, ``head``).
    """

    block_stack: ClassVar[str] = "transformer_blocks"
    ff_module: ClassVar[str] = "ff"
    affine_block_norms: ClassVar[bool] = True
    embed_modules: ClassVar[tuple[str, ...]] = ()
    modulation_modules: ClassVar[tuple[str, ...]] = ()
    head_modules: ClassVar[tuple[str, ...]] = ("scale_shift_table", "norm_out", "proj_out")

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        blocks, embed, head = cls.block_stack, prefixes(*cls.embed_modules), prefixes(*cls.head_modules)
        mod = (prefixes(*cls.modulation_modules),) if cls.modulation_modules else ()
        cls.stacks = ((blocks, rf"^{blocks}\.(\d+)\."),)
        cls.embed, cls.head = (embed, *mod), (head,)
        cls.components = (
            *block_norms(blocks, tables=True, affine=cls.affine_block_norms),
            *self_cross(blocks, ff=cls.ff_module),
            (embed, "embed"),
            *((m, "modulation") for m in mod),
            (head, "head"),
        )
        cls.no_decay = MODULATION_NO_DECAY
        cls.catch_all = frozenset({"embed", "head", *(("modulation",) if mod else ())})
