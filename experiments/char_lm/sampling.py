"""Text from a trained character model: the prompt read first, then one character at a time.

The prompt's characters but the last run through the model in one call (the state after them);
the last one is the first input of ``seqjax.decoding``'s loop, whose step function is
``rnn_lm.step``. No character ends a sample: ``eos_id`` is ``v``, an id the softmax over ``v``
characters never draws, so every sample has exactly ``length`` characters.

A Transformer (``models.py``) has no state to carry; its step function keeps the last
``max_len`` characters in a window and reads the whole window at every step (the most recent
``max_len`` characters are its context, as in nanoGPT's ``generate``), so a sample may be longer
than the context the model was trained on.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments.char_lm import models
from seqjax import decoding
from seqjax.models import rnn_lm
from seqjax.models import transformer_lm


def window_state(spec, prompt: jax.Array):
  """The Transformer's state before the prompt's last character: ``(window [1, max_len], count
  [1])`` holding the (at most ``max_len``) characters before it."""
  before = prompt[:-1][-spec.max_len:]
  window = jnp.zeros((1, spec.max_len), jnp.int32).at[0, :before.shape[0]].set(before)
  return window, jnp.full((1,), before.shape[0], jnp.int32)


def window_step(params, spec, state, tokens: jax.Array):
  """A ``seqjax.decoding`` step over a sliding window: ``tokens [b]`` join the window (the
  oldest character leaves once it is full) and the log-probabilities of the next character are
  read at their position."""
  window, count = state
  full = count[:, None] >= spec.max_len
  window = jnp.where(full, jnp.roll(window, -1, axis=1), window)
  position = jnp.minimum(count, spec.max_len - 1)
  window = jax.vmap(lambda w, p, t: w.at[p].set(t))(window, position, tokens)
  logits = transformer_lm.lm_forward(params, spec, window)
  logits = jnp.take_along_axis(logits, position[:, None, None], axis=1)[:, 0]
  return (window, count + 1), jax.nn.log_softmax(logits, axis=-1)


@functools.partial(jax.jit, static_argnames=("spec", "length", "temperature", "top_k", "greedy"))
def _generate(params, spec, prompt, key, *, length, temperature, top_k, greedy):
  if models.is_transformer(spec):
    carry = window_state(spec, prompt)
    step_fn = functools.partial(window_step, params, spec)
  else:
    carry = rnn_lm.initial_carry(spec, 1)
    if prompt.shape[0] > 1:
      _, carry = rnn_lm.apply(params, spec, prompt[None, :-1], carry)
    step_fn = functools.partial(rnn_lm.step, params, spec)
  common = dict(max_len=length, bos_id=0, eos_id=models.num_chars(spec), return_attention=False)
  # bos_id is a placeholder: the loop's first input is the prompt's last character, passed in
  # the state below, so a prompt needs no special start token.
  first = prompt[-1:]

  def step_from_prompt(state, tokens):
    carry, started = state
    tokens = jnp.where(started, tokens, first)
    carry, log_probs = step_fn(carry, tokens)
    return (carry, jnp.ones_like(started)), log_probs

  state = (carry, jnp.zeros((1,), bool))
  if greedy:
    out = decoding.greedy(step_from_prompt, state, **common)
  else:
    out = decoding.sample(step_from_prompt, state, key, temperature=temperature, top_k=top_k,
                          **common)
  return out.tokens[0]


def generate(params, spec, prompt: np.ndarray, length: int,
             temperature: float = 1.0, top_k: int = 0, seed: int = 0,
             greedy: bool = False) -> np.ndarray:
  """``length`` character ids following ``prompt`` (``[p]`` ids, ``p >= 1``).

  Args:
    temperature: > 0; below 1 sharpens the distribution, above 1 flattens it.
    top_k: draw from the ``top_k`` most likely characters only (0: all; 1: greedy).
    seed: the sample's key is ``PRNGKey(seed)``: the same seed gives the same text.
    greedy: take the most likely character at every step (no randomness).
  Returns:
    ``[length]`` int32 ids.
  """
  prompt = np.asarray(prompt, np.int32)
  if prompt.ndim != 1 or prompt.size < 1:
    raise ValueError(f"the prompt must have at least one character; got {prompt.size}")
  if length < 1:
    raise ValueError(f"length must be >= 1; got {length}")
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0; got {temperature}")
  if top_k < 0 or top_k > models.num_chars(spec):
    raise ValueError(f"top_k must be in [0, {models.num_chars(spec)}]; got {top_k}")
  tokens = _generate(params, spec, jnp.asarray(prompt), jax.random.PRNGKey(seed), length=length,
                     temperature=float(temperature), top_k=int(top_k), greedy=bool(greedy))
  return np.asarray(tokens)
