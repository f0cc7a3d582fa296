"""Flax towers: ViT image tower, text Transformer, and the two-tower model."""
