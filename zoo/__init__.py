"""Architecture adapters, one module per family. Importing ``zoo`` registers them all.

Every module in this package is imported here, so a new family is one new file. Adapters never
import their upstream package at import time: recognising a model looks at its class and names.
"""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
