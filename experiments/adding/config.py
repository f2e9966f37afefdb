"""Config of the adding problem (Le, Jaitly & Hinton 2015, arXiv 1504.00941, section 4.1).

Run it with::

  python -m experiments.adding --workdir runs/adding
  python -m experiments.adding --workdir /tmp/adding-smoke \
      --config experiments/configs/adding.py:smoke

Variants: ``""`` (default: T = 150, IRNN with 100 units as in the paper), ``smoke`` (tiny, under a
minute on a 2-core CPU; used by the runtime tests), ``t<N>`` (e.g. ``t300``: the paper's setup
with sequence length N). Sweep (``get_sweep`` below)::

  python launch/sweep.py experiments/configs/adding.py --parallel 2
"""

from seqjax import train


def get_config(arg: str = ""):
  """Returns the adding-problem config; ``arg`` picks a variant ("", "smoke", "t<N>")."""
  config = train.runtime_config()
  # Length T of every sequence; the two marked positions are in its first and second half.
  config.seq_len = 150
  # Recurrent cell name from seqjax.cells (the paper compares irnn, rnn and lstm).
  config.cell = "irnn"
  # Hidden units of the recurrent layer (the paper uses 100).
  config.hidden_size = 100
  # Number of held-out sequences the eval MSE is computed on (a fixed set, drawn from the seed).
  config.eval_size = 1000
  # Paper's training: plain SGD, batch 16, gradient clipping; lr picked from {1e-2 ... 1e-5}.
  config.optimizer = "sgd"
  config.momentum = 0.0
  config.learning_rate = 1e-2
  config.grad_clip_norm = 1.0
  config.batch_size = 16
  config.num_steps = 20000
  config.log_every = 100
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.best_metric = "eval/mse"
  config.best_mode = "min"

  if arg == "smoke":
    config.seq_len = 12
    config.hidden_size = 8
    config.eval_size = 64
    config.batch_size = 16
    config.num_steps = 40
    config.log_every = 5
    config.eval_every = 20
    config.checkpoint_every = 10
    config.keep_checkpoints = 3
  elif arg.startswith("t") and arg[1:].isdigit():
    config.seq_len = int(arg[1:])
  elif arg:
    raise ValueError(f"unknown adding config variant {arg!r}; use '', 'smoke' or 't<N>'")
  return config


def get_sweep(arg: str = ""):
  """Runs of ``launch/sweep.py``: the paper's grid of lengths x cells x learning rates.

  With ``arg == "smoke"`` a two-run sweep (IRNN vs LSTM) that tests and quick checks use.
  """
  if arg == "smoke":
    return [{"cell": "irnn"}, {"cell": "lstm"}]
  return [{"seq_len": t, "cell": cell, "learning_rate": lr}
          for t in (150, 200, 300, 400)
          for cell in ("irnn", "rnn", "lstm")
          for lr in (1e-2, 1e-3)]
