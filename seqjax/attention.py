"""Attention over a padded memory: additive (Bahdanau), dot and general (Luong), with masks.

Shapes as in the glossary of ``seqjax/__init__.py``: the memory (the keys: encoder outputs) is
``[b, s, m]``, the query ``[b, q]``, ``a`` the additive score's hidden size.

Every kind is two pure functions so that a decoder can do the work that does not depend on the
query once per source sentence instead of once per target step:

* ``project_keys(kind, params, keys) -> projected``: ``[b, s, m] -> [b, s, *]``, the query-free
  half of the score (``keys @ w_key`` for additive, ``keys @ w`` for general, ``keys`` for dot);
* ``attend(kind, params, query, keys, projected, mask) -> (context, weights)``.

Scores of padded positions are replaced by a very negative number before the softmax; after it
the weights are multiplied by the mask, so padding gets exactly zero weight (and a sentence with
no valid position at all gets an all-zero context instead of NaNs). Keys at padded positions are
never read: NaN or inf there reaches no context and no gradient (``project_keys`` has no mask, so
:func:`attention` zeroes padded keys before projecting them). The mask is
``seqjax.layers.mask_from_lengths``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import layers

KINDS = ("additive", "dot", "general")

# Masked scores: exp(_NEG - max) underflows to 0.0 in float32; finite, so a row with no valid
# position gives no NaN (its weights are then zeroed by the mask).
_NEG = -1e30


def check_kind(kind: str) -> str:
  if kind not in KINDS:
    raise ValueError(f"unknown attention {kind!r}; known kinds: {', '.join(KINDS)}")
  return kind


def init_attention(key, kind: str, query_size: int, key_size: int, attention_size: int = 0,
                   dtype=jnp.float32) -> dict:
  """Parameters of one attention layer.

  Args:
    kind: ``"additive"``: ``v . tanh(query W_q + key W_k + bias)``; ``"dot"``:
      ``query . key`` (needs ``query_size == key_size``, no parameters); ``"general"``:
      ``query . (key W)``.
    query_size: ``q``, the decoder state size.
    key_size: ``m``, the encoder output size (``2h`` for a bidirectional encoder).
    attention_size: ``a``, the hidden size of the additive score (additive only).

  Returns:
    A dict of arrays (empty for ``dot``).
  """
  check_kind(kind)
  if kind == "dot":
    if query_size != key_size:
      raise ValueError(f"dot attention needs query size == key size; got {query_size} and "
                       f"{key_size} (use 'general' to learn a projection between them)")
    return {}
  if kind == "general":
    bound = key_size ** -0.5
    return {"w": jax.random.uniform(key, (key_size, query_size), dtype, -bound, bound)}
  if attention_size < 1:
    raise ValueError(f"additive attention needs attention_size >= 1; got {attention_size}")
  key_query, key_keys, key_v = jax.random.split(key, 3)
  bound_in = (query_size + key_size) ** -0.5
  return {
      "w_query": jax.random.uniform(key_query, (query_size, attention_size), dtype, -bound_in,
                                    bound_in),
      "w_key": jax.random.uniform(key_keys, (key_size, attention_size), dtype, -bound_in, bound_in),
      "bias": jnp.zeros((attention_size,), dtype),
      "v": jax.random.uniform(key_v, (attention_size,), dtype, -attention_size ** -0.5,
                              attention_size ** -0.5),
  }


def project_keys(kind: str, params: dict, keys: jax.Array) -> jax.Array:
  """The query-independent part of the scores: ``keys: [b, s, m]`` -> ``[b, s, a | q | m]``."""
  check_kind(kind)
  if kind == "additive":
    return keys @ params["w_key"] + params["bias"]
  if kind == "general":
    return keys @ params["w"]
  return keys


def scores(kind: str, params: dict, query: jax.Array, projected: jax.Array) -> jax.Array:
  """Unnormalised scores ``[b, s]`` of ``query: [b, q]`` against ``projected`` keys."""
  if kind == "additive":
    hidden = jnp.tanh(projected + (query @ params["w_query"])[:, None, :])  # [b, s, a]
    return hidden @ params["v"]
  return jnp.einsum("bsq,bq->bs", projected, query)


def masked_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """Softmax over the last axis with masked-out positions given exactly zero weight."""
  logits = jnp.where(mask, logits.astype(jnp.float32), _NEG)
  return jax.nn.softmax(logits, axis=-1) * mask


def attend(kind: str, params: dict, query: jax.Array, keys: jax.Array, projected: jax.Array,
           mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One attention read.

  Args:
    kind: one of :data:`KINDS`.
    params: from :func:`init_attention`.
    query: ``[b, q]``.
    keys: ``[b, s, m]`` memory that is averaged (the encoder outputs).
    projected: ``project_keys(kind, params, keys)``, computed once per source batch.
    mask: ``[b, s]`` bool, False on padding.

  Returns:
    ``(context [b, m], weights [b, s])``; each row of ``weights`` sums to 1 over its valid
    positions and is exactly 0 on padding.
  """
  # Padding is zeroed before any arithmetic: a NaN or inf key there would otherwise reach the
  # context as 0 * NaN in the weighted sum, and the gradients through the masked scores.
  keys = jnp.where(mask[..., None], keys, jnp.zeros_like(keys))
  projected = jnp.where(mask[..., None], projected, jnp.zeros_like(projected))
  weights = masked_softmax(scores(kind, params, query, projected), mask)
  context = jnp.einsum("bs,bsm->bm", weights.astype(keys.dtype), keys)
  return context, weights


def attention(kind: str, params: dict, query: jax.Array, keys: jax.Array,
              lengths: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Convenience wrapper: validates shapes, builds the mask, projects keys and attends.

  Args:
    query: ``[b, q]``; keys: ``[b, s, m]``; lengths: optional ``[b]`` valid lengths in ``[0, s]``.

  Returns:
    ``(context [b, m], weights [b, s])``.
  """
  check_kind(kind)
  if np.ndim(query) != 2 or np.ndim(keys) != 3 or np.shape(query)[0] != np.shape(keys)[0]:
    raise ValueError(f"attention needs query [b, q] and keys [b, s, m] with the same b; got "
                     f"{np.shape(query)} and {np.shape(keys)}")
  batch, time, _ = keys.shape
  if lengths is None:
    mask = jnp.ones((batch, time), bool)
  else:
    if np.shape(lengths) != (batch,):
      raise ValueError(f"lengths must have shape [b] = [{batch}]; got {np.shape(lengths)}")
    mask = layers.mask_from_lengths(lengths, time)
    # Zeroed before projecting too, or the projection's weight gradient is keys^T 0 = NaN.
    keys = jnp.where(mask[..., None], keys, jnp.zeros_like(keys))
  return attend(kind, params, query, keys, project_keys(kind, params, keys), mask)


# ----------------------------------------------------------------------------- multi-head
# Multi-head scaled dot-product attention (Vaswani et al. 2017) on ``[b, t, heads, dh]`` arrays,
# the layout ``jax.nn.dot_product_attention`` takes, so no transpose sits between the projections
# and the kernel. Masks are bool ``[b, 1, t, s]`` (broadcast over heads), True where a query may
# read a key; :func:`padding_mask`, :func:`causal_mask` and :func:`cache_mask` build them.
IMPLEMENTATIONS = (None, "xla", "cudnn", "explicit")


def padding_mask(lengths: jax.Array, time: int) -> jax.Array:
  """Keys past each row's length are hidden: ``lengths: [b]`` -> ``[b, 1, 1, time]`` bool."""
  return layers.mask_from_lengths(lengths, time)[:, None, None, :]


def causal_mask(time: int) -> jax.Array:
  """Query ``i`` reads keys ``j <= i``: ``[1, 1, time, time]`` bool."""
  return jnp.tril(jnp.ones((time, time), bool))[None, None]


def cache_mask(steps: jax.Array, queries: int, cache_size: int) -> jax.Array:
  """A key/value cache's mask: the query at position ``steps + i`` reads cache slots
  ``j <= steps + i`` (slots beyond hold nothing yet). ``steps: [b]`` -> ``[b, 1, queries, cache]``."""
  positions = jnp.asarray(steps)[:, None] + jnp.arange(queries)[None, :]  # [b, t]
  return (jnp.arange(cache_size)[None, None, :] <= positions[:, :, None])[:, None]


def multi_head_attention(query: jax.Array, keys: jax.Array, values: jax.Array,
                         mask: jax.Array | None = None, *, dropout_rate: float = 0.0,
                         dropout_key=None, return_weights: bool = False,
                         implementation: str | None = None):
  """Scaled dot-product attention, every head at once.

  Args:
    query: ``[b, t, heads, dh]``; keys, values: ``[b, s, heads, dh]``.
    mask: bool, broadcastable to ``[b, heads, t, s]``; True where a query may read a key.
    dropout_rate, dropout_key: dropout on the attention weights (as ``torch.nn.MultiheadAttention``),
      active when the key is given (one key or ``[b]`` per-example keys) and the rate is positive.
    return_weights: also return the weights ``[b, heads, t, s]``.
    implementation: None lets ``jax.nn.dot_product_attention`` choose (cuDNN on GPUs, XLA
      elsewhere); ``"explicit"`` forces the softmax written out here, which the weights and the
      attention dropout need (``dot_product_attention`` has neither) and which it must match.

  Returns:
    ``(outputs [b, t, heads, dh], weights [b, heads, t, s] | None)``. A key the mask hides gets
    exactly zero weight; a query that may read no key at all (a padded query of an empty
    source) gets zero weights and a zero output, never NaN.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {implementation!r}; choose one of "
                     f"{IMPLEMENTATIONS}")
  if np.ndim(query) != 4 or np.ndim(keys) != 4 or np.shape(keys) != np.shape(values):
    raise ValueError(f"multi-head attention needs query [b, t, heads, dh] and keys, values "
                     f"[b, s, heads, dh]; got {np.shape(query)}, {np.shape(keys)}, "
                     f"{np.shape(values)}")
  dropping = dropout_key is not None and dropout_rate > 0.0
  if not (return_weights or dropping or implementation == "explicit"):
    outputs = jax.nn.dot_product_attention(query, keys, values, mask=mask,
                                           implementation=implementation)
    if mask is not None:
      # dot_product_attention averages all values for a query with no key; zero, as below.
      outputs = jnp.where(jnp.any(mask, axis=-1).swapaxes(1, 2)[..., None], outputs, 0.0)
    return outputs, None
  scale = np.shape(query)[-1] ** -0.5
  logits = jnp.einsum("bthd,bshd->bhts", query * scale, keys)
  weights = (jax.nn.softmax(logits, axis=-1) if mask is None
             else masked_softmax(logits, mask).astype(logits.dtype))
  dropped = layers.dropout(dropout_key, weights, dropout_rate) if dropping else weights
  outputs = jnp.einsum("bhts,bshd->bthd", dropped, values)
  return outputs, (weights if return_weights else None)
