"""minGRU / minLSTM against a float64 NumPy loop written from Feng et al. 2024, "Were RNNs All We
Needed?" (arXiv:2410.01201), and not from seqjax's own coefficients.

What seqjax implements, in the paper's terms (h~ is the candidate state, g the paper's
``g(x) = x + 0.5 if x >= 0 else sigmoid(x)``):

* minGRU (the paper's minGRU after its two steps: gates read x_t alone, no tanh on the
  candidate): ``z_t = sigmoid(Linear_z(x_t))``, ``h~_t = g(Linear_h(x_t))`` and
  ``h_t = (1 - z_t) * h_{t-1} + z_t * h~_t``;
* minLSTM (after its three steps, the third normalising the gates so the state's scale does not
  grow with time): ``f_t = sigmoid(Linear_f(x_t))``, ``i_t = sigmoid(Linear_i(x_t))``,
  ``f'_t = f_t / (f_t + i_t)``, ``i'_t = i_t / (f_t + i_t)``, ``h~_t = g(Linear_h(x_t))`` and
  ``h_t = f'_t * h_{t-1} + i'_t * h~_t``.

The candidate goes through g as in the paper's log-space variant, which keeps h~ positive; the
scan itself runs on ``h_t = a_t h_{t-1} + u_t`` in linear space, so any initial state ``h_0`` is
allowed (the log-space code needs a positive one). The linear maps are one ``w_ih``
with the blocks ``[z, h~]`` or ``[f, i, h~]``. Lengths and ``reverse`` are seqjax's: past an
example's length the state stops and the output is zero; ``reverse`` runs each valid prefix
backwards.

Implementations checked: ``recurrent.unroll`` (an associative scan) forward and reverse, and
``cell.step`` one step at a time (the step a decoder calls).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import cells, recurrent

D, H = 3, 4
LENGTHS = np.array([0, 1, 3, 5])  # empty, one step, padded, full (t = 5)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _g(x):
  return np.where(x >= 0, x + 0.5, _sigmoid(x))


def _paper_loop(name, w_ih, b_ih, xs, lengths, h0, reverse=False):
  """The paper's recurrence in float64, one example and one step at a time."""
  w_ih, b_ih, xs, h0 = (np.asarray(a, np.float64) for a in (w_ih, b_ih, xs, h0))
  ys, finals = np.zeros(xs.shape[:2] + (h0.shape[1],)), h0.copy()
  for row, n in enumerate(lengths):
    h = h0[row]
    for t in (reversed(range(n)) if reverse else range(n)):
      pre = xs[row, t] @ w_ih + b_ih
      if name == "min_gru":
        z, h_tilde = _sigmoid(pre[:H]), _g(pre[H:])
        h = (1.0 - z) * h + z * h_tilde
      else:
        f, i, h_tilde = _sigmoid(pre[:H]), _sigmoid(pre[H:2 * H]), _g(pre[2 * H:])
        h = f / (f + i) * h + i / (f + i) * h_tilde
      ys[row, t] = h
    finals[row] = h
  return ys, finals


def _parallel(name, reverse):
  return lambda w, b, xs, h0: recurrent.unroll(name, {"w_ih": w, "b_ih": b}, xs,
                                               lengths=LENGTHS, reverse=reverse,
                                               initial_carry=h0)


def _stepwise(name):
  """``cell.step`` through time in a plain loop, padded steps masked as unroll does."""
  cell = cells.get_cell(name)

  @jax.jit
  def run(w, b, xs, h0):
    params = {"w_ih": w, "b_ih": b}
    h, ys = h0, []
    for t in range(xs.shape[1]):
      new, y = cell.step(params, h, cell.project(params, xs[:, t]))
      live = (t < LENGTHS)[:, None]
      h = jnp.where(live, new, h)
      ys.append(jnp.where(live, y, 0.0))
    return jnp.stack(ys, axis=1), h
  return run


IMPLEMENTATIONS = {"scan": lambda n: _parallel(n, False),
                   "scan_reverse": lambda n: _parallel(n, True),
                   "step": _stepwise}


def _inputs(name, seed=0):
  """float64 NumPy weights, inputs and initial state; pre-activations of both signs."""
  rng = np.random.default_rng(seed)
  gates = cells.get_cell(name).gates
  return (rng.normal(size=(D, gates * H)), rng.normal(size=(gates * H,)),
          rng.normal(size=(len(LENGTHS), 5, D)), rng.normal(size=(len(LENGTHS), H)))


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("name", ["min_gru", "min_lstm"])
def test_outputs_follow_the_paper_in_float64_and_float32(name, impl):
  # Given: weights, a padded batch (lengths 0, 1, 3, 5) and a nonzero initial state.
  args = _inputs(name)
  reverse = impl == "scan_reverse"
  want_ys, want_final = _paper_loop(name, *args[:3], LENGTHS, args[3], reverse=reverse)

  # When: seqjax runs them in float64, Then: the paper's numbers to rounding.
  with jax.enable_x64(True):
    ys, final = IMPLEMENTATIONS[impl](name)(*(jnp.asarray(a, jnp.float64) for a in args))
    assert ys.dtype == jnp.float64 and final.dtype == jnp.float64
    np.testing.assert_allclose(ys, want_ys, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(final, want_final, rtol=1e-12, atol=1e-12)

  # When: in float32, Then: the paper's numbers for the float32-rounded weights, to float32.
  args32 = [np.asarray(a, np.float32) for a in args]
  want_ys, want_final = _paper_loop(name, *args32[:3], LENGTHS, args32[3], reverse=reverse)
  ys, final = IMPLEMENTATIONS[impl](name)(*(jnp.asarray(a) for a in args32))
  np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(final, want_final, rtol=1e-5, atol=1e-5)
  # Length 0 keeps the initial state exactly; padding emits exact zeros.
  np.testing.assert_array_equal(final[0], args32[3][0])
  assert np.all(np.asarray(ys)[0] == 0.0) and np.all(np.asarray(ys)[2, 3:] == 0.0)


@pytest.mark.parametrize("name", ["min_gru", "min_lstm"])
def test_gradients_match_finite_differences_of_the_paper(name):
  # Given: a loss of every output and of the final state, and the paper's loop as its reference.
  args = _inputs(name, seed=1)
  weights = np.random.default_rng(2).normal(size=(len(LENGTHS), 5, H))

  def paper_loss(args, reverse):
    ys, final = _paper_loop(name, *args[:3], LENGTHS, args[3], reverse=reverse)
    return np.sum(ys * weights) + np.sum(final ** 2)

  def central_differences(reverse, eps=1e-6):
    grads = []
    for k, arg in enumerate(args):
      grad = np.zeros_like(arg)
      for index in np.ndindex(arg.shape):
        shifted = [list(args), list(args)]
        for sign, copy in zip((1, -1), shifted):
          copy[k] = arg.copy()
          copy[k][index] += sign * eps
        grad[index] = (paper_loss(shifted[0], reverse) - paper_loss(shifted[1], reverse)) / (
            2 * eps)
      grads.append(grad)
    return grads

  # When: seqjax differentiates every implementation in float64.
  with jax.enable_x64(True):
    for impl, make in IMPLEMENTATIONS.items():
      run = make(name)

      def loss(*a, run=run):
        ys, final = run(*a)
        return jnp.sum(ys * weights) + jnp.sum(final ** 2)
      got = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(
          *(jnp.asarray(a, jnp.float64) for a in args))
      # Then: the gradients w.r.t. weights, bias, inputs and initial state are the paper's.
      for which, g, want in zip(("w_ih", "b_ih", "xs", "h0"), got,
                                central_differences(impl == "scan_reverse")):
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-7, err_msg=f"{impl} d/d{which}")


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
