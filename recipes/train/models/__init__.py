"""Model builders (registered into MODELS); every module here is imported on the first lookup."""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
