"""The Pallas LSTM / GRU recurrence against the plain scan: outputs, final carries and gradients.

On CPU the kernels run in Pallas interpret mode, so these tests check the kernel bodies, the
padding around them and the custom_vjp; the plain scan (``impl='scan'``) is the reference.
Shapes use the glossary in ``seqjax/__init__.py``.
"""

import re

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from seqjax import cells
from seqjax import kernels
from seqjax import recurrent
from seqjax.kernels import pallas_rnn

import fastpath_checks

B, T, D, H = 3, 7, 5, 4
LENGTHS = np.array([7, 0, 3])  # full, empty and in between
CELLS = ["lstm", "gru"]


_setup = functools.partial(fastpath_checks.random_layer, batch=B, time=T, d=D, h=H)
_random_carry = functools.partial(fastpath_checks.random_carry, batch=B, h=H)
_weighted_loss = fastpath_checks.weighted_loss
_loss_and_grads = fastpath_checks.loss_and_grads
_assert_trees_close = fastpath_checks.assert_trees_close


# ----------------------------------------------------------------------------- against the scan
@pytest.mark.parametrize("name", CELLS)
# (Ragged lengths without reverse: see the padding test. Kept few: each case compiles twice.)
@pytest.mark.parametrize("lengths, reverse", [(None, False), (LENGTHS, True)],
                         ids=["full", "ragged-reverse"])
def test_pallas_matches_scan_outputs_carries_and_all_gradients(name, lengths, reverse):
  # Given a cell, a nonzero initial carry and (maybe) ragged lengths including 0 and max.
  cell, params, xs = _setup(name)
  carry = _random_carry(cell, 10)
  # When both implementations run forward and backward, Then outputs, final carries and
  # gradients w.r.t. every weight, the inputs and carry agree.
  fastpath_checks.check_against_scan("pallas", cell, params, xs, carry, lengths=lengths,
                                     reverse=reverse)


@pytest.mark.parametrize("name, batch, block_rows, hidden_block, unroll_steps",
                         [("lstm", 5, 2, 8, 3), ("gru", 18, None, None, 1)],
                         ids=["lstm-gpu-like-padding", "gru-default-blocks"])
def test_batch_and_hidden_padding_around_the_kernels(name, batch, block_rows, hidden_block,
                                                     unroll_steps):
  # Given a batch that the block size does not divide (5 rows in blocks of 2; 18 rows in the
  # default 16), and maybe h padded per gate as on GPU (4 -> 8) and an unrolled time loop.
  cell, params, xs = _setup(name, seed=3, batch=batch)
  carry = _random_carry(cell, 4, batch=batch)
  lengths = jnp.arange(batch) % (T + 1)
  mask = jnp.arange(T)[None, :] < lengths[:, None]

  def pallas_loss(params, xs, carry):
    hs, final = pallas_rnn.unroll_batch_major(cell, params, xs, mask, carry, unroll_steps,
                                              block_rows=block_rows, hidden_block=hidden_block)
    ys = jnp.where(mask[..., None], hs, 0.0)
    return _weighted_loss(ys, final), (ys, final)

  def scan_loss(params, xs, carry):
    ys, final = recurrent.unroll(cell, params, xs, lengths=lengths, initial_carry=carry,
                                 impl="scan")
    return _weighted_loss(ys, final), (ys, final)

  # When both run forward and backward; then everything agrees.
  results = [jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(params, xs, carry)
             for f in (pallas_loss, scan_loss)]
  _assert_trees_close(results[0], results[1])


def test_bidirectional_stack_with_lengths_matches_scan(name="gru"):
  # Given a two-layer bidirectional stack over ragged lengths, with dropout between layers,
  # When it runs with both implementations, Then loss, outputs and gradients agree.
  sizes = dict(batch=B, time=T, d=D, h=H)
  _assert_trees_close(fastpath_checks.stack_loss_and_grads(name, "pallas", LENGTHS, **sizes),
                      fastpath_checks.stack_loss_and_grads(name, "scan", LENGTHS, **sizes))


@pytest.mark.parametrize("name", CELLS)
def test_empty_sequence_returns_initial_carry_and_its_gradient(name):
  cell, params, xs = _setup(name, time=0)
  carry = _random_carry(cell, 6)
  got = _loss_and_grads(cell, params, xs, carry, "pallas")
  _assert_trees_close(got, _loss_and_grads(cell, params, xs, carry, "scan"))
  _assert_trees_close(got[0][1], carry)


# ----------------------------------------------------------------------------- dtypes, transforms
@pytest.mark.parametrize("name", CELLS)
def test_bf16_params_and_inputs_with_float32_carry(name):
  cell, params, xs = _setup(name, dtype=jnp.bfloat16)
  fastpath_checks.check_bf16_against_scan("pallas", cell, params, xs, _random_carry(cell, 7),
                                          LENGTHS)


def test_vmap_of_the_pallas_path_matches_scan():
  # pallas_call's batching rule adds a grid axis; the custom_vjp must survive it.
  cell, params, xs = _setup("lstm")
  batched_xs = jnp.stack([xs, -2.0 * xs])  # [2, b, t, d]

  def per_example(impl):
    def loss(params, xs):
      ys, final = recurrent.unroll(cell, params, xs, lengths=LENGTHS, impl=impl)
      return jnp.sum(jnp.tanh(ys)) + jnp.sum(cells.output_of(final))
    return jax.jit(jax.vmap(jax.value_and_grad(loss), in_axes=(None, 0)))(params, batched_xs)

  _assert_trees_close(per_example("pallas"), per_example("scan"))


@pytest.mark.parametrize("name", CELLS)
def test_kernels_lower_to_triton_for_cuda(name):
  # No GPU here: lowering for CUDA still runs Pallas' Triton lowering of both kernels (power of
  # two tiles, matmul shapes, the in-kernel loops), though nothing is compiled or run.
  cell, params, xs = _setup(name)
  mask = jnp.ones((B, T), bool)

  def loss(params, xs, carry):
    hs, final = pallas_rnn.unroll_batch_major(cell, params, xs, mask, carry, interpret=False)
    return _weighted_loss(hs, final)

  exported = export.export(
      jax.jit(jax.grad(loss, argnums=(0, 1, 2))), platforms=["cuda"],
      disabled_checks=[export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(
          params, xs, _random_carry(cell, 1))
  assert exported.mlir_module().count("@__gpu$xla.gpu.triton(") == 2  # forward and backward


# ----------------------------------------------------------------------------- dispatch
def test_auto_never_picks_pallas():
  carry32 = jnp.zeros((B, H), jnp.float32)
  for cell in [cells.get_cell("lstm"), cells.get_cell("gru"), cells.get_cell("rnn"),
               cells.get_cell("gru", reset_after=False)]:
    for dtype in (jnp.float32, jnp.bfloat16):
      carry = jax.tree.map(lambda a: a.astype(dtype), cell.initial_carry(B, H))
      params = cell.init(jax.random.key(0), D, H)
      assert kernels.choose(cell, "auto", params, carry).name != "pallas"
  gru = cells.get_cell("gru")
  assert kernels.choose(gru, "pallas", gru.init(jax.random.key(0), D, H), carry32).name == "pallas"
  # ... and unroll really runs a Pallas kernel only when asked to.
  cell, params, xs = _setup("gru")
  for impl, has_kernel in [("auto", False), ("pallas", True)]:
    jaxpr = str(jax.make_jaxpr(lambda p, x: recurrent.unroll(cell, p, x, impl=impl))(params, xs))
    assert ("pallas_call" in jaxpr) == has_kernel


@pytest.mark.parametrize("cell", [cells.get_cell("rnn"), cells.get_cell("gru", reset_after=False),
                                  cells.get_cell("peephole_lstm")],
                         ids=["rnn", "gru-reset-before", "peephole_lstm"])
def test_pallas_on_an_unsupported_cell_names_the_cell(cell):
  _, _, xs = _setup("gru")
  with pytest.raises(ValueError, match=r"impl='pallas' supports .*" + re.escape(repr(cell))):
    recurrent.unroll(cell, cell.init(jax.random.key(0), D, H), xs, impl="pallas")
  with pytest.raises(ValueError, match=re.escape(repr(cell))):
    pallas_rnn.unroll_batch_major(cell, {}, xs, None, None)


def test_bad_block_sizes_are_named():
  cell, params, xs = _setup("gru")
  carry = _random_carry(cell, 0)
  with pytest.raises(ValueError, match="hidden_block must be an int >= the hidden size 4; got 2"):
    pallas_rnn.unroll_batch_major(cell, params, xs, None, carry, hidden_block=2)
  with pytest.raises(ValueError, match="block_rows must be a positive int; got 0"):
    pallas_rnn.unroll_batch_major(cell, params, xs, None, carry, block_rows=0)
