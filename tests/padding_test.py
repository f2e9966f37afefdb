"""Non-finite padding: NaN and inf past each length reach no output, no state and no gradient.

A padded batch often holds whatever the data loader left behind, or NaN from an upstream
division by a zero count. Masking the carry and the outputs is not enough: a ``where`` gives its
discarded branch a zero cotangent, and the derivative of an input projection or a gate computed
on a NaN step turns that into ``0 * NaN = NaN`` for the weights. So every path
``recurrent.unroll`` offers, for every cell (forward, and reverse for one cell per kind of loop),
runs twice on the same batch, once with NaN, +inf, -inf and huge values in the padded steps and
once with zeros there, and the two runs must agree.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import cells
from seqjax import kernels
from seqjax import recurrent
from seqjax.kernels import native

B, T, D, H = 4, 6, 3, 16  # H = 16: the smallest layer the native kernels split over threads
LENGTHS = np.array([6, 3, 1, 0])  # full, middle, 1 and 0
VALID = np.arange(T)[None, :, None] < LENGTHS[:, None, None]  # [b, t, 1]
ATOL = 1e-6


def _dirty(xs):
  """``xs`` with NaN, +inf, -inf and 1e30 cycling through the padded entries."""
  fills = jnp.asarray([jnp.nan, jnp.inf, -jnp.inf, 1e30])
  garbage = fills[jnp.arange(xs.size).reshape(xs.shape) % 4]
  return jnp.where(VALID, xs, garbage)


def _loss_weights(cases, xs):
  """Random weights for every output of every case, drawn outside the jitted function."""
  rng = np.random.default_rng(7)
  shapes = {name: jax.eval_shape(run, params, xs, init)
            for name, (run, params, init) in cases.items()}
  return jax.tree.map(lambda a: rng.standard_normal(a.shape, np.float32), shapes)


def _outputs_and_grads(runs, weights, params, xs, init):
  """For each case ``runs[name](params[name], xs, init[name]) -> (ys, final)``: its outputs
  without differentiation, then its outputs and the gradient of a loss over every output and
  final carry with respect to ``(params, xs, init)``. Padded outputs are in the loss on
  purpose: they are the constant zero, so their nonzero cotangent must reach nothing."""
  results = {}
  for name, run in runs.items():
    def loss(params, xs, init, run=run, weights=weights[name]):
      out = run(params, xs, init)
      return sum(jnp.vdot(w, a) for w, a in zip(jax.tree.leaves(weights),
                                                 jax.tree.leaves(out))), out

    args = (params[name], xs, init[name])
    (_, out), grads = jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(*args)
    results[name] = (run(*args), out, grads)
  return results


def _assert_padding_is_inert(cases, xs):
  """``cases``: ``{name: (run, params, init)}``, all run in one jitted function."""
  # Given the same batch with zeros, and with NaN / inf in the padded steps.
  clean = jnp.where(VALID, xs, 0.0)
  runs = {name: case[0] for name, case in cases.items()}
  compute = jax.jit(functools.partial(_outputs_and_grads, runs))
  args = (_loss_weights(cases, xs), {name: case[1] for name, case in cases.items()})
  inits = {name: case[2] for name, case in cases.items()}
  # When every case computes its outputs and gradients on both.
  dirty_results, clean_results = compute(*args, _dirty(xs), inits), compute(*args, clean, inits)
  failures = []
  for name in cases:
    (plain, out, grads), expected = dirty_results[name], clean_results[name]
    # Then padded outputs are exactly zero, ...
    if np.any(np.where(VALID, 0.0, out[0]) != 0.0):
      failures.append(f"{name}: nonzero outputs at padded steps")
    # ... every output, final carry and gradient is finite and equals the zero-padding run's, ...
    for what, a, b in [("outputs (no grad)", plain, expected[0]), ("outputs", out, expected[1]),
                       ("grads of (params, xs, init)", grads, expected[2])]:
      a, b = jax.tree.leaves(a), jax.tree.leaves(b)
      if not all(np.isfinite(x).all() for x in a):
        failures.append(f"{name}: non-finite {what}")
      elif not all(np.allclose(x, y, atol=ATOL, rtol=ATOL) for x, y in zip(a, b)):
        failures.append(f"{name}: {what} differ from the zero-padding run's")
    # ... and the padded inputs get exactly zero gradient.
    if np.any(np.where(VALID, 0.0, grads[1]) != 0.0):
      failures.append(f"{name}: gradient at padded inputs not exactly zero")
  assert not failures, "non-finite padding leaks:\n" + "\n".join(failures)


def _random_like(tree, seed, scale=0.5):
  """Uniform [-scale, scale) arrays shaped like ``tree``'s leaves, from NumPy (no XLA compiles)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: rng.uniform(-scale, scale, a.shape).astype(np.float32), tree)


def _layer(name, **options):
  """A cell, params ``[d -> h]`` shaped as its ``init`` makes them and a nonzero initial carry."""
  cell = cells.get_cell(name, **options)
  params = _random_like(jax.eval_shape(lambda k: cell.init(k, D, H), jax.random.key(0)), seed=0)
  return cell, params, _random_like(cell.initial_carry(B, H), 1, scale=2.0)


def _unrolls(label, cell, params, init, directions=("forward", "reverse"), **kwargs):
  """``unroll`` cases of one layer, in each of ``directions``."""
  def run(reverse):
    return lambda p, x, c: recurrent.unroll(cell, p, x, lengths=LENGTHS, initial_carry=c,
                                            reverse=reverse, **kwargs)
  return {f"{label} {d}": (run(d == "reverse"), params, init) for d in directions}


XS = _random_like(jax.ShapeDtypeStruct((B, T, D), jnp.float32), 2, scale=2.0)
SCAN_CELLS = [("rnn", {}), ("rnn", {"nonlinearity": "relu"}), ("irnn", {}), ("lstm", {}),
              ("peephole_lstm", {}), ("coupled_lstm", {}), ("gru", {}),
              ("gru", {"reset_after": False}), ("min_gru", {}), ("min_lstm", {})]
# Reversal is one gather around each path, the same for every cell: two loops and the
# associative scan run it (each case costs about half a second of compilation).
REVERSED = ("lstm", "gru", "min_gru")


def test_scan_every_cell():
  # Every cell through lax.scan (the min_* cells through their associative scan), one program.
  cases = {}
  for name, options in SCAN_CELLS:
    cell, params, init = _layer(name, **options)
    directions = ("forward", "reverse") if name in REVERSED and not options else ("forward",)
    cases.update(_unrolls(f"{name}{options}", cell, params, init, directions, impl="scan"))
  _assert_padding_is_inert(cases, XS)


XLA_LOOPS = kernels.Settings(native=False)
LEAN = kernels.Settings(native=False, forward="lean")  # the inference loop off the CPU


def _reference_cudnn(xs, h0, c0, weights, lengths, input_size, hidden_size):
  """jax.experimental.rnn's pure-JAX LSTM standing in for cuDNN's kernel (as in cudnn_test)."""
  from jax.experimental import rnn as jax_rnn  # pylint: disable=import-outside-toplevel
  unpacked = jax_rnn.unpack_lstm_weights(weights, input_size, hidden_size, 1, False)
  return jax_rnn.lstm_ref(xs, h0, c0, *unpacked, lengths, input_size, hidden_size, 1, 0.0, False)


CUDNN_STAND_IN = kernels.Settings(cudnn_kernel=_reference_cudnn)


def test_fast_paths():
  # The fused custom VJP (XLA loops, lean inference loop), Pallas interpreted, the cuDNN glue
  # and, where built, the native CPU kernels (given inputs or projecting them themselves).
  lstm, lstm_params, lstm_init = _layer("lstm")
  gru, gru_params, gru_init = _layer("gru")
  cases = {**_unrolls("lstm fused", lstm, lstm_params, lstm_init, impl="fused",
                      kernel_settings=XLA_LOOPS),
           **_unrolls("lstm fused lean", lstm, lstm_params, lstm_init, ("forward",),
                      impl="fused", kernel_settings=LEAN),
           **_unrolls("gru fused", gru, gru_params, gru_init, impl="fused"),
           **_unrolls("gru fused lean", gru, gru_params, gru_init, ("forward",), impl="fused",
                      kernel_settings=LEAN),
           **_unrolls("lstm pallas", lstm, lstm_params, lstm_init, ("forward",), impl="pallas"),
           **_unrolls("gru pallas", gru, gru_params, gru_init, ("forward",), impl="pallas"),
           **_unrolls("lstm cudnn glue", lstm, lstm_params, lstm_init, ("forward",),
                      impl="cudnn", kernel_settings=CUDNN_STAND_IN)}
  if native.available():
    for project in (False, True):
      cases.update(_unrolls(f"lstm native project={project}", lstm, lstm_params, lstm_init,
                            ("forward", "reverse") if project else ("forward",), impl="fused",
                            kernel_settings=kernels.Settings(native=True, project=project)))
  _assert_padding_is_inert(cases, XS)


def test_bidirectional_stack():
  # Each layer's padded outputs are the next layer's padded inputs: zero, whatever came in.
  lstm = cells.get_cell("lstm")
  params = _random_like(jax.eval_shape(lambda k: recurrent.init_stack(k, lstm, D, H, 2, True),
                                       jax.random.key(1)), seed=3)
  cases = {"bidirectional stack": (lambda p, x, _: recurrent.stack(lstm, p, x, lengths=LENGTHS),
                                   params, None)}
  _assert_padding_is_inert(cases, XS)
