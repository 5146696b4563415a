"""transformers ViT: ``ViTModel``, ``ViTForImageClassification``, ``ViTForMaskedImageModeling``.

Names read from transformers 5.24.0 (``models/vit/modeling_vit.py``): blocks are ``layers.i``
with ``attention.{q,k,v,o}_proj`` and ``mlp.fc1/fc2``. The 4.x names (``encoder.layer.i``,
``attention.attention.query``, ``attention.output.dense``, ``intermediate.dense``,
``output.dense``) are covered by the same rules. Layer ids as BEiT / VideoMAEv2: ``embeddings``
-> 0, block i -> i+1, final ``layernorm`` / ``pooler`` / ``classifier`` / MIM ``decoder`` -> N+1.

Also home of :class:`TransformersAdapter`, the recognition every transformers adapter shares.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from recipes.adapter import Adapter
from recipes.registry import ADAPTERS


class TransformersAdapter(Adapter):
    """Recognises exactly the classes in ``classes`` from the transformers module ``module``."""

    classes: ClassVar[tuple[str, ...]] = ()
    module: ClassVar[str] = ""  # e.g. "transformers.models.vit."

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        kind = type(model)
        return kind.__name__ in cls.classes and kind.__module__.startswith(cls.module)


def block_rules(blocks: str, attn: str, ffn: str, norm: str) -> tuple[tuple[str, str], ...]:
    """Component rules inside the blocks matched by ``blocks`` (a prefix without the index).

    ``attn``, ``ffn``, ``norm``: alternations of the child module names in each block.
    """
    return (
        (rf"{blocks}\.\d+\.(?:{norm})\.", "norm"),
        (rf"{blocks}\.\d+\.(?:{attn})\.", "self_attn"),
        (rf"{blocks}\.\d+\.(?:{ffn})\.", "ffn"),
    )


_P = r"^(?:vit\.)?"  # the task models hold the backbone as ``vit``
_BLOCKS = _P + r"(?:layers|encoder\.layer)"


@ADAPTERS.register_module("hf_vit")
class HFViT(TransformersAdapter):
    name = "hf_vit"
    upstream = "transformers 5.24.0"
    classes = ("ViTModel", "ViTForImageClassification", "ViTForMaskedImageModeling")
    module = "transformers.models.vit."
    stacks = (("layers", _BLOCKS + r"\.(\d+)\."),)
    embed = (_P + r"embeddings\.",)
    head = (_P + r"layernorm\.", r"^(?:pooler|classifier|decoder)\.")
    components = (
        (_P + r"embeddings\.", "embed"),
        # 5.x: attention.{q,k,v,o}_proj + mlp; 4.x: attention.{attention,output} + intermediate/output
        *block_rules(_BLOCKS, "attention", "mlp|intermediate|output", "layernorm_before|layernorm_after"),
        (_P + r"layernorm\.", "norm"),
        (r"^(?:pooler|classifier|decoder)\.", "head"),
    )
    catch_all = frozenset({"embed", "head"})
