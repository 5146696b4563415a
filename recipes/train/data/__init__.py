"""Datasets (registered into DATASETS) and the checks tasks share; every module here is imported on the first lookup.

Each module imports only numpy / torch at import time, so importing this package stays cheap.
"""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
