"""Recipe search (``tools/tune.py``): Optuna over a config's keys, each trial an ordinary training run."""
