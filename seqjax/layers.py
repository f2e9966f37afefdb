"""Embeddings, dense heads and the masked sequence loss, as pure functions.

Shape letters: b batch, t time, d input features, v vocabulary (see ``cells.py``); ``...`` is any
number of leading axes.

Like the cells, every layer is an ``init_*(key, ...) -> params`` function and a pure apply function,
so ``jax.jit``, ``jax.vmap`` and ``jax.grad`` compose with them directly and the Flax modules in
``seqjax.nn`` wrap the very same code. Inputs are validated at this boundary: a wrong shape or
dtype raises a ``ValueError`` / ``TypeError`` that names it; token ids are range-checked whenever
their values are known (outside ``jit``), and inside ``jit`` an out-of-range id yields NaN rather
than silently reading some other row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import cells as cells_lib
from seqjax import recurrent

Params = dict[str, jax.Array]


def _check_token_ids(tokens, size: int, what: str, valid=None) -> None:
  """Integer dtype always; ``0 <= id < size`` (where ``valid``) when the values are concrete."""
  dtype = tokens.dtype if hasattr(tokens, "dtype") else np.asarray(tokens).dtype
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"{what} must be integer ids; got dtype {dtype}")
  values = recurrent.concrete(tokens)
  if values is None or not values.size:
    return
  bad = (values < 0) | (values >= size)
  if valid is not None:
    valid = recurrent.concrete(valid)
    if valid is None:
      return
    bad &= np.broadcast_to(valid != 0, bad.shape)
  if bad.any():
    raise ValueError(f"{what} must lie in [0, {size}) (the vocabulary); got out-of-range ids "
                     f"{sorted(set(values[bad].tolist()))[:10]}")


# ----------------------------------------------------------------------------- embeddings
def init_embedding(key, vocab_size: int, dim: int, dtype=jnp.float32,
                   stddev: float = 1.0) -> Params:
  """``{'embedding': [v, dim]}`` ~ N(0, stddev^2), PyTorch's ``nn.Embedding`` default."""
  if vocab_size < 1 or dim < 1:
    raise ValueError(f"vocab_size and dim must be positive; got {vocab_size} and {dim}")
  table = stddev * jax.random.normal(key, (vocab_size, dim), jnp.float32)
  return {"embedding": table.astype(dtype)}


def embed(params: Params, tokens) -> jax.Array:
  """Looks up token vectors: ``tokens: [b, t]`` (any shape ``[...]``) int -> ``[b, t, dim]``.

  Under ``jit`` the ids cannot be range-checked; an out-of-range id (negative included) then
  yields a NaN vector, so the mistake surfaces in the loss instead of reading another row.

  Raises:
    TypeError: ``tokens`` are not integers.
    ValueError: a (concrete) token id lies outside ``[0, v)``.
  """
  table = params["embedding"]
  if table.ndim != 2:
    raise ValueError(f"embedding table must be [vocab, dim]; got shape {table.shape}")
  vocab = table.shape[0]
  _check_token_ids(tokens, vocab, "tokens")
  tokens = jnp.asarray(tokens)
  # Under jit the range check cannot run; map bad ids (negative ones too, which numpy-style
  # indexing would wrap around) past the end so the "fill" gather poisons them with NaN.
  tokens = jnp.where((tokens < 0) | (tokens >= vocab), vocab, tokens)
  fill = jnp.nan if jnp.issubdtype(table.dtype, jnp.inexact) else 0
  return jnp.take(table, tokens, axis=0, mode="fill", fill_value=fill)


# ----------------------------------------------------------------------------- dense heads
def init_dense(key, input_size: int, output_size: int, dtype=jnp.float32,
               use_bias: bool = True) -> Params:
  """``{'w': [d, o], 'b': [o]}`` ~ U(-1/sqrt(d), 1/sqrt(d)), as PyTorch's ``nn.Linear``."""
  if input_size < 1 or output_size < 1:
    raise ValueError(f"input_size and output_size must be positive; got {input_size} and "
                     f"{output_size}")
  k_w, k_b = jax.random.split(key)
  bound = input_size ** -0.5
  params = {"w": jax.random.uniform(k_w, (input_size, output_size), jnp.float32, -bound, bound)
                 .astype(dtype)}
  if use_bias:
    params["b"] = jax.random.uniform(k_b, (output_size,), jnp.float32, -bound, bound).astype(dtype)
  return params


def dense(params: Params, xs: jax.Array) -> jax.Array:
  """Affine map of the last axis: ``xs: [..., d] -> [..., o]``, float32 (or wider) output.

  The matmul runs in the weights' dtype and accumulates in float32, so bf16 weights still give
  float32 logits for the softmax.
  """
  w = params["w"]
  if w.ndim != 2:
    raise ValueError(f"dense weight must be [in, out]; got shape {w.shape}")
  if np.ndim(xs) < 1 or np.shape(xs)[-1] != w.shape[0]:
    raise ValueError(f"dense input has {np.shape(xs)[-1:] or 'no'} features (shape "
                     f"{np.shape(xs)}) but the weight expects {w.shape[0]}")
  dtype = cells_lib.compute_dtype(w.dtype)
  ys = jnp.dot(jnp.asarray(xs).astype(w.dtype), w, preferred_element_type=dtype)
  if "b" in params:
    ys = ys + params["b"].astype(dtype)
  return ys


def dense_log_softmax(params: Params, xs: jax.Array) -> jax.Array:
  """Output head: ``xs: [..., d] -> [..., v]`` log-probabilities (float32 or wider)."""
  return jax.nn.log_softmax(dense(params, xs), axis=-1)


# ----------------------------------------------------------------------------- masked loss
def mask_from_lengths(lengths, time: int) -> jax.Array:
  """``lengths: [b]`` int in ``[0, time]`` -> ``[b, time]`` bool, True on valid steps."""
  if np.ndim(lengths) != 1:
    raise ValueError(f"lengths must have shape [batch]; got {np.shape(lengths)}")
  recurrent.check_lengths(lengths, np.shape(lengths)[0], time)
  return jnp.arange(time)[None, :] < jnp.asarray(lengths)[:, None]


def masked_cross_entropy(logits: jax.Array, targets, *, lengths=None, mask=None) -> jax.Array:
  """Mean token cross-entropy over valid positions: padded tokens carry no loss.

  Args:
    logits: ``[b, t, v]`` unnormalised scores.
    targets: ``[b, t]`` int ids in ``[0, v)`` (checked on valid positions only, so any padding
      id, e.g. -100, is fine where masked out).
    lengths: optional ``[b]`` int valid lengths in ``[0, t]``.
    mask: optional ``[b, t]`` bool (or non-negative weights) marking valid positions. Give one of
      ``lengths`` and ``mask`` at most; with neither, every position counts.

  Returns:
    Scalar float32: ``sum(mask * nll) / sum(mask)``, 0 when there are no valid tokens.
  """
  if np.ndim(logits) != 3:
    raise ValueError(f"logits must be [batch, time, vocab]; got shape {np.shape(logits)}")
  b, t, v = np.shape(logits)
  if np.shape(targets) != (b, t):
    raise ValueError(f"targets must be [batch, time] = [{b}, {t}] to match logits; got shape "
                     f"{np.shape(targets)}")
  if lengths is not None and mask is not None:
    raise ValueError("give lengths or mask, not both")
  if lengths is not None:
    recurrent.check_lengths(lengths, b, t)
    mask = mask_from_lengths(lengths, t)
  elif mask is not None:
    if np.shape(mask) != (b, t):
      raise ValueError(f"mask must be [batch, time] = [{b}, {t}]; got shape {np.shape(mask)}")
  _check_token_ids(targets, v, "targets", valid=mask)
  logits = jnp.asarray(logits)
  logp = jax.nn.log_softmax(logits.astype(cells_lib.compute_dtype(logits.dtype)), axis=-1)
  targets = jnp.asarray(targets)
  in_range = (targets >= 0) & (targets < v)
  nll = -jnp.take_along_axis(logp, jnp.clip(targets, 0, v - 1)[..., None], axis=-1)[..., 0]
  weights = jnp.ones((b, t), logp.dtype) if mask is None else jnp.asarray(mask).astype(logp.dtype)
  # A traced out-of-range target on a valid position poisons the loss instead of hiding.
  nll = jnp.where(in_range | (weights == 0), nll, jnp.nan)
  total = jnp.sum(jnp.where(weights != 0, weights * nll, 0.0))
  count = jnp.sum(weights)
  # A safe denominator rather than max(count, 1), which would be wrong for fractional weights.
  return total / jnp.where(count > 0, count, 1.0)
