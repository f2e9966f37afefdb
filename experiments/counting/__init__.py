"""GRU vs LSTM counting (Weiss, Goldberg & Yahav 2018); run ``python -m experiments.counting``."""
