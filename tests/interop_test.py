"""seqjax.from_torch against PyTorch on the same weights: outputs, final states and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import rnn as rnn_utils

import seqjax
from seqjax import interop

torch.set_num_threads(1)  # Deterministic reductions in torch's CPU kernels.

TOL = dict(rtol=1e-5, atol=1e-5)
D_IN, HIDDEN, BATCH, TIME = 3, 5, 5, 7

# A pairwise covering design over (mode, num_layers, bidirectional, batch_first, bias, lengths):
# every pair of levels of any two factors appears in at least one row (12 rows instead of the
# 192 of the full product), plus a deep bidirectional GRU with lengths so that every mode meets
# lengths with more than one bidirectional layer.
CASES = [
    ("rnn_tanh", 1, True, False, False, False),
    ("rnn_tanh", 2, True, False, True, True),
    ("rnn_tanh", 3, False, True, False, True),
    ("rnn_relu", 1, False, True, True, False),
    ("rnn_relu", 2, True, True, True, False),
    ("rnn_relu", 3, True, False, False, True),
    ("lstm", 1, True, False, True, True),
    ("lstm", 2, False, True, False, False),
    ("lstm", 3, True, False, False, True),
    ("gru", 1, True, True, False, True),
    ("gru", 2, False, False, True, False),
    ("gru", 3, False, False, True, False),
    ("gru", 2, True, True, True, True),
]


def _case_id(case):
  mode, layers, bidir, batch_first, bias, lengths = case
  return (f"{mode}-L{layers}-{'bi' if bidir else 'uni'}-{'bf' if batch_first else 'tm'}"
          f"-{'bias' if bias else 'nobias'}-{'lengths' if lengths else 'full'}")


def _module(mode, num_layers=1, bidirectional=False, batch_first=False, bias=True, seed=0,
            **kwargs):
  torch.manual_seed(seed)
  common = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                bias=bias, **kwargs)
  if mode.startswith("rnn"):
    return nn.RNN(D_IN, HIDDEN, nonlinearity=mode.split("_")[1], **common)
  return {"lstm": nn.LSTM, "gru": nn.GRU}[mode](D_IN, HIDDEN, **common)


def _lengths(rng, batch=BATCH, time=TIME):
  """Random lengths in [1, time] that include both 1 and time, in shuffled order."""
  lengths = np.concatenate([[1, time], rng.integers(1, time + 1, batch - 2)])
  return rng.permutation(lengths).astype(np.int64)


def _torch_forward(module, x, lengths):
  """module(x) as a padded tensor, packing by ``lengths`` when given."""
  if lengths is None:
    return module(x)
  packed = rnn_utils.pack_padded_sequence(x, torch.from_numpy(lengths),
                                          batch_first=module.batch_first, enforce_sorted=False)
  out, state = module(packed)
  out, _ = rnn_utils.pad_packed_sequence(out, batch_first=module.batch_first,
                                         total_length=x.shape[1 if module.batch_first else 0])
  return out, state


def _states(state):
  """h_n, or (h_n, c_n), as a tuple."""
  return tuple(state) if isinstance(state, tuple) else (state,)


def _assert_close(actual, expected, what):
  np.testing.assert_allclose(np.asarray(actual), expected, err_msg=what, **TOL)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_torch_outputs_states_and_gradients(case):
  # Given a torch module, its converted twin, inputs, lengths and random cotangents.
  mode, num_layers, bidirectional, batch_first, bias, use_lengths = case
  module = _module(mode, num_layers, bidirectional, batch_first, bias)
  apply_fn, params = interop.from_torch(module)
  rng = np.random.default_rng(1)
  shape = (BATCH, TIME, D_IN) if batch_first else (TIME, BATCH, D_IN)
  x = rng.standard_normal(shape).astype(np.float32)
  lengths = _lengths(rng) if use_lengths else None
  directions = 2 if bidirectional else 1
  out_shape = shape[:2] + (directions * HIDDEN,)
  n_states = 2 if mode == "lstm" else 1
  r_out = rng.standard_normal(out_shape).astype(np.float32)
  r_states = [rng.standard_normal((num_layers * directions, BATCH, HIDDEN)).astype(np.float32)
              for _ in range(n_states)]

  # When both frameworks compute loss = sum(out * R) + sum(h_n * S) [+ sum(c_n * U)].
  x_t = torch.from_numpy(x).requires_grad_(True)
  out_t, state_t = _torch_forward(module, x_t, lengths)
  loss_t = (out_t * torch.from_numpy(r_out)).sum() + sum(
      (s * torch.from_numpy(r)).sum() for s, r in zip(_states(state_t), r_states))
  loss_t.backward()

  def loss_fn(params, x):
    out, state = apply_fn(params, x, lengths)
    loss = jnp.sum(out * r_out) + sum(jnp.sum(s * r) for s, r in zip(_states(state), r_states))
    return loss, (out, state)
  (_, (out, state)), (g_params, g_x) = jax.value_and_grad(loss_fn, argnums=(0, 1),
                                                          has_aux=True)(params, x)

  # Then outputs, final states and the gradient of every tensor agree.
  _assert_close(out, out_t.detach().numpy(), "output")
  if use_lengths:  # Padding never leaks: outputs past each length are exactly zero.
    steps = np.arange(TIME)[None, :] >= lengths[:, None]  # [b, t]
    padded = np.asarray(out) if batch_first else np.swapaxes(np.asarray(out), 0, 1)
    assert np.all(padded[steps] == 0.0)
  for i, (s, s_t) in enumerate(zip(_states(state), _states(state_t))):
    _assert_close(s, s_t.detach().numpy(), ("h_n", "c_n")[i])
  _assert_close(g_x, x_t.grad.numpy(), "d loss / d x")
  torch_grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
  assert set(g_params) == set(torch_grads)
  for name, grad in torch_grads.items():
    _assert_close(g_params[name], grad, f"d loss / d {name}")


@pytest.mark.parametrize("mode", ["rnn_relu", "lstm", "gru"])
def test_initial_state_and_its_gradient_match_torch(mode):
  # Given a 2-layer bidirectional module and a random initial state in torch's layout.
  module = _module(mode, num_layers=2, bidirectional=True, batch_first=True, seed=2)
  apply_fn, params = interop.from_torch(module)
  rng = np.random.default_rng(3)
  x = rng.standard_normal((BATCH, TIME, D_IN)).astype(np.float32)
  hx = [rng.standard_normal((4, BATCH, HIDDEN)).astype(np.float32)
        for _ in range(2 if mode == "lstm" else 1)]
  lengths = _lengths(rng)
  r_out = rng.standard_normal((BATCH, TIME, 2 * HIDDEN)).astype(np.float32)

  # When the loss depends on the output and the final h_n.
  hx_t = [torch.from_numpy(h).requires_grad_(True) for h in hx]
  packed = rnn_utils.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                          batch_first=True, enforce_sorted=False)
  out_t, state_t = module(packed, tuple(hx_t) if mode == "lstm" else hx_t[0])
  out_t, _ = rnn_utils.pad_packed_sequence(out_t, batch_first=True, total_length=TIME)
  ((out_t * torch.from_numpy(r_out)).sum() + _states(state_t)[0].sum()).backward()

  def loss_fn(hx):
    out, state = apply_fn(params, x, lengths, tuple(hx) if mode == "lstm" else hx[0])
    return jnp.sum(out * r_out) + jnp.sum(_states(state)[0]), (out, state)
  (_, (out, state)), g_hx = jax.value_and_grad(loss_fn, has_aux=True)(hx)

  # Then the output, the final state and d loss / d hx agree.
  _assert_close(out, out_t.detach().numpy(), "output")
  for s, s_t in zip(_states(state), _states(state_t)):
    _assert_close(s, s_t.detach().numpy(), "final state")
  for g, h_t in zip(g_hx, hx_t):
    _assert_close(g, h_t.grad.numpy(), "d loss / d hx")


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm"])
def test_unbatched_input_matches_torch(mode):
  module = _module(mode, num_layers=2, bidirectional=True, seed=4)
  apply_fn, params = interop.from_torch(module)
  rng = np.random.default_rng(5)
  x = rng.standard_normal((TIME, D_IN)).astype(np.float32)
  hx = [rng.standard_normal((4, HIDDEN)).astype(np.float32)
        for _ in range(2 if mode == "lstm" else 1)]
  hx_arg = tuple(hx) if mode == "lstm" else hx[0]

  out, state = apply_fn(params, x, hx=hx_arg)
  with torch.no_grad():
    hx_t = tuple(map(torch.from_numpy, hx)) if mode == "lstm" else torch.from_numpy(hx[0])
    out_t, state_t = module(torch.from_numpy(x), hx_t)

  assert out.shape == (TIME, 2 * HIDDEN)
  _assert_close(out, out_t.numpy(), "output")
  for s, s_t in zip(_states(state), _states(state_t)):
    assert s.shape == (4, HIDDEN)
    _assert_close(s, s_t.numpy(), "final state")


def test_jit_gives_the_same_numbers_as_eager_and_torch():
  module = _module("lstm", num_layers=2, bidirectional=True, batch_first=False, seed=6)
  apply_fn, params = interop.from_torch(module)
  rng = np.random.default_rng(7)
  x = rng.standard_normal((TIME, BATCH, D_IN)).astype(np.float32)
  lengths = _lengths(rng)

  eager = apply_fn(params, x, lengths)
  jitted = jax.jit(apply_fn)(params, jnp.asarray(x), jnp.asarray(lengths))
  with torch.no_grad():
    reference = _torch_forward(module, torch.from_numpy(x), lengths)

  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), eager, jitted)
  _assert_close(jitted[0], reference[0].numpy(), "output")
  for s, s_t in zip(jitted[1], reference[1]):
    _assert_close(s, s_t.numpy(), "final state")


def test_length_zero_gives_zero_outputs_and_the_initial_state():
  # pack_padded_sequence rejects length 0, so compare the other rows with torch on their own.
  module = _module("gru", num_layers=2, bidirectional=True, batch_first=True, seed=8)
  apply_fn, params = interop.from_torch(module)
  rng = np.random.default_rng(9)
  x = rng.standard_normal((3, TIME, D_IN)).astype(np.float32)
  lengths = np.array([TIME, 0, 2])

  out, h_n = apply_fn(params, x, lengths)
  with torch.no_grad():
    keep = np.array([0, 2])
    out_t, h_n_t = _torch_forward(module, torch.from_numpy(x[keep]), lengths[keep])

  assert np.all(np.asarray(out[1]) == 0.0) and np.all(np.asarray(h_n[:, 1]) == 0.0)
  _assert_close(out[keep], out_t.numpy(), "output")
  _assert_close(h_n[:, keep], h_n_t.numpy(), "h_n")


def test_eval_mode_ignores_inter_layer_dropout():
  module = _module("lstm", num_layers=3, dropout=0.5, seed=10).eval()
  apply_fn, params = interop.from_torch(module)
  x = np.random.default_rng(11).standard_normal((TIME, BATCH, D_IN)).astype(np.float32)
  out, (h_n, c_n) = apply_fn(params, x)
  with torch.no_grad():
    out_t, (h_n_t, c_n_t) = module(torch.from_numpy(x))
  _assert_close(out, out_t.numpy(), "output")
  _assert_close(h_n, h_n_t.numpy(), "h_n")
  _assert_close(c_n, c_n_t.numpy(), "c_n")


def test_params_are_torch_named_and_shaped():
  module = _module("gru", num_layers=2, bidirectional=True, bias=False)
  _, params = interop.from_torch(module)
  expected = {name: p.detach().numpy() for name, p in module.named_parameters()}
  assert list(params) == list(expected)  # torch's names and order, no bias entries.
  for name, value in expected.items():
    np.testing.assert_array_equal(params[name], value)


def test_seqjax_exports_from_torch():
  assert seqjax.from_torch is interop.from_torch


@pytest.mark.parametrize("module, error, match", [
    (nn.Linear(3, 5), TypeError, r"supports torch.nn.RNN.*got Linear"),
    (nn.LSTMCell(3, 5), TypeError, r"cell module LSTMCell"),
    (nn.GRUCell(3, 5), TypeError, r"cell module GRUCell"),
    (nn.LSTM(3, 5, proj_size=2), ValueError, r"proj_size=2"),
    ("lstm", TypeError, r"got str"),
], ids=["linear", "lstm_cell", "gru_cell", "lstm_proj", "not_a_module"])
def test_unsupported_modules_raise(module, error, match):
  with pytest.raises(error, match=match):
    interop.from_torch(module)


@pytest.mark.parametrize("shape, match", [
    ((TIME,), r"expects x of shape \[batch, time, features\].*got a 1-D x"),
    ((2, BATCH, TIME, D_IN), r"got a 4-D x"),
    ((BATCH, TIME, D_IN + 1), r"input_size=3 features in its last dimension; got x of shape"),
    ((TIME, D_IN + 2), r"input_size=3 features"),
])
def test_bad_input_shape_raises(shape, match):
  apply_fn, params = interop.from_torch(_module("lstm", batch_first=True))
  with pytest.raises(ValueError, match=match):
    apply_fn(params, np.zeros(shape, np.float32))


@pytest.mark.parametrize("lengths, match", [
    ([0, 3, -1, 2, 1], r"GRU\(3, 5\): lengths must lie in \[0, 7\].*\[-1\]"),
    ([1, TIME + 1, 2, 3, 4], r"lengths must lie in \[0, 7\].*\[8\]"),
    ([1, 2, 3], r"lengths must have shape \[batch\] = \[5\]"),
    ([1.0, 2.0, 3.0, 4.0, 5.0], r"lengths must be integers"),
])
def test_bad_lengths_raise(lengths, match):
  apply_fn, params = interop.from_torch(_module("gru"))
  x = np.zeros((TIME, BATCH, D_IN), np.float32)
  with pytest.raises(ValueError, match=match):
    apply_fn(params, x, np.asarray(lengths))


def test_other_bad_arguments_raise():
  apply_fn, params = interop.from_torch(_module("lstm", num_layers=2))
  x = np.zeros((TIME, BATCH, D_IN), np.float32)
  with pytest.raises(ValueError, match=r"lengths needs batched x"):
    apply_fn(params, x[:, 0], np.array([TIME]))
  with pytest.raises(ValueError, match=r"missing \['bias_hh_l1'\]"):
    apply_fn({k: v for k, v in params.items() if k != "bias_hh_l1"}, x)
  with pytest.raises(ValueError, match=r"params\['weight_ih_l0'\] has shape \(20, 4\)"):
    apply_fn({**params, "weight_ih_l0": jnp.zeros((20, 4))}, x)
  with pytest.raises(ValueError, match=r"takes hx as a pair \(h_0, c_0\)"):
    apply_fn(params, x, hx=np.zeros((2, BATCH, HIDDEN), np.float32))
  with pytest.raises(ValueError, match=r"needs c_0 of shape \[2, 5, 5\]"):
    apply_fn(params, x, hx=(np.zeros((2, BATCH, HIDDEN)), np.zeros((1, BATCH, HIDDEN))))


def test_updated_params_load_back_into_torch():
  # Given a JAX gradient step on the converted weights.
  module = _module("gru", num_layers=2, bidirectional=True, batch_first=True, seed=12)
  apply_fn, params = interop.from_torch(module)
  x = np.random.default_rng(13).standard_normal((BATCH, TIME, D_IN)).astype(np.float32)
  out_before, _ = apply_fn(params, x)
  grads = jax.grad(lambda p: jnp.sum(apply_fn(p, x)[0] ** 2))(params)
  params = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)

  # When the new weights are loaded into the torch module (torch's names and shapes: no renaming).
  module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})

  # Then torch computes what apply_fn computes with them, and the step changed the output.
  with torch.no_grad():
    out_t, h_n_t = module(torch.from_numpy(x))
  out, h_n = apply_fn(params, x)
  _assert_close(out, out_t.numpy(), "output")
  _assert_close(h_n, h_n_t.numpy(), "h_n")
  assert np.abs(np.asarray(out) - np.asarray(out_before)).max() > 1e-2


def test_accepts_torch_tensors_for_x_lengths_and_hx():
  module = _module("lstm", batch_first=True, seed=14)
  apply_fn, params = interop.from_torch(module)
  rng = np.random.default_rng(15)
  x = rng.standard_normal((BATCH, TIME, D_IN)).astype(np.float32)
  hx = tuple(rng.standard_normal((1, BATCH, HIDDEN)).astype(np.float32) for _ in range(2))
  lengths = _lengths(rng)
  from_numpy = apply_fn(params, x, lengths, hx)
  from_torch = apply_fn(params, torch.from_numpy(x).requires_grad_(True),
                        torch.from_numpy(lengths), tuple(map(torch.from_numpy, hx)))
  jax.tree.map(np.testing.assert_array_equal, from_numpy, from_torch)
