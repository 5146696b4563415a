"""Metrics: classification (top-1, NLL, ECE, temperature) and COCO mAP."""
