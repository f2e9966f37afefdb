"""The recurrent-layer speed benchmark: ``python -m experiments.benchmark`` (see README.md here)."""
