"""Autoregressive decoding shared by every decoder: greedy, beam search and sampling.

Shapes as in the glossary of ``seqjax/__init__.py``: ``n`` is the beam width, ``t`` the output
time (``max_len``), ``s`` the source time of the attention a model returns.

A model plugs in through one pure function and one pytree:

* ``step_fn(state, tokens) -> (state, log_probs)`` or ``(state, log_probs, attention)``:
  ``tokens: [b] int32`` are the previous outputs (``bos_id`` at the first step),
  ``log_probs: [b, v]`` the model's next-token log-probabilities and ``attention: [b, s]`` the
  weights it used (optional; kept for plotting).
* ``state``: any pytree whose every leaf has the batch as its leading axis (decoder carries, the
  encoder outputs and their mask, a step counter, ...). Beam search repeats it ``n`` times along
  that axis and gathers it when beams are reordered.

The loops are ``jax.lax.while_loop`` s that stop as soon as every sentence has ended, and every
function is jitted with ``step_fn`` static: call them inside your own ``jax.jit`` with a
``step_fn`` that closes over traced parameters (``functools.partial(decode_step, params)``), or pass
a long-lived ``step_fn`` object so that repeated calls hit the compilation cache.

Outputs hold the generated tokens only (not ``bos``), end with ``eos_id`` when the model ended the
sentence, and are ``pad_id`` after it; ``lengths`` count the ``eos``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

StepFn = Callable[[Any, jax.Array], tuple]


class DecodeResult(NamedTuple):
  """Greedy or sampled outputs.

  Attributes:
    tokens: ``[b, t]`` int32, ``pad_id`` after the ``eos``.
    lengths: ``[b]`` int32, generated tokens including the ``eos``.
    log_probs: ``[b]`` float32, the model's log-probability of ``tokens`` (untempered).
    attention: ``[b, t, s]`` weights at each output step (zeros after the end), or None.
  """
  tokens: jax.Array
  lengths: jax.Array
  log_probs: jax.Array
  attention: jax.Array | None


class BeamResult(NamedTuple):
  """Beam-search outputs, best hypothesis first along axis 1.

  Attributes:
    tokens: ``[b, n, t]`` int32.
    lengths: ``[b, n]`` int32 including the ``eos``.
    scores: ``[b, n]`` length-normalised scores ``log_probs / ((5 + lengths) / 6) ** alpha``.
    log_probs: ``[b, n]`` unnormalised log-probabilities.
    attention: ``[b, n, t, s]`` or None.
  """
  tokens: jax.Array
  lengths: jax.Array
  scores: jax.Array
  log_probs: jax.Array
  attention: jax.Array | None


def length_penalty(length, alpha: float):
  """GNMT length penalty (Wu et al. 2016): ``((5 + length) / 6) ** alpha``."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def _batch_size(state) -> int:
  leaves = jax.tree.leaves(state)
  if not leaves:
    raise ValueError("the decoding state must have at least one array leaf with a batch axis")
  sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
  if len(sizes) != 1 or None in sizes:
    raise ValueError("every leaf of the decoding state must have the same leading batch axis; "
                     f"got leading sizes {jax.tree.map(lambda x: np.shape(x)[:1], state)}")
  return sizes.pop()


def _call(step_fn: StepFn, state, tokens):
  out = step_fn(state, tokens)
  if not isinstance(out, tuple) or len(out) not in (2, 3):
    raise ValueError("step_fn must return (state, log_probs) or (state, log_probs, attention)")
  return out if len(out) == 3 else (out[0], out[1], None)


def _check_common(max_len, bos_id, eos_id, pad_id):
  for name, value in (("max_len", max_len), ("bos_id", bos_id), ("eos_id", eos_id),
                      ("pad_id", pad_id)):
    if not isinstance(value, (int, np.integer)) or value < 0:
      raise ValueError(f"{name} must be a non-negative int; got {value!r}")
  if max_len < 1:
    raise ValueError(f"max_len must be >= 1; got {max_len}")


def _attention_shape(step_fn, state, batch):
  shapes = jax.eval_shape(lambda s, t: _call(step_fn, s, t), state,
                          jax.ShapeDtypeStruct((batch,), jnp.int32))
  return None if shapes[2] is None else shapes[2].shape[1:]


def _decode(step_fn, state, choose, *, max_len, bos_id, eos_id, pad_id, return_attention):
  """One token at a time; ``choose(i, log_probs) -> tokens [b]`` picks each output."""
  batch = _batch_size(state)
  attn_shape = _attention_shape(step_fn, state, batch) if return_attention else None
  carry = {
      "i": jnp.int32(0),
      "state": state,
      "last": jnp.full((batch,), bos_id, jnp.int32),
      "tokens": jnp.full((batch, max_len), pad_id, jnp.int32),
      "lengths": jnp.zeros((batch,), jnp.int32),
      "log_probs": jnp.zeros((batch,), jnp.float32),
      "done": jnp.zeros((batch,), bool),
  }
  if attn_shape is not None:
    carry["attention"] = jnp.zeros((batch, max_len) + attn_shape, jnp.float32)

  def cond(c):
    return (c["i"] < max_len) & ~jnp.all(c["done"])

  def body(c):
    i, done = c["i"], c["done"]
    state, log_probs, attn = _call(step_fn, c["state"], c["last"])
    log_probs = log_probs.astype(jnp.float32)
    token = jnp.where(done, pad_id, choose(i, log_probs).astype(jnp.int32))
    picked = jnp.take_along_axis(log_probs, token[:, None], axis=1)[:, 0]
    new = dict(c, i=i + 1, state=state, last=token,
               tokens=c["tokens"].at[:, i].set(token),
               lengths=c["lengths"] + (~done).astype(jnp.int32),
               log_probs=c["log_probs"] + jnp.where(done, 0.0, picked),
               done=done | (token == eos_id))
    if "attention" in c:
      live = (~done).reshape((-1,) + (1,) * (attn.ndim - 1))
      new["attention"] = c["attention"].at[:, i].set(jnp.where(live, attn, 0.0))
    return new

  out = jax.lax.while_loop(cond, body, carry)
  return DecodeResult(out["tokens"], out["lengths"], out["log_probs"], out.get("attention"))


@functools.partial(jax.jit, static_argnames=("step_fn", "max_len", "bos_id", "eos_id", "pad_id",
                                             "return_attention"))
def greedy(step_fn: StepFn, state, *, max_len: int, bos_id: int, eos_id: int, pad_id: int = 0,
           return_attention: bool = True) -> DecodeResult:
  """Picks the most likely token at every step until ``eos`` or ``max_len``.

  Args:
    step_fn: see the module docstring.
    state: initial decoding state, leaves ``[b, ...]``.
    max_len: most tokens generated per sentence (``t``).
    bos_id, eos_id, pad_id: special token ids.
    return_attention: keep the attention weights (if ``step_fn`` returns them).

  Returns:
    A :class:`DecodeResult`.
  """
  _check_common(max_len, bos_id, eos_id, pad_id)
  return _decode(step_fn, state, lambda i, lp: jnp.argmax(lp, axis=-1), max_len=max_len,
                 bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, return_attention=return_attention)


@functools.partial(jax.jit, static_argnames=("step_fn", "max_len", "bos_id", "eos_id", "pad_id",
                                             "temperature", "top_k", "return_attention"))
def sample(step_fn: StepFn, state, key: jax.Array, *, max_len: int, bos_id: int, eos_id: int,
           pad_id: int = 0, temperature: float = 1.0, top_k: int = 0,
           return_attention: bool = True) -> DecodeResult:
  """Draws each token from ``softmax(log_probs / temperature)`` restricted to the ``top_k`` best.

  Args:
    key: PRNG key; step ``i`` uses ``fold_in(key, i)``, so results do not depend on the batch.
    temperature: > 0; below 1 sharpens the distribution, above 1 flattens it.
    top_k: keep only the ``top_k`` most likely tokens (0 keeps all; 1 is greedy).
    Other arguments as in :func:`greedy`.

  Returns:
    A :class:`DecodeResult` whose ``log_probs`` are the model's, not the tempered ones.
  """
  _check_common(max_len, bos_id, eos_id, pad_id)
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0; got {temperature}")
  if not isinstance(top_k, int) or top_k < 0:
    raise ValueError(f"top_k must be a non-negative int (0 = no cut); got {top_k!r}")

  def choose(i, log_probs):
    logits = log_probs / temperature
    if top_k:
      cutoff = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][:, -1:]
      logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return jax.random.categorical(jax.random.fold_in(key, i), logits, axis=-1)

  return _decode(step_fn, state, choose, max_len=max_len, bos_id=bos_id, eos_id=eos_id,
                 pad_id=pad_id, return_attention=return_attention)


def _gather_beams(x, index):
  """``x: [b, candidates, ...]``, ``index: [b, picked]`` -> ``[b, picked, ...]``."""
  return jax.vmap(lambda row, idx: row[idx])(x, index)


def beam_search(step_fn: StepFn, state, *, beam_size: int, max_len: int, bos_id: int,
                eos_id: int, pad_id: int = 0, alpha: float = 0.0,
                return_attention: bool = True) -> BeamResult:
  """Beam search with the GNMT length penalty.

  Each step extends the ``n`` alive beams of every sentence by every token and keeps the ``2n``
  best candidates. A candidate ending in ``eos`` that ranks within the first ``n`` becomes a
  finished hypothesis, scored ``log_prob / ((5 + length) / 6) ** alpha`` with the length counting
  its ``eos``; the ``n`` best candidates that do not end continue as the alive beams. A sentence
  is over once it holds ``n`` finished hypotheses (every beam has ended); the loop stops when all
  sentences are over or after ``max_len`` tokens, when unfinished beams are scored as they stand.
  With ``beam_size=1`` this is exactly :func:`greedy`.

  Args:
    step_fn: see the module docstring.
    state: initial decoding state for ``b`` sentences (leaves ``[b, ...]``); it is repeated to
      ``[b * n, ...]``, beam ``j`` of sentence ``i`` in row ``i * n + j``.
    beam_size: ``n``.
    alpha: length-penalty exponent (0 disables it; larger favours longer outputs); traced, so a
      sweep over alphas compiles once.
    Other arguments as in :func:`greedy`.

  Returns:
    A :class:`BeamResult` with the ``n`` finished hypotheses of every sentence, best first.
  """
  _check_common(max_len, bos_id, eos_id, pad_id)
  if not isinstance(beam_size, int) or beam_size < 1:
    raise ValueError(f"beam_size must be a positive int; got {beam_size!r}")
  if isinstance(alpha, (int, float, np.floating)) and not alpha >= 0:
    raise ValueError(f"alpha must be >= 0; got {alpha}")
  return _beam_search(step_fn, state, jnp.asarray(alpha, jnp.float32), beam_size=beam_size,
                      max_len=max_len, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id,
                      return_attention=return_attention)


@functools.partial(jax.jit, static_argnames=("step_fn", "beam_size", "max_len", "bos_id",
                                             "eos_id", "pad_id", "return_attention"))
def _beam_search(step_fn, state, alpha, *, beam_size, max_len, bos_id, eos_id, pad_id,
                 return_attention):
  n = beam_size
  batch = _batch_size(state)
  state = jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), state)
  attn_shape = _attention_shape(step_fn, state, batch * n) if return_attention else None
  neg_inf = jnp.float32(-jnp.inf)
  carry = {
      "i": jnp.int32(0),
      "state": state,
      "last": jnp.full((batch * n,), bos_id, jnp.int32),
      "done": jnp.zeros((batch,), bool),
      # Only beam 0 is live at the start, so the n copies of bos do not fill the beam with
      # duplicates.
      "alive_lp": jnp.full((batch, n), neg_inf).at[:, 0].set(0.0),
      "alive_tokens": jnp.full((batch, n, max_len), pad_id, jnp.int32),
      "fin_scores": jnp.full((batch, n), neg_inf),
      "fin_lp": jnp.full((batch, n), neg_inf),
      "fin_lengths": jnp.zeros((batch, n), jnp.int32),
      "fin_tokens": jnp.full((batch, n, max_len), pad_id, jnp.int32),
  }
  if attn_shape is not None:
    zeros = jnp.zeros((batch, n, max_len) + attn_shape, jnp.float32)
    carry["alive_attn"], carry["fin_attn"] = zeros, zeros

  def cond(c):
    return (c["i"] < max_len) & ~jnp.all(c["done"])

  def body(c):
    i = c["i"]
    state, log_probs, attn = _call(step_fn, c["state"], c["last"])
    vocab = log_probs.shape[-1]
    total = c["alive_lp"][:, :, None] + log_probs.astype(jnp.float32).reshape(batch, n, vocab)
    top_lp, top_index = jax.lax.top_k(total.reshape(batch, n * vocab), 2 * n)  # [b, 2n]
    origin, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
    cand_tokens = _gather_beams(c["alive_tokens"], origin).at[:, :, i].set(token)
    if attn_shape is not None:
      step_attn = attn.astype(jnp.float32).reshape((batch, n) + attn_shape)
      cand_attn = _gather_beams(c["alive_attn"], origin)
      cand_attn = cand_attn.at[:, :, i].set(_gather_beams(step_attn, origin))

    # Finished hypotheses: eos candidates ranked within the first n, merged with the old ones.
    is_eos = token == eos_id
    ends = is_eos & (jnp.arange(2 * n) < n)[None, :] & ~c["done"][:, None] & (top_lp > neg_inf)
    new_scores = jnp.where(ends, top_lp / length_penalty(i + 1, alpha), neg_inf)
    all_scores = jnp.concatenate([c["fin_scores"], new_scores], axis=1)  # [b, 3n]
    fin_scores, keep = jax.lax.top_k(all_scores, n)
    merge = lambda old, new: _gather_beams(jnp.concatenate([old, new], axis=1), keep)
    new = dict(c, i=i + 1, fin_scores=fin_scores,
               fin_lp=merge(c["fin_lp"], top_lp),
               fin_lengths=merge(c["fin_lengths"], jnp.full((batch, 2 * n), i + 1, jnp.int32)),
               fin_tokens=merge(c["fin_tokens"], cand_tokens))
    if attn_shape is not None:
      new["fin_attn"] = merge(c["fin_attn"], cand_attn)

    # Alive beams: the n best candidates that did not end.
    alive_lp, pick = jax.lax.top_k(jnp.where(is_eos, neg_inf, top_lp), n)  # [b, n]
    new["alive_lp"] = alive_lp
    new["alive_tokens"] = _gather_beams(cand_tokens, pick)
    if attn_shape is not None:
      new["alive_attn"] = _gather_beams(cand_attn, pick)
    rows = (jnp.arange(batch)[:, None] * n + jnp.take_along_axis(origin, pick, axis=1)).reshape(-1)
    new["state"] = jax.tree.map(lambda x: x[rows], state)
    new["last"] = jnp.take_along_axis(token, pick, axis=1).reshape(-1)
    new["done"] = c["done"] | (jnp.sum(fin_scores > neg_inf, axis=1) >= n)
    return new

  c = jax.lax.while_loop(cond, body, carry)

  # Sentences cut off by max_len: their alive beams compete with what has finished.
  open_scores = jnp.where(c["done"][:, None], neg_inf,
                          c["alive_lp"] / length_penalty(c["i"], alpha))
  scores, keep = jax.lax.top_k(jnp.concatenate([c["fin_scores"], open_scores], axis=1), n)
  merge = lambda old, new: _gather_beams(jnp.concatenate([old, new], axis=1), keep)
  attention = None
  if attn_shape is not None:
    attention = merge(c["fin_attn"], c["alive_attn"])
  return BeamResult(tokens=merge(c["fin_tokens"], c["alive_tokens"]),
                    lengths=merge(c["fin_lengths"], jnp.full((batch, n), c["i"], jnp.int32)),
                    scores=scores, log_probs=merge(c["fin_lp"], c["alive_lp"]),
                    attention=attention)
