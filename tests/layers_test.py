"""Embeddings, dense heads, dropout, the length mask and the cross-entropy against NumPy by hand."""

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


@pytest.mark.parametrize("label_smoothing,soft", [(0.0, False), (0.1, False), (0.0, True)])
def test_masked_cross_entropy_ignores_padded_logits_and_targets(label_smoothing, soft):
  # Given logits with NaN, +inf, -inf and 1e4 at padded positions (what a model computes from
  # padding can be anything) and torch-style ignore ids, or NaN probabilities, there.
  logits = jax.random.normal(jax.random.key(3), (B, T, V))
  mask = np.arange(T)[None] < LENGTHS[:, None]
  fills = jnp.asarray([jnp.nan, jnp.inf, -jnp.inf, 1e4])
  noisy = jnp.where(mask[..., None], logits, fills[jnp.arange(logits.size).reshape(
      logits.shape) % 4])
  padded_targets = np.where(mask, TOKENS, -100)
  targets = TOKENS
  if soft:
    targets = jax.nn.one_hot(TOKENS, V)
    padded_targets = jnp.where(mask[..., None], targets, jnp.nan)

  def loss(z, targets):
    return layers.masked_cross_entropy(z, targets, lengths=LENGTHS,
                                       label_smoothing=label_smoothing)
  # When the loss and its gradient are taken on them and on the clean logits.
  dirty, dirty_grads = jax.value_and_grad(loss)(noisy, padded_targets)
  clean, clean_grads = jax.value_and_grad(loss)(logits, targets)
  # Then the loss and the gradients at valid positions are the clean ones, ...
  np.testing.assert_allclose(dirty, clean, rtol=1e-6)
  np.testing.assert_allclose(dirty_grads, clean_grads, rtol=1e-6, atol=1e-7)
  # ... and the padded positions get exactly zero gradient (not NaN).
  np.testing.assert_array_equal(np.asarray(dirty_grads)[~mask], 0.0)
  assert np.abs(np.asarray(dirty_grads)[mask]).sum() > 0


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


# ----------------------------------------------------------------------------- cross-entropy
def test_cross_entropy_with_label_smoothing_equals_a_hand_written_nll():
  # Given: logits and ids, a handful of tokens the smoothing may not cover.
  logits = 2.0 * jax.random.normal(jax.random.key(4), (B, T, V))
  allowed = np.arange(V) >= 2
  logp = _log_softmax_np(logits)
  nll = -logp[np.arange(B)[:, None], np.arange(T)[None], TOKENS]
  # Then: plain, smoothed over all v, and smoothed over the allowed tokens only.
  np.testing.assert_allclose(layers.cross_entropy(logits, TOKENS), nll, rtol=1e-5)
  np.testing.assert_allclose(layers.cross_entropy(logits, TOKENS, label_smoothing=0.2),
                             0.8 * nll + 0.2 * -logp.mean(-1), rtol=1e-5)
  np.testing.assert_allclose(
      layers.cross_entropy(logits, TOKENS, label_smoothing=0.2, smooth_over=allowed),
      0.8 * nll + 0.2 * -logp[..., 2:].mean(-1), rtol=1e-5)
  mask = np.arange(T)[None] < LENGTHS[:, None]
  smoothed = 0.9 * nll + 0.1 * -logp[..., 2:].mean(-1)
  np.testing.assert_allclose(
      layers.masked_cross_entropy(logits, TOKENS, lengths=LENGTHS, label_smoothing=0.1,
                                  smooth_over=allowed), smoothed[mask].mean(), rtol=1e-5)


def test_cross_entropy_of_probabilities_is_optax_bit_for_bit_and_one_hot_equals_ids():
  import optax  # pylint: disable=g-import-not-at-top
  logits = jax.random.normal(jax.random.key(5), (B, T, V))
  probs = jax.nn.softmax(jax.random.normal(jax.random.key(6), (B, T, V)))
  np.testing.assert_array_equal(jax.jit(layers.cross_entropy)(logits, probs),
                                jax.jit(optax.softmax_cross_entropy)(logits, probs))
  one_hot = jax.nn.one_hot(TOKENS, V)
  np.testing.assert_allclose(layers.cross_entropy(logits, one_hot),
                             layers.cross_entropy(logits, TOKENS), rtol=1e-6)
  np.testing.assert_allclose(layers.masked_cross_entropy(logits, one_hot, lengths=LENGTHS),
                             layers.masked_cross_entropy(logits, TOKENS, lengths=LENGTHS),
                             rtol=1e-6)


def test_masked_cross_entropy_sums_add_up_across_a_split_batch():
  # Given: a batch whose halves hold different numbers of valid tokens.
  logits = jax.random.normal(jax.random.key(7), (B, T, V))
  mean = layers.masked_cross_entropy(logits, TOKENS, lengths=LENGTHS)
  # When: each part reports (sum, count), as each device would.
  parts = [layers.masked_cross_entropy(logits[rows], TOKENS[rows], lengths=LENGTHS[rows],
                                       reduction="sum") for rows in (slice(0, 1), slice(1, B))]
  # Then: summing both before dividing gives the whole batch's mean; averaging means does not.
  total, count = sum(p[0] for p in parts), sum(p[1] for p in parts)
  assert float(count) == LENGTHS.sum()
  np.testing.assert_allclose(total / count, mean, rtol=1e-6)
  assert abs(float(np.mean([s / n for s, n in parts])) - float(mean)) > 1e-3
  per_token = layers.masked_cross_entropy(logits, TOKENS, lengths=LENGTHS, reduction="none")
  mask = np.arange(T)[None] < LENGTHS[:, None]
  np.testing.assert_array_equal(np.asarray(per_token)[~mask], 0.0)
  np.testing.assert_allclose(np.asarray(per_token)[mask],
                             np.asarray(layers.cross_entropy(logits, TOKENS))[mask], rtol=1e-6)


@pytest.mark.parametrize("kwargs,error,message", [
    ({"reduction": "max"}, ValueError, r"unknown reduction 'max'"),
    ({"label_smoothing": 1.0}, ValueError, r"label_smoothing must be in \[0, 1\)"),
    ({"smooth_over": np.ones(V + 1, bool)}, ValueError, r"smooth_over must broadcast"),
    ({"targets": np.zeros((B, T, V), np.int32)}, TypeError, r"must be probabilities"),
], ids=["reduction", "smoothing", "smooth-over", "int-probabilities"])
def test_cross_entropy_bad_options(kwargs, error, message):
  args = {"logits": np.zeros((B, T, V), np.float32), "targets": TOKENS, **kwargs}
  with pytest.raises(error, match=message):
    layers.masked_cross_entropy(**args)


def test_cross_entropy_poisons_a_traced_out_of_range_id():
  logits = jax.random.normal(jax.random.key(3), (B, T, V))
  bad = TOKENS.copy()
  bad[1, 2] = V
  with pytest.raises(ValueError, match=r"targets must lie in \[0, 7\)"):
    layers.cross_entropy(logits, bad)
  out = np.asarray(jax.jit(layers.cross_entropy)(logits, bad))
  assert np.isnan(out[1, 2]) and np.isfinite(np.delete(out.ravel(), 1 * T + 2)).all()


# ----------------------------------------------------------------------------- dropout
def test_dropout_keeps_one_minus_rate_and_scales_survivors():
  x = jnp.ones((64, 50, 32))
  for rate in (0.1, 0.5):
    out = np.asarray(layers.dropout(jax.random.key(0), x, rate))
    kept = out != 0
    # 102400 draws: the kept fraction is within 4 standard deviations of 1 - rate.
    assert abs(kept.mean() - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / kept.size)
    np.testing.assert_allclose(out[kept], 1.0 / (1.0 - rate), rtol=1e-6)
  per_example = np.asarray(layers.dropout(jax.random.split(jax.random.key(1), 64), x, 0.25))
  assert abs((per_example != 0).mean() - 0.75) < 4 * np.sqrt(0.25 * 0.75 / x.size)
  np.testing.assert_allclose(per_example[per_example != 0], 1.0 / 0.75, rtol=1e-6)
  # Expectation is preserved: the mean of many dropped copies of x is x.
  assert abs(per_example.mean() - 1.0) < 0.02


def test_dropout_with_one_key_draws_bernoulli_masks_as_before():
  x = jax.random.normal(jax.random.key(2), (4, 6))
  key = jax.random.PRNGKey(3)
  keep = jax.random.bernoulli(key, 0.7, x.shape)
  np.testing.assert_array_equal(layers.dropout(key, x, 0.3), jnp.where(keep, x / 0.7, 0.0))
  # Typed and raw keys give the same mask.
  np.testing.assert_array_equal(layers.dropout(jax.random.wrap_key_data(key), x, 0.3),
                                layers.dropout(key, x, 0.3))


def test_per_example_dropout_of_a_batch_equals_dropout_of_its_halves():
  # Given: one key per example, as a batch split over two devices would hold them.
  x = jax.random.normal(jax.random.key(4), (6, 5, 3)).astype(jnp.bfloat16)
  keys = jax.random.split(jax.random.key(5), 6)
  # When: the whole batch and its halves are dropped with their own keys.
  whole = layers.dropout(keys, x, 0.4)
  halves = jnp.concatenate([layers.dropout(keys[:2], x[:2], 0.4),
                            layers.dropout(keys[2:], x[2:], 0.4)])
  # Then: the same masks, row by row; the dtype is kept; a row depends on its own key alone.
  np.testing.assert_array_equal(whole.astype(jnp.float32), halves.astype(jnp.float32))
  assert whole.dtype == jnp.bfloat16
  other = layers.dropout(keys.at[0].set(jax.random.key(9)), x, 0.4)
  np.testing.assert_array_equal(other[1:].astype(jnp.float32), whole[1:].astype(jnp.float32))
  assert not np.array_equal(np.asarray(other[0] != 0), np.asarray(whole[0] != 0))
  raw = jax.random.key_data(keys)
  np.testing.assert_array_equal(jax.jit(layers.dropout, static_argnums=2)(raw, x, 0.4)
                                .astype(jnp.float32), whole.astype(jnp.float32))


def test_dropout_off_and_bad_input():
  x = jnp.arange(6.0).reshape(2, 3)
  assert layers.dropout(None, x, 0.5) is x
  assert layers.dropout(jax.random.key(0), x, 0.0) is x
  with pytest.raises(ValueError, match=r"dropout rate must be a number in \[0, 1\); got 1.0"):
    layers.dropout(jax.random.key(0), x, 1.0)
  with pytest.raises(ValueError, match=r"one key per example.*shape \(2, 3\).*keys of shape \(3,\)"):
    layers.dropout(jax.random.split(jax.random.key(0), 3), x, 0.5)
  with pytest.raises(TypeError, match="dropout keys must be PRNG keys"):
    layers.dropout(np.float32(1.0), x, 0.5)


def test_fold_keys_makes_per_example_keys_that_ignore_the_split():
  key = jax.random.key(0)
  index = jnp.arange(8)
  keys = layers.fold_keys(key, index)
  assert keys.shape == (8,)
  # Each example's key is fold_in(key, its index), wherever it sits.
  np.testing.assert_array_equal(jax.random.key_data(layers.fold_keys(key, index[5:])),
                                jax.random.key_data(keys[5:]))
  np.testing.assert_array_equal(jax.random.key_data(keys[3]),
                                jax.random.key_data(jax.random.fold_in(key, 3)))
  # Per-example keys folded with a site number: row by row, and distinct from the inputs.
  site = layers.fold_keys(keys, 7)
  np.testing.assert_array_equal(jax.random.key_data(site[2]),
                                jax.random.key_data(jax.random.fold_in(keys[2], 7)))
  assert not np.array_equal(jax.random.key_data(site), jax.random.key_data(keys))
  raw = layers.fold_keys(jax.random.PRNGKey(0), 3)
  assert raw.dtype == jnp.uint32
  np.testing.assert_array_equal(raw, jax.random.fold_in(jax.random.PRNGKey(0), 3))
  with pytest.raises(ValueError, match="fold_keys got 8 keys but 3 data values"):
    layers.fold_keys(keys, jnp.arange(3))


def test_layer_norm_matches_torch():
  import torch  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 3, 5)).astype(np.float32) * 3 + 1
  params = {"scale": rng.normal(size=5).astype(np.float32),
            "bias": rng.normal(size=5).astype(np.float32)}
  norm = torch.nn.LayerNorm(5, eps=1e-5)
  with torch.no_grad():
    norm.weight.copy_(torch.tensor(params["scale"]))
    norm.bias.copy_(torch.tensor(params["bias"]))
  np.testing.assert_allclose(layers.layer_norm(params, x), norm(torch.tensor(x)).detach().numpy(),
                             atol=1e-5)
  fresh = layers.init_layer_norm(5)
  np.testing.assert_allclose(np.asarray(layers.layer_norm(fresh, x)).std(-1), 1.0, atol=1e-4)
  with pytest.raises(ValueError, match=r"layer norm of size 5 got input of shape \(2, 4\)"):
    layers.layer_norm(fresh, np.zeros((2, 4)))
