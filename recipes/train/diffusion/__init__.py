"""Diffusion fine-tuning pieces: objectives, families (how each pipeline encodes and predicts), LoRA files."""
