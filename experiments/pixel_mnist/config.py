"""Config of pixel-by-pixel MNIST (Le, Jaitly & Hinton 2015): 784 steps, one grey level per step.

  python -m experiments.pixel_mnist --workdir runs/pixel-mnist-lstm \\
      --config.data_dir ../shared/data/mnist

trains the LSTM (128 units, Adam 1e-3, clipping 1) and writes results.json (held-out accuracy)
and curves.png to the workdir. With only the 10,000 test images in ``data_dir`` (no
``train-*`` files) it trains on the first 9,000 and evaluates on the last 1,000
(``config.split``). With ``--config.chrono_t_max=784`` (chrono gate biases) it reached 68.3% (best
71.7%) on those 1,000 images after the default 3,600 steps and 93.4% (best 94.0%) after 12,600 on a
2-core CPU,
short of the published 98.2% (60k training images); README.md gives the commands, times and
accuracies. Other variants::

  python -m experiments.pixel_mnist --workdir runs/pixel-mnist-irnn \\
      --config experiments/pixel_mnist/config.py:irnn --config.data_dir ../shared/data/mnist
  python -m experiments.pixel_mnist --workdir /tmp/pixel-mnist-smoke \\
      --config experiments/pixel_mnist/config.py:smoke --config.data_dir ../shared/data/mnist

Variants: ``lstm`` (the default ``""``), ``gru``, ``irnn``, ``rnn`` (tanh), each also as
``permuted_<cell>`` (the pixels in one fixed order drawn from the seed), and ``smoke`` (a tanh RNN
on a few hundred images: seconds; the tests run it). Without ``--config.data_dir`` the four
official files are downloaded (60,000 / 10,000 images).
"""

from seqjax import train

CELLS = ("lstm", "gru", "irnn", "rnn")


def get_config(arg: str = ""):
  """Returns the pixel-MNIST config; ``arg`` picks a variant ("", cell, "permuted_<cell>", "smoke")."""
  config = train.runtime_config()
  # Folder with the IDX files (train-images-idx3-ubyte[.gz], ...); "" downloads all four.
  config.data_dir = ""
  # Where tensorflow-datasets writes the prepared array_record files; "" = <workdir>/tfds.
  config.tfds_dir = ""
  # "official" (train on the 60k, test on the 10k), "test_only" (train on the test images but
  # the last test_holdout, test on those) or "auto" (official when the train files are there).
  config.split = "auto"
  # Test images held out (the last ones of the file) when the split is "test_only".
  config.test_holdout = 1000
  # Use only the first this many training images (0: all); the smoke variant's speed.
  config.train_limit = 0
  # Read the pixels in one fixed random order drawn from the seed (permuted MNIST).
  config.permuted = False
  # Recurrent cell (seqjax.cells name): "lstm", "gru", "irnn" or "rnn" (tanh).
  config.cell = "lstm"
  # Hidden units (Arjovsky et al. 2016 use 128 for the LSTM; Le et al. 2015 use 100).
  config.hidden_size = 128
  # Forget-gate bias at init (LSTM): memory open from the start over 784 steps.
  config.forget_bias = 1.0
  # Chrono initialisation of the LSTM's gate biases (Tallec & Ollivier 2018, seqjax.cells.
  # chrono_lstm_biases) for lags up to this many steps (784: the whole image), replacing
  # forget_bias; 0 = off.
  config.chrono_t_max = 0
  # Native CPU kernels for the LSTM: False keeps the fused XLA loops, which stay fast on shared
  # cores (0.72 s against 16 s per train step on a crowded 2-core CPU); on idle cores the native
  # kernels are faster (2.7 against 1.6 steps/s, README.md), so pass True on a machine of your own.
  config.native_kernels = False
  # Adam at 1e-3 with the gradient clipped to norm 1 (Arjovsky et al. 2016's LSTM setting).
  config.optimizer = "adam"
  config.learning_rate = 1e-3
  config.grad_clip_norm = 1.0
  # Images per step (global).
  config.batch_size = 100
  # Optimiser steps of the run (90 steps are one pass over 9,000 images at batch 100).
  config.num_steps = 3600
  # Training loss and accuracy to metrics.jsonl every this many steps.
  config.log_every = 30
  # Held-out accuracy every this many steps.
  config.eval_every = 180
  # A checkpoint every this many steps.
  config.checkpoint_every = 180
  # Also keep the checkpoint of the best held-out accuracy.
  config.best_metric = "eval/accuracy"
  # Higher accuracy is better.
  config.best_mode = "max"

  cell = arg[len("permuted_"):] if arg.startswith("permuted_") else arg
  if arg.startswith("permuted_"):
    config.permuted = True
  if cell in ("irnn", "rnn"):
    config.cell = cell
    # Le et al. 2015's size for both.
    config.hidden_size = 100
    # ReLU over 784 steps from an identity matrix: 1e-3 lets the state grow past what clipping
    # tames; 1e-4 is the IRNN's usual Adam rate (the tanh RNN shares it for one comparison).
    config.learning_rate = 1e-4
  elif cell == "gru":
    config.cell = "gru"
  elif arg == "smoke":
    config.cell = "rnn"
    config.hidden_size = 16
    config.train_limit = 200
    config.test_holdout = 100
    config.batch_size = 20
    config.num_steps = 12
    config.log_every = 3
    config.eval_every = 6
    config.checkpoint_every = 6
  elif cell not in ("", "lstm"):
    raise ValueError(f"unknown pixel_mnist config variant {arg!r}; use '', 'lstm', 'gru', "
                     "'irnn', 'rnn', 'permuted_<cell>' or 'smoke'")
  return config
