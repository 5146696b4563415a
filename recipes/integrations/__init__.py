"""Bridges from the library to other trainers (mmengine, transformers, Lightning, timm)."""
