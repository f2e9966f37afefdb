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
