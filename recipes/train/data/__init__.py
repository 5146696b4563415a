"""Datasets and evaluation helpers shared by tasks (importing this package is cheap)."""
