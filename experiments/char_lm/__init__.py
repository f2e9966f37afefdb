"""Character-level language models on Tiny Shakespeare; run ``python -m experiments.char_lm``."""
