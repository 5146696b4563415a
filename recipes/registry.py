"""The library's registries (the training framework's are in ``recipes.train.registry``).

Adapters, strategies and schedules register lazily: the first lookup imports the modules named
in ``locations``. A user's own module registers with the same decorators and is loaded from a
config through mmengine's ``custom_imports``::

    from recipes.registry import ADAPTERS
    from recipes.adapter import Adapter

    @ADAPTERS.register_module()
    class MyNetAdapter(Adapter): ...
"""

from __future__ import annotations

import difflib
from typing import Any

from mmengine.registry import Registry as _MMRegistry


class Registry(_MMRegistry):
    """mmengine ``Registry`` whose unknown names fail with the known names and the nearest one."""

    def lookup(self, name: str) -> Any:
        """Return the object registered as ``name`` or raise a ``KeyError`` that says what exists."""
        if not isinstance(name, str):
            raise TypeError(f"{self.name}: expected a registered name (str), got {type(name).__name__}")
        self.import_from_location()
        obj = self._module_dict.get(name)  # the common case, without mmengine's per-call log record
        if obj is None:
            obj = self.get(name)  # scoped names ("mmpretrain.X"), parent registries
        if obj is None:
            known = sorted(self.module_dict)
            near = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise KeyError(
                f"unknown {self.name} {name!r}.{hint} Known: {', '.join(known) or '(none)'}. "
                f"Register your own with @{self.name.upper()}.register_module() and load it "
                "through custom_imports."
            )
        return obj

    def build(self, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(cfg, dict) and isinstance(cfg.get("type"), str):
            self.lookup(cfg["type"])  # a clear error before mmengine's generic one
        return super().build(cfg, *args, **kwargs)

    def names(self) -> list[str]:
        """All registered names, after importing the lazy ``locations``."""
        self.import_from_location()
        return sorted(self.module_dict)

    def options(self, name: str) -> list[str]:
        """The keyword options the entry ``name`` accepts in a config (:func:`recipes.options.accepted_options`;
        empty when it takes ``**kwargs`` it passes elsewhere)."""
        from recipes.options import accepted_options

        return sorted(accepted_options(self.lookup(name), skip=("self", "cfg", "total_steps")) or ())

    def entries(self) -> list[tuple[str, Any]]:
        """(name, object) of every registered entry, sorted by name, after the lazy imports."""
        self.import_from_location()
        return sorted(self.module_dict.items())


# Architecture adapters: parameter name -> layer id, component, weight decay (zoo/).
ADAPTERS = Registry("adapters", locations=["zoo"])
# Parameter-group strategies (the rules that turn adapter facts into groups): layer_decay,
# component_depth, flat; presets such as rfdetr (zoo/).
STRATEGIES = Registry("strategies", locations=["recipes.strategies", "zoo"])
# Step schedules for the learning rate and weight decay (recipes/schedules.py).
SCHEDULES = Registry("schedules", locations=["recipes.schedules"])
