"""A model the zoo does not know, its adapter and its builder, registered from a module of its own.

Loaded only through ``tests/third_party_config.py``'s ``custom_imports`` (see
``test_zoo_diffusers.py::test_third_party_adapter_through_custom_imports``).
"""

from __future__ import annotations

from torch import nn

from recipes.adapter import Adapter
from recipes.registry import ADAPTERS
from recipes.train.registry import MODELS


class ToyDenoiser(nn.Module):
    """Stem, ``depth`` blocks of attention + MLP, an output projection."""

    def __init__(self, dim: int = 8, depth: int = 3) -> None:
        super().__init__()
        self.stem = nn.Linear(dim, dim)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"attn": nn.Linear(dim, dim), "mlp": nn.Linear(dim, dim), "norm": nn.LayerNorm(dim)})
            for _ in range(depth)
        )
        self.out = nn.Linear(dim, dim)


@ADAPTERS.register_module("third_party_toy")
class ToyDenoiserAdapter(Adapter):
    name = "third_party_toy"
    upstream = "tests/third_party_adapter.py"
    stacks = (("layers", r"^layers\.(\d+)\."),)
    embed = (r"^stem\.",)
    head = (r"^out\.",)
    components = (
        (r"\.attn\.", "self_attn"),
        (r"\.mlp\.", "ffn"),
        (r"\.norm\.", "norm"),
        (r"^stem\.", "embed"),
        (r"^out\.", "head"),
    )
    catch_all = frozenset({"embed", "head"})

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return type(model).__name__ == "ToyDenoiser"


@MODELS.register_module("third_party_toy")
def build_toy(dim: int = 8, depth: int = 3) -> nn.Module:
    return ToyDenoiser(dim, depth)
