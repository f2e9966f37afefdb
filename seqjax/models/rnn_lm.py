"""A recurrent language model with an explicit carried state: embedding, a stack of cells, softmax.

Shapes use the glossary in ``seqjax/__init__.py``; ``L`` is the number of stacked layers.

The model reads tokens ``[b, t]`` from a state ``carry`` (one cell carry per layer, ``[b, h]`` or
an ``(h, c)`` pair) and returns next-token logits ``[b, t, v]`` with the state after the last
step. Because the state goes in and comes out, the same function serves every way of reading a
long text:

* random windows: each window starts from :func:`initial_carry` (zeros);
* truncated backpropagation through time: chunk ``k + 1`` starts from chunk ``k``'s final state
  under ``jax.lax.stop_gradient`` (:func:`detach`), so the state flows forward for ever while
  gradients stop at the chunk border;
* exact evaluation of a long text: chunks with the state carried compute what one long unroll
  computes;
* sampling: :func:`step` is a ``seqjax.decoding`` step function (one token in, log-probabilities
  out).

Dropout (``dropout_rate``, per-example keys as ``recurrent.stack`` takes them) sits between the
recurrent layers and before the output head, as in char-rnn and PyTorch's ``nn.LSTM(dropout=p)``
followed by a dropout layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from seqjax import cells as cells_lib
from seqjax import layers
from seqjax import recurrent

Carry = list  # One cell carry per layer.


@dataclasses.dataclass(frozen=True)
class Spec:
  """The model's sizes and cell (hashable: a static argument of jit).

  Attributes:
    cell: a seqjax cell name (``"lstm"``, ``"gru"``, ...).
    vocab_size: ``v``.
    embed_size: ``e``, the embedding width.
    hidden_size: ``h``, units of every layer.
    num_layers: ``L``.
    dropout_rate: dropout between layers and before the head (training only).
    impl: ``recurrent.unroll``'s ``impl`` (``"auto"`` picks the fused path for LSTM and GRU).
  """
  cell: str
  vocab_size: int
  embed_size: int
  hidden_size: int
  num_layers: int
  dropout_rate: float = 0.0
  impl: str = "auto"

  def __post_init__(self):
    cells_lib.get_cell(self.cell)
    if self.cell not in cells_lib.CELL_NAMES:
      raise ValueError(f"cell must be one of {cells_lib.CELL_NAMES}; got {self.cell!r}")
    for name in ("vocab_size", "embed_size", "hidden_size", "num_layers"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"dropout_rate must be in [0, 1); got {self.dropout_rate}")


def init(key, spec: Spec) -> dict:
  """``{'embed': {'embedding': [v, e]}, 'rnn': L layers, 'out': {'w': [h, v], 'b': [v]}}``."""
  key_emb, key_rnn, key_out = jax.random.split(key, 3)
  return {"embed": layers.init_embedding(key_emb, spec.vocab_size, spec.embed_size),
          "rnn": recurrent.init_stack(key_rnn, spec.cell, spec.embed_size, spec.hidden_size,
                                      spec.num_layers),
          "out": layers.init_dense(key_out, spec.hidden_size, spec.vocab_size)}


def initial_carry(spec: Spec, batch_size: int) -> Carry:
  """The zero state: ``L`` cell carries of ``[b, h]`` (``(h, c)`` pairs for LSTMs)."""
  cell = cells_lib.get_cell(spec.cell)
  return [cell.initial_carry(batch_size, spec.hidden_size) for _ in range(spec.num_layers)]


def detach(carry: Carry) -> Carry:
  """The state with its gradient cut: where truncated backpropagation stops."""
  return jax.lax.stop_gradient(carry)


def reset(carry: Carry, starts: jax.Array) -> Carry:
  """Zeroes the state of the rows that begin a new stream: ``starts: [b]`` bool."""
  return jax.tree.map(lambda x: jnp.where(starts[:, None], jnp.zeros_like(x), x), carry)


def apply(params: dict, spec: Spec, tokens: jax.Array, carry: Carry, *,
          dropout_key: jax.Array | None = None, kernel_settings=None) -> tuple[jax.Array, Carry]:
  """Runs the model over ``tokens: [b, t]`` int from ``carry``.

  Args:
    dropout_key: None (no dropout, as at evaluation), one key or ``[b]`` per-example keys.
  Returns:
    ``(logits: [b, t, v], carry)``: next-token logits after each step, and the state after the
    last step (differentiable; :func:`detach` it to cut the gradient there).
  """
  xs = layers.embed(params["embed"], tokens)  # [b, t, e]
  ys, finals = recurrent.stack(spec.cell, params["rnn"], xs, initial_carry=carry,
                               dropout_rate=spec.dropout_rate, dropout_key=dropout_key,
                               impl=spec.impl, kernel_settings=kernel_settings)
  if dropout_key is not None and spec.dropout_rate > 0.0:
    ys = layers.dropout(layers.fold_keys(dropout_key, spec.num_layers), ys, spec.dropout_rate)
  return layers.dense(params["out"], ys), list(finals)


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """``-log p(target)`` per position: ``logits: [b, t, v]``, ``targets: [b, t]`` -> ``[b, t]``."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def step(params: dict, spec: Spec, carry: Carry, tokens: jax.Array) -> tuple[Carry, jax.Array]:
  """One token per row, for ``seqjax.decoding``: ``tokens: [b]`` -> ``(carry, log_probs [b, v])``."""
  logits, carry = apply(params, spec, tokens[:, None], carry)
  return carry, jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)


def layer_states(params: dict, spec: Spec, tokens: jax.Array,
                 carry: Carry | None = None) -> list[Any]:
  """Every layer's carry after every step (for looking inside the network).

  Returns one entry per layer: ``[b, t, h]``, or an ``(h, c)`` pair of them for LSTMs. One
  layer at a time through ``recurrent.unroll``'s scan path, feeding each step's carry out.
  """
  cell = cells_lib.get_cell(spec.cell)
  b = tokens.shape[0]
  carry = initial_carry(spec, b) if carry is None else carry
  xs = layers.embed(params["embed"], tokens)
  out = []
  for layer, layer_params in enumerate(params["rnn"]):
    p = layer_params["fwd"]
    gx = cell.project(p, xs)  # [b, t, g]

    def body(c, gx_t, p=p):
      c, y = cell.step(p, c, gx_t)
      return c, (c, y)
    _, (states, ys) = jax.lax.scan(body, carry[layer], jnp.swapaxes(gx, 0, 1))
    out.append(jax.tree.map(lambda s: jnp.swapaxes(s, 0, 1), states))
    xs = jnp.swapaxes(ys, 0, 1)
  return out
