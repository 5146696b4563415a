"""timm EfficientNet family (EfficientNet, EfficientNet-Lite, MobileNetV2/V3 built by timm's EfficientNet builder).

Names read from timm 1.0.31 (``timm/models/efficientnet.py``, ``_efficientnet_blocks.py``): ``conv_stem`` /
``bn1`` (stem), ``blocks.<stage>.<block>.*`` (``conv_pw`` / ``conv_dw`` / ``conv_pwl`` / ``se`` and their
``bn*``), ``conv_head`` / ``bn2`` / ``classifier`` (head). Layer ids are stage-wise, from the model's own
``group_matcher(coarse=True)`` as ``timm.optim.param_groups_layer_decay`` computes them with it
(stem 0, stage i -> i+1, ``conv_head`` / ``bn2`` / ``classifier`` the last id).

Chosen by name (``adapter="timm_efficientnet"``): ``adapter="auto"`` gives these models the generic
``timm`` adapter, whose block-wise ids (``coarse=False``) equal timm's default layer decay.
"""

from __future__ import annotations

from torch import nn

from recipes.adapter import Adapter, unwrap_model
from recipes.registry import ADAPTERS


@ADAPTERS.register_module("timm_efficientnet")
class TimmEfficientNet(Adapter):
    name = "timm_efficientnet"
    upstream = "timm 1.0.31"
    stacks = (("blocks", r"^blocks\.(\d+)\."),)
    embed = (r"^(?:conv_stem|bn1)\.",)
    head = (r"^(?:conv_head|bn2|classifier)\.",)
    components = (
        (r"^(?:conv_stem|bn1)\.", "stem"),
        (r"^(?:conv_head|bn2|classifier)\.", "head"),
        (r"^blocks\.\d+\.\d+\.bn\d*\.", "norm"),
        (r"^blocks\.\d+\.\d+\.se\.", "se"),
        (r"^blocks\.\d+\.\d+\.conv_\w+\.", "conv"),
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return False  # by name only: auto picks the generic `timm` adapter (timm's own block-wise default)

    @classmethod
    def fits(cls, model: nn.Module) -> bool:
        """The model has the EfficientNet builder's layout (``conv_stem``, ``blocks`` stages, ``group_matcher``)."""
        return (
            type(model).__module__.startswith("timm.models.")
            and hasattr(model, "group_matcher")
            and hasattr(model, "conv_stem")
            and isinstance(getattr(model, "blocks", None), nn.Sequential)
        )

    def layer_ids(self, model: nn.Module, names: list[str]) -> dict[str, int] | None:
        from timm.models._manipulate import group_with_matcher

        base = unwrap_model(model)
        if not hasattr(base, "group_matcher"):
            return None
        return group_with_matcher(((n, None) for n in names), base.group_matcher(coarse=True), reverse=True)
