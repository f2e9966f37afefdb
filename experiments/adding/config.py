"""Config of the adding problem (Le, Jaitly & Hinton 2015, arXiv 1504.00941, section 4.1).

  python -m experiments.adding --workdir runs/adding

Expected result (2-core CPU, 2026-11-22; the run's time was not recorded): the paper's settings
(T = 150, IRNN with 100 units, SGD 0.01, clipping 1, batch 16, 20,000 steps) do not solve it here
yet: eval MSE 0.1671 against the predict-the-mean baseline 0.1667 (README.md). Other variants::

  python -m experiments.adding --workdir /tmp/adding-smoke \\
      --config experiments/adding/config.py:smoke
  python -m experiments.adding --workdir runs/adding-t300 \\
      --config experiments/adding/config.py:t300

Variants: ``""`` (default: T = 150, IRNN with 100 units as in the paper), ``smoke`` (tiny, about
10 seconds on a 2-core CPU; the runtime tests run it), ``t<N>`` (e.g. ``t300``: the paper's setup
with sequence length N). Sweep (``get_sweep`` below)::

  python launch/sweep.py experiments/adding/config.py --parallel 2
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
  # The paper's training: plain SGD, batch 16, gradient clipping; lr picked from {1e-2 ... 1e-5}.
  config.optimizer = "sgd"
  # Plain SGD: no momentum.
  config.momentum = 0.0
  # SGD's learning rate (constant).
  config.learning_rate = 1e-2
  # Clip gradients to this global norm.
  config.grad_clip_norm = 1.0
  # Sequences per step (global).
  config.batch_size = 16
  # Optimiser steps of the run.
  config.num_steps = 20000
  # Training MSE to metrics.jsonl every this many steps.
  config.log_every = 100
  # Eval MSE on the held-out set every this many steps.
  config.eval_every = 1000
  # A checkpoint every this many steps.
  config.checkpoint_every = 1000
  # Also keep the checkpoint of the lowest eval MSE.
  config.best_metric = "eval/mse"
  # Lower MSE is better.
  config.best_mode = "min"

  if arg == "smoke":
    # T = 12, 8 units, 40 steps: long enough to checkpoint, evaluate and resume in the tests.
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
