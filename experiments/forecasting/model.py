"""A recurrent sequence-to-sequence regressor with a one-step head and an ``H``-wide direct head.

Every position ``i`` of a window reads ``x_i = [z_i, phase(t_i)]`` (the scaled value, and the
position in the season when ``Spec.season`` is set) and predicts, from the cell's output ``h_i``:

(``Spec.level`` and ``Spec.difference`` choose whether the value ``z_i``, its change
``z_i - z_{i-1}`` or both are the value inputs; the change alone makes the model blind to the
level, so a trend that leaves the training range looks like the training data.)

* the next value, ``z_{i+1} ~ N(z_i + dense_1(h_i), exp(logvar))`` (the one-step head, used
  recursively: each prediction is fed back as the next input);
* the next ``H`` values at once, ``z_{i+k} ~ N(z_i + dense_H(h_i)_k, ...)`` (the direct head).

Both heads predict the change from the last value, so a trend that leaves the training range stays
within reach. The variances are trained only when ``Spec.gaussian`` (negative log-likelihood);
otherwise both heads are fitted by squared error and only the means are used.

Shapes: ``b`` windows or origins, ``l`` window length, ``d`` input features, ``h`` hidden, ``H``
the direct head's width.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from experiments.forecasting import windows
from seqjax import cells
from seqjax import layers
from seqjax import recurrent

_LOGVAR_RANGE = (-12.0, 6.0)  # keeps exp(logvar) finite early in training


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static model settings: cell name, hidden units, direct horizon, season of the phase input."""
  cell: str
  hidden_size: int
  horizon: int
  season: int = 0  # 0: no phase input
  gaussian: bool = False
  level: bool = True
  difference: bool = False

  def __post_init__(self):
    if not (self.level or self.difference):
      raise ValueError("the model needs the level or the difference input (or both)")

  @property
  def input_size(self) -> int:
    return int(self.level) + int(self.difference) + (2 if self.season else 0)


def inputs(spec: Spec, z, times, previous=None):
  """``[b, l, d]`` inputs from scaled values ``z: [b, l]`` at positions ``times: [b, l]``.

  ``previous: [b]`` is the value before ``z[:, 0]``; None: the first change is taken as 0.
  """
  z = jnp.asarray(z, jnp.float32)
  cols = [z] if spec.level else []
  if spec.difference:
    before = z[:, :1] if previous is None else jnp.asarray(previous, jnp.float32)[:, None]
    cols.append(z - jnp.concatenate([before, z[:, :-1]], axis=1))
  if spec.season:
    angle = 2 * jnp.pi * (jnp.asarray(times) % spec.season) / spec.season
    cols += [jnp.sin(angle).astype(jnp.float32), jnp.cos(angle).astype(jnp.float32)]
  return jnp.stack(cols, axis=-1)


def init(key, spec: Spec) -> dict:
  k_cell, k_step, k_direct = jax.random.split(key, 3)
  params = {"cell": cells.get_cell(spec.cell).init(k_cell, spec.input_size, spec.hidden_size),
            "step": layers.init_dense(k_step, spec.hidden_size, 2),
            "direct": layers.init_dense(k_direct, spec.hidden_size, 2 * spec.horizon)}
  # Start from "no change" with unit variance: persistence is the model's first guess.
  for name in ("step", "direct"):
    params[name]["w"] = params[name]["w"] * 0.1
    params[name]["b"] = jnp.zeros_like(params[name]["b"])
  return params


def _heads(spec: Spec, params, hs, last):
  """One-step ``(mean [...], logvar [...])`` and direct ``(mean [..., H], logvar [..., H])``."""
  step = layers.dense(params["step"], hs)
  direct = layers.dense(params["direct"], hs)
  clip = lambda v: jnp.clip(v, *_LOGVAR_RANGE)
  return ((last + step[..., 0], clip(step[..., 1])),
          (last[..., None] + direct[..., :spec.horizon], clip(direct[..., spec.horizon:])))


def apply(spec: Spec, params, z, times):
  """Many-to-many: one-step ``(mean, logvar): [b, l]`` and direct ``(mean, logvar): [b, l, H]``."""
  hs, carry = recurrent.unroll(spec.cell, params["cell"], inputs(spec, z, times))
  step, direct = _heads(spec, params, hs, jnp.asarray(z, jnp.float32))
  return step, direct, carry


def nll(mean, logvar, target, gaussian: bool):
  """Per-element loss: Gaussian negative log-likelihood (without the constant) or squared error."""
  err = (mean - target) ** 2
  return 0.5 * (logvar + err * jnp.exp(-logvar)) if gaussian else err


def forecast_direct(spec: Spec, params, z, times):
  """Direct forecasts from the last position of each context ``z: [b, l]``: ``(mean, var): [b, H]``."""
  _, (mean, logvar), _ = apply(spec, params, z, times)
  return mean[:, -1], jnp.exp(logvar[:, -1])


def forecast_recursive(spec: Spec, params, z, times, horizon: int, key=None):
  """``[b, horizon]`` forecasts feeding each one-step prediction back as the next input.

  With ``key`` (and a Gaussian model) each step draws its value from the predicted Gaussian
  instead of taking the mean: one sample path per row, for prediction intervals.
  """
  cell = cells.get_cell(spec.cell)
  (mean, logvar), _, carry = apply(spec, params, z, times)
  t_last = jnp.asarray(times)[:, -1]

  def draw(k, mean, logvar):
    if key is None:
      return mean
    noise = jax.random.normal(jax.random.fold_in(key, k), mean.shape)
    return mean + jnp.exp(0.5 * logvar) * noise

  first = draw(0, mean[:, -1], logvar[:, -1])

  def step(state, k):
    carry, previous, value = state
    x = inputs(spec, value[:, None], (t_last + k)[:, None], previous)[:, 0]
    carry, h = cell.step(params["cell"], carry, cell.project(params["cell"], x))
    (m, lv), _ = _heads(spec, params, h, value)
    nxt = draw(k, m, lv)
    return (carry, value, nxt), nxt

  last = jnp.asarray(z, jnp.float32)[:, -1]
  _, rest = jax.lax.scan(step, (carry, last, first), jnp.arange(1, horizon))
  return jnp.concatenate([first[:, None], rest.T], axis=1)


def origin_inputs(z: np.ndarray, origin_idx: np.ndarray, length: int):
  """Context ``(z [o, l], times [o, l])`` of each origin: the ``length`` values ending at it."""
  ctx = windows.context(z, origin_idx, length)
  times = np.asarray(origin_idx)[:, None] - length + 1 + np.arange(length)[None, :]
  return ctx.astype(np.float32), times
