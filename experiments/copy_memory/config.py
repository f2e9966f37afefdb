"""Config of the copy-memory problem (Arjovsky, Shah & Bengio 2016, section 4.2).

  python -m experiments.copy_memory --workdir runs/copy-lstm-t100
  python -m experiments.copy_memory --workdir runs/copy-gru-t100 --config.cell=gru
  python -m experiments.copy_memory.table --workdir runs/copy-table --cells lstm,gru --lags 100

Ten symbols from an alphabet of 8, a lag of T blanks (the delimiter at its last step), then ten
steps in which the network must recall the symbols; the memoryless baseline's cross-entropy is
10 ln 8 / (T + 20). Expected result: README.md (measured runs, with their times). Variants:
``""`` (T = 100, LSTM with 128 units, Adam 1e-3, clipping 1, batch 50), ``t<N>`` (lag N),
``smoke`` (tiny, seconds; the tests run it).
"""

from seqjax import train


def get_config(arg: str = ""):
  """Returns the copy-memory config; ``arg`` picks a variant ("", "smoke", "t<N>")."""
  config = train.runtime_config()
  # Lag T: blanks between the last symbol and the recall (the delimiter is the last of them).
  config.lag = 100
  # Symbols to remember, and the size of the alphabet they are drawn from.
  config.num_symbols = 10
  config.alphabet = 8
  # Recurrent cell name from seqjax.cells ("lstm", "gru", "rnn", "irnn", ...).
  config.cell = "lstm"
  # Hidden units of the recurrent layer.
  config.hidden_size = 128
  # Added to the LSTM's forget-gate bias at init so the cell keeps its memory early on (LSTM only).
  config.forget_bias = 1.0
  # Native CPU LSTM kernels: "auto" (seqjax.kernels decides) or "off" (XLA's fused loops).
  config.native_kernels = "off"
  # Held-out sequences of the eval cross-entropy (a fixed set, drawn from the seed).
  config.eval_size = 500
  # Adam 1e-3 with clipping at 1 (Arjovsky et al. train their LSTM with RMSProp 1e-3, clip 1).
  config.optimizer = "adam"
  config.learning_rate = 1e-3
  # Clip gradients to this global norm.
  config.grad_clip_norm = 1.0
  # Sequences per step (global).
  config.batch_size = 50
  # Optimiser steps of the run.
  config.num_steps = 3000
  # Training loss to metrics.jsonl every this many steps.
  config.log_every = 50
  # Eval cross-entropy and recall accuracy every this many steps.
  config.eval_every = 250
  # A checkpoint every this many steps.
  config.checkpoint_every = 1000
  # Also keep the checkpoint of the lowest eval cross-entropy.
  config.best_metric = "eval/loss"
  config.best_mode = "min"

  if arg == "smoke":
    # Lag 6, 3 symbols of 4, 16 units, 30 steps: evaluates, checkpoints and plots in seconds.
    config.lag = 6
    config.num_symbols = 3
    config.alphabet = 4
    config.hidden_size = 16
    config.eval_size = 64
    config.batch_size = 16
    config.num_steps = 30
    config.log_every = 5
    config.eval_every = 15
    config.checkpoint_every = 15
  elif arg.startswith("t") and arg[1:].isdigit():
    config.lag = int(arg[1:])
  elif arg:
    raise ValueError(f"unknown copy_memory config variant {arg!r}; use '', 'smoke' or 't<N>'")
  return config
