"""Whole-sequence LSTM and GRU recurrences with a hand-written backward pass (the CPU fast path).

Shape letters: t time, b batch, h hidden units, g gate width (see ``cells.py``).

Autodiff through ``lax.scan`` over a cell step stores every intermediate of every step, replays
the step's whole derivative inside the backward loop, and adds a small ``h_prev^T @ dgates``
into ``dw_hh`` at every step. On a CPU, where a time step costs about as much in per-op overhead
as in arithmetic, that is most of the training time. The recurrences here are ``jax.custom_vjp``
functions over a whole (time-major) sequence:

* the forward loop does only the recurrence and keeps what the backward needs: the gate
  activations and the carry after every step;
* outside the loop, the backward turns those into per-step coefficients in a few large
  elementwise ops, because every cotangent in an LSTM or GRU step is linear in the incoming
  ``dh`` (and ``dc``);
* the backward loop then does per step only ``dgates = dh * coefficients`` and
  ``dh_prev = dgates @ w_hh^T``;
* ``dw_hh = H_prev^T @ dGates`` and ``db_hh`` come after the loop as one ``[h, t*b] @ [t*b, g]``
  matmul and one sum.

Sigmoids are computed as ``0.5 * tanh(0.5 x) + 0.5`` (the same function, exactly, in real
arithmetic; one fused tanh on XLA:CPU instead of an exp and a divide), and the LSTM's four gates
go through a single tanh with per-column scales.

The functions take the input projection ``gx`` (``xs @ w_ih + b_ih``, hoisted by
``recurrent.unroll``) and return the carry after every step, so ``lengths``, ``reverse``,
output masking and the final carry stay in ``recurrent.py``; a padded step is given as
``mask[t, b] = 0`` and leaves the carry unchanged (its gate gradients are zero).

There is nothing to rematerialise: the forward already stores only the minimum
(``[t, b, g + 2h]`` floats for the LSTM, ``[t, b, 5h]`` for the GRU), so ``remat`` has no effect
on this path.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import cells as cells_lib

IMPLS = ("auto", "scan", "fused")


def supports(cell: cells_lib.Cell) -> bool:
  """True for the cells with a fused recurrence: ``lstm`` and ``gru`` with ``reset_after``."""
  return cell.name == "lstm" or (cell.name == "gru" and cell.reset_after)


def choose(cell: cells_lib.Cell, impl: str, carry) -> str:
  """Resolves ``impl`` ('auto', 'scan' or 'fused') to 'scan' or 'fused' for ``cell``.

  'auto' takes the fused path on CPU, where it is measured faster, for the cells it supports
  with float32 (or wider) carries; a bf16 carry keeps the plain scan, which rounds the carry
  to bf16 at every step as the cells do. On GPU and TPU 'auto' keeps the plain scan: the
  fused recurrence has not been measured there, and XLA's per-step overhead is smaller.
  """
  if impl not in IMPLS:
    raise ValueError(f"impl must be one of {IMPLS}; got {impl!r}")
  if impl == "fused" and not supports(cell):
    raise ValueError(f"impl='fused' supports cells 'lstm' and 'gru' (reset_after=True); got "
                     f"{cell}")
  if impl != "auto":
    return impl
  wide = all(jnp.dtype(leaf.dtype).itemsize >= 4 for leaf in jax.tree.leaves(carry))
  if supports(cell) and wide and jax.default_backend() == "cpu":
    return "fused"
  return "scan"


def unroll_time_major(cell: cells_lib.Cell, params, gx: jax.Array, mask: jax.Array | None,
                      carry, unroll_steps: int = 1):
  """Runs a fused LSTM or GRU recurrence over projected inputs.

  Args:
    cell: an ``lstm`` or ``gru`` (``reset_after=True``) cell.
    params: the cell's params; ``w_hh: [h, g]`` and ``b_hh: [g]`` are used here.
    gx: ``[t, b, g]`` projected inputs (``cell.project``), float32 or wider.
    mask: ``None`` or ``[t, b]`` bool, False where a step is padding.
    carry: the initial carry, ``(h, c)`` for the LSTM, ``h`` for the GRU, each ``[b, h]``.
    unroll_steps: ``lax.scan`` unroll factor of both loops.

  Returns:
    ``(hs, final_carry)``: ``hs: [t, b, h]`` the hidden carry after every step (unmasked) and the
    carry after the last step, both in the carry's dtype.
  """
  dtype = cells_lib._compute_dtype(gx.dtype, *(leaf.dtype for leaf in jax.tree.leaves(carry)))  # pylint: disable=protected-access
  gx = gx.astype(dtype)
  keep = None if mask is None else mask.astype(dtype)[..., None]  # [t, b, 1]
  b_hh = params["b_hh"].astype(dtype)
  if cell.name == "lstm":
    h0, c0 = carry
    hs, cs = _lstm(unroll_steps, params["w_hh"], b_hh, gx, keep, h0.astype(dtype),
                   c0.astype(dtype))
    final = (_last(hs, h0), _last(cs, c0))
  else:
    hs = _gru(unroll_steps, params["w_hh"], b_hh, gx, keep, carry.astype(dtype))
    final = _last(hs, carry)
  h_dtype = jax.tree.leaves(carry)[0].dtype
  return hs.astype(h_dtype), final


def _last(seq, initial):
  """The carry after the last step (the initial carry for an empty sequence)."""
  return (seq[-1] if seq.shape[0] else initial).astype(initial.dtype)


def _shifted(seq, initial):
  """``[initial, seq[0], ..., seq[t-2]]``: the carry each step started from, ``[t, b, h]``."""
  return jnp.concatenate([initial[None].astype(seq.dtype), seq], axis=0)[:-1]


def _recurrent_matmul(h, w_hh, dtype):
  # As cells._recurrent_matmul: the weights' dtype in, float32 (or wider) accumulation out.
  return jnp.dot(h.astype(w_hh.dtype), w_hh, preferred_element_type=dtype)


def _weight_grads(h_prev, dgates, w_hh):
  """``dw_hh = H_prev^T @ dGates`` over all ``t*b`` rows at once, and ``db_hh``."""
  g = dgates.shape[-1]
  dw = jnp.dot(h_prev.reshape(-1, h_prev.shape[-1]).T, dgates.reshape(-1, g))
  return dw.astype(w_hh.dtype), jnp.sum(dgates.reshape(-1, g), axis=0)


# ----------------------------------------------------------------------------- LSTM
def _lstm_scales(hid, dtype):
  """Per-column ``s`` with gate = ``s * tanh(s * x) + (1 - s)``: 0.5 for sigmoid gates i, f, o."""
  return jnp.asarray(np.repeat([0.5, 0.5, 1.0, 0.5], hid), dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _lstm(unroll_steps, w_hh, b_hh, gx, keep, h0, c0):
  return _lstm_forward(unroll_steps, w_hh, b_hh, gx, keep, h0, c0)[0]


def _lstm_forward(unroll_steps, w_hh, b_hh, gx, keep, h0, c0):
  dtype, hid = gx.dtype, h0.shape[-1]
  scale = _lstm_scales(hid, dtype)
  shift = 1.0 - scale
  bias = b_hh * scale

  def body(carry, inputs):
    h, c = carry
    gx_t, keep_t = inputs
    # One tanh for all four gates: sigmoid(x) = 0.5 * tanh(0.5 * x) + 0.5.
    act = jnp.tanh((gx_t + _recurrent_matmul(h, w_hh, dtype)) * scale + bias) * scale + shift
    i, f, g, o = jnp.split(act, 4, axis=-1)
    c_new = f * c + i * g
    h_new = o * jnp.tanh(c_new)
    if keep_t is not None:
      h_new = jnp.where(keep_t > 0, h_new, h)
      c_new = jnp.where(keep_t > 0, c_new, c)
    return (h_new, c_new), (act, h_new, c_new)

  _, (acts, hs, cs) = jax.lax.scan(body, (h0, c0), (gx, keep), unroll=unroll_steps)
  return (hs, cs), (w_hh, acts, hs, cs, keep, h0, c0)


def _lstm_backward(unroll_steps, residuals, cotangents):
  w_hh, acts, hs, cs, keep, h0, c0 = residuals
  dhs, dcs = cotangents
  dtype = acts.dtype
  i, f, g, o = jnp.split(acts, 4, axis=-1)
  c_prev = _shifted(cs, c0)
  tanh_c = jnp.tanh(cs)
  # Every cotangent of a step is linear in (dh, dc) arriving at its output; these are the
  # coefficients, computed for all steps at once outside the loop.
  dc_dh = o * (1.0 - tanh_c * tanh_c)                                   # dc += dh * dc_dh
  coef = jnp.concatenate([g * i * (1.0 - i), c_prev * f * (1.0 - f),    # dgates = [dc, dc,
                          i * (1.0 - g * g), tanh_c * o * (1.0 - o)], axis=-1)  # dc, dh] * coef
  dc_prev = f                                                           # dc_prev = dc * f
  if keep is not None:
    # A padded step passes (dh, dc) straight through and adds nothing to any gate.
    dc_dh, coef = dc_dh * keep, coef * keep
    dc_prev = jnp.where(keep > 0, f, 1.0)
  w_t = w_hh.T.astype(dtype)

  def body(carry, inputs):
    dh, dc = carry
    dh_t, dc_t, dc_dh_t, coef_t, dc_prev_t, keep_t = inputs
    dh = dh + dh_t
    dc = dc + dc_t + dh * dc_dh_t
    dgates = jnp.concatenate([dc, dc, dc, dh], axis=-1) * coef_t
    dh_prev = jnp.dot(dgates, w_t)
    if keep_t is not None:
      dh_prev = dh_prev + (1.0 - keep_t) * dh
    return (dh_prev, dc * dc_prev_t), dgates

  zeros = jnp.zeros_like(h0)
  (dh0, dc0), dgates = jax.lax.scan(body, (zeros, zeros),
                                    (dhs, dcs, dc_dh, coef, dc_prev, keep),
                                    reverse=True, unroll=unroll_steps)
  dw, db = _weight_grads(_shifted(hs, h0), dgates, w_hh)
  dkeep = None if keep is None else jnp.zeros_like(keep)
  return dw, db, dgates, dkeep, dh0, dc0


_lstm.defvjp(_lstm_forward, _lstm_backward)


# ----------------------------------------------------------------------------- GRU
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gru(unroll_steps, w_hh, b_hh, gx, keep, h0):
  return _gru_forward(unroll_steps, w_hh, b_hh, gx, keep, h0)[0]


def _gru_forward(unroll_steps, w_hh, b_hh, gx, keep, h0):
  dtype, hid = gx.dtype, h0.shape[-1]

  def body(h, inputs):
    gx_t, keep_t = inputs
    gh = _recurrent_matmul(h, w_hh, dtype) + b_hh
    rz = 0.5 * jnp.tanh(0.5 * (gx_t[:, :2 * hid] + gh[:, :2 * hid])) + 0.5
    r, z = rz[:, :hid], rz[:, hid:]
    gh_n = gh[:, 2 * hid:]
    n = jnp.tanh(gx_t[:, 2 * hid:] + r * gh_n)
    h_new = n + z * (h - n)
    if keep_t is not None:
      h_new = jnp.where(keep_t > 0, h_new, h)
    return h_new, (rz, n, gh_n, h_new)

  _, (rz, ns, gh_ns, hs) = jax.lax.scan(body, h0, (gx, keep), unroll=unroll_steps)
  return hs, (w_hh, rz, ns, gh_ns, hs, keep, h0)


def _gru_backward(unroll_steps, residuals, dhs):
  w_hh, rz, ns, gh_ns, hs, keep, h0 = residuals
  dtype = rz.dtype
  r, z = jnp.split(rz, 2, axis=-1)
  h_prev = _shifted(hs, h0)
  # Linear in dh at the step's output: d(pre-activation of n) = dh * dn, and so on.
  dn = (1.0 - z) * (1.0 - ns * ns)
  coef = jnp.concatenate([dn * gh_ns * r * (1.0 - r),      # dgh_r (= dgx_r)
                          (h_prev - ns) * z * (1.0 - z),   # dgh_z (= dgx_z)
                          dn * r], axis=-1)                # dgh_n
  dh_prev = z
  if keep is not None:
    dn, coef = dn * keep, coef * keep
    dh_prev = jnp.where(keep > 0, z, 1.0)
  w_t = w_hh.T.astype(dtype)

  def body(dh, inputs):
    dh_t, coef_t, dh_prev_t = inputs
    dh = dh + dh_t
    dgh = jnp.concatenate([dh, dh, dh], axis=-1) * coef_t
    return jnp.dot(dgh, w_t) + dh * dh_prev_t, (dgh, dh)

  dh0, (dgh, dh_out) = jax.lax.scan(body, jnp.zeros_like(h0), (dhs, coef, dh_prev),
                                    reverse=True, unroll=unroll_steps)
  hid = h0.shape[-1]
  dgx = jnp.concatenate([dgh[..., :2 * hid], dh_out * dn], axis=-1)
  dw, db = _weight_grads(h_prev, dgh, w_hh)
  dkeep = None if keep is None else jnp.zeros_like(keep)
  return dw, db, dgx, dkeep, dh0


_gru.defvjp(_gru_forward, _gru_backward)
