"""The training framework's registries (models, datasets, tasks, optimizers).

Each registers lazily: the first lookup imports the modules named in ``locations``. A user's own
module registers with the same decorators and is loaded from a config through ``custom_imports``.
"""

from __future__ import annotations

from recipes.registry import Registry

# Model builders used by tools/train.py (recipes/train/models/ and user modules).
MODELS = Registry("models", locations=["recipes.train.models"])
# Dataset builders (recipes/train/data/ and user modules).
DATASETS = Registry("datasets", locations=["recipes.train.data"])
# Training tasks: what a batch, a loss and an evaluation are (recipes/train/tasks/).
TASKS = Registry("tasks", locations=["recipes.train.tasks"])
# Optimizers by name: every torch.optim class ("AdamW", "SGD", ...), timm's by their timm names
# ("lamb", "lion", "adan", "adopt", ...), bitsandbytes' "AdamW8bit" (recipes/train/optimizers.py).
OPTIMIZERS = Registry("optimizers", locations=["recipes.train.optimizers"])
