"""transformers DINOv2: ``Dinov2Model`` / ``Dinov2ForImageClassification`` and the register variants.

Names read from transformers 5.24.0 (``models/dinov2/modeling_dinov2.py``,
``models/dinov2_with_registers/modeling_dinov2_with_registers.py``): blocks ``encoder.layer.i``
with ``attention.{q,k,v,o}_proj`` (4.x: ``attention.attention.query``, ``attention.output.dense``),
``mlp.fc1/fc2`` (SwiGLU: ``mlp.weights_in/weights_out``), layer scale ``layer_scale{1,2}.lambda1``.
Layer ids as DINOv2's own ``param_groups.py``: ``embeddings`` (cls/mask/register tokens, position
embeddings, patch projection) -> 0, ``encoder.layer.i`` -> i+1, final ``layernorm`` and
``classifier`` -> N+1. No weight decay: the engine's generic rules already cover the tokens,
``position_embeddings`` and ``lambda1`` (layer-scale gammas), by name.

timm's ``vit_*_dinov2*`` models are the ``timm_vit`` adapter's; RF-DETR's windowed DINOv2 is part
of the ``rfdetr`` adapter.
"""

from __future__ import annotations

from recipes.registry import ADAPTERS
from zoo.hf_vit import TransformersAdapter, block_rules

_P = r"^(?:dinov2\.|dinov2_with_registers\.)?"  # the classification models' backbone attribute
_BLOCKS = _P + r"encoder\.layer"


class _Dinov2Tables(TransformersAdapter):
    upstream = "transformers 5.24.0"
    stacks = (("layer", _BLOCKS + r"\.(\d+)\."),)
    embed = (_P + r"embeddings\.",)
    head = (_P + r"layernorm\.", r"^classifier\.")
    components = (
        (_P + r"embeddings\.", "embed"),
        *block_rules(_BLOCKS, "attention|layer_scale1", "mlp|layer_scale2", "norm1|norm2"),
        (_P + r"layernorm\.", "norm"),
        (r"^classifier\.", "head"),
    )
    catch_all = frozenset({"embed", "head"})


@ADAPTERS.register_module("dinov2_hf")
class Dinov2HF(_Dinov2Tables):
    name = "dinov2_hf"
    classes = ("Dinov2Model", "Dinov2ForImageClassification", "Dinov2Backbone")
    module = "transformers.models.dinov2."


@ADAPTERS.register_module("dinov2_registers_hf")
class Dinov2RegistersHF(_Dinov2Tables):
    name = "dinov2_registers_hf"
    classes = (
        "Dinov2WithRegistersModel",
        "Dinov2WithRegistersForImageClassification",
        "Dinov2WithRegistersBackbone",
    )
    module = "transformers.models.dinov2_with_registers."
