"""Config of the adding problem (Le, Jaitly & Hinton 2015, arXiv 1504.00941, section 4.1).

  python -m experiments.adding --workdir runs/adding

Expected result (2-core CPU shared with other jobs, 2026-12-03, README.md): eval MSE below 10% of
the predict-the-mean baseline (0.1667) at step 3,250 (0.0156; 44 minutes there); the GRU
(``--config.cell=gru``) at step 2,250. At T = 400 the LSTM was still at the baseline after 1,250
steps (53 minutes); published LSTMs leave it near 8k steps. With chrono-initialised gate biases
(``--config.chrono_t_max=400``) the LSTM solved T = 400 at step 2,750 (2026-12-04). Other
variants::

  python -m experiments.adding --workdir /tmp/adding-smoke \\
      --config experiments/adding/config.py:smoke
  python -m experiments.adding --workdir runs/adding-t400 \\
      --config experiments/adding/config.py:t400
  python -m experiments.adding --workdir runs/adding-irnn \\
      --config experiments/adding/config.py:irnn
  python -m experiments.adding --workdir runs/adding-gru-t400 \\
      --config experiments/adding/config.py:t400 --config.cell=gru

Variants: ``""`` (default: T = 150, LSTM with 128 units, Adam 1e-3, clipping 1, batch 50, as
Arjovsky et al. 2016 train their LSTM), ``irnn`` (the paper's setting: IRNN with 100 units, plain
SGD 0.01, clipping 1, batch 16), ``smoke`` (the paper's IRNN setting, tiny: about 10 seconds on a
2-core CPU; the runtime tests run it), ``t<N>`` and ``irnn-t<N>`` (sequence length N). Sweep
(``get_sweep`` below)::

  python launch/sweep.py experiments/adding/config.py --parallel 2
"""

from seqjax import train


def _irnn_setting(config):
  """Le et al.'s training: IRNN with 100 units, plain SGD 0.01, clipping 1, batch 16."""
  config.cell = "irnn"
  config.hidden_size = 100
  config.optimizer = "sgd"
  config.momentum = 0.0
  config.learning_rate = 1e-2
  config.grad_clip_norm = 1.0
  config.batch_size = 16
  config.num_steps = 20000
  config.eval_every = 1000


def get_config(arg: str = ""):
  """Returns the adding-problem config; ``arg`` picks a variant ("", "irnn", "smoke", "t<N>",
  "irnn-t<N>")."""
  config = train.runtime_config()
  # Length T of every sequence; the two marked positions are in its first and second half.
  config.seq_len = 150
  # Recurrent cell name from seqjax.cells ("lstm", "gru", "rnn" = tanh RNN, "irnn", ...).
  config.cell = "lstm"
  # Hidden units of the recurrent layer.
  config.hidden_size = 128
  # Added to the LSTM's forget-gate bias at init so the cell keeps its memory early on (LSTM only).
  config.forget_bias = 1.0
  # Chrono initialisation of the LSTM's gate biases (Tallec & Ollivier 2018, seqjax.cells.
  # chrono_lstm_biases) for lags up to this many steps, replacing forget_bias; 0 = off.
  config.chrono_t_max = 0
  # Native CPU LSTM kernels: "auto" (seqjax.kernels decides) or "off" (XLA's fused loops, which
  # ran faster for this layer size on the 2-core CPU; README.md).
  config.native_kernels = "off"
  # Number of held-out sequences the eval MSE is computed on (a fixed set, drawn from the seed).
  config.eval_size = 1000
  # Adam at 1e-3 with clipping at 1, as Arjovsky et al. 2016 train their LSTM (RMSProp there).
  config.optimizer = "adam"
  # Adam's learning rate (constant).
  config.learning_rate = 1e-3
  # Clip gradients to this global norm.
  config.grad_clip_norm = 1.0
  # Sequences per step (global).
  config.batch_size = 50
  # Optimiser steps of the run.
  config.num_steps = 5000
  # Training MSE to metrics.jsonl every this many steps.
  config.log_every = 50
  # Eval MSE on the held-out set every this many steps.
  config.eval_every = 250
  # A checkpoint every this many steps.
  config.checkpoint_every = 1000
  # Also keep the checkpoint of the lowest eval MSE.
  config.best_metric = "eval/mse"
  # Lower MSE is better.
  config.best_mode = "min"

  if arg.startswith("irnn"):
    _irnn_setting(config)
    arg = arg[len("irnn"):].lstrip("-")
  if arg == "smoke":
    # The paper's IRNN setting at T = 12, 8 units, 40 steps: long enough to checkpoint, evaluate
    # and resume in the runtime's tests.
    _irnn_setting(config)
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
    raise ValueError(f"unknown adding config variant {arg!r}; use '', 'irnn', 'smoke', 't<N>' "
                     "or 'irnn-t<N>'")
  return config


def get_sweep(arg: str = ""):
  """Runs of ``launch/sweep.py``: lengths x cells (each cell with the default Adam training).

  With ``arg == "smoke"`` a two-run sweep (IRNN vs LSTM) that tests and quick checks use.
  """
  if arg == "smoke":
    return [{"cell": "irnn"}, {"cell": "lstm"}]
  return [{"seq_len": t, "cell": cell}
          for t in (150, 200, 300, 400)
          for cell in ("rnn", "irnn", "lstm", "gru")]
