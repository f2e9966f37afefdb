"""A linear-chain conditional random field over the per-token scores of any tagger.

Shapes use the glossary in ``seqjax/__init__.py``, plus ``k``: the number of tags. A tagger
produces emission scores ``[b, t, k]`` (unnormalised, one row per token); the CRF adds a score
for every tag bigram (``transitions[i, j]``: tag ``i`` followed by tag ``j``) and for the first
and last tag of each sentence, and normalises over every tag sequence of each sentence's length:

  score(y) = start[y_0] + sum_i emissions[i, y_i] + sum_{i>0} transitions[y_{i-1}, y_i] + end[y_{n-1}]
  log p(y | x) = score(y) - log Z,   log Z = logsumexp over all k**n sequences of score

The forward algorithm computes ``log Z`` in ``O(t k^2)`` with one ``lax.scan``; Viterbi decoding
finds the best sequence the same way with max in place of logsumexp. Both honour ``lengths``:
positions at or past an example's length are never read, a length-0 sentence has ``log Z = 0``
and score 0. Everything is a pure function of a params dict from :func:`init`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import checks

Params = dict


def init(key, num_tags: int, dtype=jnp.float32, scale: float = 0.0) -> Params:
  """``{'transitions': [k, k], 'start': [k], 'end': [k]}``.

  Zeros by default (``scale=0``): the first gradient steps then see the softmax tagger's
  loss plus a partition term, and nothing favours a transition the data has not shown.
  ``scale > 0`` draws uniform values in ``[-scale, scale]``.
  """
  if num_tags < 1:
    raise ValueError(f"num_tags must be >= 1; got {num_tags}")
  k_t, k_s, k_e = jax.random.split(key, 3)
  def draw(k, shape):
    if scale == 0.0:
      return jnp.zeros(shape, dtype)
    return jax.random.uniform(k, shape, dtype, -scale, scale)
  return {"transitions": draw(k_t, (num_tags, num_tags)), "start": draw(k_s, (num_tags,)),
          "end": draw(k_e, (num_tags,))}


def _check(params: Params, emissions, lengths) -> tuple[int, int, int]:
  if np.ndim(emissions) != 3:
    raise ValueError(f"emissions must be [batch, time, tags]; got shape {np.shape(emissions)}")
  b, t, k = np.shape(emissions)
  if np.shape(params["transitions"]) != (k, k):
    raise ValueError(f"emissions have {k} tags but the CRF transitions are "
                     f"{np.shape(params['transitions'])}")
  checks.check_lengths(lengths, b, t)
  return b, t, k


def _valid(lengths, t: int) -> jax.Array:
  return jnp.arange(t)[None, :] < jnp.asarray(lengths, jnp.int32)[:, None]  # [b, t]


def log_partition(params: Params, emissions: jax.Array, lengths) -> jax.Array:
  """The forward algorithm: ``log Z`` of each sentence.

  Args:
    params: from :func:`init`.
    emissions: ``[b, t, k]`` scores.
    lengths: ``[b]`` int valid lengths in ``[0, t]``.

  Returns:
    ``[b]`` float; 0 where the length is 0.
  """
  b, t, k = _check(params, emissions, lengths)
  emissions = jnp.asarray(emissions)
  valid = _valid(lengths, t)
  trans = params["transitions"].astype(emissions.dtype)
  alpha0 = params["start"].astype(emissions.dtype)[None, :] + emissions[:, 0]  # [b, k]

  def step(alpha, inputs):
    e_i, valid_i = inputs  # [b, k], [b]
    # alpha'[j] = logsumexp_i(alpha[i] + trans[i, j]) + e[j], in log space for stability.
    new = jax.nn.logsumexp(alpha[:, :, None] + trans[None], axis=1) + e_i
    return jnp.where(valid_i[:, None], new, alpha), None

  if t > 1:
    alpha, _ = jax.lax.scan(step, alpha0, (jnp.swapaxes(emissions[:, 1:], 0, 1), valid[:, 1:].T))
  else:
    alpha = alpha0
  log_z = jax.nn.logsumexp(alpha + params["end"].astype(emissions.dtype)[None, :], axis=-1)
  return jnp.where(valid[:, 0], log_z, 0.0)


def sequence_score(params: Params, emissions: jax.Array, tags, lengths) -> jax.Array:
  """``score(y)`` of the given tag sequences.

  Args:
    emissions: ``[b, t, k]``.
    tags: ``[b, t]`` int in ``[0, k)`` on valid positions (any value past the length).
    lengths: ``[b]`` int.

  Returns:
    ``[b]`` float; 0 where the length is 0.
  """
  b, t, k = _check(params, emissions, lengths)
  if np.shape(tags) != (b, t):
    raise ValueError(f"tags must be [batch, time] = {[b, t]}; got shape {np.shape(tags)}")
  emissions = jnp.asarray(emissions)
  lengths = jnp.asarray(lengths, jnp.int32)
  valid = _valid(lengths, t)
  # Padded positions may hold any value (e.g. -1); clamp so the gathers stay in range.
  tags = jnp.clip(jnp.asarray(tags, jnp.int32), 0, k - 1)
  emit = jnp.take_along_axis(emissions, tags[..., None], axis=-1)[..., 0]  # [b, t]
  total = jnp.sum(jnp.where(valid, emit, 0.0), axis=1)
  trans = params["transitions"][tags[:, :-1], tags[:, 1:]]  # [b, t-1]
  total += jnp.sum(jnp.where(valid[:, 1:], trans, 0.0), axis=1)
  last = jnp.take_along_axis(tags, jnp.maximum(lengths - 1, 0)[:, None], axis=1)[:, 0]
  total += params["start"][tags[:, 0]] + params["end"][last]
  return jnp.where(lengths > 0, total, 0.0)


def nll(params: Params, emissions: jax.Array, tags, lengths) -> jax.Array:
  """Negative log-likelihood ``log Z - score(tags)`` of each sentence: ``[b]`` (0 at length 0).

  Shapes as in :func:`sequence_score`; sum or average it over the batch for a loss.
  """
  return log_partition(params, emissions, lengths) - sequence_score(params, emissions, tags,
                                                                    lengths)


def viterbi(params: Params, emissions: jax.Array, lengths, pad_tag: int = -1):
  """The highest-scoring tag sequence of each sentence.

  Args:
    params: from :func:`init`.
    emissions: ``[b, t, k]``.
    lengths: ``[b]`` int valid lengths.
    pad_tag: the value written at padded positions (and everywhere in a length-0 row).

  Returns:
    ``(tags, scores)``: ``tags: [b, t]`` int32 and ``scores: [b]`` their ``score(y)`` (0 at
    length 0). Ties go to the lowest tag index.
  """
  b, t, k = _check(params, emissions, lengths)
  emissions = jnp.asarray(emissions)
  valid = _valid(lengths, t)
  trans = params["transitions"].astype(emissions.dtype)
  delta0 = params["start"].astype(emissions.dtype)[None, :] + emissions[:, 0]  # [b, k]
  stay = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (b, k))

  def forward(delta, inputs):
    e_i, valid_i = inputs
    cand = delta[:, :, None] + trans[None]  # [b, k_prev, k]
    best_prev = jnp.argmax(cand, axis=1).astype(jnp.int32)  # [b, k]
    new = jnp.max(cand, axis=1) + e_i
    # Past the length the scores freeze and each tag points to itself, so backtracking from the
    # last position walks unchanged back to the sentence's own last tag.
    return (jnp.where(valid_i[:, None], new, delta),
            jnp.where(valid_i[:, None], best_prev, stay))

  if t > 1:
    delta, pointers = jax.lax.scan(forward, delta0,
                                   (jnp.swapaxes(emissions[:, 1:], 0, 1), valid[:, 1:].T))
  else:
    delta, pointers = delta0, jnp.zeros((0, b, k), jnp.int32)
  final = delta + params["end"].astype(emissions.dtype)[None, :]
  last_tag = jnp.argmax(final, axis=-1).astype(jnp.int32)  # [b]
  best = jnp.max(final, axis=-1)

  def backward(tag, pointers_i):  # pointers_i: [b, k], the pointers into step i - 1
    prev = jnp.take_along_axis(pointers_i, tag[:, None], axis=1)[:, 0]
    return prev, tag

  first_tag, later = jax.lax.scan(backward, last_tag, pointers, reverse=True)  # later: [t-1, b]
  tags = jnp.concatenate([first_tag[:, None], jnp.swapaxes(later, 0, 1)], axis=1)
  tags = jnp.where(valid, tags, jnp.int32(pad_tag))
  return tags, jnp.where(valid[:, 0], best, 0.0)
