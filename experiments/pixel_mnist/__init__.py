"""Pixel-by-pixel MNIST and its permuted variant; run ``python -m experiments.pixel_mnist``."""
