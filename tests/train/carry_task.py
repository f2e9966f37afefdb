"""A stateful language model for the carried-state tests: truncated BPTT over parallel streams.

``batch_size`` streams read one synthetic text (a noisy ``x_t = x_{t-1} + x_{t-2} mod v``
sequence, so the state helps), ``seq_len`` tokens a step; the LSTM state of every stream is
carried from step to step in the runtime's ``TrainState.carry`` (``Experiment.init_carry``) and
reset when a stream starts its span again (every ``chunks`` steps). Dropout from
``train.example_keys`` and Adam, as in lstm_task.py. A resume that lost the carry, restored it
in another row order or split it wrongly over devices changes the losses and parameters after it.

Run as an entry point (the tests do)::

  python tests/train/carry_task.py --workdir DIR [--config tests/train/carry_task.py]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seqjax import train
from seqjax.models import rnn_lm


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The task's config; ``arg`` is ignored (one variant, already smoke-sized)."""
  del arg
  config = train.runtime_config()
  config.num_steps = 30
  config.batch_size = 8
  config.learning_rate = 0.02
  config.log_every = 1
  config.eval_every = 15
  config.checkpoint_every = 5
  config.keep_checkpoints = 3
  # Vocabulary, embedding and LSTM sizes.
  config.vocab = 7
  config.embed = 8
  config.hidden = 16
  # Tokens per stream per step, and whole chunks in each stream's span before it starts again.
  config.seq_len = 6
  config.chunks = 4
  config.dropout_rate = 0.25
  # Wall-clock pause before every step, so that a test can interrupt the run mid-way.
  config.step_seconds = 0.05
  return config


def make_text(config) -> np.ndarray:
  """``[B * chunks * seq_len + 1]`` int32: every stream's span, one after the other."""
  rng = np.random.default_rng(config.seed)
  n = config.batch_size * config.chunks * config.seq_len + 1
  x = np.zeros(n, np.int64)
  x[:2] = rng.integers(0, config.vocab, 2)
  noise = rng.random(n) < 0.1
  for i in range(2, n):
    x[i] = rng.integers(0, config.vocab) if noise[i] else (x[i - 1] + x[i - 2]) % config.vocab
  return x.astype(np.int32)


def get_batch_of_step(config, step: int) -> dict[str, np.ndarray]:
  """Stream ``i`` at ``step``: chunk ``step % chunks`` of span ``i``; ``starts`` at chunk 0."""
  text = make_text(config)
  span, t = config.chunks * config.seq_len, config.seq_len
  chunk = step % config.chunks
  index = (np.arange(config.batch_size) * span + chunk * t)[:, None] + np.arange(t)[None, :]
  return {"inputs": text[index], "targets": text[index + 1],
          "starts": np.full((config.batch_size,), chunk == 0)}


def make_experiment(config: ml_collections.ConfigDict, workdir: str = "") -> train.Experiment:
  del workdir
  # The scan path: the quickest to compile, and the same program on every machine.
  spec = rnn_lm.Spec("lstm", config.vocab, config.embed, config.hidden, 1, config.dropout_rate,
                     impl="scan")

  def loss_fn(params, batch, rng, carry):
    keys = train.example_keys(rng, batch["inputs"].shape[0])
    carry = rnn_lm.reset(carry, batch["starts"])
    logits, carry = rnn_lm.apply(params, spec, batch["inputs"], carry, dropout_key=keys)
    nll = rnn_lm.token_nll(logits, batch["targets"])
    count = train.global_sum(jnp.float32(nll.size))
    return jnp.sum(nll) / count, {"tokens": jnp.float32(nll.size)}, rnn_lm.detach(carry)

  eval_batch = get_batch_of_step(config, 0)

  @jax.jit
  def eval_loss(params):
    logits, _ = rnn_lm.apply(params, spec, eval_batch["inputs"],
                             rnn_lm.initial_carry(spec, config.batch_size))
    return jnp.mean(rnn_lm.token_nll(logits, eval_batch["targets"]))

  def get_batch(step, shard_index, num_shards):
    time.sleep(config.step_seconds)
    rows = config.batch_size // num_shards
    return {k: a[shard_index * rows:(shard_index + 1) * rows]
            for k, a in get_batch_of_step(config, step).items()}

  return train.Experiment(
      init=lambda rng: rnn_lm.init(rng, spec), loss_fn=loss_fn, get_batch=get_batch,
      evaluate=lambda params, step: {"eval/loss": float(eval_loss(params))},
      loss_reduction="global",
      init_carry=lambda rng: rnn_lm.initial_carry(spec, config.batch_size))


if __name__ == "__main__":
  train.main(make_experiment, train.define_flags(__file__))
