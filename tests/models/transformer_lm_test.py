"""Decoder-only Transformer: cached generation gives the full forward's logits; causality."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.models import transformer_lm

V, B, T = 11, 2, 7


@functools.partial(jax.jit, static_argnames=("spec",))
def _cached_and_full(params, spec, tokens):
  def body(state, column):
    return transformer_lm.lm_step(params, spec, state, column)
  _, logits = jax.lax.scan(body, transformer_lm.lm_start(params, spec, tokens.shape[0]), tokens.T)
  return jnp.swapaxes(logits, 0, 1), transformer_lm.lm_forward(params, spec, tokens)


@pytest.mark.parametrize("options", [
    dict(num_layers=2),
    dict(num_layers=1, norm="post", activation="relu", positions="sinusoidal", tie_output=False),
])
def test_cached_steps_give_the_full_forward_logits_and_the_future_is_unread(options):
  spec = transformer_lm.LMSpec(vocab=V, d_model=16, num_heads=4, ffn_size=32, max_len=8,
                               **options)
  params = jax.jit(transformer_lm.init_lm, static_argnums=1)(jax.random.key(0), spec)
  tokens = np.random.default_rng(0).integers(0, V, size=(B, T)).astype(np.int32)
  cached, full = _cached_and_full(params, spec, tokens)
  assert np.isfinite(full).all()
  np.testing.assert_allclose(cached, full, atol=1e-5, rtol=0)
  # Changing tokens from position 4 on leaves the logits of positions 0..3 alone.
  later = tokens.copy()
  later[:, 4:] = (later[:, 4:] + 1) % V
  _, full_later = _cached_and_full(params, spec, later)
  np.testing.assert_allclose(full_later[:, :4], full[:, :4], atol=1e-6, rtol=0)
  assert np.abs(full_later[:, 4] - full[:, 4]).max() > 1e-3


def test_lm_bad_input_is_a_one_line_error():
  with pytest.raises(ValueError, match="d_model=30 is not divisible by num_heads=8"):
    transformer_lm.LMSpec(vocab=V, d_model=30)
  spec = transformer_lm.LMSpec(vocab=V, d_model=8, num_heads=2, ffn_size=8, num_layers=1,
                               max_len=4)
  with pytest.raises(ValueError, match="sequence length 5 exceeds max_len=4"):
    transformer_lm.lm_forward({}, spec, np.zeros((1, 5), np.int32))
  with pytest.raises(ValueError, match="decoding position 4 is beyond max_len=4"):
    transformer_lm.lm_step({}, spec, {"step": np.array([4])}, np.zeros((1,), np.int32))
