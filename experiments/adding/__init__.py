"""The adding problem (Le, Jaitly & Hinton 2015); run ``python -m experiments.adding``."""
