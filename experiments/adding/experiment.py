"""The adding problem (Le, Jaitly & Hinton 2015): sum the two marked numbers of a long sequence.

Each input step is ``(value, marker)`` with ``value ~ U[0, 1]`` and ``marker`` 1 at exactly two
positions, one in each half of the sequence; the target is the sum of the two marked values. A
recurrent layer reads the sequence and a linear readout of its final hidden state predicts the sum;
the loss is the mean squared error. Predicting the mean scores the variance of the target, 1/6
(the baseline the paper's plots start from); solving the task means going well below it.

  python -m experiments.adding --workdir runs/adding [--config experiments/adding/config.py:t300]

This is also the runtime's reference client: the runtime tests run its ``smoke`` variant.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import cells
from seqjax import kernels
from seqjax import recurrent
from seqjax import train

_EVAL_STREAM = 1  # Stream ids keep the eval set disjoint from every training batch.
_TRAIN_STREAM = 0


def make_examples(rng: np.random.Generator, n: int, seq_len: int):
  """``n`` adding-problem examples: ``xs: [n, t, 2]`` float32, ``ys: [n]`` float32."""
  if seq_len < 2:
    raise ValueError(f"config.seq_len must be >= 2 (one marker per half), got {seq_len}")
  values = rng.uniform(0.0, 1.0, size=(n, seq_len)).astype(np.float32)
  half = seq_len // 2
  first = rng.integers(0, half, size=n)
  second = rng.integers(half, seq_len, size=n)
  markers = np.zeros((n, seq_len), np.float32)
  markers[np.arange(n), first] = 1.0
  markers[np.arange(n), second] = 1.0
  xs = np.stack([values, markers], axis=-1)
  ys = values[np.arange(n), first] + values[np.arange(n), second]
  return xs, ys.astype(np.float32)


def make_cell(config) -> cells.Cell:
  """The config's cell; the forget-gate bias applies to the LSTM family only."""
  lstm = config.cell in ("lstm", "peephole_lstm", "coupled_lstm")
  return cells.get_cell(config.cell, **({"forget_bias": config.forget_bias} if lstm else {}))


def checked_chrono_t_max(config) -> int:
  """``config.chrono_t_max`` (0: the cell's own initialisation), which only an LSTM takes."""
  chrono = config.get("chrono_t_max", 0)
  if chrono and config.cell != "lstm":
    raise ValueError(f"config.chrono_t_max applies to cell='lstm' only; got cell={config.cell!r}")
  return chrono


def init_readout(cell: cells.Cell, rng, input_size: int, hidden_size: int, outputs: int,
                 chrono_t_max: int = 0) -> dict:
  """A recurrent cell and a linear readout of its final hidden state: ``{"cell", "w_out",
  "b_out"}``; with ``chrono_t_max`` the LSTM's gate biases are chrono-initialised."""
  k_cell, k_out = jax.random.split(rng)
  cell_params = cell.init(k_cell, input_size, hidden_size)
  if chrono_t_max:
    cell_params = cells.chrono_lstm_biases(jax.random.fold_in(rng, 1), cell_params, chrono_t_max)
  w_out = jax.random.normal(k_out, (hidden_size, outputs), jnp.float32) * hidden_size ** -0.5
  return {"cell": cell_params, "w_out": w_out, "b_out": jnp.zeros((outputs,), jnp.float32)}


def readout(cell: cells.Cell, params, xs: jax.Array, settings: kernels.Settings) -> jax.Array:
  """``xs: [b, t, d]`` -> ``[b, outputs]``: the readout of the cell's final hidden state."""
  _, carry = recurrent.unroll(cell, params["cell"], xs, kernel_settings=settings)
  return cells.output_of(carry) @ params["w_out"] + params["b_out"]


def kernel_settings(config) -> kernels.Settings:
  """``config.native_kernels`` ("auto" or "off") as the recurrent layer's kernel settings."""
  if config.native_kernels not in ("auto", "off"):
    raise ValueError(f"config.native_kernels must be 'auto' or 'off', got "
                     f"{config.native_kernels!r}")
  return kernels.Settings(native=None if config.native_kernels == "auto" else False)


def make_experiment(config, workdir: str) -> train.Experiment:
  """The adding problem as a :class:`seqjax.train.Experiment` (``workdir`` is the runtime's own)."""
  del workdir  # the plots get it from the runtime
  cell = make_cell(config)
  if config.hidden_size <= 0:
    raise ValueError(f"config.hidden_size must be > 0, got {config.hidden_size}")
  settings = kernel_settings(config)
  chrono = checked_chrono_t_max(config)

  def init(rng):
    return init_readout(cell, rng, 2, config.hidden_size, 1, chrono)

  def predict(params, xs):
    """``xs: [b, t, 2]`` -> ``[b]`` predicted sums."""
    return readout(cell, params, xs, settings)[:, 0]

  def loss_fn(params, batch, rng):  # pylint: disable=unused-argument
    err = predict(params, batch["xs"]) - batch["ys"]
    # This device's share of the global batch's MSE: its squared errors over all examples.
    examples = train.global_sum(jnp.float32(err.shape[0]))
    return jnp.sum(err ** 2) / examples, {}

  def get_batch(step, shard_index, num_shards):
    # The whole global batch is a function of (seed, step); each process keeps its slice.
    rng = np.random.default_rng([config.seed, _TRAIN_STREAM, step])
    xs, ys = make_examples(rng, config.batch_size, config.seq_len)
    per = config.batch_size // num_shards
    keep = slice(shard_index * per, (shard_index + 1) * per)
    return {"xs": xs[keep], "ys": ys[keep]}

  eval_xs, eval_ys = make_examples(np.random.default_rng([config.seed, _EVAL_STREAM]),
                                   config.eval_size, config.seq_len)
  eval_predict = jax.jit(predict)

  def evaluate(params, step):  # pylint: disable=unused-argument
    pred = np.asarray(eval_predict(params, eval_xs))
    return {"eval/mse": float(np.mean((pred - eval_ys) ** 2))}

  def results(params, history):  # pylint: disable=unused-argument
    evals = [r for r in history if r["split"] == "eval"]
    baseline = float(np.var(eval_ys))  # MSE of always predicting the mean.
    final = evals[-1]["eval/mse"] if evals else float("nan")
    best = min((r["eval/mse"] for r in evals), default=float("nan"))
    return {"cell": config.cell, "seq_len": config.seq_len, "hidden_size": config.hidden_size,
            "baseline_mse": baseline, "final_eval_mse": final, "best_eval_mse": best,
            "solved": bool(final < 0.1 * baseline)}

  def plot(workdir, params, history):
    del params  # the learning curves need only the history
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    fig, ax = plt.subplots(figsize=(6, 4))
    for split, key in (("train", "train/loss"), ("eval", "eval/mse")):
      rows = [r for r in history if r["split"] == split]
      ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=f"{split} MSE")
    ax.axhline(float(np.var(eval_ys)), color="gray", linestyle="--", label="predict the mean")
    ax.set(xlabel="step", ylabel="MSE", yscale="log",
           title=f"adding problem, T={config.seq_len}, {config.cell}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "mse.png"), dpi=100)
    plt.close(fig)

  return train.Experiment(init=init, loss_fn=loss_fn, get_batch=get_batch, evaluate=evaluate,
                          results=results, plot=plot, loss_reduction="global")
