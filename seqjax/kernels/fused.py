"""Whole-layer LSTM and GRU with a hand-written backward pass (the CPU and GPU fast path).

Shapes use the glossary in ``seqjax/__init__.py``.

Autodiff through ``lax.scan`` over a cell step stores every intermediate of every step, replays
the step's whole derivative inside the backward loop, and adds a small ``h_prev^T @ dgates``
into ``dw_hh`` at every step. On a CPU, where the elementwise work and per-op overhead of a
time step cost as much as its matmul, that is most of the training time; on a GPU the
per-step ``dw_hh`` update and the replayed step double the backward's launches. A layer here is
one ``jax.custom_vjp`` function of the inputs, the initial carry and all four weights:

* the input projection ``xs @ w_ih`` runs once for the whole sequence, and both biases are
  added inside the loop, where the add is fused into the gate arithmetic for free;
* the forward loop does only the recurrence and keeps what the backward needs: the gate
  pre-activations and the carry after every step;
* outside the loop, the backward turns those into per-step coefficients in a few large
  elementwise ops, because every cotangent of an LSTM or GRU step is linear in the ``dh``
  (and ``dc``) arriving at its output;
* the backward loop then does per step only ``dgates = dh * coefficients`` and
  ``dh_prev = dgates @ w_hh^T``;
* ``dw_ih = X^T dGx``, ``dw_hh = H_prev^T dGh``, ``dxs = dGx w_ih^T`` and the bias gradients
  come after the loop, each one large matmul or sum over all ``b*t`` rows.

Everything stays batch-major (``[b, t, ...]``, the loops index ``[:, t]``), so no
``[b, t, g]`` array is ever transposed. Sigmoids are computed as ``0.5 * tanh(0.5 x) + 0.5``
(the same function in real arithmetic; one fused tanh on XLA:CPU instead of an exp and a
divide), and the LSTM's four gates go through a single tanh with per-column scales.

``lengths``, ``reverse`` and output masking stay outside (``dispatch.run``): a padded step is given
as ``mask[b, t] = False``, leaves the carry unchanged and gets zero gate gradients.

Being a ``custom_vjp``, the path supports reverse-mode differentiation (``grad``, ``vjp``)
only; ``jvp``, ``jacfwd`` and ``hessian`` need ``impl='scan'`` (``'auto'`` picks the scan for
float64, the dtype of numerical checks). A ``custom_jvp`` whose tangent loop JAX transposes
supports every mode but trained slower than this one (experiments/benchmark/README.md).

On the CPU the LSTM's two loops and its weight gradients run as native kernels (``native/``,
see ``Settings.native``) when they are built: the same arithmetic, with each step's matmul
split over the cores. Which of these runs is decided by :func:`seqjax.kernels.choose`; the
shared backward algebra (coefficients, input projection, weight gradients) is ``algebra.py``.

There is nothing to rematerialise: the forward stores only the minimum (``[b, t, g + 2h]``
floats for the LSTM, ``[b, t, 5h]`` for the GRU, besides the inputs), so ``remat`` has no
effect on this path.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import cells as cells_lib
from seqjax.kernels import algebra
from seqjax.kernels import native as native_lib


class _Setting(NamedTuple):
  """Static settings of the custom VJP (hashable: its ``nondiff_argnums``), from an ``Impl``."""
  unroll_steps: int  # unroll factor of both time loops
  lean: bool         # a call that is not differentiated runs the lean scan
  # The backward loop writes its gate gradients over the coefficients they are made from (each
  # step reads its row, then overwrites it) instead of into a zero-filled buffer, which saves
  # the fill and its copy (experiments/benchmark/README.md). XLA must update the buffer in
  # place, not copy it every step: tests/kernels/fused_test.py checks the CPU program for that.
  in_place: bool
  native: int = 0        # threads of the native CPU kernels running the LSTM's loops; 0: XLA
  project: bool = False  # the native forward kernel does the input projection itself


def _time_major(keep):
  """``keep [b, t, 1]`` as ``[t, b, 1]`` for a scan over time (``None`` stays ``None``)."""
  return None if keep is None else jnp.swapaxes(keep, 0, 1)


def unroll_batch_major(cell: cells_lib.Cell, params, xs: jax.Array, mask: jax.Array | None,
                       carry, unroll_steps: int = 1, impl=None):
  """Runs a fused LSTM or GRU layer, input projection included, over a batch of sequences.

  Args:
    cell: an ``lstm`` or ``gru`` (``reset_after=True``) cell.
    params: the cell's params (``w_ih``, ``b_ih``, ``w_hh``, ``b_hh``).
    xs: ``[b, t, d]`` inputs.
    mask: ``None`` or ``[b, t]`` bool, False where a step is padding.
    carry: the initial carry, ``(h, c)`` for the LSTM, ``h`` for the GRU, each ``[b, h]``.
    unroll_steps: unroll factor of both time loops.
    impl: the ``kernels.Impl`` that :func:`seqjax.kernels.choose` gave for this layer (lean
      forward, in-place backward, native kernels); None: the XLA loops, nothing in place.

  Returns:
    ``(hs, final_carry)``: ``hs: [b, t, h]`` the hidden carry after every step (not masked) and
    the carry after the last step, both in the carry's dtype.
  """
  leaves = jax.tree.leaves(carry)
  if xs.shape[1] == 0:  # Nothing to run (and no step to index): the carry is the result.
    return jnp.zeros(xs.shape[:2] + leaves[0].shape[-1:], leaves[0].dtype), carry
  # As cells.py: float32 arithmetic (float64 under x64 with float64 params) whatever the params.
  dtype = cells_lib.compute_dtype(params["w_ih"].dtype, *(leaf.dtype for leaf in leaves))
  keep = None if mask is None else mask.astype(dtype)[..., None]  # [b, t, 1]
  weights = tuple(params[name] for name in ("w_ih", "b_ih", "w_hh", "b_hh"))
  if impl is None:
    setting = _Setting(int(unroll_steps), lean=False, in_place=False)
  else:
    setting = _Setting(int(unroll_steps), impl.lean, impl.in_place, impl.native, impl.project)
  if cell.name == "lstm":
    h0, c0 = carry
    hs, c_last = _lstm(setting, weights, xs, keep, h0.astype(dtype), c0.astype(dtype))
    final = (_last(hs, h0), c_last.astype(c0.dtype))
  else:
    hs = _gru(setting, weights, xs, keep, carry.astype(dtype))
    final = _last(hs, carry)
  return hs.astype(leaves[0].dtype), final


def _last(hs, initial):
  """The hidden carry after the last step."""
  return hs[:, -1].astype(initial.dtype)


def _at(seq, t):
  """``seq[:, t]`` of a batch-major ``[b, t, ...]`` array with a traced ``t``."""
  return jax.lax.dynamic_index_in_dim(seq, t, axis=1, keepdims=False)


def _put(seq, value, t):
  """``seq.at[:, t].set(value)``, in place inside a loop."""
  return jax.lax.dynamic_update_index_in_dim(seq, value.astype(seq.dtype), t, axis=1)


def _recurrent_matmul(h, w_hh, dtype):
  # As cells._recurrent_matmul: the weights' dtype in, float32 (or wider) accumulation out.
  return jnp.dot(h.astype(w_hh.dtype), w_hh, preferred_element_type=dtype)


# ----------------------------------------------------------------------------- LSTM
def _lstm_scales(hid, dtype):
  """Per-column ``s`` with gate = ``s * tanh(s * x) + (1 - s)``: 0.5 for sigmoid gates i, f, o."""
  return jnp.asarray(np.repeat([0.5, 0.5, 1.0, 0.5], hid), dtype)


def _lstm_step(gx_t, keep_t, h, c, w_hh, scale, shift, bias, dtype):
  """One LSTM step from its input projection ``gx_t``; returns ``(z, h_new, c_new)``."""
  # One tanh for all four gates: sigmoid(x) = 0.5 * tanh(0.5 * x) + 0.5.
  z = (gx_t + _recurrent_matmul(h, w_hh, dtype)) * scale + bias
  i, f, g, o = jnp.split(jnp.tanh(z) * scale + shift, 4, axis=-1)
  c_new = f * c + i * g
  h_new = o * jnp.tanh(c_new)
  if keep_t is not None:
    keep_t = keep_t > 0
    h_new = jnp.where(keep_t, h_new, h)
    c_new = jnp.where(keep_t, c_new, c)
  return z, h_new, c_new


def _lstm_constants(weights, hid, dtype):
  scale = _lstm_scales(hid, dtype)
  bias = (weights[1].astype(dtype) + weights[3].astype(dtype)) * scale
  return scale, 1.0 - scale, bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _lstm(setting, weights, xs, keep, h0, c0):
  if setting.native:
    inputs, project = _lstm_native_inputs(setting, weights, xs, h0)
    return native_lib.lstm_forward(*inputs, h0, c0, keep, train=False, threads=setting.native,
                                   project=project)
  if setting.lean:
    return _lstm_lean(setting.unroll_steps, weights, xs, keep, h0, c0)
  return _lstm_forward(setting, weights, xs, keep, h0, c0)[0]


def _lstm_lean(unroll_steps, weights, xs, keep, h0, c0):
  """The forward alone, storing nothing for a backward: a time-major ``lax.scan``."""
  w_hh, dtype, hid = weights[2], h0.dtype, h0.shape[-1]
  constants = _lstm_constants(weights, hid, dtype)
  gx = algebra.project(jnp.swapaxes(xs, 0, 1), weights[0], dtype)  # [t, b, 4h]

  def step(carry, inputs):
    _, h_new, c_new = _lstm_step(*inputs, *carry, w_hh, *constants, dtype)
    return (h_new, c_new), h_new

  (_, c_last), hs = jax.lax.scan(step, (h0, c0), (gx, _time_major(keep)), unroll=unroll_steps)
  return jnp.swapaxes(hs, 0, 1), c_last


def _lstm_native_inputs(setting, weights, xs, h0):
  """``(inputs, w_ih, w_hh, bias)`` for the native forward kernel, and whether it projects."""
  dtype, hid = h0.dtype, h0.shape[-1]
  _, _, bias = _lstm_constants(weights, hid, dtype)
  if setting.project:
    return (xs.astype(dtype), weights[0].astype(dtype), weights[2].astype(dtype), bias), True
  return (algebra.project(xs, weights[0], dtype), None, weights[2].astype(dtype), bias), False


def _lstm_forward(setting, weights, xs, keep, h0, c0):
  if setting.native:  # residuals hold the gate activations where the XLA loop keeps z
    inputs, project = _lstm_native_inputs(setting, weights, xs, h0)
    acts, hs, cs = native_lib.lstm_forward(*inputs, h0, c0, keep, train=True,
                                           threads=setting.native, project=project)
    return (hs, cs[:, -1]), (weights, xs, keep, acts, hs, cs, h0, c0)
  unroll_steps = setting.unroll_steps
  w_ih, w_hh = weights[0], weights[2]
  dtype, (batch, time, _), hid = h0.dtype, xs.shape, h0.shape[-1]
  constants = _lstm_constants(weights, hid, dtype)
  gx = algebra.project(xs, w_ih, dtype)  # [b, t, 4h]

  def body(t, state):
    h, c, zs, hs, cs = state
    keep_t = None if keep is None else _at(keep, t)
    z, h_new, c_new = _lstm_step(_at(gx, t), keep_t, h, c, w_hh, *constants, dtype)
    return h_new, c_new, _put(zs, z, t), _put(hs, h_new, t), _put(cs, c_new, t)

  zeros = jnp.zeros((batch, time, hid), dtype)
  state = (h0, c0, jnp.zeros((batch, time, 4 * hid), dtype), zeros, zeros)
  _, c_last, zs, hs, cs = jax.lax.fori_loop(0, time, body, state, unroll=unroll_steps)
  return (hs, c_last), (weights, xs, keep, zs, hs, cs, h0, c0)


def _lstm_backward(setting, residuals, cotangents):
  unroll_steps, in_place = setting.unroll_steps, setting.in_place
  weights, xs, keep, zs, hs, cs, h0, c0 = residuals
  dhs, dc_last = cotangents
  w_hh = weights[2]
  if setting.native:  # the kernel computes the coefficients below step by step
    dgates, dh0, dc0, dbias = native_lib.lstm_backward(
        dhs, zs, cs, c0, keep, w_hh.astype(h0.dtype), dc_last.astype(h0.dtype), setting.native)
    weight_grads = native_lib.lstm_weight_grads(xs.astype(h0.dtype), hs, h0, dgates,
                                                setting.native)
    dweights, dxs = algebra.input_grads(weights, xs, dgates, dgates, None,
                                        bias_sums=(dbias, dbias), weight_grads=weight_grads)
    return dweights, dxs, None if keep is None else jnp.zeros_like(keep), dh0, dc0
  dtype, time, hid = zs.dtype, zs.shape[1], h0.shape[-1]
  scale = _lstm_scales(hid, dtype)
  i, f, g, o = jnp.split(jnp.tanh(zs) * scale + (1.0 - scale), 4, axis=-1)
  # Per-step coefficients of the (dh, dc) at each step's output, all steps at once (algebra.py).
  dc_dh, coef, dc_prev = algebra.lstm_coefficients(i, f, g, o, cs, algebra.shifted(cs, c0), keep)
  w_t = w_hh.T.astype(dtype)

  def body(step, state):
    dh, dc, dgates = state  # in place: dgates[:, :t + 1] still holds coef (see _Setting)
    t = time - 1 - step
    dh = dh + _at(dhs, t)
    dc = dc + dh * _at(dc_dh, t)
    dgates_t = jnp.concatenate([dc, dc, dc, dh], axis=-1) * _at(dgates if in_place else coef, t)
    dh_prev = jnp.dot(dgates_t, w_t)
    if keep is not None:
      dh_prev = dh_prev + (1.0 - _at(keep, t)) * dh
    return dh_prev, dc * _at(dc_prev, t), _put(dgates, dgates_t, t)

  state = (jnp.zeros_like(h0), dc_last.astype(dtype), coef if in_place else jnp.zeros_like(coef))
  dh0, dc0, dgates = jax.lax.fori_loop(0, time, body, state, unroll=unroll_steps)
  dweights, dxs = algebra.input_grads(weights, xs, dgates, dgates, algebra.shifted(hs, h0))
  dkeep = None if keep is None else jnp.zeros_like(keep)
  return dweights, dxs, dkeep, dh0, dc0


_lstm.defvjp(_lstm_forward, _lstm_backward)


# ----------------------------------------------------------------------------- GRU
def _gru_project(params, xs, dtype, time_major=False):
  """``xs @ w_ih + b_ih`` as three arrays, ``(gx_r, gx_z, gx_n)``: cells.project_gate_blocks.

  Three arrays, not one sliced inside the loop: XLA:CPU does not vectorise a loop fusion that
  reads one dynamically indexed array at two column offsets, and the GRU step's elementwise
  work then ran about 10 times slower (the LSTM step reads its ``gx`` at one offset).
  """
  blocks = cells_lib.project_gate_blocks(params, xs, 3, time_major)
  return tuple(block.astype(dtype) for block in blocks)


def _gru_step(gx_r_t, gx_z_t, gx_n_t, keep_t, h, w_hh, b_hh, dtype):
  """One GRU step from its input projection (``b_ih`` included); ``(rz, n, gh_n, h_new)``."""
  hid = h.shape[-1]
  gh = _recurrent_matmul(h, w_hh, dtype) + b_hh
  r = 0.5 * jnp.tanh(0.5 * (gx_r_t + gh[:, :hid])) + 0.5
  z = 0.5 * jnp.tanh(0.5 * (gx_z_t + gh[:, hid:2 * hid])) + 0.5
  rz = jnp.concatenate([r, z], axis=-1)
  gh_n = gh[:, 2 * hid:]
  n = jnp.tanh(gx_n_t + r * gh_n)
  h_new = n + z * (h - n)
  if keep_t is not None:
    h_new = jnp.where(keep_t > 0, h_new, h)
  return rz, n, gh_n, h_new


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gru(setting, weights, xs, keep, h0):
  if setting.lean:
    return _gru_lean(setting.unroll_steps, weights, xs, keep, h0)
  return _gru_forward(setting, weights, xs, keep, h0)[0]


def _gru_lean(unroll_steps, weights, xs, keep, h0):
  """The forward alone, storing nothing for a backward: a time-major ``lax.scan``."""
  w_ih, b_ih, w_hh, b_hh = weights
  dtype = h0.dtype
  gx = _gru_project({"w_ih": w_ih, "b_ih": b_ih}, xs, dtype, time_major=True)  # 3 x [t, b, h]
  b_hh = b_hh.astype(dtype)

  def step(h, inputs):
    h_new = _gru_step(*inputs, h, w_hh, b_hh, dtype)[-1]
    return h_new, h_new

  _, hs = jax.lax.scan(step, h0, (*gx, _time_major(keep)), unroll=unroll_steps)
  return jnp.swapaxes(hs, 0, 1)


def _gru_forward(setting, weights, xs, keep, h0):
  unroll_steps = setting.unroll_steps
  w_ih, b_ih, w_hh, b_hh = weights
  dtype, (batch, time, _), hid = h0.dtype, xs.shape, h0.shape[-1]
  gx = _gru_project({"w_ih": w_ih, "b_ih": b_ih}, xs, dtype)  # 3 x [b, t, h]
  b_hh = b_hh.astype(dtype)

  def body(t, state):
    h, rzs, ns, gh_ns, hs = state
    keep_t = None if keep is None else _at(keep, t)
    rz, n, gh_n, h_new = _gru_step(*(_at(g, t) for g in gx), keep_t, h, w_hh, b_hh, dtype)
    return (h_new, _put(rzs, rz, t), _put(ns, n, t), _put(gh_ns, gh_n, t),
            _put(hs, h_new, t))

  # Zero-filled stores, not the projections' buffers: a call that is not differentiated then
  # drops them (the stores are never read), which a reused buffer would not allow.
  zeros = jnp.zeros((batch, time, hid), dtype)
  state = (h0, jnp.zeros((batch, time, 2 * hid), dtype), zeros, zeros, zeros)
  _, rzs, ns, gh_ns, hs = jax.lax.fori_loop(0, time, body, state, unroll=unroll_steps)
  return hs, (weights, xs, keep, rzs, ns, gh_ns, hs, h0)


def _gru_backward(setting, residuals, dhs):
  unroll_steps, in_place = setting.unroll_steps, setting.in_place
  weights, xs, keep, rzs, ns, gh_ns, hs, h0 = residuals
  w_hh = weights[2]
  dtype, time, hid = rzs.dtype, rzs.shape[1], h0.shape[-1]
  r, z = jnp.split(rzs, 2, axis=-1)
  h_prev = algebra.shifted(hs, h0)
  # Linear in dh at the step's output: d(pre-activation of n) = dh * dn, and so on (algebra.py).
  dn, coef, dh_prev = algebra.gru_coefficients(r, z, ns, gh_ns, h_prev, keep)
  w_t = w_hh.T.astype(dtype)

  def body(step, state):
    dh, dgh, dgx_n = state  # in place: dgh[:, :t + 1] still holds coef, dgx_n dn (_Setting)
    t = time - 1 - step
    dh = dh + _at(dhs, t)
    dgh_t = jnp.concatenate([dh, dh, dh], axis=-1) * _at(dgh if in_place else coef, t)
    return (jnp.dot(dgh_t, w_t) + dh * _at(dh_prev, t), _put(dgh, dgh_t, t),
            _put(dgx_n, dh * _at(dgx_n if in_place else dn, t), t))

  init = (coef, dn) if in_place else (jnp.zeros_like(coef), jnp.zeros_like(dn))
  dh0, dgh, dgx_n = jax.lax.fori_loop(0, time, body, (jnp.zeros_like(h0), *init),
                                      unroll=unroll_steps)
  dgx = jnp.concatenate([dgh[..., :2 * hid], dgx_n], axis=-1)
  dweights, dxs = algebra.input_grads(weights, xs, dgx, dgh, h_prev)
  dkeep = None if keep is None else jnp.zeros_like(keep)
  return dweights, dxs, dkeep, dh0


_gru.defvjp(_gru_forward, _gru_backward)
