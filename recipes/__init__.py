"""zoo-recipes: layer-wise and per-component learning rates, done once, for every model family.

>>> from recipes import build_param_groups, build_schedule, format_lr_grid
"""

from recipes.adapter import Adapter, ModelMap, ParamInfo
from recipes.names import canonical_name, unwrap_model
from recipes.param_groups import (
    ParamGroups,
    base_lr_of,
    build_param_groups,
    build_strategy,
    describe_model,
    resolve_adapter,
)
from recipes.registry import ADAPTERS, SCHEDULES, STRATEGIES
from recipes.report import format_lr_grid
from recipes.schedules import Schedule, build_schedule

__version__ = "0.1.0"

__all__ = [
    "ADAPTERS",
    "SCHEDULES",
    "STRATEGIES",
    "Adapter",
    "ModelMap",
    "ParamGroups",
    "ParamInfo",
    "Schedule",
    "base_lr_of",
    "build_param_groups",
    "build_schedule",
    "build_strategy",
    "canonical_name",
    "describe_model",
    "format_lr_grid",
    "resolve_adapter",
    "unwrap_model",
]
