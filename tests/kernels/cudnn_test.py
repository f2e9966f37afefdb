"""impl='cudnn' (seqjax/kernels/cudnn.py) against the plain scan.

On a GPU the tests run cuDNN's own kernel (jax.experimental.rnn.lstm). Elsewhere
jax.experimental.rnn.lstm_ref, its pure-JAX reference, stands in for the kernel behind the same
call (``kernels.Settings(cudnn_kernel=...)``): that checks all of seqjax's side (the weight
layout, lengths of 0, reverse, stacks and the gradients through the packed weights) on the CPU.
"""

import jax
import jax.numpy as jnp
from jax.experimental import rnn as jax_rnn
import numpy as np
import pytest

from seqjax import cells
from seqjax import kernels
from seqjax import recurrent
from seqjax.kernels import cudnn

import fastpath_checks

B, T, D, H = 4, 9, 3, 20
LENGTHS = np.array([9, 4, 1, 0])  # max, middle, 1 and 0


def _reference_kernel(xs, h0, c0, weights, lengths, input_size, hidden_size):
  w_ih, w_hh, b_ih, b_hh = jax_rnn.unpack_lstm_weights(weights, input_size, hidden_size, 1, False)
  return jax_rnn.lstm_ref(xs, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, input_size, hidden_size,
                          1, 0.0, False)


@pytest.fixture
def kernel():
  """Settings running cuDNN on a GPU; elsewhere the reference stands in for it."""
  if jax.default_backend() == "gpu":
    return kernels.Settings()
  return kernels.Settings(cudnn_kernel=_reference_kernel)


def _setup(seed=0):
  return fastpath_checks.random_layer("lstm", seed, batch=B, time=T, d=D, h=H)


def test_packed_weights_are_cudnns_layout_of_the_same_params():
  _, params, _ = _setup()
  w_ih, w_hh, b_ih, b_hh = jax_rnn.unpack_lstm_weights(cudnn.pack_lstm_weights(params), D, H,
                                                       1, False)
  assert cudnn.pack_lstm_weights(params).shape == (jax_rnn.get_num_params_in_lstm(D, H, 1, False),)
  np.testing.assert_array_equal(w_ih[0], params["w_ih"].T)
  np.testing.assert_array_equal(w_hh[0], params["w_hh"].T)
  np.testing.assert_array_equal(b_ih[0], params["b_ih"])
  np.testing.assert_array_equal(b_hh[0], params["b_hh"])


@pytest.mark.parametrize("lengths, reverse", [(None, False), (LENGTHS, False), (LENGTHS, True)],
                         ids=["full", "ragged", "ragged-reverse"])
def test_cudnn_matches_scan_outputs_carries_and_all_gradients(kernel, lengths, reverse):
  cell, params, xs = _setup()
  carry = fastpath_checks.random_carry(cell, 10, batch=B, h=H)
  fastpath_checks.check_against_scan("cudnn", cell, params, xs, carry, lengths=lengths,
                                     reverse=reverse, kernel_settings=kernel)


def test_a_zero_length_row_keeps_its_carry_and_emits_zeros(kernel):
  cell, params, xs = _setup(3)
  carry = fastpath_checks.random_carry(cell, 4, batch=B, h=H)
  ys, (h, c) = recurrent.unroll(cell, params, xs, lengths=LENGTHS, initial_carry=carry,
                                impl="cudnn", kernel_settings=kernel)
  np.testing.assert_array_equal(h[3], carry[0][3])
  np.testing.assert_array_equal(c[3], carry[1][3])
  assert not np.any(np.asarray(ys[3])) and not np.any(np.asarray(ys[1, 4:]))


def test_bidirectional_stack_with_lengths_matches_scan(kernel):
  sizes = dict(batch=B, time=T, d=D, h=H)
  fastpath_checks.assert_trees_close(
      fastpath_checks.stack_loss_and_grads("lstm", "cudnn", LENGTHS, **sizes,
                                           kernel_settings=kernel),
      fastpath_checks.stack_loss_and_grads("lstm", "scan", LENGTHS, **sizes))


def test_cudnn_is_refused_where_it_cannot_run(kernel):
  cell, params, _ = _setup()
  carry = fastpath_checks.random_carry(cell, 0, batch=B, h=H)
  gru = cells.get_cell("gru")
  with pytest.raises(ValueError, match="runs the plain 'lstm' cell only"):
    kernels.choose(gru, "cudnn", gru.init(jax.random.key(0), D, H), carry[0], settings=kernel)
  with pytest.raises(ValueError, match="needs a float32 carry"):
    kernels.choose(cell, "cudnn", params, jax.tree.map(lambda c: c.astype(jnp.bfloat16), carry),
                   settings=kernel)
  assert kernels.choose(cell, "auto", params, carry, settings=kernel).name != "cudnn"  # opt-in
  assert kernels.choose(cell, "cudnn", params, carry, settings=kernel) == kernels.Impl(
      "cudnn", cudnn_kernel=kernel.cudnn_kernel)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="the GPU has cuDNN")
def test_without_a_gpu_cudnn_names_the_backend():
  cell, params, xs = _setup()
  with pytest.raises(ValueError, match="on a GPU; this backend is 'cpu'"):
    recurrent.unroll(cell, params, xs, impl="cudnn")
