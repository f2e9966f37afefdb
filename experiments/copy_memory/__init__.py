"""The copy-memory problem (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016); run ``python -m experiments.copy_memory``."""
