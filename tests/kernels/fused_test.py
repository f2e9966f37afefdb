"""The fused LSTM / GRU recurrence against the plain scan: outputs, final carries and gradients.

The plain scan (``impl='scan'``: autodiff through the cells of ``cells.py``, themselves checked
against NumPy in ``cells_test.py``) is the reference for every number here.
"""

import functools

import jax
import jax.numpy as jnp
import jax.test_util  # pylint: disable=unused-import
import numpy as np
import pytest

from seqjax import cells
from seqjax import kernels
from seqjax import recurrent
from seqjax.kernels import fused

import fastpath_checks

B, T, D, H = 4, 7, 3, 5
LENGTHS = np.array([7, 4, 1, 0])  # max, middle, 1 and 0
CELLS = ["lstm", "gru"]


_setup = functools.partial(fastpath_checks.random_layer, batch=B, time=T, d=D, h=H)
_random_carry = functools.partial(fastpath_checks.random_carry, batch=B, h=H)
_loss_and_grads = fastpath_checks.loss_and_grads
_assert_trees_close = fastpath_checks.assert_trees_close


# ----------------------------------------------------------------------------- against the scan
@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("lengths, reverse", [(None, False), (LENGTHS, False), (LENGTHS, True)],
                         ids=["full", "ragged", "ragged-reverse"])
def test_fused_matches_scan_outputs_carries_and_all_gradients(name, reverse, lengths):
  # Given a cell, a nonzero initial carry and (maybe) ragged lengths including 0, 1 and max.
  cell, params, xs = _setup(name)
  carry = _random_carry(cell, 10)
  # When both implementations run forward and backward, Then outputs, final carries and
  # gradients w.r.t. params, inputs and carry agree.
  fastpath_checks.check_against_scan("fused", cell, params, xs, carry, lengths=lengths,
                                     reverse=reverse)


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


@pytest.mark.parametrize("forward", ["fused", "lean"])
@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("lengths, reverse, unroll", [(None, False, 1), (LENGTHS, True, 1),
                                                      (LENGTHS, False, 3)],
                         ids=["full", "ragged-reverse", "ragged-unroll3"])
def test_forward_without_gradient_matches_scan(forward, name, lengths, reverse, unroll):
  # Not differentiated, the custom_vjp runs its primal: the fused loop or the lean scan.
  settings = kernels.Settings(forward=forward)
  cell, params, xs = _setup(name, seed=8)
  carry = _random_carry(cell, 9)

  def run(impl):
    return jax.jit(lambda p, x, c: recurrent.unroll(
        cell, p, x, lengths=lengths, initial_carry=c, reverse=reverse, unroll=unroll,
        impl=impl, kernel_settings=settings))(params, xs, carry)

  _assert_trees_close(run("fused"), run("scan"))
  # ... and the setting is what chose the loop.
  assert kernels.choose(cell, "fused", params, carry, settings=settings).lean == (
      forward == "lean")


def test_a_bad_forward_setting_is_named():
  with pytest.raises(ValueError, match="Settings.forward must be None, 'fused' or 'lean'"):
    kernels.Settings(forward="fast")


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
  # Given a two-layer bidirectional stack over ragged lengths, with dropout between layers,
  # When it runs with both implementations, Then loss, outputs and gradients agree.
  sizes = dict(batch=B, time=T, d=D, h=H)
  _assert_trees_close(fastpath_checks.stack_loss_and_grads(name, "fused", LENGTHS, **sizes),
                      fastpath_checks.stack_loss_and_grads(name, "scan", LENGTHS, **sizes))


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
  fastpath_checks.check_bf16_against_scan("fused", cell, params, xs, _random_carry(cell, 7),
                                          LENGTHS)


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

  # Networks side by side (params batched too, as the counting experiment trains them), and a
  # vmap of a vmap.
  batched_params = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a, -a]), params)

  def per_network(impl):
    grad = jax.value_and_grad(lambda p, x: loss(p, x, impl))
    return jax.jit(jax.vmap(jax.vmap(grad, in_axes=(None, 0)), in_axes=(0, None)))(
        batched_params, batched_xs)

  _assert_trees_close(per_network("fused"), per_network("scan"))


# ----------------------------------------------------------------------------- in place
def _fused_layer_grads(name, setting, mask):
  b, t, d, h = 4, 16, 8, 8
  cell = cells.get_cell(name)
  params = cell.init(jax.random.PRNGKey(0), d, h)
  weights = tuple(params[name] for name in ("w_ih", "b_ih", "w_hh", "b_hh"))
  xs = jax.random.normal(jax.random.PRNGKey(1), (b, t, d))
  keep = None if mask is None else mask.astype(jnp.float32)[..., None]
  h0 = jax.random.normal(jax.random.PRNGKey(2), (b, h))
  if name == "lstm":
    layer = lambda w, x, h0: jnp.sum(jnp.sin(fused._lstm(setting, w, x, keep, h0, h0)[0]))
  else:
    layer = lambda w, x, h0: jnp.sum(jnp.sin(fused._gru(setting, w, x, keep, h0)))
  return jax.jit(jax.grad(layer, argnums=(0, 1, 2)))(weights, xs, h0)


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("masked", [False, True])
def test_backward_in_place_gives_the_zero_filled_buffers_gradients_exactly(name, masked):
  # Overwriting the coefficients row by row must compute exactly what separate buffers do.
  mask = jnp.arange(16)[None, :] < jnp.array([16, 9, 3, 1])[:, None] if masked else None
  in_place = _fused_layer_grads(name, fused._Setting(1, False, True), mask)
  separate = _fused_layer_grads(name, fused._Setting(1, False, False), mask)
  for got, want in zip(jax.tree.leaves(in_place), jax.tree.leaves(separate)):
    np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU program")
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_cpu_training_program_never_copies_a_whole_gate_buffer(name):
  # An in-place loop whose buffer XLA could not update in place would be copied every step
  # (quadratic in the sequence length); a zero-filled one is copied once. Neither may appear.
  b, t, d, h = 4, 16, 8, 8
  cell = cells.get_cell(name)
  params = cell.init(jax.random.PRNGKey(0), d, h)
  xs = jnp.ones((b, t, d))
  carry = cell.initial_carry(b, h)
  impl = kernels.choose(cell, "fused", params, carry, backend="cpu")  # in place, XLA loops
  assert impl.in_place and not impl.native
  loss = lambda p, x: jnp.sum(fused.unroll_batch_major(cell, p, x, None, carry, 1, impl)[0])
  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs).compile().as_text()
  whole = f"f32[{b},{t},{cell.gates * h}]"
  copies = [line for line in hlo.splitlines() if f"= {whole}" in line and " copy(" in line]
  assert not copies, copies
