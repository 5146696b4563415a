"""Stable Diffusion 1.x / 2.x / SDXL U-Net: one sequential index, down -> mid -> up.

Names read from diffusers 0.42.1 (``models/unets/unet_2d_condition.py``, ``unet_2d_blocks.py``).
A U-Net is one stack (``unet``) whose index follows the original LDM ``input_blocks`` /
``middle_block`` / ``output_blocks`` numbering, the one kohya's block weights use:

* ``down_blocks.i.{resnets,attentions}.j`` -> slot ``i*(L+1) + j`` and ``down_blocks.i.downsamplers``
  -> ``i*(L+1) + L`` (L = ``layers_per_block``): LDM ``input_blocks[slot + 1]``;
* ``mid_block.*`` -> the next slot (LDM ``middle_block``);
* ``up_blocks.i.{resnets,attentions}.j`` -> ``i*(L+1) + j`` after the mid slot, the upsampler
  joining its block's last slot (LDM ``output_blocks``).

Layer ids (0 = ``conv_in`` and the time embedding, 1..N = slots, N+1 = ``conv_norm_out`` /
``conv_out``) then read as kohya's slots. SD 1.5 (L=2, 4 down blocks): N=24, ids 0..25, and ids
0..24 are exactly kohya's 25 LoRA block weights (IN00..IN11, MID, OUT00..OUT11; IN00 is
``conv_in``). SDXL (3 down blocks): N=18, ids 0..19; kohya's 23 ``block_lr`` slots are
0 = time/label embedding, 1..9 = IN00..IN08, 10..12 = the mid block's three layers, 13..21 =
OUT00..OUT08, 22 = out, so our id 0 = kohya 0 + 1, ids 1..8 = kohya 2..9, id 9 = kohya 10..12,
ids 10..18 = kohya 13..21, id 19 = kohya 22. ``depth_scope`` makes no difference (one stack).

Components: ``attn1`` -> ``self_attn``, ``attn2`` -> ``cross_attn``, ``ff`` -> ``ffn``, the
transformers' ``proj_in`` / ``proj_out`` -> ``attn_proj``, ResNet blocks and resamplers ->
``resnet``, every norm -> ``norm``.
"""

from __future__ import annotations

import re

from torch import nn

from recipes.adapter import ModelMap, canonical_name, unwrap_model
from recipes.registry import ADAPTERS
from zoo.diffusers_common import DiffusersAdapter, prefixes

_PART = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.")
_EMBED = prefixes("conv_in", "time_embedding", "add_embedding", "class_embedding", "encoder_hid_proj")
_HEAD = prefixes("conv_norm_out", "conv_out")
_BLOCKS = r"^(?:down_blocks|mid_block|up_blocks)\."


@ADAPTERS.register_module("unet")
class UNet(DiffusersAdapter):
    """``UNet2DConditionModel`` (SD 1.5, SD 2.1, SDXL, and fine-tunes of them)."""

    name = "unet"
    upstream = "diffusers 0.42.1"
    classes = ("UNet2DConditionModel",)
    stacks = (("unet", r"^(?:down_blocks|mid_block|up_blocks)\."),)  # for rule_hits; _locate does the work
    embed = (_EMBED,)
    head = (_HEAD,)
    components = (
        (rf"{_BLOCKS}(?:\w+\.)*?\w*norm\w*\.\w+$", "norm"),
        (r"\.attn1\.", "self_attn"),
        (r"\.attn2\.", "cross_attn"),
        (r"\.transformer_blocks\.\d+\.ff\.", "ffn"),
        (r"\.attentions\.\d+\.(?:proj_in|proj_out)\.", "attn_proj"),
        (r"\.(?:resnets|downsamplers|upsamplers)\.\d+\.", "resnet"),
        (_EMBED, "embed"),
        (_HEAD, "head"),
    )
    catch_all = frozenset({"embed", "head"})

    def __init__(self) -> None:
        super().__init__()
        self._geometry: tuple[int, int] | None = None  # (layers_per_block L, first mid slot)

    def describe(self, model: nn.Module, names: list[str] | None = None) -> ModelMap:
        if names is None:
            names = [canonical_name(n)[0] for n, _ in unwrap_model(model).named_parameters()]
        self._geometry = _geometry(names)
        return super().describe(model, names)

    def _locate(self, name: str) -> tuple[str, int, str] | None:
        """The LDM slot of a down/mid/up name (see the module docstring); None outside them."""
        if name.startswith("mid_block."):
            return "unet", self._require_geometry(name)[1], "mid:" + name[len("mid_block.") :]
        m = _PART.match(name)
        if m is None:
            return None
        per_block, mid = self._require_geometry(name)
        where, i, kind, j = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
        slot = i * per_block + (per_block - 1 if kind.endswith("samplers") else j)
        if where == "up_blocks":
            slot += mid + 1
        return "unet", slot, f"{where}:{kind}:{name[m.end() :]}"

    def _require_geometry(self, name: str) -> tuple[int, int]:
        if self._geometry is None:
            raise ValueError(
                f"unet: cannot place {name!r} before the model's geometry is known; call "
                "describe(model) (or build_param_groups) first"
            )
        return self._geometry


def _geometry(names: list[str]) -> tuple[int, int]:
    """(slots per down block = layers_per_block + 1, index of the mid slot) read from the names."""
    resnets = [
        int(m.group(4))
        for n in names
        if (m := _PART.match(n)) and m.group(1) == "down_blocks" and m.group(3) == "resnets"
    ]
    per_block = max(resnets, default=-1) + 2
    down = [
        int(m.group(2)) * per_block + (per_block - 1 if m.group(3) == "downsamplers" else int(m.group(4)))
        for n in names
        if (m := _PART.match(n)) and m.group(1) == "down_blocks"
    ]
    return per_block, max(down, default=-1) + 1
