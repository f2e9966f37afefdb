"""Embeddings, dense heads and the masked loss against NumPy written out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import layers

B, T, V, E = 3, 5, 7, 4
TOKENS = np.array([[0, 6, 2, 2, 1], [3, 3, 5, 0, 0], [6, 1, 0, 0, 0]], np.int32)
LENGTHS = np.array([5, 3, 1])


def _log_softmax_np(x):
  x = np.asarray(x, np.float64)
  shifted = x - x.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_embed_gathers_table_rows():
  params = layers.init_embedding(jax.random.key(0), V, E)
  table = np.asarray(params["embedding"])
  assert table.shape == (V, E)
  out = layers.embed(params, TOKENS)
  expected = np.stack([[table[tok] for tok in row] for row in TOKENS])
  np.testing.assert_array_equal(out, expected)


def test_embedding_init_has_unit_variance():
  table = layers.init_embedding(jax.random.key(0), 500, 16)["embedding"]
  assert abs(float(jnp.std(table)) - 1.0) < 0.05
  assert abs(float(jnp.mean(table))) < 0.05


def test_embed_under_jit_and_vmap_matches_eager():
  params = layers.init_embedding(jax.random.key(0), V, E)
  eager = layers.embed(params, TOKENS)
  np.testing.assert_array_equal(jax.jit(layers.embed)(params, TOKENS), eager)
  batches = np.stack([TOKENS, TOKENS[::-1]])
  mapped = jax.vmap(layers.embed, in_axes=(None, 0))(params, batches)
  np.testing.assert_array_equal(mapped[0], eager)
  np.testing.assert_array_equal(mapped[1], layers.embed(params, TOKENS[::-1]))


def test_out_of_range_token_ids_are_rejected_eagerly_and_poisoned_under_jit():
  params = layers.init_embedding(jax.random.key(0), V, E)
  bad = TOKENS.copy()
  bad[0, 1], bad[2, 0] = V, -1
  with pytest.raises(ValueError, match=r"tokens must lie in \[0, 7\).*\[-1, 7\]"):
    layers.embed(params, bad)
  # Under jit the values are unknown at trace time: the bad rows come out NaN, the rest intact.
  out = np.asarray(jax.jit(layers.embed)(params, bad))
  assert np.isnan(out[0, 1]).all() and np.isnan(out[2, 0]).all()
  good = np.ones(bad.shape, bool)
  good[0, 1] = good[2, 0] = False
  np.testing.assert_array_equal(out[good], np.asarray(layers.embed(params, TOKENS))[good])


def test_embed_rejects_float_tokens():
  params = layers.init_embedding(jax.random.key(0), V, E)
  with pytest.raises(TypeError, match="tokens must be integer ids; got dtype float32"):
    layers.embed(params, TOKENS.astype(np.float32))


def test_dense_and_log_softmax_match_numpy():
  params = layers.init_dense(jax.random.key(1), E, V)
  xs = jax.random.normal(jax.random.key(2), (B, T, E))
  w, b = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
  expected = np.asarray(xs, np.float64) @ w + b
  np.testing.assert_allclose(layers.dense(params, xs), expected, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(layers.dense_log_softmax(params, xs), _log_softmax_np(expected),
                             atol=1e-5, rtol=1e-5)
  # Uniform(-1/sqrt(d), 1/sqrt(d)) init, as torch.nn.Linear.
  assert float(jnp.max(jnp.abs(params["w"]))) <= E ** -0.5
  no_bias = layers.init_dense(jax.random.key(1), E, V, use_bias=False)
  assert set(no_bias) == {"w"}
  np.testing.assert_allclose(layers.dense(no_bias, xs), np.asarray(xs, np.float64)
                             @ np.asarray(no_bias["w"], np.float64), atol=1e-5, rtol=1e-5)


def test_dense_with_bf16_weights_gives_float32_logits():
  params = layers.init_dense(jax.random.key(1), E, V)
  xs = jax.random.normal(jax.random.key(2), (B, T, E))
  params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
  out = layers.dense(params16, xs.astype(jnp.bfloat16))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, layers.dense(params, xs), atol=3e-2)


def test_dense_rejects_feature_mismatch():
  params = layers.init_dense(jax.random.key(1), E, V)
  with pytest.raises(ValueError, match=r"dense input has \(3,\) features.*expects 4"):
    layers.dense(params, jnp.ones((B, 3)))


def _cross_entropy_loop(logits, targets, lengths):
  """Mean negative log-likelihood over each row's first ``lengths[n]`` tokens."""
  logp = _log_softmax_np(logits)
  total, count = 0.0, 0
  for n, length in enumerate(lengths):
    for step in range(length):
      total -= logp[n, step, targets[n, step]]
      count += 1
  return total / max(count, 1)


def test_masked_cross_entropy_matches_a_python_loop():
  logits = 3.0 * jax.random.normal(jax.random.key(3), (B, T, V))
  expected = _cross_entropy_loop(logits, TOKENS, LENGTHS)
  by_lengths = layers.masked_cross_entropy(logits, TOKENS, lengths=LENGTHS)
  mask = np.arange(T)[None] < LENGTHS[:, None]
  by_mask = layers.masked_cross_entropy(logits, TOKENS, mask=mask)
  np.testing.assert_allclose(by_lengths, expected, rtol=1e-5)
  np.testing.assert_allclose(by_mask, expected, rtol=1e-5)
  everything = layers.masked_cross_entropy(logits, TOKENS)
  np.testing.assert_allclose(everything, _cross_entropy_loop(logits, TOKENS, [T] * B), rtol=1e-5)
  assert abs(float(everything) - float(by_lengths)) > 1e-3


def test_masked_cross_entropy_ignores_padded_logits_and_targets():
  logits = jax.random.normal(jax.random.key(3), (B, T, V))
  mask = np.arange(T)[None] < LENGTHS[:, None]
  noisy = jnp.where(mask[..., None], logits, 1e4)
  padded_targets = np.where(mask, TOKENS, -100)  # torch-style ignore ids where masked out
  clean = layers.masked_cross_entropy(logits, TOKENS, lengths=LENGTHS)
  np.testing.assert_allclose(
      layers.masked_cross_entropy(noisy, padded_targets, lengths=LENGTHS), clean, rtol=1e-6)
  # Gradients never reach padded positions.
  grads = jax.grad(lambda z: layers.masked_cross_entropy(z, TOKENS, lengths=LENGTHS))(logits)
  np.testing.assert_array_equal(np.asarray(grads)[~mask], 0.0)
  assert np.abs(np.asarray(grads)[mask]).sum() > 0


def test_masked_cross_entropy_under_jit_and_with_no_valid_tokens():
  logits = jax.random.normal(jax.random.key(3), (B, T, V))
  eager = layers.masked_cross_entropy(logits, TOKENS, lengths=LENGTHS)
  jitted = jax.jit(lambda z, y, n: layers.masked_cross_entropy(z, y, lengths=n))(
      logits, TOKENS, jnp.asarray(LENGTHS))
  np.testing.assert_allclose(jitted, eager, rtol=1e-6)
  empty = layers.masked_cross_entropy(logits, TOKENS, lengths=np.zeros(B, np.int32))
  assert float(empty) == 0.0


@pytest.mark.parametrize("kwargs,error,message", [
    ({"logits": np.zeros((B, V))}, ValueError, r"logits must be \[batch, time, vocab\]"),
    ({"targets": TOKENS[:, :3]}, ValueError, r"targets must be \[batch, time\] = \[3, 5\]"),
    ({"targets": np.where(TOKENS == 6, 9, TOKENS)}, ValueError,
     r"targets must lie in \[0, 7\).*\[9\]"),
    ({"targets": TOKENS.astype(np.float32)}, TypeError, r"targets must be integer ids"),
    ({"lengths": np.array([5, 3, 6])}, ValueError, r"lengths must lie in \[0, 5\]"),
    ({"lengths": np.array([5, 3])}, ValueError, r"lengths must have shape \[batch\] = \[3\]"),
    ({"mask": np.ones((B, T - 1), bool)}, ValueError, r"mask must be \[batch, time\]"),
    ({"lengths": LENGTHS, "mask": np.ones((B, T), bool)}, ValueError,
     "give lengths or mask, not both"),
], ids=["logits-rank", "targets-shape", "target-out-of-range", "float-targets", "long-length",
        "lengths-shape", "mask-shape", "lengths-and-mask"])
def test_masked_cross_entropy_bad_input(kwargs, error, message):
  args = {"logits": np.zeros((B, T, V), np.float32), "targets": TOKENS, **kwargs}
  with pytest.raises(error, match=message):
    layers.masked_cross_entropy(**args)


def test_mask_from_lengths():
  np.testing.assert_array_equal(layers.mask_from_lengths(LENGTHS, T),
                                np.arange(T)[None] < LENGTHS[:, None])
  with pytest.raises(ValueError, match=r"lengths must have shape \[batch\]"):
    layers.mask_from_lengths(3, T)


def test_masked_cross_entropy_with_fractional_weights_is_a_weighted_mean():
  logits = jax.random.normal(jax.random.key(3), (B, T, V))
  weights = np.zeros((B, T), np.float32)
  weights[0, 0], weights[1, 2] = 0.25, 0.5
  nll = -_log_softmax_np(logits)[np.arange(B)[:, None], np.arange(T)[None], TOKENS]
  expected = (weights * nll).sum() / weights.sum()
  np.testing.assert_allclose(layers.masked_cross_entropy(logits, TOKENS, mask=weights), expected,
                             rtol=1e-5)
