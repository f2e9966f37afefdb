"""minGRU / minLSTM: the associative-scan unroll against a step-by-step Python loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import cells, recurrent


def _loop_reference(cell, params, xs, lengths, reverse, h0):
  """Runs ``cell.step`` one example and one step at a time over each valid prefix."""
  b, t, _ = xs.shape
  ys, finals = [], []
  for i in range(b):
    n = int(lengths[i])
    seq = xs[i, :n][::-1] if reverse else xs[i, :n]
    h, outs = h0[i:i + 1], []
    for step in range(n):
      h, y = cell.step(params, h, cell.project(params, seq[step:step + 1]))
      outs.append(y[0])
    outs = outs[::-1] if reverse else outs
    pad = [jnp.zeros_like(h0[0])] * (t - n)
    ys.append(jnp.stack(outs + pad) if t else jnp.zeros((0, h0.shape[1])))
    finals.append(h[0])
  return jnp.stack(ys), jnp.stack(finals)


@pytest.mark.parametrize("name", ["min_gru", "min_lstm"])
@pytest.mark.parametrize("reverse", [False, True])
def test_parallel_unroll_matches_step_loop_values_and_gradients(name, reverse):
  # Given a parallel cell, a padded batch with lengths 0, 1, 4 and the maximum, and a nonzero h0.
  cell = cells.get_cell(name)
  params = cell.init(jax.random.PRNGKey(0), 3, 5)
  xs = jax.random.normal(jax.random.PRNGKey(1), (4, 7, 3))
  lengths = jnp.array([0, 1, 4, 7])
  h0 = jax.random.normal(jax.random.PRNGKey(2), (4, 5))
  weights = jax.random.normal(jax.random.PRNGKey(3), (4, 7, 5))

  def loss(fn, params, xs, h0):
    ys, final = fn(params, xs, h0)
    return jnp.sum(ys * weights) + jnp.sum(final ** 2)

  parallel = lambda p, x, h: recurrent.unroll(cell, p, x, lengths=lengths, reverse=reverse,
                                              initial_carry=h)
  looped = lambda p, x, h: _loop_reference(cell, p, x, lengths, reverse, h)

  # When both are run, Then outputs, final carries and all gradients agree.
  ys, final = parallel(params, xs, h0)
  ref_ys, ref_final = looped(params, xs, h0)
  np.testing.assert_allclose(ys, ref_ys, atol=1e-5)
  np.testing.assert_allclose(final, ref_final, atol=1e-5)
  np.testing.assert_array_equal(final[0], h0[0])  # length 0 keeps the initial carry
  assert np.all(np.asarray(ys)[2, 4:] == 0.0)  # padding emits exact zeros
  grads = jax.grad(lambda *a: loss(parallel, *a), argnums=(0, 1, 2))(params, xs, h0)
  ref_grads = jax.grad(lambda *a: loss(looped, *a), argnums=(0, 1, 2))(params, xs, h0)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_min_lstm_gates_are_normalised():
  # Given any pre-activations, the normalised forget and input gates sum to one.
  gx = jax.random.normal(jax.random.PRNGKey(0), (6, 9)) * 5
  a, u = cells.linear_recurrence_coefficients("min_lstm", gx)
  _, k_i, k_h = np.split(np.asarray(gx), 3, axis=-1)
  f_norm, i_norm = np.asarray(a), 1.0 - np.asarray(a)
  h_tilde = np.where(k_h >= 0, k_h + 0.5, 1 / (1 + np.exp(-k_h)))
  np.testing.assert_allclose(u, i_norm * h_tilde, rtol=1e-5, atol=1e-6)
  assert np.all((f_norm > 0) & (f_norm < 1))


def test_parallel_cells_work_in_stacks():
  # A bidirectional two-layer minGRU stack equals composing unroll calls by hand.
  cell = cells.get_cell("min_gru")
  params = recurrent.init_stack(jax.random.PRNGKey(0), cell, 3, 4, num_layers=2,
                                bidirectional=True)
  xs = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 3))
  lengths = jnp.array([5, 2])
  ys, _ = recurrent.stack(cell, params, xs, lengths=lengths)
  hidden = xs
  for layer in params:
    fwd, _ = recurrent.unroll(cell, layer["fwd"], hidden, lengths=lengths)
    bwd, _ = recurrent.unroll(cell, layer["bwd"], hidden, lengths=lengths, reverse=True)
    hidden = jnp.concatenate([fwd, bwd], axis=-1)
  np.testing.assert_allclose(ys, hidden, atol=1e-6)


def test_parallel_cell_params_are_validated():
  cell = cells.get_cell("min_lstm")
  params = cell.init(jax.random.PRNGKey(0), 3, 4)
  with pytest.raises(ValueError, match="8 features"):
    recurrent.unroll(cell, params, jnp.zeros((1, 2, 8)))
  with pytest.raises(ValueError, match="keys"):
    recurrent.unroll(cell, {"b_ih": params["b_ih"]}, jnp.zeros((1, 2, 3)))
