"""Multi30k German-to-English translation; run ``python -m experiments.translate``."""
