"""Config of the vanishing / exploding gradients experiment.

  python -m experiments.gradients --workdir runs/gradients

About 4 minutes on a 2-core CPU (README.md has the measured time, table and plots): the norm of
dLoss/d(state_t) against the lag T - t for linear and tanh RNNs whose recurrent matrix is a
random orthogonal matrix scaled to spectral radius 0.9, 1.0 and 1.1, the IRNN, the LSTM and the
GRU, at initialisation and after a short training on the adding problem; the fitted per-step
rates beside the recurrent matrices' singular values; and Pascanu et al. 2013's cliff of a
one-unit RNN with plain against clipped gradient steps. Smoke (seconds; the tests run it)::

  python -m experiments.gradients --workdir /tmp/gradients-smoke \\
      --config experiments/gradients/config.py:smoke
"""

import ml_collections


def get_config(arg: str = ""):
  """Returns the gradients config; ``arg`` picks a variant ("" or "smoke")."""
  config = ml_collections.ConfigDict()
  # Seed of the initialisations, the training runs and the probe batch.
  config.seed = 0
  # Length T of the adding-problem sequences the gradients are measured on and trained on.
  config.seq_len = 100
  # Hidden units of every recurrent layer.
  config.hidden_size = 64
  # Spectral radii of the (orthogonal, scaled) recurrent matrices of the linear and tanh RNNs.
  config.radii = (0.9, 1.0, 1.1)
  # Models measured: "linear-<r>" and "tanh-<r>" for each radius, "irnn", "lstm", "gru"; the
  # linear RNNs are measured at initialisation only (they check the theory, nothing learns).
  config.models = ("linear", "tanh", "irnn", "lstm", "gru")
  # Sequences in the batch whose gradients are averaged.
  config.probe_batch = 32
  # Fit the per-step rate on lags >= this (the first steps carry the readout's transient).
  config.fit_min_lag = 5
  # Short training on the adding problem (the adding experiment's default optimiser: Adam 1e-3,
  # clipping 1, batch 50) before the second measurement.
  config.train_steps = 400
  # The one-unit RNN of the cliff: steps, initial state, target of the final state.
  config.cliff_steps = 50
  config.cliff_h0 = 0.5
  config.cliff_target = 0.7
  # Start (w, b), learning rate and number of the gradient-descent steps drawn on the surface.
  config.cliff_start = (2.5, -1.0)
  config.cliff_lr = 0.5
  config.cliff_descent_steps = 60
  # Gradient-norm threshold of the clipped descent.
  config.cliff_clip = 1.0
  # Grid of the loss surface: w range, b range, points per axis.
  config.cliff_w = (0.0, 4.2)
  config.cliff_b = (-2.0, 4.6)
  config.cliff_grid = 160

  if arg == "smoke":
    config.radii = (1.0,)
    config.models = ("linear", "tanh")
    config.seq_len = 12
    config.hidden_size = 8
    config.probe_batch = 4
    config.fit_min_lag = 1
    config.train_steps = 6
    config.cliff_descent_steps = 45
    config.cliff_grid = 12
  elif arg:
    raise ValueError(f"unknown gradients config variant {arg!r}; use '' or 'smoke'")
  return config
