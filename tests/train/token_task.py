"""A tiny token-level task for the runtime tests: ragged strings, a token-averaged loss, dropout.

Each string of the global batch has its own length (1 to ``seq_len`` tokens), so the devices of
a multi-device run hold different numbers of tokens: averaging per device and then across devices
(``loss_reduction="device_mean"``) weighs tokens differently from the global token average, while
shares of the global average (``"global"``) do not. Dropout draws one mask per string from
``train.example_keys``, so the masks do not depend on the device count either.

Run as an entry point (the multi-process tests do)::

  python tests/train/token_task.py --workdir DIR [--config tests/train/token_task.py:smoke]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seqjax import train

HELD_OUT_STEP = 10**6  # The evaluation batch: get_batch_of_step of a step no run reaches.

def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The task's config; ``arg`` is ignored (one variant, already smoke-sized)."""
  del arg
  config = train.runtime_config()
  config.num_steps = 4
  config.batch_size = 16
  config.learning_rate = 0.01
  config.log_every = 1
  config.eval_every = 1000  # Evaluated once, after the last step.
  config.checkpoint_every = 1
  config.keep_checkpoints = 100
  # Vocabulary size (token ids 0..vocab-1); the target of token x is (3 x + 1) mod vocab.
  config.vocab = 11
  # Width of the embedding and of the hidden layer.
  config.hidden = 16
  # Longest string; lengths are drawn uniformly from 1..seq_len.
  config.seq_len = 12
  # Dropout on the hidden layer (one mask per string from train.example_keys).
  config.dropout_rate = 0.25
  # "global" (shares of the global average) or "device_mean" (the legacy per-device mean).
  config.loss_reduction = "global"
  # "token": mean over every valid token; "string": mean per string, then over strings.
  config.loss = "token"
  return config


def get_batch_of_step(config, step: int) -> dict[str, np.ndarray]:
  """The global batch of ``step``: ``tokens, targets: [b, t] int32``, ``mask: [b, t]``."""
  rng = np.random.default_rng((config.seed, step))
  b, t = config.batch_size, config.seq_len
  tokens = rng.integers(0, config.vocab, size=(b, t)).astype(np.int32)
  lengths = rng.integers(1, t + 1, size=b)
  mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)
  return {"tokens": tokens, "targets": (3 * tokens + 1) % config.vocab, "mask": mask}


def _dropout(keys: jax.Array, x: jax.Array, rate: float) -> jax.Array:
  """``x: [b, ...]``, ``keys: [b]``: row ``i`` dropped with a mask drawn from ``keys[i]``."""
  if rate == 0.0:
    return x
  keep = jax.vmap(lambda key, row: jax.random.bernoulli(key, 1.0 - rate, row.shape))(keys, x)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


def make_experiment(config: ml_collections.ConfigDict, workdir: str = "") -> train.Experiment:
  v, d = config.vocab, config.hidden

  def init(rng):
    k_emb, k_hid, k_out = jax.random.split(rng, 3)
    return {"emb": jax.random.normal(k_emb, (v, d)),
            "w": jax.random.normal(k_hid, (d, d)) / np.sqrt(d), "b": jnp.zeros((d,)),
            "out": jax.random.normal(k_out, (d, v)) / np.sqrt(d)}

  def logits_of(params, tokens, keys=None):
    hidden = jnp.tanh(params["emb"][tokens] @ params["w"] + params["b"])
    if keys is not None:
      hidden = _dropout(keys, hidden, config.dropout_rate)
    return hidden @ params["out"]  # [b, t, v]

  def loss_fn(params, batch, rng):
    b_device = batch["tokens"].shape[0]
    if config.loss_reduction == "global":
      keys = train.example_keys(rng, b_device)
    else:  # The legacy reduction gets a key per device; split it per string.
      keys = jax.random.split(rng, b_device)
    logits = logits_of(params, batch["tokens"], keys)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["targets"][..., None], -1)[..., 0]
    mask = batch["mask"]
    correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
    lengths = jnp.sum(mask, axis=1)
    per_string = jnp.sum(nll * mask, axis=1) / lengths
    if config.loss_reduction == "global":
      tokens, strings = train.global_sum(jnp.sum(mask)), train.global_sum(jnp.float32(b_device))
    else:
      tokens, strings = jnp.sum(mask), jnp.float32(b_device)
    token_loss = jnp.sum(nll * mask) / tokens
    string_loss = jnp.sum(per_string) / strings
    metrics = {"token_loss": token_loss, "string_loss": string_loss,
               "accuracy": jnp.sum(correct * mask) / tokens, "tokens": jnp.sum(mask)}
    return (token_loss if config.loss == "token" else string_loss), metrics

  def get_batch(step, shard_index, num_shards):
    rows = config.batch_size // num_shards
    return {k: a[shard_index * rows:(shard_index + 1) * rows]
            for k, a in get_batch_of_step(config, step).items()}

  def evaluate(params, step):
    """Token loss and accuracy, without dropout, on a batch no run trains on; on the host."""
    del step
    batch = get_batch_of_step(config, HELD_OUT_STEP)
    logits = np.asarray(jax.jit(logits_of)(params, batch["tokens"]), np.float64)
    log_probs = logits - np.log(np.sum(np.exp(logits), -1, keepdims=True))
    nll = -np.take_along_axis(log_probs, batch["targets"][..., None], -1)[..., 0]
    correct = np.argmax(logits, -1) == batch["targets"]
    tokens = batch["mask"].sum()
    return {"eval/loss": float(np.sum(nll * batch["mask"]) / tokens),
            "eval/accuracy": float(np.sum(correct * batch["mask"]) / tokens)}

  return train.Experiment(init=init, loss_fn=loss_fn, get_batch=get_batch, evaluate=evaluate,
                          loss_reduction=config.loss_reduction)


if __name__ == "__main__":
  train.main(make_experiment, train.define_flags(__file__))
