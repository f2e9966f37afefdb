"""Bringing PyTorch recurrent modules into seqjax: ``from_torch(module) -> (apply_fn, params)``.

Shapes as in the glossary of ``seqjax/__init__.py`` (L is torch's ``num_layers``, D its number of
directions, G the gates per cell).

``from_torch`` reads the weights of a ``torch.nn.RNN``, ``torch.nn.LSTM`` or ``torch.nn.GRU`` into a
flat dict of JAX arrays keyed and shaped exactly as torch names and shapes them (``weight_ih_l0``:
``[G*h, d]``, ``bias_hh_l1_reverse``: ``[G*h]``, ...). Keeping torch's keys and shapes means
``jax.grad`` with respect to ``params`` lines up one-to-one with torch's ``.grad`` of every weight,
and the dict can be written back with ``module.load_state_dict``. The conversion to seqjax's layout
(``[in, out]`` matrices, separate ``b_ih`` and ``b_hh``, the same gate order ``[i, f, g, o]`` /
``[r, z, n]``) happens inside ``apply_fn``, so it is differentiated through like any other op.

``apply_fn`` runs ``seqjax.recurrent.stack`` and returns what the module returns in eval mode:
``(output, h_n)`` for RNN and GRU, ``(output, (h_n, c_n))`` for LSTM, in the module's layout.
Inter-layer dropout is not applied (it is the evaluation-mode computation). ``lengths`` plays the
part of a ``PackedSequence``; unlike ``pack_padded_sequence`` it also accepts length 0, for which
the outputs are zero and the final state is the initial one.

torch is imported only when ``from_torch`` is called, so seqjax does not depend on it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import cells as cells_lib
from seqjax import checks
from seqjax import recurrent

# torch's ``RNNBase.mode`` -> (seqjax cell name, nonlinearity).
_MODES = {"RNN_TANH": ("rnn", "tanh"), "RNN_RELU": ("rnn", "relu"), "LSTM": ("lstm", "tanh"),
          "GRU": ("gru", "tanh")}
_SUPPORTED = "torch.nn.RNN, torch.nn.LSTM (proj_size=0) and torch.nn.GRU"


@dataclasses.dataclass(frozen=True)
class _Spec:
  """Everything ``apply_fn`` needs to know about the converted module (no torch objects)."""

  description: str  # repr of the module, for error messages.
  cell: cells_lib.Cell
  input_size: int
  hidden_size: int
  num_layers: int
  bidirectional: bool
  bias: bool
  batch_first: bool

  @property
  def directions(self) -> int:
    return 2 if self.bidirectional else 1

  @property
  def suffixes(self) -> tuple[str, ...]:
    return ("", "_reverse") if self.bidirectional else ("",)

  def shapes(self) -> dict[str, tuple[int, ...]]:
    """torch's parameter names and shapes, in torch's order."""
    g = self.cell.gates * self.hidden_size
    shapes = {}
    for layer in range(self.num_layers):
      d = self.input_size if layer == 0 else self.hidden_size * self.directions
      for sfx in self.suffixes:
        shapes[f"weight_ih_l{layer}{sfx}"] = (g, d)
        shapes[f"weight_hh_l{layer}{sfx}"] = (g, self.hidden_size)
        if self.bias:
          shapes[f"bias_ih_l{layer}{sfx}"] = (g,)
          shapes[f"bias_hh_l{layer}{sfx}"] = (g,)
    return shapes


def _spec_of(module) -> _Spec:
  """Checks that ``module`` is a supported torch recurrent module and describes it."""
  from torch import nn  # pylint: disable=import-outside-toplevel

  description = repr(module) if isinstance(module, nn.Module) else type(module).__name__
  if isinstance(module, nn.RNNCellBase):
    raise TypeError(f"from_torch got the cell module {description}; only whole sequence modules "
                    f"are supported ({_SUPPORTED}). Wrap the cell's weights in the matching "
                    f"sequence module (e.g. nn.LSTM for nn.LSTMCell) instead.")
  if not isinstance(module, (nn.RNN, nn.LSTM, nn.GRU)) or module.mode not in _MODES:
    raise TypeError(f"from_torch supports {_SUPPORTED}; got {description}")
  if getattr(module, "proj_size", 0):
    raise ValueError(f"from_torch does not support LSTM projections; got {description} with "
                     f"proj_size={module.proj_size} (only proj_size=0 is supported)")
  name, nonlinearity = _MODES[module.mode]
  return _Spec(description=description,
               cell=cells_lib.get_cell(name, nonlinearity=nonlinearity),
               input_size=int(module.input_size), hidden_size=int(module.hidden_size),
               num_layers=int(module.num_layers), bidirectional=bool(module.bidirectional),
               bias=bool(module.bias), batch_first=bool(module.batch_first))


def from_torch(module) -> tuple[Callable[..., Any], dict[str, jax.Array]]:
  """Converts a ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` into a pure JAX function and its weights.

  Args:
    module: an ``nn.RNN`` (``nonlinearity`` 'tanh' or 'relu'), ``nn.LSTM`` (``proj_size=0``) or
      ``nn.GRU`` with any ``num_layers``, ``bidirectional``, ``bias`` and ``batch_first``. Its
      weights are copied now; later changes to the module are not seen. float64 weights stay
      float64 only when ``jax_enable_x64`` is on (JAX's default turns them into float32).

  Returns:
    ``(apply_fn, params)``. ``params`` maps torch's parameter names (``weight_ih_l0``,
    ``bias_hh_l1_reverse``, ...) to JAX arrays of torch's shapes; ``bias=False`` modules have no
    bias entries. ``apply_fn(params, x, lengths=None, hx=None)`` computes the module's eval-mode
    forward pass (no inter-layer dropout); it is jit-able and differentiable:

    * ``x``: ``[b, t, d]`` if ``batch_first`` else ``[t, b, d]``, or unbatched ``[t, d]``
      (numpy, JAX, or a CPU torch tensor, read without its autograd graph).
    * ``lengths``: optional ``[b]`` ints in ``[0, t]``, the lengths one would give
      ``pack_padded_sequence``; outputs past a length are zero and ``h_n`` (and ``c_n``) are taken
      at each example's last valid step. Needs batched ``x``.
    * ``hx``: optional initial state as torch takes it: ``h_0`` (RNN, GRU) or ``(h_0, c_0)``
      (LSTM), each ``[L*D, b, h]`` (``[L*D, h]`` for unbatched ``x``); zeros by default.

    It returns ``(output, h_n)`` for RNN and GRU and ``(output, (h_n, c_n))`` for LSTM, with
    ``output: [b, t, D*h]`` (``[t, b, D*h]`` when not ``batch_first``; ``[t, D*h]`` unbatched) and
    ``h_n, c_n: [L*D, b, h]`` (``[L*D, h]`` unbatched), ordered as torch orders them.

  Raises:
    TypeError: ``module`` is not one of the supported modules (cell modules such as
      ``nn.LSTMCell`` included).
    ValueError: an LSTM with ``proj_size > 0``.
  """
  spec = _spec_of(module)
  params = {}
  for name in spec.shapes():
    tensor = getattr(module, name).detach().cpu()
    params[name] = jnp.asarray(tensor.numpy())

  def apply_fn(params, x, lengths=None, hx=None):
    return _apply(spec, params, x, lengths, hx)

  apply_fn.__doc__ = (f"Eval-mode forward pass of {spec.description} in JAX; see "
                      f"seqjax.interop.from_torch.")
  return apply_fn, params


# ----------------------------------------------------------------------------- the forward pass
def _as_array(value):
  """numpy / JAX / list -> array; a CPU torch tensor is read via ``detach`` (no torch import)."""
  if hasattr(value, "detach") and not isinstance(value, jax.Array):
    value = value.detach().cpu().numpy()
  return value if isinstance(value, jax.Array) else jnp.asarray(value)


def _check_params(spec: _Spec, params) -> None:
  expected = spec.shapes()
  if not isinstance(params, dict):
    raise ValueError(f"params for {spec.description} must be the dict from from_torch; got "
                     f"{type(params).__name__}")
  missing = [name for name in expected if name not in params]
  extra = [name for name in params if name not in expected]
  if missing or extra:
    raise ValueError(f"params do not match {spec.description}: missing {missing}, unexpected "
                     f"{extra}")
  for name, shape in expected.items():
    if tuple(np.shape(params[name])) != shape:
      raise ValueError(f"params[{name!r}] has shape {tuple(np.shape(params[name]))}; "
                       f"{spec.description} needs {shape}")


def _check_x(spec: _Spec, x) -> None:
  layout = "[batch, time, features]" if spec.batch_first else "[time, batch, features]"
  if x.ndim not in (2, 3):
    raise ValueError(f"{spec.description} expects x of shape {layout} (batch_first="
                     f"{spec.batch_first}) or unbatched [time, features]; got a {x.ndim}-D x of "
                     f"shape {tuple(x.shape)}")
  if x.shape[-1] != spec.input_size:
    raise ValueError(f"{spec.description} expects x with input_size={spec.input_size} features "
                     f"in its last dimension; got x of shape {tuple(x.shape)}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{spec.description} expects floating-point x; got dtype {x.dtype}")


def _check_lengths(spec: _Spec, lengths, batch: int, time: int):
  if not isinstance(lengths, jax.Array):
    lengths = np.asarray(lengths.detach().cpu() if hasattr(lengths, "detach") else lengths)
  try:
    checks.check_lengths(lengths, batch, time)
  except ValueError as e:
    raise ValueError(f"{spec.description}: {e}") from None
  return jnp.asarray(lengths, jnp.int32)


def _initial_carries(spec: _Spec, hx, batch: int, unbatched: bool) -> list:
  """torch's ``h_0`` or ``(h_0, c_0)``, ``[L*D, b, h]`` -> one carry (or fwd/bwd pair) per layer."""
  is_lstm = spec.cell.has_cell_state
  parts = hx if is_lstm else (hx,)
  if is_lstm and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
    raise ValueError(f"{spec.description} takes hx as a pair (h_0, c_0); got "
                     f"{type(hx).__name__}")
  rows = spec.num_layers * spec.directions
  want = (rows, spec.hidden_size) if unbatched else (rows, batch, spec.hidden_size)
  arrays = []
  for name, part in zip(("h_0", "c_0"), parts):
    part = _as_array(part)
    if tuple(part.shape) != want:
      raise ValueError(f"{spec.description} needs {name} of shape {list(want)} = [num_layers * "
                       f"num_directions, {'' if unbatched else 'batch, '}hidden_size]; got "
                       f"{tuple(part.shape)}")
    arrays.append(part[:, None] if unbatched else part)
  carries = []
  for layer in range(spec.num_layers):
    per_dir = []
    for direction in range(spec.directions):
      row = layer * spec.directions + direction  # torch orders layer-major, then direction.
      per_dir.append(tuple(a[row] for a in arrays) if is_lstm else arrays[0][row])
    carries.append(tuple(per_dir) if spec.bidirectional else per_dir[0])
  return carries


def _cell_params(spec: _Spec, params, layer: int, sfx: str) -> dict[str, jax.Array]:
  """torch ``[G*h, in]`` weights -> seqjax ``[in, G*h]``; biases stay separate (b_ih, b_hh)."""
  w_ih = params[f"weight_ih_l{layer}{sfx}"].T
  w_hh = params[f"weight_hh_l{layer}{sfx}"].T
  if spec.bias:
    b_ih, b_hh = params[f"bias_ih_l{layer}{sfx}"], params[f"bias_hh_l{layer}{sfx}"]
  else:
    b_ih = b_hh = jnp.zeros((w_hh.shape[1],), w_hh.dtype)
  return {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}


def _apply(spec: _Spec, params, x, lengths, hx):
  _check_params(spec, params)
  x = _as_array(x)
  _check_x(spec, x)
  unbatched = x.ndim == 2
  if unbatched:
    if lengths is not None:
      raise ValueError(f"{spec.description}: lengths needs batched x (as pack_padded_sequence "
                       f"does); got unbatched x of shape {tuple(x.shape)}")
    x = x[None]
  elif not spec.batch_first:
    x = jnp.swapaxes(x, 0, 1)  # seqjax runs batch-major [b, t, d].
  batch, time, _ = x.shape
  if lengths is not None:
    lengths = _check_lengths(spec, lengths, batch, time)
  initial = None if hx is None else _initial_carries(spec, hx, batch, unbatched)

  layers = []
  for layer in range(spec.num_layers):
    dirs = {"fwd": _cell_params(spec, params, layer, "")}
    if spec.bidirectional:
      dirs["bwd"] = _cell_params(spec, params, layer, "_reverse")
    layers.append(dirs)
  ys, finals = recurrent.stack(spec.cell, layers, x, lengths=lengths, initial_carry=initial)

  carries = [c for f in finals for c in (f if spec.bidirectional else (f,))]
  if spec.cell.has_cell_state:
    state = (jnp.stack([c[0] for c in carries]), jnp.stack([c[1] for c in carries]))
  else:
    state = jnp.stack(carries)  # [L*D, b, h]
  if unbatched:
    ys = ys[0]
    state = jax.tree.map(lambda s: s[:, 0], state)
  elif not spec.batch_first:
    ys = jnp.swapaxes(ys, 0, 1)
  return ys, state
