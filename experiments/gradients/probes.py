"""How far back a loss reaches: the norm of dLoss/d(state_t) against the lag T - t.

Backpropagation through time multiplies the gradient by the step Jacobian once per step, so
``||dL/dh_{T-L}||`` falls or grows roughly like ``rate ** L``. For a linear RNN
``h_t = h_{t-1} W + x_t U`` it is exactly ``||W^L v||`` for a loss ``h_T . v``.

The gradient with respect to the state at every step comes from the one time loop,
``seqjax.recurrent.unroll``, run twice over a batch of ``[lags x b]`` rows: the prefix of each row
(``lengths = T - L``) gives the carry at step ``T - L``; the suffix, shifted to the front
(``lengths = L``) and started from that carry, gives the loss, whose gradient with respect to
the initial carry is dL/d(state_{T-L}). The state is the whole carry: ``h``, or ``(h, c)`` for
the LSTM.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import cells
from seqjax import recurrent


def state_gradient_norms(cell: cells.Cell, params, xs, loss_of_state: Callable, lags):
  """Mean over examples of ``||dL/d(state_{T-L})||`` for each lag ``L``.

  Args:
    cell: the recurrent cell.
    params: its parameters.
    xs: ``[b, t, d]`` inputs.
    loss_of_state: ``h_T: [b, h] -> [b]``, each example's loss of its final hidden state.
    lags: ``[n]`` ints in ``[0, t]``; lag 0 is the final state, lag ``t`` the initial one.

  Returns:
    ``[n]`` float64 norms.
  """
  xs = np.asarray(xs, np.float32)
  b, t, _ = xs.shape
  lags = np.asarray(lags, np.int64)
  if lags.ndim != 1 or lags.min() < 0 or lags.max() > t:
    raise ValueError(f"lags must be a 1-d list of ints in [0, {t}]; got {lags.tolist()}")
  n = lags.size
  rows = np.repeat(lags, b)  # [n * b] lag of each row
  tiled = np.tile(xs, (n, 1, 1))  # [n * b, t, d]
  # Suffix rows: step T - L + i at position i, the rest is padding past the length.
  idx = np.minimum((t - rows)[:, None] + np.arange(t)[None, :], t - 1)
  suffix = np.take_along_axis(tiled, idx[..., None], axis=1)
  _, carry = recurrent.unroll(cell, params, tiled, lengths=jnp.asarray(t - rows), impl="scan")

  def loss(carry0):
    _, final = recurrent.unroll(cell, params, suffix, lengths=jnp.asarray(rows),
                                initial_carry=carry0, impl="scan")
    h = cells.output_of(final)
    return jnp.sum(jax.vmap(loss_of_state)(h.reshape(n, b, h.shape[-1])))

  grads = jax.grad(loss)(carry)
  squares = sum(np.sum(np.asarray(g, np.float64) ** 2, axis=-1) for g in jax.tree.leaves(grads))
  return np.sqrt(squares).reshape(n, b).mean(axis=1)


def fit_rate(lags, norms, min_lag: int = 1) -> float:
  """Per-step factor ``exp(slope)`` of a least-squares line through ``log norm`` against lag.

  Uses lags ``>= min_lag`` (the first steps carry the readout's transient) whose norm is a
  positive normal float; NaN when fewer than two remain.
  """
  lags, norms = np.asarray(lags, np.float64), np.asarray(norms, np.float64)
  keep = (lags >= min_lag) & (norms > 1e-30) & np.isfinite(norms)
  if keep.sum() < 2:
    return float("nan")
  slope = np.polyfit(lags[keep], np.log(norms[keep]), 1)[0]
  return float(np.exp(slope))


def tanh_rate(cell: cells.Cell, params, xs) -> float:
  """The tanh RNN's expected per-step factor: ``sigma_max(W) * RMS tanh'``, geometric mean over steps.

  One step multiplies the gradient by ``W diag(1 - h_t^2)``; for a scaled orthogonal ``W`` and a
  gradient spread over the units that shrinks its norm by ``sigma * RMS_units(1 - h_t^2)``.
  ``xs: [b, t, d]``; the RMS is over examples and units at each step.
  """
  hs, _ = recurrent.unroll(cell, params, np.asarray(xs, np.float32), impl="scan")
  slope = 1.0 - np.asarray(hs, np.float64) ** 2  # tanh' at every step: [b, t, h]
  rms = np.sqrt(np.mean(slope ** 2, axis=(0, 2)))  # [t]
  return float(singular_values(params["w_hh"])[0] * np.exp(np.mean(np.log(rms))))


def scaled_orthogonal(key, hidden_size: int, radius: float) -> jax.Array:
  """``radius`` times a random orthogonal matrix ``[h, h]``: spectral radius and every singular
  value equal ``radius``, so the rate theory predicts is unambiguous."""
  q, r = jnp.linalg.qr(jax.random.normal(key, (hidden_size, hidden_size), jnp.float32))
  return radius * q * jnp.sign(jnp.diag(r))[None, :]


def singular_values(w_hh) -> np.ndarray:
  """Singular values (descending) of a recurrent matrix ``[h, G*h]``."""
  return np.linalg.svd(np.asarray(w_hh, np.float64), compute_uv=False)
