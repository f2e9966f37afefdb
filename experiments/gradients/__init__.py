"""Vanishing and exploding gradients, made visible; run ``python -m experiments.gradients``."""
