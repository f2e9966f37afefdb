"""Attention: formulas against a NumPy loop, weights sum to one, padding gets exactly zero."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import attention

B, S, Q, M, A = 3, 6, 5, 5, 4
LENGTHS = np.array([6, 2, 1])


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  query = rng.normal(size=(B, Q)).astype(np.float32)
  keys = rng.normal(size=(B, S, M)).astype(np.float32)
  return query, keys


def _numpy_attention(kind, params, query, keys):
  """One unpadded example at a time, score by score."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  scores = []
  for key in keys:
    if kind == "additive":
      scores.append(p["v"] @ np.tanh(query @ p["w_query"] + key @ p["w_key"] + p["bias"]))
    elif kind == "general":
      scores.append(query @ (key @ p["w"]))
    else:
      scores.append(query @ key)
  scores = np.array(scores)
  weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
  return weights @ keys, weights


@pytest.mark.parametrize("kind", attention.KINDS)
def test_matches_numpy_on_each_unpadded_row(kind):
  query, keys = _inputs()
  params = attention.init_attention(jax.random.PRNGKey(0), kind, Q, M, A)
  params = jax.tree.map(lambda x: x + 0.3, params)  # non-zero bias for additive

  context, weights = attention.attention(kind, params, query, keys, LENGTHS)

  for b, n in enumerate(LENGTHS):
    want_context, want_weights = _numpy_attention(kind, params, query[b], keys[b, :n])
    np.testing.assert_allclose(weights[b, :n], want_weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(context[b], want_context, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", attention.KINDS)
def test_weights_sum_to_one_and_padding_gets_exactly_zero(kind):
  query, keys = _inputs(1)
  query = query * 50.0  # peaked scores, where rounding errors would show
  params = attention.init_attention(jax.random.PRNGKey(1), kind, Q, M, A)

  _, weights = attention.attention(kind, params, query, keys, LENGTHS)

  np.testing.assert_allclose(np.sum(weights, axis=1), 1.0, rtol=1e-6)
  pad = np.arange(S)[None, :] >= LENGTHS[:, None]
  assert np.all(np.asarray(weights)[pad] == 0.0)
  assert np.all(np.asarray(weights)[~pad] >= 0.0)


@pytest.mark.parametrize("kind", attention.KINDS)
def test_padded_keys_do_not_change_anything(kind):
  # Given keys with NaN, +inf, -inf and 1e3 at padded source positions.
  query, keys = _inputs(2)
  params = attention.init_attention(jax.random.PRNGKey(2), kind, Q, M, A)
  pad = np.arange(S)[None, :, None] >= LENGTHS[:, None, None]
  fills = np.array([np.nan, np.inf, -np.inf, 1e3], np.float32)
  garbage = np.where(pad, fills[np.arange(keys.size).reshape(keys.shape) % 4], keys)

  def loss(params, query, keys):
    context, weights = attention.attention(kind, params, query, keys, LENGTHS)
    return jnp.sum(jnp.sin(context)) + jnp.sum(weights * np.arange(S)), (context, weights)
  # When attention and its gradients run on them and on the clean keys.
  grad = jax.value_and_grad(loss, (0, 1, 2), has_aux=True)
  (_, clean), clean_grads = grad(params, query, keys)
  (_, dirty), dirty_grads = grad(params, query, garbage)

  # Then context, weights and every gradient are the clean ones (finite), ...
  for a, b in zip(jax.tree.leaves((clean, clean_grads)), jax.tree.leaves((dirty, dirty_grads))):
    np.testing.assert_array_equal(a, b)
  # ... the padded keys get exactly zero gradient, ...
  np.testing.assert_array_equal(np.where(pad, dirty_grads[2], 0.0), 0.0)
  # ... and a decoder attending with keys projected once (the two-step API) reads no padding,
  # nor does its query's gradient.
  projected = attention.project_keys(kind, params, jnp.asarray(garbage))
  mask = np.arange(S)[None, :] < LENGTHS[:, None]

  def two_step_loss(query):
    context, weights = attention.attend(kind, params, query, garbage, projected, mask)
    return jnp.sum(jnp.sin(context)) + jnp.sum(weights * np.arange(S)), (context, weights)
  (_, two_step), query_grad = jax.value_and_grad(two_step_loss, has_aux=True)(query)
  for a, b in zip((*two_step, query_grad), (*clean, clean_grads[1])):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_empty_source_gives_zero_context_not_nan():
  query, keys = _inputs(3)
  params = attention.init_attention(jax.random.PRNGKey(3), "additive", Q, M, A)
  context, weights = attention.attention("additive", params, query, keys, np.array([0, 3, 1]))
  assert np.all(np.isfinite(context)) and np.all(np.isfinite(weights))
  np.testing.assert_array_equal(context[0], 0.0)
  np.testing.assert_array_equal(weights[0], 0.0)


def test_gradients_do_not_flow_into_padding():
  query, keys = _inputs(4)
  params = attention.init_attention(jax.random.PRNGKey(4), "general", Q, M, A)
  grad = jax.grad(lambda k: jnp.sum(attention.attention("general", params, query, k,
                                                        LENGTHS)[0] ** 2))(jnp.asarray(keys))
  pad = np.arange(S)[None, :] >= LENGTHS[:, None]
  assert np.all(np.asarray(grad)[pad] == 0.0)
  assert np.all(np.any(np.asarray(grad)[~pad] != 0.0, axis=-1))


def test_bad_input_gets_clear_errors():
  query, keys = _inputs()
  with pytest.raises(ValueError, match="unknown attention 'cosine'"):
    attention.init_attention(jax.random.PRNGKey(0), "cosine", Q, M, A)
  with pytest.raises(ValueError, match="dot attention needs query size == key size"):
    attention.init_attention(jax.random.PRNGKey(0), "dot", 3, 4)
  with pytest.raises(ValueError, match="attention_size"):
    attention.init_attention(jax.random.PRNGKey(0), "additive", Q, M, 0)
  params = attention.init_attention(jax.random.PRNGKey(0), "dot", Q, M)
  with pytest.raises(ValueError, match="lengths must have shape"):
    attention.attention("dot", params, query, keys, np.array([1, 2]))
  with pytest.raises(ValueError, match=r"query \[b, q\] and keys \[b, s, m\]"):
    attention.attention("dot", params, query[0], keys)
