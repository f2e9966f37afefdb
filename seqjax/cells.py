"""Recurrent cells as pure functions.

Shapes as in the glossary of ``seqjax/__init__.py`` (``g`` = ``G * h``, the gate width).

Every cell is three pure functions:

* ``init_<cell>(key, input_size, hidden_size, dtype) -> params`` builds the parameter pytree;
* ``project_inputs(params, xs) -> gx``: ``xs @ w_ih + b_ih`` for every gate at once, ``[..., d] ->
  [..., g]``.  It is applied to the whole sequence *before* the time loop, so the loop only does
  the recurrent half of the work;
* ``<cell>_step(params, carry, gx_t) -> (carry, y_t)`` advances one time step given the projected
  input ``gx_t: [b, g]``.  ``step(params, carry, project_inputs(params, x_t))`` is the textbook cell.

The recurrent matmul is one fused ``h @ w_hh`` for all gates. Carries and gate arithmetic stay in
float32 (or wider: float64 params and carries compute in float64) even when params or inputs are
bf16; matmuls accumulate in float32 or wider.

The :class:`Cell` dataclass bundles a cell's functions and options into one hashable value that
``seqjax.recurrent.unroll`` accepts as a static argument; :func:`get_cell` builds one by name.
The time loop itself never lives here (see ``recurrent.py``).

Gate layouts follow PyTorch / cuDNN so weights move between the two without reshuffling:
LSTM ``[i, f, g, o]``, GRU ``[r, z, n]``; matrices are stored ``[in, out]`` (transposed from torch).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

Params = dict[str, jax.Array]
Carry = Any  # jax.Array for RNN/GRU, (h, c) tuple for the LSTMs.

_GATES = {"rnn": 1, "irnn": 1, "lstm": 4, "peephole_lstm": 4, "coupled_lstm": 3, "gru": 3,
          "min_gru": 2, "min_lstm": 3}
# Cells whose recurrence is linear in h (gates depend on x_t alone), so ``unroll`` can run them
# parallel in time with ``lax.associative_scan`` (Feng et al. 2024, "Were RNNs All We Needed?").
PARALLEL_CELLS = ("min_gru", "min_lstm")
CELL_NAMES = tuple(_GATES)


def _uniform(key, shape, bound, dtype):
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)


def _init_standard(key, input_size, hidden_size, gates, dtype):
  """PyTorch's default: every weight and bias ~ U(-1/sqrt(h), 1/sqrt(h))."""
  key_ih, key_hh, key_bi, key_bh = jax.random.split(key, 4)
  bound = hidden_size ** -0.5
  g = gates * hidden_size
  return {
      "w_ih": _uniform(key_ih, (input_size, g), bound, dtype),
      "w_hh": _uniform(key_hh, (hidden_size, g), bound, dtype),
      "b_ih": _uniform(key_bi, (g,), bound, dtype),
      "b_hh": _uniform(key_bh, (g,), bound, dtype),
  }


def compute_dtype(*dtypes):
  """At least float32: bf16 and f16 widen to float32, float64 (under x64) stays float64."""
  dtype = jnp.float32
  for d in dtypes:
    dtype = jnp.promote_types(dtype, d)
  return jax.dtypes.canonicalize_dtype(dtype)


def _recurrent_matmul(h, w_hh):
  """``h @ w_hh`` in the weights' dtype, accumulated and returned in float32 (or wider)."""
  return jnp.dot(h.astype(w_hh.dtype), w_hh, preferred_element_type=compute_dtype(w_hh.dtype))


def project_inputs(params: Params, xs: jax.Array) -> jax.Array:
  """Input half of every gate for a whole sequence: ``[..., d] -> [..., g]`` (float32 or wider).

  ``b_ih`` is folded in here; ``b_hh`` stays in the step because the GRU's candidate gate needs
  it inside the reset product.
  """
  w = params["w_ih"]
  dtype = compute_dtype(w.dtype)
  gx = jnp.dot(xs.astype(w.dtype), w, preferred_element_type=dtype)
  return gx + params["b_ih"].astype(dtype)


def project_gate_blocks(params: Params, xs: jax.Array, gates: int,
                        time_major: bool = False) -> tuple[jax.Array, ...]:
  """:func:`project_inputs` as ``gates`` arrays ``[..., h]``, one matmul per gate block.

  ``jnp.concatenate(blocks, -1)`` is ``project_inputs(params, xs)``, the same numbers. A time loop
  over the blocks runs faster on XLA:CPU than one over the whole ``[..., g]`` array: a step
  that slices its ``gx_t`` at several column offsets inside one fusion is not vectorised there.
  With ``time_major``, ``xs: [b, t, d]`` gives blocks ``[t, b, h]`` (the narrower of the input
  and the output is transposed).
  """
  w, b = params["w_ih"], params["b_ih"]
  dtype = compute_dtype(w.dtype)
  hid = w.shape[-1] // gates
  if time_major and xs.shape[-1] <= w.shape[-1]:
    xs, time_major = jnp.swapaxes(xs, 0, 1), False
  blocks = []
  for gate in range(gates):
    cols = slice(gate * hid, (gate + 1) * hid)
    gx = jnp.dot(xs.astype(w.dtype), w[:, cols], preferred_element_type=dtype)
    gx = gx + b[cols].astype(dtype)
    blocks.append(jnp.swapaxes(gx, 0, 1) if time_major else gx)
  return tuple(blocks)


# ----------------------------------------------------------------------------- Elman RNN / IRNN
def init_rnn(key, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
  """Elman RNN: ``h_t = act(x_t W_ih + b_ih + h_{t-1} W_hh + b_hh)``."""
  return _init_standard(key, input_size, hidden_size, 1, dtype)


def init_irnn(key, input_size: int, hidden_size: int, dtype=jnp.float32,
              input_scale: float = 0.001) -> Params:
  """IRNN (Le, Jaitly & Hinton 2015): identity recurrent matrix, zero biases, ReLU.

  Input weights ~ N(0, input_scale^2), the paper's 0.001 standard deviation, so at start the
  hidden state is copied forward unchanged and gradients neither vanish nor explode.
  """
  w_ih = input_scale * jax.random.normal(key, (input_size, hidden_size), jnp.float32)
  return {
      "w_ih": w_ih.astype(dtype),
      "w_hh": jnp.eye(hidden_size, dtype=dtype),
      "b_ih": jnp.zeros((hidden_size,), dtype),
      "b_hh": jnp.zeros((hidden_size,), dtype),
  }


def rnn_step(params: Params, carry: jax.Array, gx_t: jax.Array, nonlinearity: str = "tanh"):
  """``carry: [b, h]``, ``gx_t: [b, h]`` -> ``(h_t, h_t)``."""
  dtype = compute_dtype(gx_t.dtype, carry.dtype)
  pre = gx_t + _recurrent_matmul(carry, params["w_hh"]) + params["b_hh"].astype(dtype)
  # "linear" (no nonlinearity) makes backpropagation through time a pure matrix power.
  h = {"tanh": jnp.tanh, "relu": jax.nn.relu, "linear": lambda v: v}[nonlinearity](pre)
  h = h.astype(carry.dtype)
  return h, h


# ----------------------------------------------------------------------------- LSTM family
def init_lstm(key, input_size: int, hidden_size: int, dtype=jnp.float32,
              forget_bias: float = 0.0) -> Params:
  """LSTM with gates ``[i, f, g, o]``; ``forget_bias`` is added to the forget gate's ``b_hh``.

  A forget bias of 1.0 (Jozefowicz et al. 2015) keeps the cell memory open early in training.
  """
  params = _init_standard(key, input_size, hidden_size, 4, dtype)
  if forget_bias:
    h = hidden_size
    params["b_hh"] = params["b_hh"].at[h:2 * h].add(forget_bias)
  return params


def chrono_lstm_biases(key, params: Params, t_max: float) -> Params:
  """An LSTM's gate biases set by chrono initialisation (Tallec & Ollivier 2018).

  The forget gate's bias is ``log(u)`` with ``u ~ U(1, t_max - 1)`` per unit and the input
  gate's its negative, so at init unit ``j`` forgets with a characteristic time of about ``u_j``
  steps, spread over the range of lags the task needs (``t_max``: the longest). The whole bias
  sits in ``b_hh``; ``b_ih``'s input and forget parts become 0. Layout ``[i, f, g, o]``
  (:func:`init_lstm`); the other parameters are returned unchanged.
  """
  if not t_max > 2:
    raise ValueError(f"chrono initialisation needs t_max > 2; got {t_max}")
  h = params["w_hh"].shape[0]
  if params["b_hh"].shape != (4 * h,):
    raise ValueError(f"chrono initialisation is for the LSTM's 4 gates [i, f, g, o]; got biases "
                     f"of shape {params['b_hh'].shape} for {h} units")
  dtype = params["b_hh"].dtype
  forget = jnp.log(jax.random.uniform(key, (h,), jnp.float32, 1.0, t_max - 1.0)).astype(dtype)
  b_hh = params["b_hh"].at[:h].set(-forget).at[h:2 * h].set(forget)
  b_ih = params["b_ih"].at[:2 * h].set(0)
  return dict(params, b_ih=b_ih, b_hh=b_hh)


def lstm_step(params: Params, carry, gx_t: jax.Array):
  """``carry = (h, c)``, each ``[b, h]``; ``gx_t: [b, 4h]`` -> ``((h, c), h)``."""
  h, c = carry
  dtype = compute_dtype(gx_t.dtype, c.dtype)
  gates = gx_t + _recurrent_matmul(h, params["w_hh"]) + params["b_hh"].astype(dtype)
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  c_new = jax.nn.sigmoid(f) * c.astype(dtype) + jax.nn.sigmoid(i) * jnp.tanh(g)
  h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
  h_new, c_new = h_new.astype(h.dtype), c_new.astype(c.dtype)
  return (h_new, c_new), h_new


def init_peephole_lstm(key, input_size: int, hidden_size: int, dtype=jnp.float32,
                       forget_bias: float = 0.0) -> Params:
  """Peephole LSTM (Gers & Schmidhuber 2000): gates also see the cell through diagonal weights.

  ``w_peep: [3, h]`` holds the input, forget and output peepholes; i and f look at ``c_{t-1}``,
  o looks at the new ``c_t``.
  """
  key_lstm, key_peep = jax.random.split(key)
  params = init_lstm(key_lstm, input_size, hidden_size, dtype, forget_bias)
  params["w_peep"] = _uniform(key_peep, (3, hidden_size), hidden_size ** -0.5, dtype)
  return params


def peephole_lstm_step(params: Params, carry, gx_t: jax.Array):
  """Like :func:`lstm_step` with peephole terms; ``((h, c), h)``."""
  h, c = carry
  dtype = compute_dtype(gx_t.dtype, c.dtype)
  c32 = c.astype(dtype)
  peep = params["w_peep"].astype(dtype)
  gates = gx_t + _recurrent_matmul(h, params["w_hh"]) + params["b_hh"].astype(dtype)
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  i = jax.nn.sigmoid(i + peep[0] * c32)
  f = jax.nn.sigmoid(f + peep[1] * c32)
  c_new = f * c32 + i * jnp.tanh(g)
  o = jax.nn.sigmoid(o + peep[2] * c_new)
  h_new = (o * jnp.tanh(c_new)).astype(h.dtype)
  return (h_new, c_new.astype(c.dtype)), h_new


def init_coupled_lstm(key, input_size: int, hidden_size: int, dtype=jnp.float32,
                      forget_bias: float = 0.0) -> Params:
  """Coupled input-forget gate LSTM (Greff et al. 2017, "CIFG"): ``i = 1 - f``; gates ``[f, g, o]``."""
  params = _init_standard(key, input_size, hidden_size, 3, dtype)
  if forget_bias:
    params["b_hh"] = params["b_hh"].at[:hidden_size].add(forget_bias)
  return params


def coupled_lstm_step(params: Params, carry, gx_t: jax.Array):
  """``gx_t: [b, 3h]`` -> ``((h, c), h)`` with the input gate tied to ``1 - f``."""
  h, c = carry
  dtype = compute_dtype(gx_t.dtype, c.dtype)
  gates = gx_t + _recurrent_matmul(h, params["w_hh"]) + params["b_hh"].astype(dtype)
  f, g, o = jnp.split(gates, 3, axis=-1)
  f = jax.nn.sigmoid(f)
  c_new = f * c.astype(dtype) + (1.0 - f) * jnp.tanh(g)
  h_new = (jax.nn.sigmoid(o) * jnp.tanh(c_new)).astype(h.dtype)
  return (h_new, c_new.astype(c.dtype)), h_new


# ----------------------------------------------------------------------------- GRU
def init_gru(key, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
  """GRU with gates ``[r, z, n]`` (PyTorch / cuDNN layout)."""
  return _init_standard(key, input_size, hidden_size, 3, dtype)


def gru_step(params: Params, carry: jax.Array, gx_t: jax.Array, reset_after: bool = True):
  """``carry: [b, h]``, ``gx_t: [b, 3h]`` -> ``(h_t, h_t)``.

  ``reset_after=True`` (PyTorch, cuDNN): ``n = tanh(x W_in + b_in + r * (h W_hn + b_hn))``, which
  lets all three recurrent products share one matmul. ``reset_after=False`` (Cho et al. 2014):
  ``n = tanh(x W_in + b_in + (r * h) W_hn + b_hn)``, which needs a second, dependent matmul.
  """
  dtype = compute_dtype(gx_t.dtype, carry.dtype)
  h32 = carry.astype(dtype)
  w_hh, b_hh = params["w_hh"], params["b_hh"].astype(dtype)
  gx_r, gx_z, gx_n = jnp.split(gx_t, 3, axis=-1)
  hid = carry.shape[-1]
  if reset_after:
    gh_r, gh_z, gh_n = jnp.split(_recurrent_matmul(carry, w_hh) + b_hh, 3, axis=-1)
    r = jax.nn.sigmoid(gx_r + gh_r)
    z = jax.nn.sigmoid(gx_z + gh_z)
    n = jnp.tanh(gx_n + r * gh_n)
  else:
    gh_rz = _recurrent_matmul(carry, w_hh[:, :2 * hid]) + b_hh[:2 * hid]
    gh_r, gh_z = jnp.split(gh_rz, 2, axis=-1)
    r = jax.nn.sigmoid(gx_r + gh_r)
    z = jax.nn.sigmoid(gx_z + gh_z)
    n = jnp.tanh(gx_n + _recurrent_matmul(r * h32, w_hh[:, 2 * hid:]) + b_hh[2 * hid:])
  h_new = ((1.0 - z) * n + z * h32).astype(carry.dtype)
  return h_new, h_new


# ----------------------------------------------------------------------------- minGRU / minLSTM
def _init_input_only(key, input_size, hidden_size, gates, dtype):
  """Weights for cells whose gates read x_t alone: ``w_ih [d, gates*h]``, ``b_ih``; no ``w_hh``."""
  key_w, key_b = jax.random.split(key)
  bound = input_size ** -0.5
  return {"w_ih": _uniform(key_w, (input_size, gates * hidden_size), bound, dtype),
          "b_ih": _uniform(key_b, (gates * hidden_size,), bound, dtype)}


def init_min_gru(key, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
  """minGRU (Feng et al. 2024): gates ``[z, h~]`` read x_t only; no recurrent matrix."""
  return _init_input_only(key, input_size, hidden_size, 2, dtype)


def init_min_lstm(key, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
  """minLSTM (Feng et al. 2024): gates ``[f, i, h~]`` read x_t only; no recurrent matrix."""
  return _init_input_only(key, input_size, hidden_size, 3, dtype)


def _positive(x):
  """The paper's map ``g(x)``: keeps candidate states positive so the log-space form is defined."""
  return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def linear_recurrence_coefficients(name: str, gx: jax.Array):
  """``(a, u)`` with ``h_t = a_t * h_{t-1} + u_t`` for the parallel cells; ``gx: [..., g]``."""
  if name == "min_gru":
    pre_z, pre_h = jnp.split(gx, 2, axis=-1)
    z = jax.nn.sigmoid(pre_z)
    return 1.0 - z, z * _positive(pre_h)
  pre_f, pre_i, pre_h = jnp.split(gx, 3, axis=-1)
  f, i = jax.nn.sigmoid(pre_f), jax.nn.sigmoid(pre_i)
  # Normalised gates f/(f+i), i/(f+i) keep the state's scale independent of sequence length.
  return f / (f + i), i / (f + i) * _positive(pre_h)


def min_rnn_step(name: str, carry: jax.Array, gx_t: jax.Array):
  """Sequential step of minGRU / minLSTM: ``carry: [b, h]`` -> ``(h_t, h_t)``."""
  a, u = linear_recurrence_coefficients(name, gx_t)
  h = (a * carry.astype(compute_dtype(a.dtype, carry.dtype)) + u).astype(carry.dtype)
  return h, h


# ----------------------------------------------------------------------------- bundling
@dataclasses.dataclass(frozen=True)
class Cell:
  """A cell's pure functions and options as one hashable (jit-static) value.

  Attributes:
    name: one of :data:`CELL_NAMES`.
    nonlinearity: ``"tanh"``, ``"relu"`` or ``"linear"`` (Elman RNN only; IRNN is always ReLU).
    forget_bias: added to the forget-gate bias at init (LSTM family only).
    reset_after: GRU candidate-gate convention, see :func:`gru_step`.
  """

  name: str
  nonlinearity: str = "tanh"
  forget_bias: float = 0.0
  reset_after: bool = True

  def __post_init__(self):
    if self.name not in _GATES:
      raise ValueError(f"unknown cell {self.name!r}; known cells: {', '.join(CELL_NAMES)}")
    if self.nonlinearity not in ("tanh", "relu", "linear"):
      raise ValueError(f"unknown nonlinearity {self.nonlinearity!r}; use 'tanh', 'relu' or "
                       "'linear'")

  @property
  def gates(self) -> int:
    """Gate width in units of h: ``w_hh`` is ``[h, gates * h]``."""
    return _GATES[self.name]

  @property
  def parallel(self) -> bool:
    """True when the recurrence is linear in h and ``unroll`` uses an associative scan."""
    return self.name in PARALLEL_CELLS

  @property
  def has_cell_state(self) -> bool:
    return self.name in ("lstm", "peephole_lstm", "coupled_lstm")

  def init(self, key, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
    if self.name == "rnn":
      return init_rnn(key, input_size, hidden_size, dtype)
    if self.name == "irnn":
      return init_irnn(key, input_size, hidden_size, dtype)
    if self.name == "lstm":
      return init_lstm(key, input_size, hidden_size, dtype, self.forget_bias)
    if self.name == "peephole_lstm":
      return init_peephole_lstm(key, input_size, hidden_size, dtype, self.forget_bias)
    if self.name == "coupled_lstm":
      return init_coupled_lstm(key, input_size, hidden_size, dtype, self.forget_bias)
    if self.name == "min_gru":
      return init_min_gru(key, input_size, hidden_size, dtype)
    if self.name == "min_lstm":
      return init_min_lstm(key, input_size, hidden_size, dtype)
    return init_gru(key, input_size, hidden_size, dtype)

  def project(self, params: Params, xs: jax.Array) -> jax.Array:
    return project_inputs(params, xs)

  def step(self, params: Params, carry: Carry, gx_t: jax.Array):
    if self.name == "rnn":
      return rnn_step(params, carry, gx_t, self.nonlinearity)
    if self.name == "irnn":
      return rnn_step(params, carry, gx_t, "relu")
    if self.name == "lstm":
      return lstm_step(params, carry, gx_t)
    if self.name == "peephole_lstm":
      return peephole_lstm_step(params, carry, gx_t)
    if self.name == "coupled_lstm":
      return coupled_lstm_step(params, carry, gx_t)
    if self.parallel:
      return min_rnn_step(self.name, carry, gx_t)
    return gru_step(params, carry, gx_t, self.reset_after)

  def initial_carry(self, batch_size: int, hidden_size: int, dtype=jnp.float32) -> Carry:
    """Zero state: ``[b, h]``, or ``([b, h], [b, h])`` for the LSTMs."""
    h = jnp.zeros((batch_size, hidden_size), dtype)
    return (h, jnp.zeros_like(h)) if self.has_cell_state else h


def get_cell(name: str | Cell, **options) -> Cell:
  """Returns the :class:`Cell` called ``name`` (``"lstm"``, ``"gru"``, ...) with ``options``."""
  if isinstance(name, Cell):
    return dataclasses.replace(name, **options) if options else name
  if not isinstance(name, str):
    raise TypeError(f"cell must be a name or a Cell, got {type(name).__name__}")
  return Cell(name.lower(), **options)


def output_of(carry: Carry) -> jax.Array:
  """The hidden state ``h`` of a carry (``h`` itself, or the first element of ``(h, c)``)."""
  return carry[0] if isinstance(carry, tuple) else carry
