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

The CLIP text encoders of a text-encoder LoRA run (``text_encoder.*`` / ``text_encoder_2.*``, attached under their
pipeline names by ``recipes/train/diffusion/text_lora.py``; names from transformers 5.25.0 ``CLIPTextModel`` /
``CLIPTextModelWithProjection``) are towers (``ModelMap.towers``), each one component (``text_encoder`` /
``text_encoder_2``) with layer ids of its own, as the ``hf`` adapter numbers a CLIP text model: ``embeddings`` -> 0,
``encoder.layers.i`` -> i+1, ``final_layer_norm`` / ``text_projection`` -> n+1 (``CLIPTextModel`` has no
``text_model.`` level in 5.x). The U-Net's ids stay kohya's; a strategy's depth acts inside the encoders only with
``strategy.tower_depth=True``.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

from torch import nn

from recipes.adapter import (
    ModelMap,
    ParamInfo,
    canonical_name,
    generic_no_decay,
    is_norm_name,
    norm_param_names,
    unwrap_model,
)
from recipes.registry import ADAPTERS, STRATEGIES
from recipes.strategies import Strategy, check_lr
from zoo.diffusers_common import DiffusersAdapter, prefixes

_PART = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.")
_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.")
#: the text encoders a text-encoder LoRA run (``policy.text_encoder``) attaches under their pipeline names: towers,
#: each its own component; where in the encoder (id 0, block i + 1, the rest n + 1) by the first rule that matches
_TOWER = re.compile(r"^(text_encoder(?:_2)?)\.")
_TOWER_PARTS = (
    (re.compile(r"^text_encoder(?:_2)?\.(?:text_model\.)?embeddings\."), "embed"),
    (re.compile(r"^text_encoder(?:_2)?\.(?:text_model\.)?encoder\.layers\.(\d+)\."), "block"),
    (re.compile(r"^text_encoder(?:_2)?\.(?:(?:text_model\.)?final_layer_norm|text_projection)\."), "head"),
)
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

    def __init__(self, geometry: Geometry | None = None) -> None:
        """``geometry``: the model's (slots per down block, mid slot, SDXL layout), see :func:`unet_geometry`;
        :meth:`describe` reads it from the model's names, so only per-name queries need it given."""
        super().__init__()
        self.geometry = geometry

    def describe(self, model: nn.Module, names: list[str] | None = None, norms: set[str] | None = None) -> ModelMap:
        if names is None:
            names = [canonical_name(n)[0] for n, _ in unwrap_model(model).named_parameters()]
        own = [n for n in names if not _TOWER.match(n)]
        geometry = unet_geometry(own)
        placed = self if geometry == self.geometry else type(self)(geometry)
        mmap = super(UNet, placed).describe(model, own, norms)
        if len(own) < len(names):
            if norms is None:
                norms = norm_param_names(model) if model is not None else {n for n in names if is_norm_name(n)}
            self._place_towers(mmap, [n for n in names if _TOWER.match(n)], norms)
        return mmap

    def _place_towers(self, mmap: ModelMap, names: list[str], norms: set[str]) -> None:
        """The text encoders' parameters into ``mmap``: each encoder a tower with its own layer ids (see above)."""
        where: dict[str, tuple[str, str, int]] = {}
        for n in names:
            for rx, part in _TOWER_PARTS:
                if m := rx.match(n):
                    where[n] = (_TOWER.match(n).group(1), part, int(m.group(1)) if part == "block" else 0)
                    break
        for tower, part, i in where.values():
            if part == "block":
                mmap.towers[tower] = max(mmap.towers.get(tower, 0), i + 1)
        for n in names:
            if n not in where:
                mmap.unmatched.append(n)
                continue
            tower, part, i = where[n]
            layer_id = {"embed": 0, "block": i + 1, "head": mmap.towers.get(tower, 0) + 1}[part]
            no_decay = n in norms or self.is_no_decay(n) or generic_no_decay(n, norm=n in norms)
            mmap.params[n] = ParamInfo(n, layer_id, tower, no_decay, norm=n in norms, tower=tower)

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
            if name.startswith("conv_in.") and self.geometry is not None and self.geometry.sdxl:
                return "unet", 0, "conv_in:" + name[len("conv_in.") :]  # SDXL: kohya's input_blocks.0
            return None
        per_block, mid, sdxl = self._require_geometry(name)
        where, i, kind, j = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
        slot = i * per_block + (per_block - 1 if kind.endswith("samplers") else j) + (1 if sdxl else 0)
        if where == "up_blocks":
            slot += mid + (3 if sdxl else 1) - (1 if sdxl else 0)
        return "unet", slot, f"{where}:{kind}:{name[m.end() :]}"

    def component_of(self, name: str) -> str | None:
        if name.startswith("conv_in.") and self.geometry is not None and self.geometry.sdxl:
            return "conv_in"  # SDXL: a block of its own (IN00), so not the ``embed`` catch-all
        return super().component_of(name)

    def layer_labels(self, mmap: ModelMap) -> dict[int, str]:
        """kohya's block names per layer id (see the module docstring)."""
        if self.geometry is None or not mmap.num_layers:
            return {}
        _, mid, sdxl = self.geometry
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

    def _require_geometry(self, name: str) -> Geometry:
        if self.geometry is None:
            raise ValueError(
                f"unet: cannot place {name!r} without the model's geometry; use describe(model), or "
                "UNet(unet_geometry(names)) for per-name queries"
            )
        return self.geometry


class Geometry(NamedTuple):
    """Where a U-Net's LDM slots fall: read from its parameter names by :func:`unet_geometry`."""

    per_block: int  # slots per down block: layers_per_block + 1
    mid: int  # slot of the mid block (its first, on SDXL)
    sdxl: bool  # kohya's SDXL layout: conv_in is slot 0 and the mid block spans three slots


def unet_geometry(names: list[str]) -> Geometry:
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
    return Geometry(per_block, max(down, default=-1) + 1 + (1 if sdxl else 0), sdxl)


# --- kohya sd-scripts' block LRs: the strategy that reads this adapter's IN / MID / OUT names ------
KOHYA_PRESETS = ("cosine", "sine", "linear", "reverse_linear", "zeros")


def kohya_lr_weights(
    value: str | Sequence[float] | None, n: int, where: str, presets: bool, warn: bool = True
) -> list[float] | None:
    """kohya's ``down_lr_weight`` / ``mid_lr_weight`` / ``up_lr_weight`` parsing (``networks/lora.py``).

    A list of floats, or a string: comma-separated numbers (an empty entry is 0.0), or for down/up a
    preset ``cosine`` / ``sine`` / ``linear`` / ``reverse_linear`` / ``zeros`` with an optional
    ``+base`` added to every entry (``sine+0.5``). A short list is padded with 1.0 (as kohya does, with a
    warning); a long one is an error (kohya drops the extra entries).
    """
    if value is None:
        return None
    if isinstance(value, str):
        if presets and "," not in value:
            name, _, base = value.partition("+")
            if name not in KOHYA_PRESETS:
                raise ValueError(
                    f"{where}: {value!r} is neither a list of numbers nor one of kohya's presets {KOHYA_PRESETS}"
                )
            b = check_lr(f"{where} (+base)", float(base)) if base else 0.0
            ramp = [i / (n - 1) if n > 1 else 0.0 for i in range(n)]
            table = {
                "cosine": [math.sin(math.pi * x / 2) for x in reversed(ramp)],
                "sine": [math.sin(math.pi * x / 2) for x in ramp],
                "linear": ramp,
                "reverse_linear": list(reversed(ramp)),
                "zeros": [0.0] * n,
            }
            return [w + b for w in table[name]]
        try:
            value = [float(x) if x.strip() else 0.0 for x in value.split(",")]
        except ValueError:
            raise ValueError(f"{where}: expected comma-separated numbers, got {value!r}") from None
    weights = [check_lr(f"{where}[{i}]", w) for i, w in enumerate(value)]
    if len(weights) > n:
        raise ValueError(f"{where}: {len(weights)} entries but the model has {n} such blocks")
    if len(weights) < n:
        if warn:
            msg = f"{where}: {len(weights)} of {n} entries given; the rest are 1.0 (as kohya does)"
            warnings.warn(msg, stacklevel=5)
        weights += [1.0] * (n - len(weights))
    return weights


@STRATEGIES.register_module("kohya_blocks")
class KohyaBlocks(Strategy):
    """kohya sd-scripts' per-block LRs on a model whose adapter names kohya's blocks (IN / MID / OUT).

    The U-Net adapter's layer ids are kohya's numbering (SD 1.x: IN00..IN11, MID, OUT00..OUT11;
    SDXL: emb, IN00..IN08, MID0..MID2, OUT00..OUT08, out), so:

    Args:
        down_lr_weight / mid_lr_weight / up_lr_weight: kohya's LoRA block weights with kohya's
            semantics (see :func:`kohya_lr_weights`): ``lr x weight`` per IN / MID / OUT block in
            that order; blocks not listed (SDXL's emb and out, SD's out) keep 1.0. A block whose weight
            is 0 gets LR 0 (kohya leaves it out of training).
        block_lr_zero_threshold: weights at or under it become 0 (kohya's ``block_lr_zero_threshold``).
        block_lr: kohya's ``--block_lr`` (SDXL full fine-tuning): one absolute LR per layer id
            (23 on SDXL). Not together with the weights.
    """

    needs_depth = True

    def __init__(
        self,
        lr: float,
        down_lr_weight: str | Sequence[float] | None = None,
        mid_lr_weight: str | Sequence[float] | None = None,
        up_lr_weight: str | Sequence[float] | None = None,
        block_lr_zero_threshold: float = 0.0,
        block_lr: str | Sequence[float] | None = None,
        **common: Any,
    ) -> None:
        super().__init__(lr, **common)
        self.weights_given = {
            "down_lr_weight": down_lr_weight,
            "mid_lr_weight": mid_lr_weight,
            "up_lr_weight": up_lr_weight,
        }
        given = [k for k, v in self.weights_given.items() if v is not None]
        if block_lr is not None and given:
            raise ValueError(f"kohya_blocks: give block_lr (absolute LRs) or {given} (weights), not both")
        if block_lr is None and not given:
            raise ValueError("kohya_blocks: give down_lr_weight / mid_lr_weight / up_lr_weight, or block_lr")
        if isinstance(block_lr, str):
            block_lr = [float(x) for x in block_lr.split(",")]
        self.block_lr = None if block_lr is None else [check_lr(f"block_lr[{i}]", v) for i, v in enumerate(block_lr)]
        if self.block_lr is not None and self.lr == 0:
            raise ValueError("kohya_blocks: block_lr needs a non-zero `lr` to express it as an lr_scale")
        self.zero_threshold = check_lr("kohya_blocks.block_lr_zero_threshold", block_lr_zero_threshold)
        if self.zero_threshold and block_lr is not None:
            raise ValueError("kohya_blocks: block_lr_zero_threshold applies to the *_lr_weight lists, not block_lr")

    def prepare(self, mmap: ModelMap) -> None:
        self.block_scales(mmap, warn=True)  # fail (or warn about a short list) before building anything

    def block_scales(self, mmap: ModelMap, warn: bool = False) -> list[float]:
        """``lr_scale`` per layer id of ``mmap``: a pure function of the options and the model's blocks."""
        n_ids = mmap.max_layer_id + 1
        labels = [mmap.labels.get(i, "") for i in range(n_ids)]
        kinds = {k: [i for i, lab in enumerate(labels) if lab.startswith(k)] for k in ("IN", "MID", "OUT")}
        if not all(kinds.values()):
            raise ValueError(
                f"kohya_blocks: adapter {mmap.adapter!r} does not name kohya's IN / MID / OUT blocks "
                "(the U-Net adapter does); use layer_decay with `scales` for other models"
            )
        if self.block_lr is not None:
            if len(self.block_lr) != n_ids:
                raise ValueError(
                    f"kohya_blocks.block_lr has {len(self.block_lr)} entries but {mmap.adapter!r} has {n_ids} "
                    f"blocks ({', '.join(labels)}); give one LR per block"
                )
            return [v / self.lr for v in self.block_lr]
        scales = [1.0] * n_ids
        for key, kind, presets in (
            ("down_lr_weight", "IN", True),
            ("mid_lr_weight", "MID", False),
            ("up_lr_weight", "OUT", True),
        ):
            ids = kinds[kind]
            weights = kohya_lr_weights(self.weights_given[key], len(ids), f"kohya_blocks.{key}", presets, warn)
            if weights is None:
                continue
            for i, w in zip(ids, weights, strict=True):
                scales[i] = w if w > self.zero_threshold else 0.0
        return scales

    def lr_scale(self, info: ParamInfo, mmap: ModelMap) -> float:
        return self.block_scales(mmap)[info.layer_id]
