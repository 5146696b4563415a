"""Reproducible baselines behind ``tools/reproduce.py``: experiment definitions and results files
(``experiments``), one matrix cell through the engine (``cells``), docs/baselines.md and its plots (``docs``).
Repository tooling: not part of the ``recipes`` package."""
