"""The training framework behind ``tools/train.py``: engine, checkpoints, config, tasks, models, data, metrics.

Built on the library (``recipes``); the library never imports this package.
"""
