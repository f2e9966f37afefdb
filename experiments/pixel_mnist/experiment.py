"""Pixel-by-pixel MNIST: a recurrent layer reads an image one grey level at a time, 784 steps.

Each image becomes ``[784, 1]`` values in ``[0, 1]`` (row by row, or in one fixed random order for
the permuted variant); a linear readout of the last hidden state gives the 10 class logits and the
loss is the cross-entropy. Training passes over the training images in a fresh order each epoch;
every ``eval_every`` steps the held-out images are classified.

The split: "official" trains on the 60,000 training images and tests on the 10,000 test images;
"test_only" (what a folder with only the ``t10k`` files allows) trains on the first
``n - test_holdout`` test images and tests on the last ``test_holdout``. results.json states which.

  python -m experiments.pixel_mnist --workdir runs/pixel-mnist-lstm --config.data_dir DIR
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments.adding import experiment as adding
from experiments.pixel_mnist import mnist
from seqjax import cells
from seqjax import kernels
from seqjax import train

PIXELS = mnist.ROWS * mnist.COLS
SPLITS = ("auto", "official", "test_only")
_TRAIN_STREAM, _PERMUTATION_STREAM = 0, 1


def pixel_permutation(seed: int, length: int = PIXELS) -> np.ndarray:
  """The fixed pixel order of the permuted variant: ``[length]``, a permutation drawn from ``seed``."""
  return np.random.default_rng([seed, _PERMUTATION_STREAM]).permutation(length)


def to_sequences(images: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
  """``images: [n, 28, 28] uint8`` -> ``[n, 784, 1]`` float32 in [0, 1], row-major or ``order``."""
  xs = images.reshape(len(images), PIXELS).astype(np.float32) / 255.0
  if order is not None:
    xs = xs[:, order]
  return xs[..., None]


def make_split(data: dict, split: str, test_holdout: int):
  """``(train (images, labels), heldout (images, labels), description)`` from :func:`mnist.load`.

  ``split``: "official", "test_only" or "auto" (official when ``data`` has a train split).
  """
  if split not in SPLITS:
    raise ValueError(f"config.split must be one of {SPLITS}, got {split!r}")
  if split == "auto":
    split = "official" if "train" in data else "test_only"
  test_images, test_labels = data["test"]
  if split == "official":
    if "train" not in data:
      raise ValueError("config.split='official' needs train-images-idx3-ubyte and "
                       "train-labels-idx1-ubyte in config.data_dir (or no data_dir: download)")
    return data["train"], data["test"], {
        "split": "official", "train": "the 60,000 training images",
        "heldout": f"the {len(test_labels)} test images"}
  n = len(test_labels)
  if not 0 < test_holdout < n:
    raise ValueError(f"config.test_holdout must be in [1, {n - 1}] for {n} test images, got "
                     f"{test_holdout}")
  cut = n - test_holdout
  return ((test_images[:cut], test_labels[:cut]), (test_images[cut:], test_labels[cut:]), {
      "split": "test_only",
      "train": f"test images 0-{cut - 1} (the first {cut} of the {n}-image test file)",
      "heldout": f"test images {cut}-{n - 1} (the last {test_holdout}); no official training "
                 "images were used"})


def epoch_batch(seed: int, step: int, n: int, batch_size: int) -> np.ndarray:
  """Indices ``[batch_size]`` of step ``step``: epochs of ``n // batch_size`` steps, each a fresh
  order drawn from ``(seed, epoch)``; a pure function of the step, so resume is exact."""
  per_epoch = n // batch_size
  if per_epoch < 1:
    raise ValueError(f"config.batch_size={batch_size} is larger than the {n} training images")
  epoch, within = divmod(step, per_epoch)
  order = np.random.default_rng([seed, _TRAIN_STREAM, epoch]).permutation(n)
  return order[within * batch_size:(within + 1) * batch_size]


def make_experiment(config, workdir: str) -> train.Experiment:
  """Pixel MNIST as a :class:`seqjax.train.Experiment` (``workdir`` holds the tfds files)."""
  if config.cell not in cells.CELL_NAMES:
    raise ValueError(f"config.cell must be a seqjax cell ({', '.join(cells.CELL_NAMES)}), got "
                     f"{config.cell!r}")
  if config.hidden_size <= 0:
    raise ValueError(f"config.hidden_size must be > 0, got {config.hidden_size}")
  if config.data_dir and not os.path.isdir(config.data_dir):
    raise ValueError(f"config.data_dir={config.data_dir!r} is not a folder (leave it empty to "
                     "download MNIST)")
  data = mnist.load(config.tfds_dir or os.path.join(workdir, "tfds"), config.data_dir or None)
  (train_images, train_labels), (eval_images, eval_labels), split = make_split(
      data, config.split, config.test_holdout)
  if config.train_limit:
    train_images, train_labels = train_images[:config.train_limit], train_labels[:config.train_limit]
    split = dict(split, train=f"the first {len(train_labels)} of {split['train']}")
  order = pixel_permutation(config.seed) if config.permuted else None
  train_xs, eval_xs = to_sequences(train_images, order), to_sequences(eval_images, order)
  train_ys, eval_ys = train_labels.astype(np.int32), eval_labels.astype(np.int32)
  options = {"forget_bias": config.forget_bias} if config.cell == "lstm" else {}
  cell = cells.get_cell(config.cell, **options)
  settings = kernels.Settings(native=None if config.native_kernels else False)
  chrono = adding.checked_chrono_t_max(config)

  def init(rng):
    return adding.init_readout(cell, rng, 1, config.hidden_size, 10, chrono)

  def logits_of(params, xs):
    """``xs: [b, 784, 1]`` -> ``[b, 10]`` logits from the last hidden state."""
    return adding.readout(cell, params, xs, settings)

  def loss_fn(params, batch, rng):  # pylint: disable=unused-argument
    logits = logits_of(params, batch["xs"])
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["ys"][:, None], axis=1)[:, 0]
    images = train.global_sum(jnp.float32(nll.shape[0]))
    correct = jnp.sum(jnp.argmax(logits, -1) == batch["ys"])
    return jnp.sum(nll) / images, {"accuracy": correct / images}

  def get_batch(step, shard_index, num_shards):
    idx = epoch_batch(config.seed, step, len(train_ys), config.batch_size)
    per = config.batch_size // num_shards
    idx = idx[shard_index * per:(shard_index + 1) * per]
    return {"xs": train_xs[idx], "ys": train_ys[idx]}

  eval_logits = jax.jit(logits_of)

  def predict(params):
    """Held-out logits ``[n, 10]``, in chunks of the training batch size."""
    size = config.batch_size
    return np.concatenate([np.asarray(eval_logits(params, eval_xs[i:i + size]))
                           for i in range(0, len(eval_xs), size)])

  def evaluate(params, step):  # pylint: disable=unused-argument
    logits = predict(params)
    log_p = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    return {"eval/accuracy": float(np.mean(logits.argmax(1) == eval_ys)),
            "eval/loss": float(-np.mean(log_p[np.arange(len(eval_ys)), eval_ys]))}

  def results(params, history):  # pylint: disable=unused-argument
    evals = [r for r in history if r["split"] == "eval"]
    best = max(evals, key=lambda r: r["eval/accuracy"]) if evals else None
    trains = [r for r in history if r["split"] == "train" and r.get("steps_per_sec")]
    return {"cell": config.cell, "hidden_size": config.hidden_size,
            "permuted": bool(config.permuted), "data": split,
            "train_images": int(len(train_ys)), "heldout_images": int(len(eval_ys)),
            "epochs": config.num_steps * config.batch_size / len(train_ys),
            "final_accuracy": evals[-1]["eval/accuracy"] if evals else None,
            "best_accuracy": best["eval/accuracy"] if best else None,
            "best_step": best["step"] if best else None,
            # Seconds of training as the logged step rates say (evaluation not counted).
            "train_seconds": float(sum(config.log_every / r["steps_per_sec"] for r in trains))}

  def plot(workdir, params, history):  # pylint: disable=unused-argument
    from experiments.pixel_mnist import curves  # pylint: disable=import-outside-toplevel
    name = ("permuted " if config.permuted else "") + config.cell
    curves.plot(os.path.join(workdir, "curves.png"), {name: history},
                len(train_ys) / config.batch_size, f"pixel MNIST, {name} ({split['split']})")

  return train.Experiment(init=init, loss_fn=loss_fn, get_batch=get_batch, evaluate=evaluate,
                          results=results, plot=plot, loss_reduction="global")
