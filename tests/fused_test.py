"""The fused LSTM / GRU recurrence against the plain scan: outputs, final carries and gradients.

The plain scan (``impl='scan'``: autodiff through the cells of ``cells.py``, themselves checked
against NumPy in ``cells_test.py``) is the reference for every number here.
"""

import jax
import jax.numpy as jnp
import jax.test_util  # pylint: disable=unused-import
import numpy as np
import pytest

from seqjax import cells
from seqjax import fused
from seqjax import recurrent

B, T, D, H = 4, 7, 3, 5
LENGTHS = np.array([7, 4, 1, 0])  # max, middle, 1 and 0
TOL = 1e-5
CELLS = ["lstm", "gru"]


def _setup(name, seed=0, dtype=jnp.float32, batch=B, time=T):
  cell = cells.get_cell(name)
  params = cell.init(jax.random.key(seed), D, H, dtype)
  xs = jax.random.normal(jax.random.key(seed + 1), (batch, time, D)).astype(dtype)
  return cell, params, xs


def _random_carry(cell, seed, batch=B):
  keys = jax.random.split(jax.random.key(seed), 2)
  h = jax.random.normal(keys[0], (batch, H))
  return (h, jax.random.normal(keys[1], (batch, H))) if cell.has_cell_state else h


def _loss_and_grads(cell, params, xs, carry, impl, **kwargs):
  """A loss that weights every output and every final carry entry differently, and its grads."""
  out_weights = jax.random.normal(jax.random.key(99), xs.shape[:2] + (H,))
  carry_weights = jax.random.normal(jax.random.key(98), (xs.shape[0], H))

  def loss(params, xs, carry):
    ys, final = recurrent.unroll(cell, params, xs, initial_carry=carry, impl=impl, **kwargs)
    total = jnp.sum(ys.astype(jnp.float32) * out_weights)
    for n, leaf in enumerate(jax.tree.leaves(final)):
      total += jnp.sum(jnp.sin(leaf.astype(jnp.float32) + n) * carry_weights)
    return total, (ys, final)

  # One jit around forward and backward: far fewer compilations than op-by-op gradients.
  (_, outputs), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
      params, xs, carry)
  return outputs, grads


def _assert_trees_close(a, b, tol=TOL):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32),
                               atol=tol, rtol=tol)


# ----------------------------------------------------------------------------- against the scan
@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("lengths, reverse", [(None, False), (LENGTHS, False), (LENGTHS, True)],
                         ids=["full", "ragged", "ragged-reverse"])
def test_fused_matches_scan_outputs_carries_and_all_gradients(name, reverse, lengths):
  # Given a cell, a nonzero initial carry and (maybe) ragged lengths including 0, 1 and max.
  cell, params, xs = _setup(name)
  carry = _random_carry(cell, 10)
  kwargs = dict(lengths=lengths, reverse=reverse)
  # When both implementations run forward and backward.
  want = _loss_and_grads(cell, params, xs, carry, "scan", **kwargs)
  got = _loss_and_grads(cell, params, xs, carry, "fused", **kwargs)
  # Then outputs, final carries and gradients w.r.t. params, inputs and carry agree.
  _assert_trees_close(got, want)
  # ... and the gradients are not trivially zero (the comparison has teeth).
  assert float(jnp.abs(want[1][0]["w_hh"]).max()) > 1e-2


@pytest.mark.parametrize("name", CELLS)
def test_padding_gets_zero_output_and_zero_gradient(name):
  cell, params, xs = _setup(name)
  (ys, _), (_, dxs, _) = _loss_and_grads(cell, params, xs, _random_carry(cell, 3), "fused",
                                         lengths=LENGTHS)
  for n, length in enumerate(LENGTHS):
    np.testing.assert_array_equal(ys[n, length:], 0.0)
    np.testing.assert_array_equal(dxs[n, length:], 0.0)
  # ... while every valid step of a row does get a gradient.
  assert float(jnp.abs(dxs[0]).sum(-1).min()) > 0.0


@pytest.mark.parametrize("name", CELLS)
def test_fused_matches_scan_with_unroll_that_does_not_divide_time(name):
  cell, params, xs = _setup(name, seed=4)
  carry = _random_carry(cell, 5)
  want = _loss_and_grads(cell, params, xs, carry, "scan", lengths=LENGTHS)
  got = _loss_and_grads(cell, params, xs, carry, "fused", lengths=LENGTHS, unroll=3)
  _assert_trees_close(got, want)


@pytest.mark.parametrize("name", CELLS)
def test_empty_sequence_returns_initial_carry_and_its_gradient(name):
  cell, params, xs = _setup(name, time=0)
  carry = _random_carry(cell, 6)
  want = _loss_and_grads(cell, params, xs, carry, "scan")
  got = _loss_and_grads(cell, params, xs, carry, "fused")
  _assert_trees_close(got, want)
  _assert_trees_close(got[0][1], carry)


@pytest.mark.parametrize("name", CELLS)
def test_bidirectional_stack_with_lengths_matches_scan(name):
  # Given a two-layer bidirectional stack over ragged lengths, with dropout between layers.
  cell = cells.get_cell(name)
  params = recurrent.init_stack(jax.random.key(0), cell, D, H, num_layers=2, bidirectional=True)
  xs = jax.random.normal(jax.random.key(1), (B, T, D))
  weights = jax.random.normal(jax.random.key(2), (B, T, 2 * H))

  def run(params, xs, impl):
    ys, finals = recurrent.stack(cell, params, xs, lengths=LENGTHS, dropout_rate=0.25,
                                 dropout_key=jax.random.key(3), impl=impl)
    finals_loss = sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(finals))
    return jnp.sum(ys * weights) + finals_loss, (ys, finals)

  # When it runs with both implementations; then everything agrees.
  results = {}
  for impl in ("scan", "fused"):
    grad_fn = jax.jit(jax.value_and_grad(lambda p, x: run(p, x, impl), argnums=(0, 1),
                                         has_aux=True))
    (_, outputs), grads = grad_fn(params, xs)
    results[impl] = (outputs, grads)
  _assert_trees_close(results["fused"], results["scan"])


@pytest.mark.parametrize("name", CELLS)
def test_fused_gradients_match_float64_finite_differences(name):
  # An independent check of the hand-written backward: no scan involved.
  cell = cells.get_cell(name)
  with jax.enable_x64(True):
    params = jax.tree.map(lambda p: p.astype(jnp.float64), cell.init(jax.random.key(7), 3, 4))
    xs = jax.random.normal(jax.random.key(8), (2, 4, 3), jnp.float64)
    carry = jax.tree.map(lambda a: 0.5 * a[:2, :4].astype(jnp.float64), _random_carry(cell, 9))

    def run(params, xs, carry):
      return recurrent.unroll(cell, params, xs, lengths=jnp.array([4, 2]), initial_carry=carry,
                              reverse=True, impl="fused")

    jax.test_util.check_grads(run, (params, xs, carry), order=1, modes=("rev",),
                              atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------- dtypes, transforms
@pytest.mark.parametrize("name", CELLS)
def test_bf16_params_and_inputs_with_float32_carry(name):
  cell, params, xs = _setup(name, dtype=jnp.bfloat16)
  carry = _random_carry(cell, 7)
  want = _loss_and_grads(cell, params, xs, carry, "scan", lengths=LENGTHS)
  got = _loss_and_grads(cell, params, xs, carry, "fused", lengths=LENGTHS)
  # Gradients keep the params' and inputs' dtype; the carry stays float32.
  for g, p in zip(jax.tree.leaves(got[1][0]), jax.tree.leaves(params)):
    assert g.dtype == p.dtype == jnp.bfloat16
  assert got[1][1].dtype == jnp.bfloat16
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(got[0][1]))
  # bf16 rounding of h before each recurrent matmul differs in the backward: loose tolerance.
  _assert_trees_close(got, want, tol=3e-2)


@pytest.mark.parametrize("name", CELLS)
def test_jit_and_vmap_of_the_fused_path_match_scan(name):
  cell, params, xs = _setup(name)
  batched_xs = jnp.stack([xs, 2.0 * xs, -xs])  # [3, b, t, d]

  def loss(params, xs, impl):
    ys, final = recurrent.unroll(cell, params, xs, lengths=LENGTHS, impl=impl)
    return jnp.sum(jnp.tanh(ys)) + jnp.sum(cells.output_of(final))

  def per_example(impl):
    return jax.jit(jax.vmap(jax.value_and_grad(lambda p, x: loss(p, x, impl)),
                            in_axes=(None, 0)))(params, batched_xs)

  _assert_trees_close(per_example("fused"), per_example("scan"))

  # Networks side by side (params batched too), and a vmap of a vmap (its in-loop updates go
  # one axis further right at every level).
  batched_params = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a, -a]), params)

  def per_network(impl):
    grad = jax.value_and_grad(lambda p, x: loss(p, x, impl))
    return jax.jit(jax.vmap(jax.vmap(grad, in_axes=(None, 0)), in_axes=(0, None)))(
        batched_params, batched_xs)

  _assert_trees_close(per_network("fused"), per_network("scan"))


# ----------------------------------------------------------------------------- dispatch
def test_auto_takes_the_fused_path_on_cpu_for_lstm_and_gru_only():
  assert jax.default_backend() == "cpu"
  carry32 = jnp.zeros((B, H), jnp.float32)
  assert fused.choose(cells.get_cell("lstm"), "auto", (carry32, carry32)) == "fused"
  assert fused.choose(cells.get_cell("gru"), "auto", carry32) == "fused"
  for cell in [cells.get_cell("gru", reset_after=False), cells.get_cell("peephole_lstm"),
               cells.get_cell("rnn")]:
    assert fused.choose(cell, "auto", carry32) == "scan"
  # A bf16 carry keeps the scan, which rounds the carry to bf16 every step as the cells do;
  # float64 (numerical checks, maybe forward mode) keeps it too.
  for dtype in (jnp.bfloat16, jnp.float16):
    assert fused.choose(cells.get_cell("gru"), "auto", carry32.astype(dtype)) == "scan"
  with jax.enable_x64(True):
    carry64 = jnp.zeros((B, H), jnp.float64)
    assert fused.choose(cells.get_cell("lstm"), "auto", (carry64, carry64)) == "scan"
  assert fused.choose(cells.get_cell("lstm"), "scan", (carry32, carry32)) == "scan"


@pytest.mark.parametrize("impl, uses_custom_vjp", [("auto", True), ("fused", True),
                                                   ("scan", False)])
def test_unroll_really_dispatches_on_impl(impl, uses_custom_vjp):
  cell, params, xs = _setup("lstm")
  jaxpr = str(jax.make_jaxpr(lambda p, x: recurrent.unroll(cell, p, x, impl=impl))(params, xs))
  assert ("custom_vjp_call" in jaxpr) == uses_custom_vjp


def test_bad_impl_names_the_problem():
  cell, params, xs = _setup("lstm")
  with pytest.raises(ValueError, match="impl must be one of"):
    recurrent.unroll(cell, params, xs, impl="cudnn")
  rnn = cells.get_cell("rnn")
  with pytest.raises(ValueError, match="impl='fused' supports cells 'lstm' and 'gru'"):
    recurrent.unroll(rnn, rnn.init(jax.random.key(0), D, H), xs, impl="fused")
