"""Stable Diffusion 1.x / 2.x / SDXL U-Net: one sequential index, down -> mid -> up.

Names read from diffusers 0.42.1 (``models/unets/unet_2d_condition.py``, ``unet_2d_blocks.py``).
A U-Net is one stack (``unet``) whose index follows the original LDM ``input_blocks`` /
``middle_block`` / ``output_blocks`` numbering, the one kohya's block weights use:

* ``down_blocks.i.{resnets,attentions}.j`` -> slot ``i*(L+1) + j`` and ``down_blocks.i.downsamplers``
  -> ``i*(L+1) + L`` (L = ``layers_per_block``): LDM ``input_blocks[slot + 1]``;
* ``mid_block.*`` -> the next slot (LDM ``middle_block``);
* ``up_blocks.i.{resnets,attentions}.j`` -> ``i*(L+1) + j`` after the mid slot, the upsampler
  joining its block's last slot (LDM ``output_blocks``).

Layer ids follow kohya's block numbering, so ``layer_decay.scales`` is kohya's list and the
``kohya_blocks`` strategy reads ``down_lr_weight`` / ``mid_lr_weight`` / ``up_lr_weight`` directly:

* SD 1.x / 2.x (kohya's 25 LoRA block weights; 4 down blocks, L=2): id 0 = ``conv_in`` and the time
  embedding (IN00), ids 1..11 = IN01..IN11, id 12 = the mid block (MID), ids 13..24 = OUT00..OUT11,
  id 25 = ``conv_norm_out`` / ``conv_out`` (out; no kohya weight). N = 24.
* SDXL (a model with ``add_embedding``, kohya's 23 ``--block_lr`` slots): id 0 = the time and label
  embeddings (emb), id 1 = ``conv_in`` (IN00, kohya's ``input_blocks.0``), ids 2..9 = IN01..IN08,
  ids 10, 11, 12 = the mid block's ``resnets.0`` / ``attentions.0`` / ``resnets.1`` (MID0, MID1, MID2),
  ids 13..21 = OUT00..OUT08, id 22 = out. N = 21: ``conv_in`` and each mid layer get their own LR.

``ModelMap.layer_label(layer_id)`` gives these names (IN05, MID, OUT00, ...). ``depth_scope`` makes
no difference (one stack).

Components: ``attn1`` -> ``self_attn``, ``attn2`` -> ``cross_attn``, ``ff`` -> ``ffn``, the
transformers' ``proj_in`` / ``proj_out`` -> ``attn_proj``, ResNet blocks and resamplers ->
``resnet``, every norm -> ``norm``; on SDXL ``conv_in`` (a block of its own) -> ``conv_in``.
"""

from __future__ import annotations

import re

from torch import nn

from recipes.adapter import ModelMap, canonical_name, unwrap_model
from recipes.registry import ADAPTERS
from zoo.diffusers_common import DiffusersAdapter, prefixes

_PART = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.")
_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.")
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
        self._geometry: tuple[int, int, bool] | None = None  # (L + 1, first mid slot, SDXL layout)

    def describe(self, model: nn.Module, names: list[str] | None = None) -> ModelMap:
        if names is None:
            names = [canonical_name(n)[0] for n, _ in unwrap_model(model).named_parameters()]
        self._geometry = _geometry(names)
        return super().describe(model, names)

    def _locate(self, name: str) -> tuple[str, int, str] | None:
        """The LDM slot of a down/mid/up name (see the module docstring); None outside them."""
        if name.startswith("mid_block."):
            _, mid, sdxl = self._require_geometry(name)
            if sdxl:  # kohya's MID0 / MID1 / MID2: resnets.0, attentions.0, resnets.1
                m = _MID.match(name)
                if m is not None:
                    part = 1 if m.group(1) == "attentions" else 2 * int(m.group(2))
                    return "unet", mid + part, f"mid:{m.group(1)}:{name[m.end() :]}"
            return "unet", mid, "mid:" + name[len("mid_block.") :]
        m = _PART.match(name)
        if m is None:
            if name.startswith("conv_in.") and self._geometry is not None and self._geometry[2]:
                return "unet", 0, "conv_in:" + name[len("conv_in.") :]  # SDXL: kohya's input_blocks.0
            return None
        per_block, mid, sdxl = self._require_geometry(name)
        where, i, kind, j = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
        slot = i * per_block + (per_block - 1 if kind.endswith("samplers") else j) + (1 if sdxl else 0)
        if where == "up_blocks":
            slot += mid + (3 if sdxl else 1) - (1 if sdxl else 0)
        return "unet", slot, f"{where}:{kind}:{name[m.end() :]}"

    def component_of(self, name: str) -> str | None:
        if name.startswith("conv_in.") and self._geometry is not None and self._geometry[2]:
            return "conv_in"  # SDXL: a block of its own (IN00), so not the ``embed`` catch-all
        return super().component_of(name)

    def layer_labels(self, mmap: ModelMap) -> dict[int, str]:
        """kohya's block names per layer id (see the module docstring)."""
        if self._geometry is None or not mmap.num_layers:
            return {}
        _, mid, sdxl = self._geometry
        n = mmap.num_layers
        if sdxl:  # ids: emb, IN00 (conv_in), IN01.., MID0..2, OUT00.., out
            labels = {0: "emb", **{k + 1: f"IN{k:02d}" for k in range(mid)}}
            labels |= {mid + 1 + k: f"MID{k}" for k in range(3)}
            labels |= {mid + 4 + k: f"OUT{k:02d}" for k in range(n - mid - 3)}
        else:  # ids: IN00 (conv_in), IN01.., MID, OUT00.., out
            labels = {k: f"IN{k:02d}" for k in range(mid + 1)}
            labels |= {mid + 1: "MID", **{mid + 2 + k: f"OUT{k:02d}" for k in range(n - mid - 1)}}
        labels[n + 1] = "out"
        return labels

    def _require_geometry(self, name: str) -> tuple[int, int, bool]:
        if self._geometry is None:
            raise ValueError(
                f"unet: cannot place {name!r} before the model's geometry is known; call "
                "describe(model) (or build_param_groups) first"
            )
        return self._geometry


def _geometry(names: list[str]) -> tuple[int, int, bool]:
    """(slots per down block = layers_per_block + 1, index of the mid slot, SDXL layout) from the names.

    SDXL layout (kohya's 23 slots) where the model has SDXL's ``add_embedding``: ``conv_in`` is slot 0
    and the mid block spans three slots.
    """
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
    sdxl = any(n.startswith("add_embedding.") for n in names)
    return per_block, max(down, default=-1) + 1 + (1 if sdxl else 0), sdxl
