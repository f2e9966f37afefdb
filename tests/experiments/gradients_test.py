"""experiments/gradients: state-gradient norms against matrix powers, fitted rates, the cliff, and
the smoke variant end to end."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.gradients import cliff
from experiments.gradients import probes
from seqjax import cells
from seqjax import recurrent

import forced_devices

LINEAR = cells.get_cell("rnn", nonlinearity="linear")


def _linear_params(w_hh, d=3):
  params = LINEAR.init(jax.random.PRNGKey(0), d, w_hh.shape[0])
  params["w_hh"] = jnp.asarray(w_hh, jnp.float32)
  return params


def test_linear_rnn_gradient_norm_is_the_norm_of_the_matrix_power():
  # Given a linear RNN h_t = h_{t-1} W + x_t U + b (row vectors) and the loss h_T . v,
  # (The shapes of the next test too: the compiled unrolls are shared.)
  rng = np.random.default_rng(0)
  w = 0.35 * rng.normal(size=(6, 6))
  v = rng.normal(size=6)
  xs = rng.normal(size=(2, 30, 3))
  lags = np.arange(31)
  # when the probe differentiates the loss with respect to the state L steps before the end,
  norms = probes.state_gradient_norms(LINEAR, _linear_params(w), xs,
                                      lambda h: h @ jnp.asarray(v, jnp.float32), lags)
  # then dL/dh_{T-L} = W^L v for every example: its norm is the matrix power's, computed directly.
  expected = [np.linalg.norm(np.linalg.matrix_power(w, lag) @ v) for lag in lags]
  np.testing.assert_allclose(norms, expected, rtol=2e-5)


@pytest.mark.parametrize("radius", [0.9, 1.1])
def test_fitted_rate_of_a_scaled_orthogonal_linear_rnn_is_its_spectral_radius(radius):
  w = probes.scaled_orthogonal(jax.random.PRNGKey(1), 6, radius)
  values = probes.singular_values(w)
  np.testing.assert_allclose(values, radius, rtol=1e-5)  # every singular value is the radius
  xs = np.random.default_rng(1).normal(size=(2, 30, 3))
  lags = np.arange(31)
  norms = probes.state_gradient_norms(LINEAR, _linear_params(w), xs, lambda h: h.sum(-1), lags)
  assert probes.fit_rate(lags, norms) == pytest.approx(radius, rel=1e-4)
  # The rate of a known geometric sequence, and NaN when too little is left to fit.
  assert probes.fit_rate(np.arange(5), 3.0 * 0.5 ** np.arange(5)) == pytest.approx(0.5)
  assert np.isnan(probes.fit_rate([0, 1], [1.0, 0.0]))


def test_state_gradient_of_the_lstm_includes_the_cell_state_and_rejects_bad_lags():
  lstm = cells.get_cell("lstm")
  params = lstm.init(jax.random.PRNGKey(2), 2, 4)
  xs = np.random.default_rng(2).normal(size=(1, 5, 2))
  # Lag 2: dL/d(h_3, c_3) for L = sum(h_5), by finite differences on the carry.
  norm = probes.state_gradient_norms(lstm, params, xs, lambda h: h.sum(-1), [2])[0]
  _, (h3, c3) = recurrent.unroll(lstm, params, xs[:, :3], impl="scan")
  def loss(flat):
    carry = (flat[:4][None], flat[4:][None])
    _, final = recurrent.unroll(lstm, params, xs[:, 3:], initial_carry=carry, impl="scan")
    return float(final[0].sum())
  base = np.concatenate([h3[0], c3[0]]).astype(np.float64)
  eps = 1e-3
  grad = [(loss(jnp.asarray(base + eps * e, jnp.float32)) -
           loss(jnp.asarray(base - eps * e, jnp.float32))) / (2 * eps) for e in np.eye(8)]
  assert norm == pytest.approx(np.linalg.norm(grad), rel=2e-3)
  with pytest.raises(ValueError, match=r"lags must be a 1-d list of ints in \[0, 5\]"):
    probes.state_gradient_norms(lstm, params, xs, lambda h: h.sum(-1), [6])


def test_cliff_loss_is_the_python_loop_and_clipped_steps_are_bounded():
  def loop_loss(w, b, steps=50, h=0.5, target=0.7):
    for _ in range(steps):
      h = np.tanh(w * h + b)
    return (h - target) ** 2
  for w, b in [(2.5, -1.0), (0.5, 0.5), (3.6, 4.3)]:
    assert float(cliff.loss(w, b, 50, 0.5, 0.7)) == pytest.approx(loop_loss(w, b), abs=1e-5)
  grid = cliff.surface([0.5, 2.5], [-1.0, 0.5], 50, 0.5, 0.7)
  assert grid[0, 1] == pytest.approx(loop_loss(2.5, -1.0), abs=1e-5)  # rows are b, columns w
  # Across the cliff the plain step is thrown far; the clipped one moves at most lr * clip.
  plain = cliff.descend((2.5, -1.0), 0.5, 45, 50, 0.5, 0.7)
  clipped = cliff.descend((2.5, -1.0), 0.5, 45, 50, 0.5, 0.7, clip=1.0)
  assert np.linalg.norm(np.diff(clipped, axis=0), axis=1).max() <= 0.5 + 1e-5
  assert np.linalg.norm(np.diff(plain, axis=0), axis=1).max() > 2.0


def test_smoke_run_writes_rates_that_match_the_matrices(tmp_path):
  workdir = tmp_path / "gradients"
  proc = forced_devices.run_experiment("gradients", workdir)
  forced_devices.assert_ok(proc)
  results = json.loads((workdir / "results.json").read_text())
  models = results["models"]
  assert list(models) == ["linear-1", "tanh-1"]
  # The linear RNN's measured rate is its matrix's singular value (all equal to the radius).
  linear = models["linear-1"]["init"]
  assert linear["rate"] == pytest.approx(1.0, abs=1e-4)
  np.testing.assert_allclose(linear["singular_values"], 1.0, rtol=1e-5)
  # tanh' <= 1: the tanh RNN's gradient decays at most as fast as its matrix lets it grow.
  assert models["tanh-1"]["init"]["rate"] <= 1.0 + 1e-6
  assert "trained" in models["tanh-1"] and "trained" not in models["linear-1"]
  # Each table row is the results' numbers; the plain descent ends worse than the clipped one.
  table = (workdir / "table.md").read_text()
  assert f"| linear-1 | 1.0000 / 1.0000 | {linear['rate']:.4f} | - |" in table
  tanh = models["tanh-1"]["init"]
  assert tanh["rate"] == pytest.approx(tanh["tanh_predicted_rate"], rel=0.1)
  cliff_loss = results["cliff"]["final_loss"]
  assert cliff_loss["plain"] > cliff_loss["clipped"]
  for name in ("gradient_norms.png", "rates.png", "cliff.png"):
    assert (workdir / name).stat().st_size > 5000
