"""Every cell against a float64 NumPy loop written from the textbook equations.

The references below do not share code with ``seqjax.cells``: they slice each gate's weights out of
the PyTorch-layout matrices and apply the published equations one example and one step at a time.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu

from seqjax import cells
from seqjax import recurrent

B, T, D, H = 3, 6, 4, 5

# (name, options) for every cell variant the library offers.
CELL_CONFIGS = [
    ("rnn", {"nonlinearity": "tanh"}),
    ("rnn", {"nonlinearity": "relu"}),
    ("irnn", {}),
    ("lstm", {"forget_bias": 1.0}),
    ("peephole_lstm", {"forget_bias": 1.0}),
    ("coupled_lstm", {"forget_bias": 1.0}),
    ("gru", {"reset_after": True}),
    ("gru", {"reset_after": False}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o in CELL_CONFIGS]


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _reference_step(name, opts, p, x, h, c):
  """One textbook step for one example: ``x: [d]``, ``h, c: [h]`` -> ``(h, c)``."""
  hid = h.shape[0]

  def gate(k):  # pre-activation of gate k: x W_k + b_ik + h U_k + b_hk
    s = slice(k * hid, (k + 1) * hid)
    return x @ p["w_ih"][:, s] + p["b_ih"][s] + h @ p["w_hh"][:, s] + p["b_hh"][s]

  if name in ("rnn", "irnn"):
    pre = gate(0)
    relu = name == "irnn" or opts.get("nonlinearity") == "relu"
    return (np.maximum(pre, 0.0) if relu else np.tanh(pre)), None
  if name == "lstm":
    i, f, g, o = _sigmoid(gate(0)), _sigmoid(gate(1)), np.tanh(gate(2)), _sigmoid(gate(3))
    c = f * c + i * g
    return o * np.tanh(c), c
  if name == "peephole_lstm":
    peep = p["w_peep"]
    i = _sigmoid(gate(0) + peep[0] * c)
    f = _sigmoid(gate(1) + peep[1] * c)
    c = f * c + i * np.tanh(gate(2))
    o = _sigmoid(gate(3) + peep[2] * c)
    return o * np.tanh(c), c
  if name == "coupled_lstm":
    f, g, o = _sigmoid(gate(0)), np.tanh(gate(1)), _sigmoid(gate(2))
    c = f * c + (1.0 - f) * g
    return o * np.tanh(c), c
  # GRU, gates [r, z, n].
  r, z = _sigmoid(gate(0)), _sigmoid(gate(1))
  s = slice(2 * hid, 3 * hid)
  x_n = x @ p["w_ih"][:, s] + p["b_ih"][s]
  if opts.get("reset_after", True):
    n = np.tanh(x_n + r * (h @ p["w_hh"][:, s] + p["b_hh"][s]))
  else:
    n = np.tanh(x_n + (r * h) @ p["w_hh"][:, s] + p["b_hh"][s])
  return (1.0 - z) * n + z * h, None


def reference_unroll(name, opts, params, xs, lengths, h0, c0):
  """Python loop over examples and their valid steps only; zeros past each length."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  xs = np.asarray(xs, np.float64)
  b, t, _ = xs.shape
  ys = np.zeros((b, t, h0.shape[1]))
  hs, cs = np.array(h0, np.float64), np.array(c0, np.float64)
  for n in range(b):
    h, c = hs[n].copy(), cs[n].copy()
    for step in range(lengths[n]):
      h, c_new = _reference_step(name, opts, p, xs[n, step], h, c)
      c = c if c_new is None else c_new
      ys[n, step] = h
    hs[n], cs[n] = h, c
  return ys, hs, cs


def _random_params(cell, key, d=D, h=H, dtype=jnp.float32):
  """Init, then overwrite every leaf with N(0, 0.5^2) so zero / identity inits test nothing away."""
  params = cell.init(key, d, h, dtype)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
  return jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, x.shape, dtype)
                                   for k, x in zip(keys, leaves)])


def _split_carry(cell, carry):
  if cell.has_cell_state:
    return np.asarray(carry[0]), np.asarray(carry[1])
  return np.asarray(carry), None


@pytest.mark.parametrize("name,opts", CELL_CONFIGS, ids=IDS)
def test_unroll_matches_textbook_reference(name, opts):
  # Given random params, inputs, a nonzero initial carry and ragged lengths.
  cell = cells.get_cell(name, **opts)
  key = jax.random.key(0)
  params = _random_params(cell, key)
  xs = jax.random.normal(jax.random.key(1), (B, T, D))
  lengths = np.array([T, 3, 0])
  h0 = 0.3 * np.asarray(jax.random.normal(jax.random.key(2), (B, H)))
  c0 = 0.3 * np.asarray(jax.random.normal(jax.random.key(3), (B, H)))
  init = (jnp.asarray(h0), jnp.asarray(c0)) if cell.has_cell_state else jnp.asarray(h0)
  # When run through the scan engine and through the NumPy loop.
  ys, final = recurrent.unroll(cell, params, xs, lengths=lengths, initial_carry=init)
  ref_ys, ref_h, ref_c = reference_unroll(name, opts, params, xs, lengths, h0, c0)
  # Then outputs and final carries agree.
  np.testing.assert_allclose(ys, ref_ys, atol=1e-5, rtol=1e-5)
  h, c = _split_carry(cell, final)
  np.testing.assert_allclose(h, ref_h, atol=1e-5, rtol=1e-5)
  if cell.has_cell_state:
    np.testing.assert_allclose(c, ref_c, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,opts", CELL_CONFIGS, ids=IDS)
def test_single_step_matches_reference(name, opts):
  cell = cells.get_cell(name, **opts)
  params = _random_params(cell, jax.random.key(4))
  x = jax.random.normal(jax.random.key(5), (B, D))
  h0 = 0.5 * np.asarray(jax.random.normal(jax.random.key(6), (B, H)))
  c0 = np.ones((B, H))
  init = (jnp.asarray(h0), jnp.asarray(c0)) if cell.has_cell_state else jnp.asarray(h0)
  carry, y = cell.step(params, init, cell.project(params, x))
  ref_ys, ref_h, ref_c = reference_unroll(name, opts, params, x[:, None], [1] * B, h0, c0)
  np.testing.assert_allclose(y, ref_ys[:, 0], atol=1e-5, rtol=1e-5)
  if cell.has_cell_state:
    np.testing.assert_allclose(carry[1], ref_c, atol=1e-5, rtol=1e-5)


def test_irnn_init_is_identity_with_zero_biases():
  params = cells.get_cell("irnn").init(jax.random.key(0), D, H)
  np.testing.assert_array_equal(params["w_hh"], np.eye(H))
  np.testing.assert_array_equal(params["b_ih"], np.zeros(H))
  np.testing.assert_array_equal(params["b_hh"], np.zeros(H))
  # Input weights are small but not zero (std 0.001 in the paper).
  std = float(np.std(params["w_ih"]))
  assert 1e-4 < std < 1e-2, std


def test_irnn_with_zero_input_copies_the_state_forward():
  # Identity recurrence + ReLU: a non-negative state passes through unchanged.
  cell = cells.get_cell("irnn")
  params = cell.init(jax.random.key(0), D, H)
  h0 = jnp.abs(jax.random.normal(jax.random.key(1), (B, H)))
  ys, final = recurrent.unroll(cell, params, jnp.zeros((B, T, D)), initial_carry=h0)
  np.testing.assert_allclose(final, h0, rtol=1e-6)
  np.testing.assert_allclose(ys[:, -1], h0, rtol=1e-6)


@pytest.mark.parametrize("name,forget_slice", [("lstm", 1), ("peephole_lstm", 1),
                                               ("coupled_lstm", 0)])
def test_forget_bias_lands_in_the_forget_slice(name, forget_slice):
  key = jax.random.key(0)
  base = cells.get_cell(name).init(key, D, H)
  biased = cells.get_cell(name, forget_bias=1.0).init(key, D, H)
  delta = np.asarray(biased["b_hh"] - base["b_hh"]).reshape(-1, H)
  expected = np.zeros_like(delta)
  expected[forget_slice] = 1.0
  np.testing.assert_allclose(delta, expected, atol=1e-6)
  np.testing.assert_array_equal(biased["b_ih"], base["b_ih"])
  np.testing.assert_array_equal(biased["w_hh"], base["w_hh"])


def _check_unroll_gradients(name, opts, order, modes):
  """Finite differences vs autodiff through ``unroll`` (with lengths), all in float64."""
  cell = cells.get_cell(name, **opts)
  with jax.enable_x64(True):
    params = _random_params(cell, jax.random.key(7), d=3, h=4, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(8), (2, 4, 3), jnp.float64)
    lengths = jnp.array([4, 2])

    def run(params, xs):
      return recurrent.unroll(cell, params, xs, lengths=lengths, carry_dtype=jnp.float64)

    ys, final = run(params, xs)
    # float64 end to end, or the finite differences would only be float32-accurate.
    assert ys.dtype == jnp.float64 and jax.tree.leaves(final)[0].dtype == jnp.float64
    jtu.check_grads(run, (params, xs), order=order, modes=modes, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,opts", CELL_CONFIGS, ids=IDS)
def test_first_order_gradients_match_finite_differences(name, opts):
  _check_unroll_gradients(name, opts, order=1, modes=("fwd", "rev"))


# Second order is costly to compile; one gated cell of each family covers the remaining code.
@pytest.mark.parametrize("name,opts", [("lstm", {"forget_bias": 1.0}),
                                       ("gru", {"reset_after": False})], ids=["lstm", "gru-cho"])
def test_second_order_gradients_match_finite_differences(name, opts):
  _check_unroll_gradients(name, opts, order=2, modes=("rev",))


@pytest.mark.parametrize("name,opts", CELL_CONFIGS, ids=IDS)
def test_bf16_params_and_inputs_keep_float32_carry(name, opts):
  cell = cells.get_cell(name, **opts)
  params = jax.tree.map(lambda p: 0.5 * p, _random_params(cell, jax.random.key(9)))
  xs = 0.5 * jax.random.normal(jax.random.key(10), (B, T, D))
  lengths = np.array([T, 4, 1])
  ys32, final32 = recurrent.unroll(cell, params, xs, lengths=lengths)
  params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
  ys16, final16 = recurrent.unroll(cell, params16, xs.astype(jnp.bfloat16), lengths=lengths)
  for leaf in jax.tree.leaves(final16):
    assert leaf.dtype == jnp.float32
  assert ys16.dtype == jnp.float32
  np.testing.assert_allclose(ys16, ys32, atol=2e-2)
  for a, b in zip(jax.tree.leaves(final16), jax.tree.leaves(final32)):
    np.testing.assert_allclose(a, b, atol=2e-2)
  # bf16 genuinely rounds: the runs are close but not bitwise equal.
  assert float(jnp.max(jnp.abs(ys16 - ys32))) > 0.0


def test_get_cell_rejects_unknown_names_and_options():
  with pytest.raises(ValueError, match="unknown cell 'lstmm'.*known cells: rnn"):
    cells.get_cell("lstmm")
  with pytest.raises(ValueError, match="unknown nonlinearity 'sigmoid'"):
    cells.get_cell("rnn", nonlinearity="sigmoid")
  with pytest.raises(TypeError, match="cell must be a name or a Cell"):
    cells.get_cell(3)
  assert cells.get_cell("GRU") == cells.Cell("gru")
  assert cells.get_cell(cells.Cell("lstm"), forget_bias=1.0).forget_bias == 1.0


@pytest.mark.parametrize("input_size", [3, 40])  # narrower and wider than the 4 * 8 gates
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_project_gate_blocks_are_the_projection_split_by_gate(input_size, dtype):
  params = cells.init_lstm(jax.random.PRNGKey(0), input_size, 8, dtype)
  xs = jax.random.normal(jax.random.PRNGKey(1), (2, 5, input_size)).astype(dtype)
  whole = cells.project_inputs(params, xs)                        # [b, t, 4h]
  blocks = cells.project_gate_blocks(params, xs, 4)
  assert [blk.shape for blk in blocks] == [(2, 5, 8)] * 4
  np.testing.assert_allclose(jnp.concatenate(blocks, -1), whole, rtol=1e-6, atol=1e-6)
  time_major = cells.project_gate_blocks(params, xs, 4, time_major=True)
  np.testing.assert_allclose(jnp.concatenate(time_major, -1), jnp.swapaxes(whole, 0, 1),
                             rtol=1e-6, atol=1e-6)
  assert all(blk.dtype == jnp.float32 for blk in blocks + time_major)


def test_chrono_initialisation_of_the_lstm_biases():
  key, key_bias = jax.random.split(jax.random.PRNGKey(4))
  params = cells.get_cell("lstm").init(key, D, 64)
  chrono = cells.chrono_lstm_biases(key_bias, params, 400.0)
  u = np.asarray(jax.random.uniform(key_bias, (64,), jnp.float32, 1.0, 399.0))
  total = np.asarray(chrono["b_ih"] + chrono["b_hh"])
  # Forget bias log(u), input bias -log(u), u in [1, 399); the other gates' biases unchanged.
  np.testing.assert_allclose(total[64:128], np.log(u), rtol=1e-6)
  np.testing.assert_allclose(total[:64], -np.log(u), rtol=1e-6)
  assert 0.0 <= total[64:128].min() and total[64:128].max() < np.log(399.0)
  np.testing.assert_array_equal(total[128:], np.asarray(params["b_ih"] + params["b_hh"])[128:])
  for name in ("w_ih", "w_hh"):
    np.testing.assert_array_equal(chrono[name], params[name])
  # At init, with zero inputs and state, unit j's memory decays by
  # sigmoid(log u_j) = 1 - 1/(u_j + 1) a step: a characteristic time of u_j + 1 steps.
  forget = 1 / (1 + np.exp(-total[64:128]))
  np.testing.assert_allclose(1 / (1 - forget), u + 1, rtol=1e-4)
  with pytest.raises(ValueError, match="LSTM's 4 gates"):
    cells.chrono_lstm_biases(key_bias, cells.get_cell("gru").init(key, D, 8), 400.0)
  with pytest.raises(ValueError, match="t_max > 2"):
    cells.chrono_lstm_biases(key_bias, params, 2.0)
