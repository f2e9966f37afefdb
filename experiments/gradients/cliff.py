"""Pascanu, Mikolov & Bengio 2013's cliff: the loss surface of a one-unit RNN and clipped steps.

The model is a tanh RNN with one unit and no input, ``h_t = tanh(w h_{t-1} + b)`` from ``h_0``,
run for ``T`` steps by ``seqjax.recurrent.unroll``; the loss is ``(h_T - target)^2``. For
``w > 1`` the map has two stable fixed points, and which one ``h_T`` settles in flips across a
curve in the ``(w, b)`` plane: the loss jumps there (the cliff) and its gradient grows like the
number of steps. A plain gradient step that lands on the wall is thrown far off; a step whose
norm is clipped moves at most ``clip * lr``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import cells
from seqjax import recurrent

_CELL = cells.get_cell("rnn")  # tanh


def loss(w, b, steps: int, h0: float, target: float):
  """``(h_T - target)^2`` of the one-unit RNN with recurrent weight ``w`` and bias ``b``."""
  params = {"w_ih": jnp.zeros((1, 1)), "b_ih": jnp.zeros((1,)),
            "w_hh": jnp.reshape(w, (1, 1)), "b_hh": jnp.reshape(b, (1,))}
  xs = jnp.zeros((1, steps, 1))
  _, h = recurrent.unroll(_CELL, params, xs, initial_carry=jnp.full((1, 1), h0), impl="scan")
  return (h[0, 0] - target) ** 2


def surface(ws, bs, steps: int, h0: float, target: float) -> np.ndarray:
  """The loss on the grid ``[len(bs), len(ws)]`` (rows: b, columns: w)."""
  grid_w, grid_b = np.meshgrid(np.asarray(ws, np.float32), np.asarray(bs, np.float32))
  fn = jax.jit(jax.vmap(lambda w, b: loss(w, b, steps, h0, target)))
  return np.asarray(fn(grid_w.ravel(), grid_b.ravel())).reshape(grid_w.shape)


def descend(start, lr: float, num_steps: int, steps: int, h0: float, target: float,
            clip: float = 0.0) -> np.ndarray:
  """Gradient descent on ``(w, b)`` from ``start``; with ``clip > 0`` each gradient's norm is
  clipped to ``clip`` first. Returns the ``[num_steps + 1, 2]`` path."""
  grad = jax.jit(jax.grad(lambda p: loss(p[0], p[1], steps, h0, target)))
  path = [np.asarray(start, np.float32)]
  for _ in range(num_steps):
    g = np.asarray(grad(jnp.asarray(path[-1])), np.float64)
    norm = float(np.linalg.norm(g))
    if clip and norm > clip:
      g = g * (clip / norm)
    path.append((path[-1] - lr * g).astype(np.float32))
  return np.stack(path)
