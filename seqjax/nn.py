"""Flax ``linen`` modules over seqjax's pure functions: ``RNN``, ``Embed``, ``Dense``,
``Transformer``, ``TransformerLM``.

Shapes as in the glossary of ``seqjax/__init__.py``.

The modules add nothing to the math: each creates its parameters with ``self.param`` from the
pure ``init_*`` functions and calls the pure apply functions (``recurrent.stack``,
``layers.embed``, ``layers.dense``, ``models.transformer``), so a module and the function it
wraps give the same numbers on the same parameters. :func:`stack_params` and
:func:`rnn_variables` convert between an ``RNN``'s variables and the ``init_stack`` list that
``recurrent.stack`` takes; a ``Transformer``'s ``params['transformer']`` is the
``transformer.init`` tree itself.

Example::

  model = RNN(hidden_size=8, cell="lstm", num_layers=2, dropout_rate=0.1)
  variables = model.init(jax.random.key(0), xs)              # xs: [b, t, d]
  ys, finals = model.apply(variables, xs, lengths=lengths)   # ys: [b, t, 8]
  ys, _ = model.apply(variables, xs, deterministic=False, rngs={"dropout": key})
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import cells as cells_lib
from seqjax import layers
from seqjax import recurrent
from seqjax.models import transformer


def _layer_name(layer: int) -> str:
  return f"layer_{layer}"


def stack_params(params) -> list[dict]:
  """An ``RNN``'s ``params`` collection -> the per-layer list that ``recurrent.stack`` takes."""
  params = params.get("params", params)
  layer_count = len([name for name in params if name.startswith("layer_")])
  return [params[_layer_name(layer)] for layer in range(layer_count)]


def rnn_variables(stack: list[dict]) -> dict:
  """The inverse of :func:`stack_params`: ``init_stack`` output -> ``{'params': ...}``."""
  return {"params": {_layer_name(layer): p for layer, p in enumerate(stack)}}


class RNN(nn.Module):
  """A deep, optionally bidirectional recurrent network: ``[b, t, d] -> [b, t, h or 2h]``.

  Attributes:
    hidden_size: h, units per direction.
    cell: a name from ``seqjax.cells.CELL_NAMES``, or a ``Cell`` (which then keeps its own
      options and ignores ``nonlinearity``, ``forget_bias`` and ``reset_after``).
    num_layers: stacked layers; each layer's outputs feed the next.
    bidirectional: run each layer both ways and concatenate (outputs ``2h`` wide).
    dropout_rate: dropout between layers (not after the last), active when
      ``deterministic=False``; needs a ``'dropout'`` rng.
    nonlinearity: ``'tanh'`` or ``'relu'`` (Elman RNN only).
    forget_bias: added to the forget-gate bias at init (LSTM family).
    reset_after: GRU candidate-gate convention.
    unroll: ``lax.scan`` unroll factor.
    remat: recompute each step in the backward pass instead of storing it.
    impl: the recurrence's implementation, as ``recurrent.unroll``'s ``impl``
      (``'auto'``, ``'scan'``, ``'fused'``, ``'pallas'``, ``'cudnn'``).
    kernel_settings: a ``seqjax.kernels.Settings`` for the fast paths; None: the defaults.
    param_dtype: dtype of the parameters (carries stay float32 regardless).
  """

  hidden_size: int
  cell: Any = "lstm"
  num_layers: int = 1
  bidirectional: bool = False
  dropout_rate: float = 0.0
  nonlinearity: str = "tanh"
  forget_bias: float = 0.0
  reset_after: bool = True
  unroll: int = 1
  remat: bool = False
  impl: str = "auto"
  kernel_settings: Any = None
  param_dtype: Any = jnp.float32

  def _cell(self) -> cells_lib.Cell:
    if isinstance(self.cell, cells_lib.Cell):
      return self.cell  # Already carries its options; the module's defaults must not override.
    return cells_lib.get_cell(self.cell, nonlinearity=self.nonlinearity,
                              forget_bias=self.forget_bias, reset_after=self.reset_after)

  @nn.compact
  def __call__(self, xs: jax.Array, lengths: jax.Array | None = None, initial_carry=None,
               deterministic: bool = True):
    """Runs the stack.

    Args:
      xs: ``[b, t, d]`` inputs.
      lengths: optional ``[b]`` int valid lengths in ``[0, t]``; padded outputs are zero and
        padded steps leave the carry alone.
      initial_carry: ``None`` or one carry per layer (a ``(fwd, bwd)`` pair when bidirectional).
      deterministic: when False and ``dropout_rate > 0``, applies dropout between layers.

    Returns:
      ``(ys, finals)`` as ``recurrent.stack``: ``ys: [b, t, h or 2h]``, one final carry per layer.
    """
    if self.hidden_size < 1 or self.num_layers < 1:
      raise ValueError(f"hidden_size and num_layers must be positive; got {self.hidden_size} "
                       f"and {self.num_layers}")
    if getattr(xs, "ndim", None) != 3:
      raise ValueError(f"xs must be [batch, time, features]; got shape {jnp.shape(xs)}")
    if self.has_variable("params", _layer_name(0)):
      # Checked here because flax's own shape check would fire first, naming only the param.
      expected = self.get_variable("params", _layer_name(0))["fwd"]["w_ih"].shape[0]
      if xs.shape[-1] != expected:
        raise ValueError(f"xs has {xs.shape[-1]} features but this RNN's params expect "
                         f"{expected} (shape {xs.shape})")
    cell = self._cell()
    directions = 2 if self.bidirectional else 1
    params = []
    for layer in range(self.num_layers):
      input_size = xs.shape[-1] if layer == 0 else directions * self.hidden_size

      def init_layer(key, input_size=input_size):
        return recurrent.init_stack(key, cell, input_size, self.hidden_size, 1,
                                    self.bidirectional, self.param_dtype)[0]
      params.append(self.param(_layer_name(layer), init_layer))
    dropout_key = None
    if not deterministic and self.dropout_rate > 0.0 and self.num_layers > 1:
      dropout_key = self.make_rng("dropout")
    return recurrent.stack(cell, params, xs, lengths=lengths, initial_carry=initial_carry,
                           dropout_rate=self.dropout_rate, dropout_key=dropout_key,
                           unroll=self.unroll, remat=self.remat,
                           impl=self.impl, kernel_settings=self.kernel_settings)


class Embed(nn.Module):
  """Token embedding: ``tokens: [b, t]`` int -> ``[b, t, features]`` (see ``layers.embed``)."""

  vocab_size: int
  features: int
  stddev: float = 1.0
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens) -> jax.Array:
    table = self.param("embedding", lambda key: layers.init_embedding(
        key, self.vocab_size, self.features, self.param_dtype, self.stddev)["embedding"])
    return layers.embed({"embedding": table}, tokens)


class Dense(nn.Module):
  """Affine map of the last axis: ``[..., d] -> [..., features]`` (see ``layers.dense``)."""

  features: int
  use_bias: bool = True
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs: jax.Array) -> jax.Array:
    input_size = jnp.shape(xs)[-1] if jnp.ndim(xs) else 0

    def init(key):
      return layers.init_dense(key, input_size, self.features, self.param_dtype, self.use_bias)
    return layers.dense(self.param("dense", init), xs)


def _dropout_key(module: nn.Module, deterministic: bool, spec) -> jax.Array | None:
  if deterministic or (spec.dropout == 0.0 and spec.attention_dropout == 0.0):
    return None
  return module.make_rng("dropout")


class Transformer(nn.Module):
  """The encoder-decoder of ``seqjax.models.transformer`` as a module.

  Its parameters are one entry, ``params['transformer']``: exactly the ``transformer.init`` tree,
  so the pure functions (``encode``, ``decode_step``, ``seqjax.decoding``) take it as it is.

  Attributes:
    spec: a ``transformer.Spec``.
  """

  spec: transformer.Spec

  def setup(self):
    self.tree = self.param("transformer", lambda key: transformer.init(key, self.spec))

  def __call__(self, src, src_lengths, tgt_in, deterministic: bool = True):
    """``transformer.forward``: ``(logits [b, t, v], attention [b, t, s])``; dropout when
    ``deterministic=False`` (needs a ``'dropout'`` rng)."""
    return transformer.forward(self.tree, self.spec, src, src_lengths, tgt_in,
                               _dropout_key(self, deterministic, self.spec))

  def encode(self, src, src_lengths):
    """``transformer.encode`` without dropout: the decoding state."""
    return transformer.encode(self.tree, self.spec, src, src_lengths)

  def decode_step(self, state, tokens):
    """``transformer.decode_step``: ``(state, logits [b, v], attention [b, s])``."""
    return transformer.decode_step(self.tree, self.spec, state, tokens)


class TransformerLM(nn.Module):
  """The decoder-only language model of ``seqjax.models.transformer_lm``; its parameters are
  ``params['lm']``, exactly the ``init_lm`` tree.

  Attributes:
    spec: a ``transformer_lm.LMSpec``.
  """

  spec: transformer.LMSpec

  def setup(self):
    self.tree = self.param("lm", lambda key: transformer.init_lm(key, self.spec))

  def __call__(self, tokens, deterministic: bool = True):
    """``lm_forward``: ``tokens: [b, t]`` -> logits ``[b, t, v]``."""
    return transformer.lm_forward(self.tree, self.spec, tokens,
                                  _dropout_key(self, deterministic, self.spec))
