"""Attention: formulas against a NumPy loop, weights sum to one, padding gets exactly zero."""

import functools

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


# ----------------------------------------------------------------------------- multi-head
def _multi_head_inputs(seed=0, t=4, s=5, heads=2, dh=3):
  rng = np.random.default_rng(seed)
  query = rng.normal(size=(B, t, heads, dh)).astype(np.float32)
  keys = rng.normal(size=(B, s, heads, dh)).astype(np.float32)
  values = rng.normal(size=(B, s, heads, dh)).astype(np.float32)
  return query, keys, values


def test_multi_head_attention_matches_a_numpy_loop_over_rows_and_heads():
  query, keys, values = _multi_head_inputs()
  lengths = np.array([5, 3, 1])
  out, weights = attention.multi_head_attention(query, keys, values,
                                                attention.padding_mask(lengths, 5),
                                                return_weights=True)
  for b, n in enumerate(lengths):
    for h in range(query.shape[2]):
      scores = query[b, :, h] @ keys[b, :n, h].T / np.sqrt(query.shape[-1])
      want = np.exp(scores - scores.max(-1, keepdims=True))
      want /= want.sum(-1, keepdims=True)
      np.testing.assert_allclose(weights[b, h, :, :n], want, atol=1e-6)
      np.testing.assert_allclose(out[b, :, h], want @ values[b, :n, h], atol=1e-5)
  weights = np.asarray(weights)
  assert np.all(weights[1, ..., 3:] == 0) and np.all(weights[2, ..., 1:] == 0)


@pytest.mark.parametrize("causal", [False, True])
def test_dot_product_attention_path_equals_the_explicit_softmax(causal):
  # Given: padded keys (one row with none valid) and, for the causal case, a causal mask.
  query, keys, values = _multi_head_inputs(1, t=5, s=5)
  mask = attention.padding_mask(np.array([5, 2, 0]), 5)
  if causal:
    mask = mask & attention.causal_mask(5)

  @functools.partial(jax.jit, static_argnums=0)
  def run(implementation):
    def loss(query, keys, values):
      out, _ = attention.multi_head_attention(query, keys, values, mask,
                                              implementation=implementation)
      return jnp.sum(out * jnp.arange(out.size).reshape(out.shape) / out.size), out
    return jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(query, keys, values)

  # When: jax.nn.dot_product_attention and the written-out softmax run on the same inputs.
  (grads, out), (want_grads, want_out) = run(None), run("explicit")
  # Then: the same outputs and gradients, finite, zero for the query with no key to read.
  np.testing.assert_allclose(out, want_out, atol=1e-6, rtol=0)
  for got, want in zip(grads, want_grads):
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
  assert np.isfinite(out).all() and all(np.isfinite(g).all() for g in grads)
  np.testing.assert_array_equal(out[2], 0.0)


def test_attention_dropout_drops_weights_per_example():
  query, keys, values = _multi_head_inputs(2)

  @jax.jit
  def outputs(dropout_key):
    dropped, _ = attention.multi_head_attention(query, keys, values, dropout_rate=0.5,
                                                dropout_key=dropout_key)
    alone, _ = attention.multi_head_attention(query[:1], keys[:1], values[:1], dropout_rate=0.5,
                                              dropout_key=dropout_key[:1])
    return dropped, alone, attention.multi_head_attention(query, keys, values)[0]
  dropped, alone, plain = outputs(jax.random.split(jax.random.key(0), B))
  assert np.abs(dropped - plain).max() > 1e-3
  # Row 0's masks depend on its own key alone: the same row alone gives the same numbers.
  np.testing.assert_allclose(alone, dropped[:1], atol=1e-6)


def test_cache_mask_lets_each_position_read_itself_and_earlier_slots():
  mask = np.asarray(attention.cache_mask(np.array([0, 2]), 2, 5))
  np.testing.assert_array_equal(mask[:, 0], [[[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]],
                                             [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]])
  with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
    attention.multi_head_attention(*_multi_head_inputs(), implementation="flash")
