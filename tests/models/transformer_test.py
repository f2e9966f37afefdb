"""Transformer: cached decoding vs teacher forcing, masks, decoding, PyTorch layers on copied weights."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import decoding
from seqjax.models import transformer

PAD, BOS, EOS = 0, 1, 2


def _spec(**overrides):
  options = dict(src_vocab=13, tgt_vocab=11, pad_id=PAD, bos_id=BOS, eos_id=EOS, d_model=16,
                 num_heads=4, ffn_size=24, encoder_layers=2, decoder_layers=2, max_len=9)
  return transformer.Spec(**dict(options, **overrides))


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  src = rng.integers(3, 13, size=(3, 7)).astype(np.int32)
  src_lengths = np.array([7, 4, 1], np.int32)
  src[np.arange(7)[None, :] >= src_lengths[:, None]] = PAD
  tgt_in = rng.integers(3, 11, size=(3, 6)).astype(np.int32)
  tgt_in[:, 0] = BOS
  return jnp.asarray(src), jnp.asarray(src_lengths), jnp.asarray(tgt_in)


@functools.partial(jax.jit, static_argnames=("spec",))
def _step_by_step(params, spec, src, src_lengths, tgt_in):
  state = transformer.encode(params, spec, src, src_lengths)
  def body(state, tokens):
    state, logits, weights = transformer.decode_step(params, spec, state, tokens)
    return state, (logits, weights)
  _, (logits, weights) = jax.lax.scan(body, state, tgt_in.T)
  return jnp.swapaxes(logits, 0, 1), jnp.swapaxes(weights, 0, 1)


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(norm="pre", activation="gelu", positions="sinusoidal", share_embeddings=True,
         src_vocab=11, tie_output=True),
])
def test_cached_decoding_gives_the_teacher_forced_logits_at_every_step(overrides):
  # Given: a random model and a padded batch.
  spec = _spec(**overrides)
  params = transformer.init(jax.random.key(0), spec)
  src, src_lengths, tgt_in = _batch()
  # When: decoding one token at a time through the cache, and all at once.
  logits, weights = _step_by_step(params, spec, src, src_lengths, tgt_in)
  full_logits, full_weights = jax.jit(transformer.forward, static_argnums=1)(
      params, spec, src, src_lengths, tgt_in)
  # Then: the same logits and cross-attention at every step.
  np.testing.assert_allclose(logits, full_logits, atol=1e-5, rtol=0)
  np.testing.assert_allclose(weights, full_weights, atol=1e-6, rtol=0)
