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
import inspect
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
        """The keyword options the entry ``name`` accepts in a config (see :func:`accepted_options`)."""
        return accepted_options(self.lookup(name))

    def entries(self) -> list[tuple[str, Any]]:
        """(name, object) of every registered entry, sorted by name, after the lazy imports."""
        self.import_from_location()
        return sorted(self.module_dict.items())


def accepted_options(obj: Any, skip: tuple[str, ...] = ("self", "cfg", "total_steps")) -> list[str]:
    """Sorted names of the keyword options a registered class or function takes.

    A class's ``__init__`` is followed up its bases while it passes ``**kwargs`` on (``super().__init__(
    **kw)``), stopping before ``object``; ``*args`` / ``**kwargs`` themselves are not options, nor are the
    arguments the framework fills in (``skip``).
    """
    names: set[str] = set()
    chain = [k for k in obj.__mro__ if k is not object and "__init__" in vars(k)] if isinstance(obj, type) else [obj]
    for fn in chain:
        params = inspect.signature(fn.__init__ if isinstance(fn, type) else fn).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in skip}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break  # this __init__ does not pass options on to its base
    return sorted(names)


# Architecture adapters: parameter name -> layer id, component, weight decay (zoo/).
ADAPTERS = Registry("adapters", locations=["zoo"])
# Parameter-group strategies (the rules that turn adapter facts into groups): layer_decay,
# component_depth, flat; presets such as rfdetr (zoo/).
STRATEGIES = Registry("strategies", locations=["recipes.strategies", "zoo"])
# Step schedules for the learning rate and weight decay (recipes/schedules.py).
SCHEDULES = Registry("schedules", locations=["recipes.schedules"])
