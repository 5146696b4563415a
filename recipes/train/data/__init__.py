"""Datasets and evaluation helpers shared by tasks (registered into DATASETS); every module here is imported
on the first lookup, so each registered name is found from a fresh interpreter."""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
