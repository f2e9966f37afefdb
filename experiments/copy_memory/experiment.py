"""The copy-memory problem (Hochreiter & Schmidhuber 1997; Arjovsky, Shah & Bengio 2016).

Tokens: 0 is the blank, 1..A the alphabet (A = ``config.alphabet``), A + 1 the delimiter. An
input of length ``T + 2S`` (S = ``config.num_symbols``) holds S symbols, ``T - 1`` blanks, the
delimiter and S more blanks; the target is ``T + S`` blanks and then the S symbols. A recurrent
layer reads the one-hot inputs and a dense layer predicts a token (blank or symbol) at every
step; the loss is the cross-entropy averaged over all ``T + 2S`` steps. A network that outputs
blanks and then guesses uniformly scores ``S ln A / (T + 2S)`` (the baseline, 10 ln 8 / (T + 20)
for the paper's sizes); beating it means remembering the symbols over the lag.

  python -m experiments.copy_memory --workdir runs/copy [--config experiments/copy_memory/config.py:t200]
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments.adding import experiment as adding
from seqjax import cells
from seqjax import layers
from seqjax import recurrent
from seqjax import train

_EVAL_STREAM = 1  # Stream ids keep the eval set disjoint from every training batch.
_TRAIN_STREAM = 0


def make_examples(rng: np.random.Generator, n: int, lag: int, num_symbols: int = 10,
                  alphabet: int = 8):
  """``n`` copy-memory examples: ``xs, ys: [n, lag + 2 * num_symbols]`` int32 tokens."""
  if lag < 1 or num_symbols < 1 or alphabet < 2:
    raise ValueError(f"copy memory needs lag >= 1, num_symbols >= 1 and alphabet >= 2; got "
                     f"lag={lag}, num_symbols={num_symbols}, alphabet={alphabet}")
  length = lag + 2 * num_symbols
  symbols = rng.integers(1, alphabet + 1, size=(n, num_symbols))
  xs = np.zeros((n, length), np.int32)
  ys = np.zeros((n, length), np.int32)
  xs[:, :num_symbols] = symbols
  xs[:, num_symbols + lag - 1] = alphabet + 1  # the delimiter: "recall now"
  ys[:, num_symbols + lag:] = symbols
  return xs, ys


def baseline_cross_entropy(lag: int, num_symbols: int = 10, alphabet: int = 8) -> float:
  """Blanks, then a uniform guess over the alphabet: ``S ln A / (T + 2S)``."""
  return num_symbols * math.log(alphabet) / (lag + 2 * num_symbols)


def make_experiment(config, workdir: str) -> train.Experiment:
  """Copy memory as a :class:`seqjax.train.Experiment` (``workdir`` is the runtime's own)."""
  del workdir  # the plots get it from the runtime
  cell = adding.make_cell(config)
  settings = adding.kernel_settings(config)
  if config.hidden_size <= 0:
    raise ValueError(f"config.hidden_size must be > 0, got {config.hidden_size}")
  vocab_in, vocab_out = config.alphabet + 2, config.alphabet + 1
  sizes = (config.lag, config.num_symbols, config.alphabet)

  def init(rng):
    k_cell, k_out = jax.random.split(rng)
    return {"cell": cell.init(k_cell, vocab_in, config.hidden_size),
            "out": layers.init_dense(k_out, config.hidden_size, vocab_out)}

  def logits_of(params, xs):
    """``xs: [b, t]`` tokens -> ``[b, t, A + 1]`` logits."""
    onehot = jax.nn.one_hot(xs, vocab_in, dtype=jnp.float32)
    hs, _ = recurrent.unroll(cell, params["cell"], onehot, kernel_settings=settings)
    return layers.dense(params["out"], hs)

  def loss_fn(params, batch, rng):  # pylint: disable=unused-argument
    nll = layers.cross_entropy(logits_of(params, batch["xs"]), batch["ys"])  # [b, t]
    count = train.global_sum(jnp.float32(nll.size))
    return jnp.sum(nll) / count, {}

  def get_batch(step, shard_index, num_shards):
    rng = np.random.default_rng([config.seed, _TRAIN_STREAM, step])
    xs, ys = make_examples(rng, config.batch_size, *sizes)
    per = config.batch_size // num_shards
    keep = slice(shard_index * per, (shard_index + 1) * per)
    return {"xs": xs[keep], "ys": ys[keep]}

  eval_xs, eval_ys = make_examples(np.random.default_rng([config.seed, _EVAL_STREAM]),
                                   config.eval_size, *sizes)
  eval_logits = jax.jit(logits_of)
  baseline = baseline_cross_entropy(*sizes)

  def evaluate(params, step):  # pylint: disable=unused-argument
    logits = eval_logits(params, eval_xs)
    nll = np.asarray(layers.cross_entropy(logits, eval_ys))
    recall = slice(config.lag + config.num_symbols, None)
    correct = np.asarray(jnp.argmax(logits, -1))[:, recall] == eval_ys[:, recall]
    return {"eval/loss": float(nll.mean()), "eval/recall_accuracy": float(correct.mean())}

  def results(params, history):  # pylint: disable=unused-argument
    evals = [r for r in history if r["split"] == "eval"]
    final = evals[-1]["eval/loss"] if evals else float("nan")
    below = next((r["step"] for r in evals if r["eval/loss"] < baseline), None)
    return {"cell": config.cell, "lag": config.lag, "hidden_size": config.hidden_size,
            "baseline_cross_entropy": baseline, "final_eval_loss": final,
            "best_eval_loss": min((r["eval/loss"] for r in evals), default=float("nan")),
            "final_recall_accuracy": evals[-1]["eval/recall_accuracy"] if evals else float("nan"),
            "first_step_below_baseline": below, "beats_baseline": bool(final < baseline)}

  def plot(workdir, params, history):
    del params  # the learning curves need only the history
    curves(workdir, {config.cell: history}, baseline, config.lag)

  return train.Experiment(init=init, loss_fn=loss_fn, get_batch=get_batch, evaluate=evaluate,
                          results=results, plot=plot, loss_reduction="global")


def curves(workdir: str, histories: dict, baseline: float, lag: int, name: str = "loss.png"):
  """Eval cross-entropy (and train loss, thin) against the step, one colour per run."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(6.5, 4))
  for i, (label, history) in enumerate(histories.items()):
    colour = plt.get_cmap("tab10")(i)
    train_rows = [r for r in history if r["split"] == "train"]
    eval_rows = [r for r in history if r["split"] == "eval"]
    ax.plot([r["step"] for r in train_rows], [r["train/loss"] for r in train_rows], color=colour,
            lw=0.6, alpha=0.5)
    ax.plot([r["step"] for r in eval_rows], [r["eval/loss"] for r in eval_rows], "o-",
            color=colour, ms=3, label=f"{label} (eval)")
  ax.axhline(baseline, color="gray", linestyle="--", label=f"baseline {baseline:.4f}")
  ax.set(xlabel="step", ylabel="cross-entropy per step", yscale="log",
         title=f"copy memory, lag T = {lag}")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, name), dpi=90)
  plt.close(fig)
