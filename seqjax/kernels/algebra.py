"""The algebra both hand-written VJPs share (``fused.py``'s XLA loops, ``pallas_rnn.py``'s kernels).

Shapes use the glossary in ``seqjax/__init__.py``.

A whole-layer VJP does three things around its two time loops, and they are written once here:

* before the forward loop, the input projection ``xs @ w_ih`` of every step at once
  (:func:`project`);
* between the loops, the per-step backward coefficients. Every cotangent of an LSTM or GRU step
  is linear in the ``dh`` (and ``dc``) arriving at its output, so the backward loop needs only
  ``dgates = dh * coef`` and ``dh_prev = dgates @ w_hh^T`` per step, and the coefficients come
  from the stored forward values in a few large elementwise ops
  (:func:`lstm_coefficients`, :func:`gru_coefficients`);
* after the backward loop, ``dxs`` and the four weight gradients, one large op each over all
  ``b*t`` rows (:func:`input_grads`).

``fused.py`` keeps its sequences batch-major (``[b, t, ...]``), ``pallas_rnn.py`` time-major
(``[t, b, ...]``, so a kernel's step is ``ref[t]``): the functions take ``time_major``, or work
elementwise and do not care.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def project(xs, w_ih, dtype, time_major: bool = False):
  """``xs @ w_ih`` for every step at once, in the weights' dtype with ``dtype`` accumulation.

  ``xs: [b, t, d]``; returns ``[b, t, g]``, or ``[t, b, g]`` with ``time_major``.
  """
  if time_major:
    # Transposing xs (d wide) is cheaper than gx (g wide); an einsum straight to [t, b, g]
    # becomes a bf16 dot that XLA:CPU cannot run.
    xs = jnp.swapaxes(xs, 0, 1)
  return jnp.dot(xs.astype(w_ih.dtype), w_ih, preferred_element_type=dtype)


def shifted(seq, initial, time_major: bool = False):
  """What each step started from: ``[initial, seq[step 0], ..., seq[step t-2]]``.

  ``seq: [b, t, h]`` (``[t, b, h]`` with ``time_major``), ``initial: [b, h]``.
  """
  axis = 0 if time_major else 1
  first = jnp.expand_dims(initial, axis).astype(seq.dtype)
  return jax.lax.slice_in_dim(jnp.concatenate([first, seq], axis=axis), 0, seq.shape[axis],
                              axis=axis)


def lstm_coefficients(i, f, g, o, cs, c_prev, keep):
  """An LSTM step's backward as coefficients of the ``(dh, dc)`` at its output, every step.

  ``i, f, g, o``: the activated gates; ``cs``: the cell state after each step and ``c_prev``
  before it; ``keep``: ``None`` or 1.0 on valid steps and 0.0 on padding, broadcasting against
  them (``[..., 1]``). Returns ``(dc_dh, coef, dc_prev)``: per step, ``dc += dh * dc_dh``, then
  ``dgates = [dc, dc, dc, dh] * coef`` (gates i, f, g, o) and ``dc_prev = dc * dc_prev``. A padded
  step passes ``(dh, dc)`` straight through and adds nothing to any gate.
  """
  tanh_c = jnp.tanh(cs)
  dc_dh = o * (1.0 - tanh_c * tanh_c)
  coef = jnp.concatenate([g * i * (1.0 - i), c_prev * f * (1.0 - f),
                          i * (1.0 - g * g), tanh_c * o * (1.0 - o)], axis=-1)
  dc_prev = f
  if keep is not None:
    dc_dh, coef = dc_dh * keep, coef * keep
    dc_prev = jnp.where(keep > 0, f, 1.0)
  return dc_dh, coef, dc_prev


def gru_coefficients(r, z, n, gh_n, h_prev, keep):
  """A GRU step's (``reset_after``) backward as coefficients of the ``dh`` at its output.

  ``r, z, n``: the activated gates; ``gh_n = h_prev @ w_hn + b_hn``; ``keep`` as in
  :func:`lstm_coefficients`. Returns ``(dn, coef, dh_prev)``: per step, the gradients of the
  recurrent pre-activations are ``dgh = [dh, dh, dh] * coef`` (gates r, z, n), the candidate's
  input pre-activation gets ``dh * dn`` (the r and z input gradients equal their ``dgh``) and
  ``dh_prev = dgh @ w_hh^T + dh * dh_prev``.
  """
  dn = (1.0 - z) * (1.0 - n * n)
  coef = jnp.concatenate([dn * gh_n * r * (1.0 - r),     # dgh_r (= dgx_r)
                          (h_prev - n) * z * (1.0 - z),   # dgh_z (= dgx_z)
                          dn * r], axis=-1)               # dgh_n
  dh_prev = z
  if keep is not None:
    dn, coef = dn * keep, coef * keep
    dh_prev = jnp.where(keep > 0, z, 1.0)
  return dn, coef, dh_prev


def input_grads(weights, xs, dgx, dgh, h_prev, *, time_major: bool = False, bias_sums=None,
                weight_grads=None):
  """Gradients of the input and of all four weights, each one large op after the time loop.

  Args:
    weights: ``(w_ih, b_ih, w_hh, b_hh)``.
    xs: ``[b, t, d]``, the layer's inputs (always batch-major).
    dgx, dgh: gradients of the input and recurrent pre-activations, ``[b, t, g]`` (``[t, b, g]``
      with ``time_major``, as ``h_prev``).
    h_prev: :func:`shifted` hidden states (unused when ``weight_grads`` is given).
    bias_sums: ``(sum of dgx, sum of dgh)`` over batch and time where a loop already has them.
    weight_grads: ``(dw_ih, dw_hh)`` where a kernel already has them.

  Returns:
    ``((dw_ih, db_ih, dw_hh, db_hh), dxs)``, each in its primal's dtype.
  """
  w_ih, b_ih, w_hh, b_hh = weights
  dtype = dgx.dtype
  seq = "tb" if time_major else "bt"
  dxs = jnp.einsum(f"{seq}g,dg->btd", dgx, w_ih.astype(dtype)).astype(xs.dtype)
  if weight_grads is None:
    weight_grads = (jnp.einsum(f"btd,{seq}g->dg", xs.astype(dtype), dgx),
                    jnp.einsum(f"{seq}h,{seq}g->hg", h_prev, dgh.astype(h_prev.dtype)))
  if bias_sums is None:
    bias_sums = (jnp.sum(dgx, axis=(0, 1)), jnp.sum(dgh, axis=(0, 1)))
  return ((weight_grads[0].astype(w_ih.dtype), bias_sums[0].astype(b_ih.dtype),
           weight_grads[1].astype(w_hh.dtype), bias_sums[1].astype(b_hh.dtype)), dxs)
