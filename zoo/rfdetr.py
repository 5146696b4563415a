"""RF-DETR (``LWDETR``): a windowed DINOv2 encoder, a projector, a deformable decoder, heads.

Names read from rfdetr 1.11.2 (``rfdetr/models/lwdetr.py``, ``models/backbone/backbone.py``,
``models/backbone/dinov2_with_windowed_attn.py``, ``training/param_groups.py``), on every size
(Nano, Small, Medium, Large, Base), the Seg / Keypoint variants and rfdetr's own encoder LoRA
(``backbone_lora=True``: the encoder becomes a peft model, ``backbone.0.encoder.base_model.model.``).

Layer ids follow the architecture: encoder ``embeddings`` -> 0, ``encoder.layer.i`` -> i+1, and
everything else (encoder ``layernorm``, projector, decoder, heads) -> N+1, N = the encoder's
real block count (12 in every size). Components: ``encoder``, ``projector``, ``decoder``
(``transformer.decoder``) and ``head`` (the catch-all: detection/segmentation/keypoint heads,
two-stage proposal heads, learned queries).

Two recipe presets live here too:

* ``rfdetr``: rfdetr's own ``get_param_dict(args, model)``, per parameter and exactly, including
  its quirks (depth ``L = out_feature_indexes[-1] + 1``, ``lr_component_decay ** 2`` on the
  encoder, weight decay 0 only for encoder names containing gamma/pos_embed/rel_pos/bias/norm/
  embeddings);
* ``rfdetr_fixed``: the same knobs with the quirks fixed (see docs/zoo_vision.md).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from torch import nn

from recipes.adapter import Adapter, ModelMap, ParamInfo
from recipes.names import unwrap_model
from recipes.registry import ADAPTERS, STRATEGIES
from recipes.strategies import Strategy, check_lr

_ENC = r"^backbone\.0\.encoder\."
# the DINOv2 inside; rfdetr's own encoder LoRA (backbone_lora=True) wraps it in a peft model
_DINO = _ENC + r"(?:base_model\.model\.)?encoder\."
_PROJ = r"^backbone\.0\.(?:cross_attn_)?projector\."  # the keypoint model has both
_HEADS = (
    r"^(?:class_embed|bbox_embed|keypoint_embed|refpoint_embed|query_feat|segmentation_head)\.",
    r"^transformer\.(?:enc_output|enc_output_norm|enc_out_\w+|keypoint_query_initializer\w*)\.",
)


@dataclasses.dataclass
class RFDETRMap(ModelMap):
    """The map plus the encoder's ``out_indices`` (rfdetr's ``out_feature_indexes``)."""

    out_feature_indexes: list[int] | None = None


@ADAPTERS.register_module("rfdetr")
class RFDETR(Adapter):
    name = "rfdetr"
    upstream = "rfdetr 1.11.2"
    stacks = (("encoder", _DINO + r"encoder\.layer\.(\d+)\."),)
    embed = (_DINO + r"embeddings\.",)
    head = (_DINO + r"layernorm\.", _PROJ, r"^transformer\.", *_HEADS)
    components = (
        (_ENC, "encoder"),
        (_PROJ, "projector"),
        (r"^transformer\.decoder\.", "decoder"),
        *((rx, "head") for rx in _HEADS),
    )
    catch_all = frozenset({"head"})

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        kind = type(model)
        return kind.__name__ == "LWDETR" and kind.__module__.startswith("rfdetr.")

    def describe(self, model: nn.Module, names: list[str] | None = None, norms: set[str] | None = None) -> RFDETRMap:
        mmap = super().describe(model, names, norms)
        fields = {f.name: getattr(mmap, f.name) for f in dataclasses.fields(ModelMap)}
        return RFDETRMap(**fields, out_feature_indexes=_out_indices(model))


def _out_indices(model: nn.Module) -> list[int] | None:
    """``backbone[0].encoder.encoder.config.out_indices``: what rfdetr's args carry as well."""
    try:
        config = unwrap_model(model).backbone[0].encoder.encoder.config
    except (AttributeError, IndexError, TypeError):
        return None
    indices = getattr(config, "out_indices", None)
    return list(indices) if indices else None


# rfdetr's get_dinov2_weight_decay_rate: substrings of the full name, encoder parameters only.
_RFDETR_NO_DECAY = re.compile(r"gamma|pos_embed|rel_pos|bias|norm|embeddings")


@STRATEGIES.register_module("rfdetr")
class RFDETRRecipe(Strategy):
    """rfdetr 1.11.2's ``get_param_dict(args, model)`` as groups with ``lr_scale`` (exact parity).

    Encoder: ``lr_encoder * lr_vit_layer_decay ** (L + 1 - id) * lr_component_decay ** 2`` with
    rfdetr's ids (``embeddings`` 0, ``layer.i`` i+1, the rest L+1) and
    ``L = out_feature_indexes[-1] + 1`` (read from the model when not given). Decoder:
    ``lr * lr_component_decay``. Everything else: ``lr``. Weight decay: 0 only for encoder names
    containing gamma/pos_embed/rel_pos/bias/norm/embeddings; every other parameter (decoder
    biases and norms included) keeps ``weight_decay``, as rfdetr's optimizer default gives it.

    >>> RFDETRRecipe().lr_scale(ParamInfo("transformer.decoder.norm.weight", 13, "decoder", True), None)
    0.7
    """

    def __init__(
        self,
        lr: float = 1e-4,
        lr_encoder: float = 1.5e-4,
        lr_vit_layer_decay: float = 0.8,
        lr_component_decay: float = 0.7,
        weight_decay: float = 1e-4,
        out_feature_indexes: list[int] | None = None,
        **common: Any,
    ) -> None:
        super().__init__(lr, weight_decay=weight_decay, **common)
        if self.lr == 0:
            raise ValueError(f"{self._where}.lr is the base LR (lr_scale 1.0) and must be > 0")
        self.lr_encoder = check_lr(f"{self._where}.lr_encoder", lr_encoder)
        self.lr_vit_layer_decay = check_lr(f"{self._where}.lr_vit_layer_decay", lr_vit_layer_decay)
        self.lr_component_decay = check_lr(f"{self._where}.lr_component_decay", lr_component_decay)
        if out_feature_indexes is not None and (
            isinstance(out_feature_indexes, str | bytes) or not all(isinstance(i, int) for i in out_feature_indexes)
        ):
            raise TypeError(f"{self._where}.out_feature_indexes: expected a list of ints, got {out_feature_indexes!r}")
        self.out_feature_indexes = None if out_feature_indexes is None else list(out_feature_indexes)

    _where = "rfdetr"
    #: power of ``lr_component_decay`` on the encoder (rfdetr: 2).
    encoder_component_power = 2

    def prepare(self, mmap: ModelMap) -> None:
        self._depth(mmap)  # fail before building anything

    def _depth(self, mmap: ModelMap) -> int:
        """rfdetr's L: ``out_feature_indexes[-1] + 1`` (args first, then the model's own config)."""
        indexes = self.out_feature_indexes or getattr(mmap, "out_feature_indexes", None)
        if not indexes:
            raise ValueError(
                f"recipe {self._where!r}: no out_feature_indexes, and adapter {mmap.adapter!r} could not read "
                "them from the model (backbone[0].encoder.encoder.config.out_indices); pass "
                "out_feature_indexes=[3, 6, 9, 12] (Nano/Small/Medium/Large) or [2, 5, 8, 11] (Base)"
            )
        return indexes[-1] + 1

    def _encoder_layer(self, info: ParamInfo, depth: int) -> int:
        # rfdetr: embeddings 0, layer.i i+1, anything else in the encoder (final layernorm) L+1
        return info.layer_id if info.stack is not None or info.layer_id == 0 else depth + 1

    def lr_scale(self, info: ParamInfo, mmap: ModelMap) -> float:
        if info.component == "decoder":
            return self.lr_component_decay
        if info.component != "encoder":
            return 1.0
        depth = self._depth(mmap)
        layer_scale = self.lr_vit_layer_decay ** (depth + 1 - self._encoder_layer(info, depth))
        return self.lr_encoder * layer_scale * self.lr_component_decay**self.encoder_component_power / self.lr

    def weight_decay_for(self, info: ParamInfo | None, no_decay: bool) -> float:
        if info is not None and info.component == "encoder" and _RFDETR_NO_DECAY.search(info.name):
            return 0.0
        return self.weight_decay


@STRATEGIES.register_module("rfdetr_fixed")
class RFDETRFixedRecipe(RFDETRRecipe):
    """``rfdetr`` with its quirks fixed; same knobs, plus ``encoder_component_power``.

    * depth N is the encoder's real block count (rfdetr's ``out_feature_indexes[-1] + 1`` is 13 on
      the 12-block encoders of Nano/Small/Medium/Large: one extra ``lr_vit_layer_decay`` on every
      encoder block, none on the final norm);
    * ``lr_encoder`` is the LR of the encoder's top (final norm) as its name says:
      ``lr_component_decay`` applies to the decoder only (``encoder_component_power=0``; set 1 or 2
      to decay the encoder by component as well);
    * weight decay follows the engine's rules everywhere: no decay for 1-D tensors, biases, norms,
      position embeddings, tokens and layer-scale ``lambda1`` (which rfdetr's ``gamma`` test misses),
      in the decoder and heads too.
    """

    _where = "rfdetr_fixed"

    def __init__(self, encoder_component_power: int = 0, **common: Any) -> None:
        super().__init__(**common)
        if isinstance(encoder_component_power, bool) or encoder_component_power not in (0, 1, 2):
            raise ValueError(f"rfdetr_fixed.encoder_component_power must be 0, 1 or 2, got {encoder_component_power!r}")
        self.encoder_component_power = encoder_component_power

    def prepare(self, mmap: ModelMap) -> None:
        if not mmap.stack_sizes.get("encoder"):
            raise ValueError(f"rfdetr_fixed: adapter {mmap.adapter!r} found no encoder blocks; use adapter='rfdetr'")

    def _depth(self, mmap: ModelMap) -> int:
        return mmap.stack_sizes["encoder"]

    def _encoder_layer(self, info: ParamInfo, depth: int) -> int:
        return info.layer_id

    def weight_decay_for(self, info: ParamInfo | None, no_decay: bool) -> float:
        return 0.0 if no_decay else self.weight_decay
