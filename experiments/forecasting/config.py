"""Config of time-series forecasting with LSTM/GRU regressors against persistence, seasonal-naive and AR.

  python -m experiments.forecasting.table --workdir runs/forecasting

trains the three series one after another and writes the whole table (``table.md``,
``results.json``, plots; about 2 minutes on a 2-core CPU with statsmodels' SARIMA; the
airline direct head scores test MASE 0.699 / 0.555 at horizons 1 / 12, README.md). One series::

  python -m experiments.forecasting --workdir runs/forecast-airline
  python -m experiments.forecasting --workdir runs/forecast-sunspots \\
      --config experiments/forecasting/config.py:sunspots
  python -m experiments.forecasting --workdir runs/forecast-temperatures \\
      --config experiments/forecasting/config.py:temperatures --config.cell=gru
  python -m experiments.forecasting --workdir /tmp/forecast-smoke \\
      --config experiments/forecasting/config.py:smoke

Add ``--config.data_dir DIR`` to read the CSV files from a local folder; without it they are
downloaded from github.com/jbrownlee/Datasets. Variants: ``airline`` (the default ``""``),
``sunspots``, ``temperatures``, ``smoke`` (airline, a few steps: seconds; the tests run it).
"""

from seqjax import train

SERIES = ("airline", "sunspots", "temperatures")


def get_config(arg: str = ""):
  """Returns the forecasting config; ``arg`` picks a variant ("", series name, "smoke")."""
  config = train.runtime_config()
  # Folder with the three CSV files (airline-passengers.csv, ...); "" downloads them.
  config.data_dir = ""
  # Where tensorflow-datasets writes the prepared array_record files; "" = <workdir>/tfds.
  config.tfds_dir = ""
  # Which series: "airline", "sunspots" or "temperatures".
  config.series = "airline"
  # Length of one season in steps: the seasonal-naive lag, MASE's lag and the phase input's period.
  config.season = 12
  # Values at the end of the series held out for testing, and the validation values before them.
  config.test_size = 36
  config.val_size = 12
  # Model f(y): "log" (a multiplicative seasonal pattern becomes additive), "sqrt" or "none".
  config.transform = "log"
  # Give the model (and the AR baseline) the position in the season as sin/cos inputs.
  config.phase_input = True
  # Value inputs of the model: the scaled value itself and/or its change from the step before.
  config.level_input = False
  config.difference_input = True
  # Input window length l (training windows and every forecast's context).
  config.window = 24
  # Largest forecast horizon H: the direct head's width and the last horizon of the table.
  config.max_horizon = 24
  # Recurrent cell: "lstm" or "gru" (any name of seqjax.cells works).
  config.cell = "lstm"
  # Hidden units of the cell.
  config.hidden_size = 32
  # Gaussian mean and variance heads trained by likelihood (prediction intervals); False: MSE.
  config.gaussian = True
  # Weight of the direct head's loss next to the one-step loss.
  config.direct_weight = 1.0
  # Lags of the linear autoregression baseline (fitted by least squares on the training split).
  config.ar_order = 13
  # SARIMA (p,d,q) and (P,D,Q,s) as "p,d,q" strings, fitted when statsmodels is installed; "" = off.
  config.sarima_order = "0,1,1"
  config.sarima_seasonal_order = "0,1,1,12"
  # Sample paths of the recursive forecast behind its prediction interval in the plot.
  config.interval_samples = 200
  # Adam with a cosine decay; windows per step (global).
  config.optimizer = "adam"
  config.learning_rate = 3e-3
  config.schedule = "cosine"
  config.warmup_steps = 50
  config.grad_clip_norm = 1.0
  config.batch_size = 32
  # Optimiser steps of the run.
  config.num_steps = 1500
  # Training loss to metrics.jsonl every this many steps.
  config.log_every = 100
  # Validation MASE (horizon 1) every this many steps.
  config.eval_every = 500
  # A checkpoint every this many steps.
  config.checkpoint_every = 500
  # Also keep the checkpoint of the lowest validation MASE.
  config.best_metric = "eval/mase_h1_recursive"
  # Lower MASE is better.
  config.best_mode = "min"

  if arg == "sunspots":
    config.series = "sunspots"
    # The 11-year cycle; its length varies (9 to 14 years), so the phase input would mislead.
    config.season = 132
    config.phase_input = False
    config.transform = "none"
    config.level_input = True
    config.difference_input = False
    config.test_size = 564  # the last 20% (1937-1983); validation the 10% before
    config.val_size = 282
    config.window = 48
    config.max_horizon = 264
    config.ar_order = 27
    config.sarima_order = "2,0,1"
    config.sarima_seasonal_order = ""
  elif arg == "temperatures":
    config.series = "temperatures"
    config.season = 365
    config.transform = "none"
    config.level_input = True
    config.difference_input = False
    config.test_size = 730  # the last two years of rows; validation the year of rows before
    config.val_size = 365
    config.window = 30
    config.max_horizon = 456  # a season and a quarter
    config.ar_order = 30
    config.sarima_order = ""
    config.sarima_seasonal_order = ""
  elif arg == "smoke":
    config.hidden_size = 8
    config.max_horizon = 13
    config.window = 12
    config.num_steps = 20
    config.batch_size = 8
    config.warmup_steps = 0
    config.log_every = 5
    config.eval_every = 10
    config.checkpoint_every = 10
    config.interval_samples = 8
    config.sarima_order = ""
  elif arg not in ("", "airline"):
    raise ValueError(f"unknown forecasting config variant {arg!r}; use '', 'airline', "
                     "'sunspots', 'temperatures' or 'smoke'")
  return config
