"""The shared basics as pure functions: embeddings, dense heads, layer norm, dropout, the length
mask and the masked cross-entropy. Each exists once in seqjax; every model and experiment uses
these copies.

Shapes use the glossary in ``seqjax/__init__.py``; ``...`` is any number of leading axes.

Like the cells, every layer is an ``init_*(key, ...) -> params`` function and a pure apply function,
so ``jax.jit``, ``jax.vmap`` and ``jax.grad`` compose with them directly and the Flax modules in
``seqjax.nn`` wrap the very same code. Inputs are validated at this boundary: a wrong shape or
dtype raises a ``ValueError`` / ``TypeError`` that names it; token ids are range-checked whenever
their values are known (outside ``jit``), and inside ``jit`` an out-of-range id yields NaN rather
than silently reading some other row.

Dropout takes one PRNG key or one key per example (``[b]``). With per-example keys each row's mask
depends on its own key alone, so a batch split over devices draws the masks it would draw on one
device; :func:`fold_keys` derives the keys of further dropout sites, or per-example keys from one
key and each example's global index.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import cells as cells_lib
from seqjax import checks

Params = dict[str, jax.Array]
REDUCTIONS = ("mean", "sum", "none")


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
  checks.check_token_ids(tokens, vocab, "tokens")
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
  key_w, key_b = jax.random.split(key)
  bound = input_size ** -0.5
  params = {"w": jax.random.uniform(key_w, (input_size, output_size), jnp.float32, -bound, bound)
                 .astype(dtype)}
  if use_bias:
    params["b"] = (jax.random.uniform(key_b, (output_size,), jnp.float32, -bound, bound)
                   .astype(dtype))
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


# ----------------------------------------------------------------------------- layer norm
def init_layer_norm(size: int, dtype=jnp.float32) -> Params:
  """``{'scale': [d] ones, 'bias': [d] zeros}``, as PyTorch's ``nn.LayerNorm``."""
  if size < 1:
    raise ValueError(f"layer norm size must be positive; got {size}")
  return {"scale": jnp.ones((size,), dtype), "bias": jnp.zeros((size,), dtype)}


def layer_norm(params: Params, x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Normalises the last axis to zero mean, unit (biased) variance, then scales and shifts:
  ``x: [..., d] -> [..., d]`` (Ba et al. 2016; ``torch.nn.LayerNorm`` with the same ``eps``)."""
  scale = params["scale"]
  if np.ndim(x) < 1 or np.shape(x)[-1] != scale.shape[-1]:
    raise ValueError(f"layer norm of size {scale.shape[-1]} got input of shape {np.shape(x)}")
  x = jnp.asarray(x)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  centred = x - mean
  variance = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
  return centred * jax.lax.rsqrt(variance + eps) * scale + params["bias"]


# ----------------------------------------------------------------------------- dropout
def _typed_keys(key) -> tuple[jax.Array, bool]:
  """``(typed key array, given_raw)``: raw ``uint32 [..., 2]`` keys are wrapped (same bits)."""
  dtype = getattr(key, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    return key, False
  if dtype is None or not jnp.issubdtype(dtype, jnp.unsignedinteger):
    raise TypeError(f"dropout keys must be PRNG keys (jax.random.key or PRNGKey); got "
                    f"{type(key).__name__} of dtype {dtype}")
  return jax.random.wrap_key_data(key), True


def fold_keys(keys, data) -> jax.Array:
  """Independent keys for another dropout site (or step), one per given key.

  ``fold_in`` applied to one key or to each per-example key: row ``i`` of the result depends on
  ``keys[i]`` and ``data`` (or ``data[i]``) alone. With one key and ``data: [b]`` (each example's
  index in the global batch) it makes per-example keys that do not depend on how the batch is
  split over devices.

  Args:
    keys: one PRNG key, or ``[b]`` per-example keys (typed, or raw ``uint32 [b, 2]``).
    data: an int (a site number, a time step; may be traced) or ``[b]`` ints.

  Returns:
    Keys in the form given (typed or raw): one key when both are scalars, else ``[b]`` keys.
  """
  typed, raw = _typed_keys(keys)
  data = jnp.asarray(data)
  if typed.ndim > 1 or data.ndim > 1:
    raise ValueError(f"fold_keys takes one key or [b] keys and an int or [b] ints; got keys of "
                     f"shape {typed.shape} and data of shape {data.shape}")
  if typed.ndim and data.ndim and typed.shape[0] != data.shape[0]:
    raise ValueError(f"fold_keys got {typed.shape[0]} keys but {data.shape[0]} data values")
  if typed.ndim or data.ndim:
    folded = jax.vmap(jax.random.fold_in, in_axes=(0 if typed.ndim else None,
                                                   0 if data.ndim else None))(typed, data)
  else:
    folded = jax.random.fold_in(typed, data)
  return jax.random.key_data(folded) if raw else folded


def dropout(key, x: jax.Array, rate: float) -> jax.Array:
  """Inverted dropout: zeroes each element with probability ``rate``, scales the rest by
  ``1 / (1 - rate)``.

  Args:
    key: None (no dropout, as at evaluation), one PRNG key (``bernoulli(key, 1 - rate,
      x.shape)``), or ``[b]`` per-example keys with ``b == x.shape[0]``: row ``i``'s mask is
      ``bernoulli(key[i], 1 - rate, x.shape[1:])``, so it depends on that row's key alone.
    x: ``[b, ...]`` (any shape with one key).
    rate: drop probability in ``[0, 1)``, a Python number; 0 returns ``x`` unchanged.

  Returns:
    An array of ``x``'s shape and dtype.
  """
  if not isinstance(rate, (int, float, np.integer, np.floating)) or not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout rate must be a number in [0, 1); got {rate!r}")
  if key is None or rate == 0.0:
    return x
  keys, _ = _typed_keys(key)
  keep_prob = 1.0 - rate
  if keys.ndim == 0:
    keep = jax.random.bernoulli(keys, keep_prob, np.shape(x))
  elif keys.ndim == 1 and np.ndim(x) >= 1 and keys.shape[0] == np.shape(x)[0]:
    keep = jax.vmap(lambda row_key: jax.random.bernoulli(row_key, keep_prob, np.shape(x)[1:]))(keys)
  else:
    raise ValueError(f"dropout needs one key or one key per example (the leading dimension of "
                     f"x, shape {np.shape(x)}); got keys of shape {keys.shape}")
  x = jnp.asarray(x)
  return jnp.where(keep, x / keep_prob, 0.0).astype(x.dtype)


# ----------------------------------------------------------------------------- masks and losses
def mask_from_lengths(lengths, time: int) -> jax.Array:
  """``lengths: [b]`` int in ``[0, time]`` -> ``[b, time]`` bool, True on valid steps."""
  if np.ndim(lengths) != 1:
    raise ValueError(f"lengths must have shape [batch]; got {np.shape(lengths)}")
  checks.check_lengths(lengths, np.shape(lengths)[0], time)
  return jnp.arange(time)[None, :] < jnp.asarray(lengths)[:, None]


def _check_targets(logits, targets, what: str) -> bool:
  """Validates ``targets`` against ``logits: [..., v]``; True for ids, False for probabilities."""
  shape = np.shape(logits)
  if np.shape(targets) == shape[:-1]:
    return True
  if np.shape(targets) == shape:
    dtype = targets.dtype if hasattr(targets, "dtype") else np.asarray(targets).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(f"targets of shape {shape} (the logits' shape) must be probabilities; got "
                      f"dtype {dtype}")
    return False
  raise ValueError(f"targets must be {what} = {list(shape[:-1])} to match logits (ids), or the "
                   f"logits' shape {list(shape)} (probabilities); got shape {np.shape(targets)}")


def _nll(logits, targets, ids: bool, label_smoothing: float, smooth_over):
  """``(-log p(targets) [...], in_range [...] | None)``, in float32 or wider."""
  logits = jnp.asarray(logits)
  v = logits.shape[-1]
  logp = jax.nn.log_softmax(logits.astype(cells_lib.compute_dtype(logits.dtype)), axis=-1)
  in_range = None
  if ids:
    targets = jnp.asarray(targets)
    in_range = (targets >= 0) & (targets < v)
    nll = -jnp.take_along_axis(logp, jnp.clip(targets, 0, v - 1)[..., None], axis=-1)[..., 0]
  else:
    # The same expression as optax.softmax_cross_entropy, so switching to it changes no bits.
    nll = -(jnp.asarray(targets) * logp).sum(-1)
  if label_smoothing:
    if smooth_over is None:
      smooth = -jnp.mean(logp, axis=-1)
    else:
      # Only over the tokens the model may emit (a model pins the others to a huge negative
      # logit, whose log-probability would otherwise swamp the loss).
      allowed = jnp.broadcast_to(jnp.asarray(smooth_over, bool), logp.shape)
      smooth = -jnp.sum(jnp.where(allowed, logp, 0.0), -1) / jnp.sum(allowed, -1)
    nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth
  return nll, in_range


def _check_smoothing(logits, label_smoothing, smooth_over) -> None:
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
  if smooth_over is not None:
    try:
      np.broadcast_shapes(np.shape(smooth_over), np.shape(logits))
    except ValueError:
      raise ValueError(f"smooth_over must broadcast to the logits' shape {np.shape(logits)} "
                       f"(e.g. [v] bool); got shape {np.shape(smooth_over)}") from None


def cross_entropy(logits: jax.Array, targets, *, label_smoothing: float = 0.0,
                  smooth_over=None) -> jax.Array:
  """Cross-entropy at every position, no mask: ``-log softmax(logits)[target]``.

  Args:
    logits: ``[..., v]`` unnormalised scores.
    targets: ``[...]`` int ids in ``[0, v)``, or ``[..., v]`` float probabilities (soft targets).
    label_smoothing: mixes in the cross-entropy against the uniform distribution (over
      ``smooth_over``) with this weight: ``(1 - ls) * nll + ls * mean(-log p)``.
    smooth_over: optional bool mask broadcastable to ``[..., v]``: the tokens the uniform part
      covers (default all ``v``).

  Returns:
    ``[...]`` float32 (or wider). A traced out-of-range id gives NaN at its position.
  """
  if np.ndim(logits) < 1:
    raise ValueError(f"logits must be [..., vocab]; got shape {np.shape(logits)}")
  ids = _check_targets(logits, targets, "[...]")
  _check_smoothing(logits, label_smoothing, smooth_over)
  if ids:
    checks.check_token_ids(targets, np.shape(logits)[-1], "targets")
  nll, in_range = _nll(logits, targets, ids, label_smoothing, smooth_over)
  return nll if in_range is None else jnp.where(in_range, nll, jnp.nan)


def masked_cross_entropy(logits: jax.Array, targets, *, lengths=None, mask=None,
                         label_smoothing: float = 0.0, smooth_over=None,
                         reduction: str = "mean"):
  """Token cross-entropy over valid positions: padded tokens carry no loss.

  Args:
    logits: ``[b, t, v]`` unnormalised scores.
    targets: ``[b, t]`` int ids in ``[0, v)`` (checked on valid positions only, so any padding
      id, e.g. -100, is fine where masked out), or ``[b, t, v]`` float probabilities.
    lengths: optional ``[b]`` int valid lengths in ``[0, t]``.
    mask: optional ``[b, t]`` bool (or non-negative weights) marking valid positions. Give one of
      ``lengths`` and ``mask`` at most; with neither, every position counts. Logits (and soft
      targets) at masked positions are never read: NaN or inf there gives zero gradient.
    label_smoothing, smooth_over: as in :func:`cross_entropy`.
    reduction: ``"mean"``: ``sum(mask * nll) / sum(mask)``, 0 when there are no valid tokens;
      ``"sum"``: the pair ``(sum(mask * nll), sum(mask))``, which add up across devices and hosts
      into the global batch's mean (sum both, then divide); ``"none"``: ``mask * nll`` ``[b, t]``.

  Returns:
    A float32 scalar, a pair of them, or ``[b, t]``, by ``reduction``.
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")
  if np.ndim(logits) != 3:
    raise ValueError(f"logits must be [batch, time, vocab]; got shape {np.shape(logits)}")
  b, t, v = np.shape(logits)
  ids = _check_targets(logits, targets, "[batch, time]")
  _check_smoothing(logits, label_smoothing, smooth_over)
  if lengths is not None and mask is not None:
    raise ValueError("give lengths or mask, not both")
  if lengths is not None:
    checks.check_lengths(lengths, b, t)
    mask = mask_from_lengths(lengths, t)
  elif mask is not None:
    if np.shape(mask) != (b, t):
      raise ValueError(f"mask must be [batch, time] = [{b}, {t}]; got shape {np.shape(mask)}")
  if ids:
    checks.check_token_ids(targets, v, "targets", valid=mask)
  if mask is not None:
    # Padded positions are zeroed before the log-softmax: the `where` below keeps NaN or inf
    # logits there out of the loss but not out of its gradient (0 * NaN = NaN).
    valid = (jnp.asarray(mask) != 0)[..., None]
    logits = jnp.where(valid, logits, jnp.zeros_like(logits))
    if not ids:
      targets = jnp.where(valid, targets, jnp.zeros_like(targets))
  nll, in_range = _nll(logits, targets, ids, label_smoothing, smooth_over)
  weights = jnp.ones((b, t), nll.dtype) if mask is None else jnp.asarray(mask).astype(nll.dtype)
  if in_range is not None:
    # A traced out-of-range target on a valid position poisons the loss instead of hiding.
    nll = jnp.where(in_range | (weights == 0), nll, jnp.nan)
  per_token = jnp.where(weights != 0, weights * nll, 0.0)
  if reduction == "none":
    return per_token
  total, count = jnp.sum(per_token), jnp.sum(weights)
  if reduction == "sum":
    return total, count
  # A safe denominator rather than max(count, 1), which would be wrong for fractional weights.
  return total / jnp.where(count > 0, count, 1.0)
