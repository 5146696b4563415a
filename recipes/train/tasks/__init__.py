"""Training tasks, model and dataset builders (registered into TASKS / MODELS / DATASETS).

Every module in this package is imported on the first registry lookup, so a new file registers
itself without touching this one. Heavy upstream packages are imported inside functions only.
"""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
