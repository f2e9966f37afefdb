"""LSTM and GRU time recurrence as Pallas kernels, forward and backward (opt-in, for GPUs).

Shapes use the glossary in ``seqjax/__init__.py``.

This is ``fused.py``'s whole-layer ``jax.custom_vjp`` with its two time loops moved into
Pallas kernels (``recurrent.unroll(..., impl='pallas')``); the backward's algebra is
``algebra.py``, shared with ``fused.py``. Only the recurrence runs inside a kernel; everything
that is one large op over all ``b*t`` rows stays plain JAX around it:

* outside, before: ``gx = xs @ w_ih + biases`` for the whole sequence (the GRU's ``b_hh``
  goes into the kernel instead, because its candidate gate needs it inside ``r * (h W_hn + b_hn)``);
* forward kernel: the time loop (``fori_loop``, unrolled by hand: ``_time_loop``) for one
  block of ``block_rows`` examples per program, with ``w_hh`` loaded once per program and kept
  for every step, carries in float32; it stores the carry after every step and the gate
  activations (and the GRU's ``h W_hn + b_hn``);
* outside, between: the per-step backward coefficients, a few large elementwise ops;
* backward kernel: the reverse time loop, per step ``dgates = dh * coef`` and
  ``dh_prev = dgates @ w_hh^T`` with ``w_hh^T`` resident, writing ``dgates`` for every step and
  the initial carry's cotangent;
* outside, after: ``dw_ih``, ``dw_hh``, ``dxs`` and the bias gradients, one contraction each.

Layout: the kernels' sequences are time-major, ``[t, b, g]``, so a step is a leading-axis
index ``ref[t]``; the projection reads ``xs`` transposed (``d`` wide, cheaper than ``gx``)
and only ``hs`` is transposed back to ``[b, t, h]``. The grid runs over batch blocks; a
program sees its rows of every step, ``[t, block_rows, g]``. Inside a kernel every value is a
``[block_rows, h]`` tile: the gates are read and written as static column slices of the
refs, and the recurrent matmul is one ``[h, h]`` product per gate, so no value is ever
concatenated or sliced and every tile has a power-of-two shape on GPU, the GRU's three
gates included (Triton's lowering accepts nothing else).

Padding, outside the kernels: the batch is padded to a multiple of ``block_rows`` with
rows that are masked out (``keep = 0``), and ``h`` to ``hidden_block`` per gate with zero
weights, biases and carries, which keeps the padded units at exactly zero forwards and
backwards. On GPU the defaults are ``block_rows = 16`` and ``hidden_block`` the next power
of two >= max(h, 16): Triton loads power-of-two tiles only and its matmul needs every side
>= 16. On CPU nothing needs padding; ``pallas_call`` runs with ``interpret=True`` there (the
kernel bodies evaluated as ordinary JAX), which is how the tests check these kernels.

Limits. One program holds all of ``w_hh`` (``4 h^2`` values for the LSTM) for the whole
loop. On the H100 (2026-11-23) the kernels compile, pass the tests of
``tests/kernels/pallas_rnn_test.py`` and train at hidden 64, but at hidden 128 they ask for 264 to
368 KiB of shared memory, more than one SM's 227 KiB, and do not compile; larger layers would
need the gate columns split across programs, which a single-pass recurrence cannot do without
a cross-program barrier per step. At hidden 64 they were slower than PyTorch's cuDNN layer in
float32 (docs/speed.md), so ``impl='auto'`` never picks this path. Being a ``custom_vjp``,
it supports reverse-mode derivatives only, as ``fused.py``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from seqjax import cells as cells_lib
from seqjax.kernels import algebra
from seqjax.kernels import dispatch

_GPU_ROWS = 16  # Triton's matmul needs >= 16 rows; 16 keeps many programs in flight.
_GPU_MIN_HIDDEN = 16


class _Config(NamedTuple):
  """Static settings of the kernels (hashable: a ``nondiff_argnums`` of the custom_vjp)."""
  unroll_steps: int
  block_rows: int
  hidden_block: int
  interpret: bool


def _config(batch, hidden, unroll_steps, block_rows, hidden_block, interpret) -> _Config:
  """Fills in the per-backend defaults and checks the explicit settings."""
  interpret = jax.default_backend() == "cpu" if interpret is None else bool(interpret)
  if block_rows is None:
    block_rows = min(batch, _GPU_ROWS) if interpret else _GPU_ROWS
  if hidden_block is None:
    hidden_block = hidden if interpret else pl.next_power_of_2(max(hidden, _GPU_MIN_HIDDEN))
  if not isinstance(block_rows, int) or block_rows < 1:
    raise ValueError(f"block_rows must be a positive int; got {block_rows!r}")
  if not isinstance(hidden_block, int) or hidden_block < hidden:
    raise ValueError(f"hidden_block must be an int >= the hidden size {hidden}; got "
                     f"{hidden_block!r}")
  return _Config(int(unroll_steps), block_rows, hidden_block, interpret)


def unroll_batch_major(cell: cells_lib.Cell, params, xs: jax.Array, mask: jax.Array | None,
                       carry, unroll_steps: int = 1, *, block_rows: int | None = None,
                       hidden_block: int | None = None, interpret: bool | None = None):
  """Runs an LSTM or GRU layer, input projection included, with Pallas time loops.

  Same arguments and results as :func:`seqjax.kernels.fused.unroll_batch_major` (``unroll_steps``
  unrolls the in-kernel time loops), plus three keyword-only ones:

  Args:
    block_rows: examples per kernel program (default: 16 on GPU, ``min(b, 16)`` on CPU).
    hidden_block: ``h`` padded to this per gate inside the kernels (default: the next power
      of two >= max(h, 16) on GPU, ``h`` on CPU).
    interpret: run the kernels in Pallas interpret mode (default: on the CPU backend only;
      ``kernels.Settings.interpret`` sets it through ``recurrent.unroll``).
  """
  if not dispatch.supports(cell):
    raise ValueError(f"the Pallas recurrence supports cells 'lstm' and 'gru' (reset_after=True);"
                     f" got {cell}")
  leaves = jax.tree.leaves(carry)
  batch, time = xs.shape[:2]
  if time == 0:  # Nothing to run (and no step to index): the carry is the result.
    return jnp.zeros((batch, 0) + leaves[0].shape[-1:], leaves[0].dtype), carry
  config = _config(batch, leaves[0].shape[-1], unroll_steps, block_rows, hidden_block, interpret)
  # As cells.py: float32 arithmetic (float64 under x64 with float64 params) whatever the params.
  dtype = cells_lib.compute_dtype(params["w_ih"].dtype, *(leaf.dtype for leaf in leaves))
  if mask is None:
    keep = jnp.ones((time, batch, 1), dtype)
  else:
    keep = jnp.swapaxes(mask, 0, 1).astype(dtype)[..., None]  # [t, b, 1]
  weights = tuple(params[name] for name in ("w_ih", "b_ih", "w_hh", "b_hh"))
  if cell.name == "lstm":
    h0, c0 = carry
    hs, c_last = _lstm(config, weights, xs, keep, h0.astype(dtype), c0.astype(dtype))
    final = (hs[-1].astype(h0.dtype), c_last.astype(c0.dtype))
  else:
    hs = _gru(config, weights, xs, keep, carry.astype(dtype))
    final = hs[-1].astype(carry.dtype)
  return jnp.swapaxes(hs, 0, 1).astype(leaves[0].dtype), final


# ----------------------------------------------------------------------------- pallas_call
class _Layout(NamedTuple):
  """Where an array's batch axis is (None: not gridded) and which axes hold ``gates * h``."""
  batch_axis: int | None
  gate_axes: tuple[tuple[int, int], ...] = ()  # (axis, gates): ``gates`` blocks of h each


_SEQ = {g: _Layout(1, ((2, g),)) for g in (1, 3, 4)}  # [t, b, g*h]
_KEEP = _Layout(1)                                     # [t, b, 1]
_ROWS = _Layout(0, ((1, 1),))                          # [b, h]
_W_HH = {g: _Layout(None, ((0, 1), (1, g))) for g in (3, 4)}    # [h, g*h]
_W_HH_T = {g: _Layout(None, ((0, g), (1, 1))) for g in (3, 4)}  # [g*h, h]
_BIAS = {3: _Layout(None, ((1, 3),))}                  # [1, g*h]


def _resize_gates(x, axis, gates, size):
  """Zero-pads or crops each of ``gates`` blocks along ``axis`` to ``size`` entries."""
  blocks = x.reshape(x.shape[:axis] + (gates, -1) + x.shape[axis + 1:])
  have = blocks.shape[axis + 1]
  if size < have:
    blocks = jax.lax.slice_in_dim(blocks, 0, size, axis=axis + 1)
  elif size > have:
    pad = [(0, 0)] * blocks.ndim
    pad[axis + 1] = (0, size - have)
    blocks = jnp.pad(blocks, pad)
  return blocks.reshape(x.shape[:axis] + (gates * size,) + x.shape[axis + 1:])


def _resize(x, layout, rows, hidden):
  """``x`` with its batch axis padded or cropped to ``rows`` and its gates to ``hidden``."""
  for axis, gates in layout.gate_axes:
    x = _resize_gates(x, axis, gates, hidden)
  if layout.batch_axis is not None:
    x = _resize_gates(x, layout.batch_axis, 1, rows)
  return x


def _spec(shape, layout, block_rows):
  """A program's block: ``block_rows`` of the batch axis, all of every other axis."""
  if layout.batch_axis is None:
    return pl.BlockSpec(shape, lambda i: (0,) * len(shape))
  block = tuple(block_rows if a == layout.batch_axis else n for a, n in enumerate(shape))
  return pl.BlockSpec(block, lambda i: tuple(i if a == layout.batch_axis else 0
                                             for a in range(len(shape))))


def _padded_shape(shape, layout, rows, hidden):
  """The shape :func:`_resize` gives an array of ``shape``."""
  shape = list(shape)
  for axis, gates in layout.gate_axes:
    shape[axis] = gates * hidden
  if layout.batch_axis is not None:
    shape[layout.batch_axis] = rows
  return tuple(shape)


def _call(config, kernel, batch, hidden, inputs, in_layouts, out_shapes, out_layouts):
  """Runs ``kernel`` over batch blocks of padded inputs; returns its outputs unpadded.

  ``batch`` and ``hidden`` are the unpadded sizes; ``out_shapes`` the unpadded
  ``jax.ShapeDtypeStruct`` of every output.
  """
  rows = pl.cdiv(batch, config.block_rows) * config.block_rows
  padded = [_resize(x, lay, rows, config.hidden_block) for x, lay in zip(inputs, in_layouts)]
  padded_out = [jax.ShapeDtypeStruct(_padded_shape(s.shape, lay, rows, config.hidden_block),
                                     s.dtype) for s, lay in zip(out_shapes, out_layouts)]
  outputs = pl.pallas_call(
      functools.partial(kernel, hid=config.hidden_block, unroll=config.unroll_steps),
      out_shape=padded_out,
      grid=(rows // config.block_rows,),
      in_specs=[_spec(x.shape, lay, config.block_rows) for x, lay in zip(padded, in_layouts)],
      out_specs=[_spec(s.shape, lay, config.block_rows)
                 for s, lay in zip(padded_out, out_layouts)],
      interpret=config.interpret,
      # Triton, named: JAX's default GPU backend is Mosaic GPU, which stages each program's
      # whole blocks ([t, rows, g] here) in shared memory and does not lower these kernels.
      compiler_params=None if config.interpret else pltriton.CompilerParams(num_warps=4),
  )(*padded)
  return [_resize(y, lay, batch, hidden) for y, lay in zip(outputs, out_layouts)]


def _gate_columns(gate, hid):
  """The columns of gate number ``gate`` in a ``[..., gates * hid]`` ref."""
  return pl.ds(gate * hid, hid)


def _dot(a, b):
  """``a @ b`` in ``b``'s dtype, accumulated in float32 (or wider), as cells._recurrent_matmul."""
  # HIGHEST for float32: Triton's default would be TF32. bf16 multiplies in bf16 either way.
  precision = jax.lax.Precision.HIGHEST if b.dtype == jnp.float32 else None
  return jnp.dot(a.astype(b.dtype), b, precision=precision,
                 preferred_element_type=jnp.promote_types(b.dtype, jnp.float32))


def _time_loop(length, body, init, unroll):
  """``lax.fori_loop(0, length, body, init)`` with ``unroll`` steps per iteration, unrolled here.

  Triton's lowering of ``fori_loop`` takes no ``unroll`` argument, so the steps are unrolled in
  Python: ``length // unroll`` iterations of ``unroll`` steps, then the remaining steps.
  """
  unroll = max(1, min(int(unroll), length))
  blocks, rest = divmod(length, unroll)

  def block(i, carry):
    for j in range(unroll):
      carry = body(i * unroll + j, carry)
    return carry

  carry = jax.lax.fori_loop(0, blocks, block, init)
  for j in range(rest):
    carry = body(blocks * unroll + j, carry)
  return carry


# ----------------------------------------------------------------------------- LSTM
def _lstm_forward_kernel(gx_ref, keep_ref, w_ref, h0_ref, c0_ref, hs_ref, cs_ref, acts_ref, *,
                         hid, unroll):
  """One block of rows through every step; ``acts`` gets the activated gates ``[i, f, g, o]``."""
  # Loaded once, resident for every step.
  w = [w_ref[:, _gate_columns(gate, hid)] for gate in range(4)]

  def body(t, carry):
    h, c = carry
    pre = [gx_ref[t, :, _gate_columns(gate, hid)] + _dot(h, w[gate]) for gate in range(4)]
    i, f, o = (jax.nn.sigmoid(pre[gate]) for gate in (0, 1, 3))
    g = jnp.tanh(pre[2])
    keep = keep_ref[t] > 0  # [rows, 1]: a padded step keeps the carry.
    c_new = jnp.where(keep, f * c + i * g, c)
    h_new = jnp.where(keep, o * jnp.tanh(c_new), h)
    for gate, act in enumerate((i, f, g, o)):
      acts_ref[t, :, _gate_columns(gate, hid)] = act
    hs_ref[t] = h_new
    cs_ref[t] = c_new
    return h_new, c_new

  _time_loop(gx_ref.shape[0], body, (h0_ref[...], c0_ref[...]), unroll)


def _lstm_backward_kernel(dhs_ref, dc_dh_ref, coef_ref, dc_prev_ref, skip_ref, w_t_ref,
                          dc_last_ref, dgates_ref, dh0_ref, dc0_ref, *, hid, unroll):
  """Reverse time loop: ``dgates = [dc, dc, dc, dh] * coef``, ``dh_prev = dgates @ w_hh^T``."""
  # Resident ``w_hh^T``, per gate.
  w_t = [w_t_ref[_gate_columns(gate, hid), :] for gate in range(4)]
  time = dhs_ref.shape[0]

  def body(step, carry):
    dh, dc = carry
    t = time - 1 - step
    dh = dh + dhs_ref[t]
    dc = dc + dh * dc_dh_ref[t]
    dh_prev = skip_ref[t] * dh  # A padded step passes dh straight through.
    for gate in range(4):
      dgates = (dh if gate == 3 else dc) * coef_ref[t, :, _gate_columns(gate, hid)]
      dgates_ref[t, :, _gate_columns(gate, hid)] = dgates
      dh_prev = dh_prev + _dot(dgates, w_t[gate])
    return dh_prev, dc * dc_prev_ref[t]

  dc_last = dc_last_ref[...]
  dh0, dc0 = _time_loop(time, body, (jnp.zeros_like(dc_last), dc_last), unroll)
  dh0_ref[...] = dh0
  dc0_ref[...] = dc0


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _lstm(config, weights, xs, keep, h0, c0):
  return _lstm_forward(config, weights, xs, keep, h0, c0)[0]


def _lstm_forward(config, weights, xs, keep, h0, c0):
  w_ih, b_ih, w_hh, b_hh = weights
  dtype, time, (batch, hid) = h0.dtype, xs.shape[1], h0.shape
  gx = algebra.project(xs, w_ih, dtype, time_major=True)  # [t, b, 4h]
  gx = gx + (b_ih.astype(dtype) + b_hh.astype(dtype))
  seq = jax.ShapeDtypeStruct((time, batch, hid), dtype)
  hs, cs, acts = _call(config, _lstm_forward_kernel, batch, hid, [gx, keep, w_hh, h0, c0],
                       [_SEQ[4], _KEEP, _W_HH[4], _ROWS, _ROWS],
                       [seq, seq, jax.ShapeDtypeStruct(gx.shape, dtype)],
                       [_SEQ[1], _SEQ[1], _SEQ[4]])
  return (hs, cs[-1]), (weights, xs, keep, acts, hs, cs, h0, c0)


def _lstm_backward(config, residuals, cotangents):
  weights, xs, keep, acts, hs, cs, h0, c0 = residuals
  dhs, dc_last = cotangents
  dtype = acts.dtype
  i, f, g, o = jnp.split(acts, 4, axis=-1)
  # As fused.py (algebra.py): per-step coefficients, for all steps at once, zero on padding.
  dc_dh, coef, dc_prev = algebra.lstm_coefficients(i, f, g, o, cs,
                                                   algebra.shifted(cs, c0, time_major=True), keep)
  w_t = weights[2].T.astype(dtype)
  dgates, dh0, dc0 = _call(config, _lstm_backward_kernel, *h0.shape,
                           [dhs, dc_dh, coef, dc_prev, 1.0 - keep, w_t, dc_last.astype(dtype)],
                           [_SEQ[1], _SEQ[1], _SEQ[4], _SEQ[1], _KEEP, _W_HH_T[4], _ROWS],
                           [jax.ShapeDtypeStruct(acts.shape, dtype),
                            jax.ShapeDtypeStruct(h0.shape, dtype),
                            jax.ShapeDtypeStruct(c0.shape, dtype)],
                           [_SEQ[4], _ROWS, _ROWS])
  dweights, dxs = algebra.input_grads(weights, xs, dgates, dgates,
                                      algebra.shifted(hs, h0, time_major=True), time_major=True)
  return dweights, dxs, jnp.zeros_like(keep), dh0, dc0


_lstm.defvjp(_lstm_forward, _lstm_backward)


# ----------------------------------------------------------------------------- GRU
def _gru_forward_kernel(gx_ref, keep_ref, w_ref, b_ref, h0_ref, hs_ref, acts_ref, gh_n_ref, *,
                        hid, unroll):
  """One block of rows through every step, storing ``[r, z, n]`` and ``gh_n = h W_hn + b_hn``."""
  # Loaded once, resident for every step.
  w = [w_ref[:, _gate_columns(gate, hid)] for gate in range(3)]
  b = [b_ref[:, _gate_columns(gate, hid)] for gate in range(3)]

  def body(t, h):
    gh = [_dot(h, w[gate]) + b[gate] for gate in range(3)]
    r = jax.nn.sigmoid(gx_ref[t, :, _gate_columns(0, hid)] + gh[0])
    z = jax.nn.sigmoid(gx_ref[t, :, _gate_columns(1, hid)] + gh[1])
    n = jnp.tanh(gx_ref[t, :, _gate_columns(2, hid)] + r * gh[2])
    h_new = jnp.where(keep_ref[t] > 0, n + z * (h - n), h)
    for gate, act in enumerate((r, z, n)):
      acts_ref[t, :, _gate_columns(gate, hid)] = act
    gh_n_ref[t] = gh[2]
    hs_ref[t] = h_new
    return h_new

  _time_loop(gx_ref.shape[0], body, h0_ref[...], unroll)


def _gru_backward_kernel(dhs_ref, coef_ref, dh_prev_ref, w_t_ref, dgh_ref, dh_out_ref, dh0_ref,
                         *, hid, unroll):
  """Reverse time loop: ``dgh = [dh, dh, dh] * coef``, ``dh_prev = dgh @ w_hh^T + dh * z``."""
  # Resident ``w_hh^T``, per gate.
  w_t = [w_t_ref[_gate_columns(gate, hid), :] for gate in range(3)]
  time = dhs_ref.shape[0]

  def body(step, dh):
    t = time - 1 - step
    dh = dh + dhs_ref[t]
    dh_out_ref[t] = dh  # The candidate's input gradient is dh * dn, taken outside.
    dh_prev = dh * dh_prev_ref[t]
    for gate in range(3):
      dgh = dh * coef_ref[t, :, _gate_columns(gate, hid)]
      dgh_ref[t, :, _gate_columns(gate, hid)] = dgh
      dh_prev = dh_prev + _dot(dgh, w_t[gate])
    return dh_prev

  dh0_ref[...] = _time_loop(time, body, jnp.zeros(dh0_ref.shape, dh0_ref.dtype), unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gru(config, weights, xs, keep, h0):
  return _gru_forward(config, weights, xs, keep, h0)[0]


def _gru_forward(config, weights, xs, keep, h0):
  w_ih, b_ih, w_hh, b_hh = weights
  dtype, time, (batch, hid) = h0.dtype, xs.shape[1], h0.shape
  gx = algebra.project(xs, w_ih, dtype, time_major=True) + b_ih.astype(dtype)  # [t, b, 3h]
  seq = jax.ShapeDtypeStruct((time, batch, hid), dtype)
  hs, acts, gh_n = _call(config, _gru_forward_kernel, batch, hid,
                         [gx, keep, w_hh, b_hh.astype(dtype)[None], h0],
                         [_SEQ[3], _KEEP, _W_HH[3], _BIAS[3], _ROWS],
                         [seq, jax.ShapeDtypeStruct(gx.shape, dtype), seq],
                         [_SEQ[1], _SEQ[3], _SEQ[1]])
  return hs, (weights, xs, keep, acts, gh_n, hs, h0)


def _gru_backward(config, residuals, dhs):
  weights, xs, keep, acts, gh_n, hs, h0 = residuals
  dtype, hid = acts.dtype, h0.shape[-1]
  r, z, n = jnp.split(acts, 3, axis=-1)
  h_prev = algebra.shifted(hs, h0, time_major=True)
  # As fused.py (algebra.py): linear in the dh at a step's output; zero on padded steps.
  dn, coef, dh_prev = algebra.gru_coefficients(r, z, n, gh_n, h_prev, keep)
  w_t = weights[2].T.astype(dtype)
  seq = jax.ShapeDtypeStruct(hs.shape, dtype)
  dgh, dh_out, dh0 = _call(config, _gru_backward_kernel, *h0.shape, [dhs, coef, dh_prev, w_t],
                           [_SEQ[1], _SEQ[3], _SEQ[1], _W_HH_T[3]],
                           [jax.ShapeDtypeStruct(coef.shape, dtype), seq,
                            jax.ShapeDtypeStruct(h0.shape, dtype)],
                           [_SEQ[3], _SEQ[1], _ROWS])
  dgx = jnp.concatenate([dgh[..., :2 * hid], dh_out * dn], axis=-1)
  dweights, dxs = algebra.input_grads(weights, xs, dgx, dgh, h_prev, time_major=True)
  return dweights, dxs, jnp.zeros_like(keep), dh0


_gru.defvjp(_gru_forward, _gru_backward)
