"""Data for seqjax experiments: synthetic tasks generated on the fly (no downloads)."""
