"""The one place where seqjax runs a cell through time: ``unroll``, bidirectional layers, stacks.

Shapes use the glossary in ``seqjax/__init__.py``.

``unroll`` hoists the input projection out of the loop (one big ``[b*t, d] @ [d, g]`` matmul),
runs the recurrence time-major with ``jax.lax.scan``, and handles variable lengths: past an
example's length its carry stops changing and its outputs are zero, and ``reverse=True``
reverses only each example's valid prefix, as PyTorch's packed sequences do.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import cells as cells_lib
from seqjax import checks
from seqjax import kernels
from seqjax import layers

Cell = cells_lib.Cell


def check_params(cell: Cell, params) -> tuple[int, int]:
  """Validates ``params`` for ``cell``; returns ``(input_size, hidden_size)``."""
  needed = ("w_ih",) if cell.parallel else ("w_ih", "w_hh")
  if not isinstance(params, dict) or any(name not in params for name in needed):
    raise ValueError(f"params for cell {cell.name!r} must be a dict with keys {needed} "
                     f"(as made by Cell.init); got {type(params).__name__}"
                     + (f" with keys {sorted(params)}" if isinstance(params, dict) else ""))
  d, g = params["w_ih"].shape
  if cell.parallel:
    if g % cell.gates:
      raise ValueError(f"params do not fit cell {cell.name!r}: w_ih {params['w_ih'].shape}, "
                       f"expected [d, {cell.gates}h]")
    return d, g // cell.gates
  h = params["w_hh"].shape[0]
  if g != cell.gates * h or params["w_hh"].shape != (h, g):
    raise ValueError(f"params do not fit cell {cell.name!r}: w_ih {params['w_ih'].shape}, "
                     f"w_hh {params['w_hh'].shape}; expected [d, {cell.gates}h] and "
                     f"[h, {cell.gates}h]")
  return d, h


def _check_carry(cell: Cell, carry, batch: int, hidden: int):
  expected = cell.initial_carry(batch, hidden)
  try:
    ok = jax.tree.structure(carry) == jax.tree.structure(expected) and all(
        np.shape(a) == np.shape(b) for a, b in zip(jax.tree.leaves(carry),
                                                   jax.tree.leaves(expected)))
  except Exception:  # pylint: disable=broad-except
    ok = False
  if not ok:
    want = "(h, c) with h and c" if cell.has_cell_state else "h"
    got = jax.tree.map(np.shape, carry)
    raise ValueError(f"initial_carry for cell {cell.name!r} must be {want} of shape "
                     f"[{batch}, {hidden}]; got {got}")


def reverse_index(lengths: jax.Array, time: int) -> jax.Array:
  """``[b, t]`` gather index that reverses each row's first ``lengths[i]`` steps in place.

  Steps past the length map to themselves, so the permutation is its own inverse.
  """
  steps = jnp.arange(time)[None, :]
  valid = layers.mask_from_lengths(lengths, time)
  return jnp.where(valid, lengths[:, None] - 1 - steps, steps)


def _reverse(xs, lengths):
  if lengths is None:
    return xs[:, ::-1]
  index = reverse_index(lengths, xs.shape[1])
  return jnp.take_along_axis(xs, index.reshape(index.shape + (1,) * (xs.ndim - 2)), axis=1)


def _parallel_unroll(cell, gx, lengths, h0):
  """Linear recurrences ``h_t = a_t h_{t-1} + u_t`` in O(log t) depth with an associative scan.

  ``gx: [b, t, g]``; padded steps get ``a = 1, u = 0`` so the carry passes through unchanged.
  """
  a, u = cells_lib.linear_recurrence_coefficients(cell.name, gx)  # each [b, t, h]
  if lengths is not None:
    mask = layers.mask_from_lengths(lengths, gx.shape[1])[..., None]  # [b, t, 1]
    a, u = jnp.where(mask, a, 1.0), jnp.where(mask, u, 0.0)

  def combine(left, right):
    a_l, u_l = left
    a_r, u_r = right
    return a_l * a_r, a_r * u_l + u_r

  a_cum, u_cum = jax.lax.associative_scan(combine, (a, u), axis=1)
  h0_wide = h0.astype(cells_lib.compute_dtype(a_cum.dtype, h0.dtype))
  hs = (a_cum * h0_wide[:, None, :] + u_cum).astype(h0.dtype)
  carry = hs[:, -1] if gx.shape[1] else h0
  if lengths is not None:
    hs = jnp.where(mask, hs, jnp.zeros_like(hs))
  return hs, carry


@functools.partial(jax.jit, static_argnames=("cell", "reverse", "unroll_steps", "impl"))
def _unroll(cell, params, xs, lengths, carry, reverse, unroll_steps, impl):
  if lengths is not None:
    # Padding is zeroed before any arithmetic touches it. Masking the carry and outputs alone
    # keeps NaN or inf padding out of the forward values but not out of the gradients: the
    # discarded branch of a `where` still gets a zero cotangent, and the derivative of an
    # input projection or a gate at a NaN step turns it into 0 * NaN = NaN for the weights.
    valid = layers.mask_from_lengths(lengths, xs.shape[1])[..., None]  # [b, t, 1]
    xs = jnp.where(valid, xs, jnp.zeros_like(xs))
  if reverse:
    xs = _reverse(xs, lengths)
  if cell.parallel:
    ys, carry = _parallel_unroll(cell, cell.project(params, xs), lengths, carry)
    return (_reverse(ys, lengths) if reverse else ys), carry
  if impl.name != "scan":  # A whole layer at once, padding zeroed (seqjax/kernels).
    ys, carry = kernels.run(impl, cell, params, xs, lengths, carry, unroll_steps)
    return (_reverse(ys, lengths) if reverse else ys), carry
  # Time-major [t, b, h] blocks, one per gate (see cells.project_gate_blocks), for the scan.
  gx = cells_lib.project_gate_blocks(params, xs, cell.gates, time_major=True)
  step = jax.checkpoint(cell.step) if impl.remat else cell.step

  if lengths is None:
    def body(carry, gx_t):
      return step(params, carry, jnp.concatenate(gx_t, axis=-1))
    carry, ys = jax.lax.scan(body, carry, gx, unroll=unroll_steps)
  else:
    mask = layers.mask_from_lengths(lengths, xs.shape[1]).T  # [t, b]

    def body(carry, inputs):
      gx_t, m_t = inputs
      new_carry, y_t = step(params, carry, jnp.concatenate(gx_t, axis=-1))
      m_t = m_t[:, None]
      # Padded steps keep the old carry and emit zeros: padding never leaks.
      new_carry = jax.tree.map(lambda n, o: jnp.where(m_t, n, o), new_carry, carry)
      return new_carry, jnp.where(m_t, y_t, jnp.zeros_like(y_t))
    carry, ys = jax.lax.scan(body, carry, (gx, mask), unroll=unroll_steps)

  ys = jnp.swapaxes(ys, 0, 1)  # [b, t, h]
  if reverse:
    ys = _reverse(ys, lengths)
  return ys, carry


def unroll(cell: Cell | str, params, xs: jax.Array, *, lengths: jax.Array | None = None,
           reverse: bool = False, initial_carry: Any = None, unroll: int = 1,
           remat: bool = False, carry_dtype=jnp.float32, impl: str = "auto",
           kernel_settings: kernels.Settings | None = None):
  """Runs ``cell`` over a batch of sequences.

  Args:
    cell: a :class:`~seqjax.cells.Cell` or a cell name.
    params: the cell's parameters, from ``cell.init``.
    xs: ``[b, t, d]`` inputs (any float dtype; bf16 inputs keep a float32 carry).
    lengths: optional ``[b]`` int valid lengths in ``[0, t]``. Past its length an example's carry
      stops changing and its outputs are zero; length 0 returns the initial carry. Inputs past
      the length are never read: NaN or inf there changes no value and no gradient.
    reverse: run from each example's last valid step back to its first; outputs stay aligned
      with the inputs.
    initial_carry: ``[b, h]`` (or ``(h, c)`` for LSTMs); zeros of ``carry_dtype`` by default.
    unroll: ``lax.scan`` unroll factor (steps per loop iteration).
    remat: rematerialise each step in the backward pass instead of storing its activations,
      the least memory of any path (plain scan only, so ``impl='auto'`` takes the scan when it
      is set; an explicit ``'fused'`` or ``'pallas'`` ignores it).
    carry_dtype: dtype of the default initial carry.
    impl: ``'scan'`` (autodiff through ``lax.scan``: every cell, dtype and derivative),
      ``'fused'`` (``lstm`` and ``gru`` with ``reset_after``: a whole-layer custom VJP, reverse
      mode only), ``'pallas'`` (the same as Pallas kernels, for GPUs), ``'cudnn'`` (the plain
      ``lstm`` through cuDNN, GPU) or ``'auto'``. :func:`seqjax.kernels.choose` decides what
      runs; its docstring holds the rule.
    kernel_settings: a :class:`seqjax.kernels.Settings` for the fast paths (native CPU kernels,
      threads, the inference loop, Pallas interpret mode, a cuDNN stand-in); None: defaults.

  Returns:
    ``(ys, final_carry)``: ``ys: [b, t, h]`` and the carry after each example's last valid step.
  """
  cell = cells_lib.get_cell(cell)
  if not hasattr(xs, "ndim") or xs.ndim != 3:
    raise ValueError(f"xs must be [batch, time, features]; got shape {np.shape(xs)}")
  input_size, hidden = check_params(cell, params)
  batch, time, features = xs.shape
  if features != input_size:
    raise ValueError(f"xs has {features} features but the {cell.name!r} params expect "
                     f"{input_size} (w_ih is {tuple(params['w_ih'].shape)})")
  checks.check_lengths(lengths, batch, time)
  if initial_carry is None:
    initial_carry = cell.initial_carry(batch, hidden, carry_dtype)
  else:
    _check_carry(cell, initial_carry, batch, hidden)
  if lengths is not None:
    lengths = jnp.asarray(lengths, jnp.int32)
  if not isinstance(unroll, int) or unroll < 1:
    raise ValueError(f"unroll must be a positive int; got {unroll!r}")
  # The choice is a static argument of the layer's jit: a different one retraces, never reuses.
  chosen = kernels.choose(cell, impl, params, initial_carry, remat=bool(remat),
                          settings=kernel_settings)
  return _unroll(cell, params, jnp.asarray(xs), lengths, initial_carry, bool(reverse),
                 unroll, chosen)


# ----------------------------------------------------------------------------- layers of cells
def init_bidirectional(key, cell: Cell | str, input_size: int, hidden_size: int,
                       dtype=jnp.float32) -> dict:
  """``{'fwd': params, 'bwd': params}``, two independent cells."""
  cell = cells_lib.get_cell(cell)
  key_fwd, key_bwd = jax.random.split(key)
  return {"fwd": cell.init(key_fwd, input_size, hidden_size, dtype),
          "bwd": cell.init(key_bwd, input_size, hidden_size, dtype)}


def bidirectional(cell: Cell | str, params: dict, xs: jax.Array, *, lengths=None,
                  initial_carry=None, **kwargs):
  """Forward and backward passes, outputs concatenated: ``[b, t, d] -> [b, t, 2h]``.

  Returns ``(ys, (final_fwd, final_bwd))``; ``initial_carry`` is ``None`` or a pair.
  """
  init_f, init_b = (None, None) if initial_carry is None else initial_carry
  ys_f, carry_f = unroll(cell, params["fwd"], xs, lengths=lengths, initial_carry=init_f, **kwargs)
  ys_b, carry_b = unroll(cell, params["bwd"], xs, lengths=lengths, initial_carry=init_b,
                         reverse=True, **kwargs)
  return jnp.concatenate([ys_f, ys_b], axis=-1), (carry_f, carry_b)


def init_stack(key, cell: Cell | str, input_size: int, hidden_size: int, num_layers: int = 1,
               bidirectional: bool = False, dtype=jnp.float32) -> list[dict]:
  """Params of a deep (optionally bidirectional) RNN: one ``{'fwd'[, 'bwd']}`` dict per layer."""
  cell = cells_lib.get_cell(cell)
  if num_layers < 1:
    raise ValueError(f"num_layers must be >= 1; got {num_layers}")
  stacked = []
  for layer, key_layer in enumerate(jax.random.split(key, num_layers)):
    d = input_size if layer == 0 else hidden_size * (2 if bidirectional else 1)
    if bidirectional:
      stacked.append(init_bidirectional(key_layer, cell, d, hidden_size, dtype))
    else:
      stacked.append({"fwd": cell.init(key_layer, d, hidden_size, dtype)})
  return stacked


def stack(cell: Cell | str, params: Sequence[dict], xs: jax.Array, *, lengths=None,
          initial_carry: Sequence | None = None, dropout_rate: float = 0.0,
          dropout_key: jax.Array | None = None, **kwargs):
  """Runs a deep RNN: each layer's outputs feed the next, with dropout between layers.

  Args:
    params: from :func:`init_stack`.
    xs: ``[b, t, d]``.
    initial_carry: ``None`` or one entry per layer: a carry, or a ``(fwd, bwd)`` pair.
    dropout_rate: dropout applied to every layer's output except the last (needs ``dropout_key``;
      with no key, dropout is off, as at evaluation).
    dropout_key: None, one PRNG key, or ``[b]`` per-example keys. The dropout after layer ``l``
      is ``layers.dropout(layers.fold_keys(dropout_key, l), ys_l, dropout_rate)``; with
      per-example keys each row's masks depend on its own key alone, so a batch split over
      devices draws the masks it would draw on one.
    **kwargs: passed to :func:`unroll` (``unroll``, ``remat``, ...).

  Returns:
    ``(ys, finals)``: ``ys: [b, t, h or 2h]`` from the top layer; ``finals`` one entry per layer
    (a carry, or a ``(fwd, bwd)`` pair for bidirectional layers).
  """
  cell = cells_lib.get_cell(cell)
  if not 0.0 <= dropout_rate < 1.0:
    raise ValueError(f"dropout_rate must be in [0, 1); got {dropout_rate}")
  if initial_carry is not None and len(initial_carry) != len(params):
    raise ValueError(f"initial_carry has {len(initial_carry)} entries for {len(params)} layers")
  finals = []
  for layer, layer_params in enumerate(params):
    init = None if initial_carry is None else initial_carry[layer]
    if "bwd" in layer_params:
      xs, final = bidirectional(cell, layer_params, xs, lengths=lengths, initial_carry=init,
                                **kwargs)
    else:
      xs, final = unroll(cell, layer_params["fwd"], xs, lengths=lengths, initial_carry=init,
                         **kwargs)
    finals.append(final)
    if dropout_rate > 0.0 and dropout_key is not None and layer + 1 < len(params):
      xs = layers.dropout(layers.fold_keys(dropout_key, layer), xs, dropout_rate)
  return xs, finals
