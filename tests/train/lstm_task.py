"""A small LSTM tagger for the resume tests: everything a resume can get wrong, in one run.

Ragged strings (lengths 1 to ``seq_len``), dropout on the embeddings (one mask per string from
``train.example_keys``, so the keys depend on the step), an LSTM on the fused path with its XLA
loops (``impl="fused"``, native kernels off, so the same program runs whether or not they are
built), Adam with a linear warm-up and a cosine decay (its moments and its step count live in the
optimiser state), a token-averaged loss and a periodic evaluation. A resume that restored the wrong
dropout keys, reset Adam's moments or restarted the schedule changes the final parameters.

``config.step_seconds`` pauses before every step (outside the computation, which it does not
change) so that a test polling metrics.jsonl can interrupt the run between two checkpoints.

Run as an entry point (the resume tests do)::

  python tests/train/lstm_task.py --workdir DIR [--config tests/train/lstm_task.py]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seqjax import cells
from seqjax import kernels
from seqjax import layers
from seqjax import recurrent
from seqjax import train

CELL = "lstm"
# The fused whole-layer path with its XLA loops, on every machine (see the module docstring).
IMPL = "fused"
SETTINGS = kernels.Settings(native=False)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The task's config; ``arg`` is ignored (one variant, already smoke-sized)."""
  del arg
  config = train.runtime_config()
  config.num_steps = 60
  config.batch_size = 8
  config.optimizer = "adam"
  config.learning_rate = 0.02
  config.schedule = "cosine"
  config.warmup_steps = 10
  config.min_lr_ratio = 0.1
  config.log_every = 1
  config.eval_every = 30
  config.checkpoint_every = 10
  config.keep_checkpoints = 3
  config.best_metric = "eval/loss"
  # Vocabulary size; the target of token x_t is (x_t + x_{t-1}) mod vocab (x_{-1} = 0).
  config.vocab = 7
  # Embedding width.
  config.embed = 8
  # LSTM units.
  config.hidden = 16
  # Longest string; lengths are drawn uniformly from 1..seq_len.
  config.seq_len = 10
  # Dropout on the embeddings (one mask per string from train.example_keys).
  config.dropout_rate = 0.25
  # Wall-clock pause before every step, so that a test can interrupt the run mid-way.
  config.step_seconds = 0.02
  return config


def get_batch_of_step(config, step: int) -> dict[str, np.ndarray]:
  """The global batch of ``step`` (-1: the evaluation batch).

  ``tokens, targets: [b, t]`` int32 and ``lengths: [b]`` int32 in ``1..t``.
  """
  rng = np.random.default_rng((config.seed, step + 1))
  b, t = config.batch_size, config.seq_len
  tokens = rng.integers(0, config.vocab, size=(b, t)).astype(np.int32)
  lengths = rng.integers(1, t + 1, size=b).astype(np.int32)
  previous = np.concatenate([np.zeros((b, 1), np.int32), tokens[:, :-1]], axis=1)
  return {"tokens": tokens, "targets": (tokens + previous) % config.vocab, "lengths": lengths}


def lstm_impl(config) -> kernels.Impl:
  """What ``recurrent.unroll`` runs for this task's LSTM (the choice it makes itself)."""
  cell = cells.get_cell(CELL)
  params = cell.init(jax.random.PRNGKey(0), config.embed, config.hidden)
  carry = cell.initial_carry(config.batch_size, config.hidden, jnp.float32)
  return kernels.choose(cell, IMPL, params, carry, settings=SETTINGS)


def make_experiment(config: ml_collections.ConfigDict, workdir: str = "") -> train.Experiment:
  del workdir
  v, d, h = config.vocab, config.embed, config.hidden

  def init(rng):
    k_emb, k_lstm, k_out = jax.random.split(rng, 3)
    return {"emb": jax.random.normal(k_emb, (v, d)),
            "lstm": cells.get_cell(CELL).init(k_lstm, d, h),
            "out": jax.random.normal(k_out, (h, v)) / np.sqrt(h)}

  def nll_and_correct(params, batch, keys):
    xs = params["emb"][batch["tokens"]]  # [b, t, d]
    if keys is not None:
      xs = layers.dropout(keys, xs, config.dropout_rate)
    ys, _ = recurrent.unroll(CELL, params["lstm"], xs, lengths=batch["lengths"], impl=IMPL,
                             kernel_settings=SETTINGS)
    logits = ys @ params["out"]  # [b, t, v]
    log_probs = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(log_probs, batch["targets"][..., None], -1)[..., 0]
    mask = layers.mask_from_lengths(batch["lengths"], batch["tokens"].shape[1])
    mask = mask.astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
    return jnp.sum(nll * mask), jnp.sum(correct * mask), jnp.sum(mask)

  def loss_fn(params, batch, rng):
    keys = train.example_keys(rng, batch["tokens"].shape[0])
    nll, correct, tokens = nll_and_correct(params, batch, keys)
    total = train.global_sum(tokens)  # This device's share of the global token average.
    return nll / total, {"accuracy": correct / total, "tokens": tokens}

  eval_batch = get_batch_of_step(config, -1)
  eval_sums = jax.jit(lambda params: nll_and_correct(params, eval_batch, None))

  def evaluate(params, step):
    del step
    nll, correct, tokens = eval_sums(params)
    return {"eval/loss": float(nll / tokens), "eval/accuracy": float(correct / tokens)}

  def get_batch(step, shard_index, num_shards):
    time.sleep(config.step_seconds)
    rows = config.batch_size // num_shards
    return {k: a[shard_index * rows:(shard_index + 1) * rows]
            for k, a in get_batch_of_step(config, step).items()}

  def results(params, history):
    del params, history
    impl = lstm_impl(config)
    return {"lstm_impl": {"name": impl.name, "native_threads": impl.native}}

  return train.Experiment(init=init, loss_fn=loss_fn, get_batch=get_batch, evaluate=evaluate,
                          results=results, loss_reduction="global")


if __name__ == "__main__":
  train.main(make_experiment, train.define_flags(__file__))
