"""Sequence classifier: embedding, a (bi)directional recurrent encoder, pooling, a dense head.

Shapes use the glossary in ``seqjax/__init__.py``; ``k`` is the encoder's output width
(``D * h``: ``2h`` when bidirectional) and ``c`` the number of classes.

The encoder (:func:`encode`, embedding -> word dropout -> embedding dropout -> ``recurrent.stack``
with lengths) serves any model that reads one sentence, a tagger included; :func:`pool` turns its
``[b, t, k]`` outputs into one ``[b, k]`` vector per sentence in one of four ways:

* ``'last'``: the forward direction's state after the last valid token, concatenated with the
  backward direction's state after the first token (its last step);
* ``'mean'``: the average over valid steps;
* ``'max'``: the element-wise maximum over valid steps;
* ``'attention'``: ``softmax_t(v . tanh(W y_t + b))``-weighted sum over valid steps (Yang et al.
  2016's attention without a context query, as flax's examples/sst2 uses).

Padding never leaks: the recurrent outputs are zero past each length, and every pooling reads
valid steps only, so padding a batch further changes no logit (tests/models/classifier_test.py).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seqjax import attention
from seqjax import layers
from seqjax import recurrent

POOLINGS = ("last", "mean", "max", "attention")


def check_pooling(kind: str) -> str:
  if kind not in POOLINGS:
    raise ValueError(f"pooling must be one of {POOLINGS}; got {kind!r}")
  return kind


# ----------------------------------------------------------------------------- pooling
def init_pooling(key, kind: str, size: int, attention_size: int) -> dict:
  """Params of pooling ``kind`` over ``size`` features (only ``'attention'`` has any)."""
  if check_pooling(kind) != "attention":
    return {}
  key_w, key_v = jax.random.split(key)
  return {"proj": layers.init_dense(key_w, size, attention_size),
          "score": layers.init_dense(key_v, attention_size, 1, use_bias=False)}


def pool(kind: str, params: dict, ys: jax.Array, lengths: jax.Array,
         bidirectional: bool = False) -> tuple[jax.Array, jax.Array | None]:
  """One vector per sequence from the encoder outputs.

  Args:
    kind: one of :data:`POOLINGS`.
    params: from :func:`init_pooling`.
    ys: ``[b, t, k]`` encoder outputs (``[fwd | bwd]`` halves when ``bidirectional``).
    lengths: ``[b]`` valid lengths, each >= 1.
    bidirectional: whether ``ys`` holds two directions (matters for ``'last'``).

  Returns:
    ``(pooled [b, k], weights [b, t] or None)``: attention weights (exactly 0 on padding) for
    ``'attention'``, else None.
  """
  check_pooling(kind)
  lengths = jnp.asarray(lengths, jnp.int32)
  mask = layers.mask_from_lengths(lengths, ys.shape[1])  # [b, t]
  ys = jnp.where(mask[..., None], ys, 0.0)
  if kind == "last":
    rows = jnp.arange(ys.shape[0])
    last = ys[rows, jnp.maximum(lengths - 1, 0)]  # [b, k]
    if not bidirectional:
      return last, None
    half = ys.shape[-1] // 2
    # The backward direction reads right to left: its final state sits at the first step.
    return jnp.concatenate([last[:, :half], ys[:, 0, half:]], axis=-1), None
  if kind == "mean":
    count = jnp.maximum(lengths, 1).astype(ys.dtype)[:, None]
    return jnp.sum(ys, axis=1) / count, None
  if kind == "max":
    return jnp.max(jnp.where(mask[..., None], ys, -jnp.inf), axis=1), None
  scores = layers.dense(params["score"], jnp.tanh(layers.dense(params["proj"], ys)))[..., 0]
  weights = attention.masked_softmax(scores, mask)  # [b, t]
  return jnp.einsum("bt,btk->bk", weights.astype(ys.dtype), ys), weights


# ----------------------------------------------------------------------------- the model
@dataclasses.dataclass(frozen=True)
class Spec:
  """What fixes the classifier's shapes and computation (hashable: a static jit argument).

  Attributes:
    vocab_size: ``v``.
    num_classes: ``c``.
    embed_dim: ``e``.
    hidden_size: ``h`` per direction.
    cell: a ``seqjax.cells`` name (``'lstm'``, ``'gru'``, ...).
    num_layers: stacked recurrent layers ``L``.
    bidirectional: two directions per layer.
    pooling: one of :data:`POOLINGS`.
    attention_size: ``a`` of the attention pooling.
    word_dropout: probability of replacing a token by ``unk_id`` in training.
    embed_dropout: dropout on the embedded tokens.
    layer_dropout: dropout between stacked layers.
    output_dropout: dropout on the pooled vector before the head.
    unk_id: the id word dropout writes.
  """
  vocab_size: int
  num_classes: int
  embed_dim: int = 300
  hidden_size: int = 150
  cell: str = "lstm"
  num_layers: int = 1
  bidirectional: bool = True
  pooling: str = "attention"
  attention_size: int = 100
  word_dropout: float = 0.0
  embed_dropout: float = 0.0
  layer_dropout: float = 0.0
  output_dropout: float = 0.0
  unk_id: int = 3

  @property
  def output_size(self) -> int:
    """``k``: the encoder's output width."""
    return self.hidden_size * (2 if self.bidirectional else 1)


def init(key, spec: Spec, embedding: jax.Array | None = None,
         embed_stddev: float = 0.1) -> dict:
  """``{'embed', 'rnn', 'pool', 'head'}``; ``embedding: [v, e]`` replaces the random table."""
  check_pooling(spec.pooling)
  key_e, key_r, key_p, key_h = jax.random.split(key, 4)
  embed = layers.init_embedding(key_e, spec.vocab_size, spec.embed_dim, stddev=embed_stddev)
  if embedding is not None:
    if tuple(embedding.shape) != (spec.vocab_size, spec.embed_dim):
      raise ValueError(f"embedding table is {tuple(embedding.shape)}; the spec needs "
                       f"[{spec.vocab_size}, {spec.embed_dim}]")
    embed = {"embedding": jnp.asarray(embedding, jnp.float32)}
  return {"embed": embed,
          "rnn": recurrent.init_stack(key_r, spec.cell, spec.embed_dim, spec.hidden_size,
                                      spec.num_layers, spec.bidirectional),
          "pool": init_pooling(key_p, spec.pooling, spec.output_size, spec.attention_size),
          "head": layers.init_dense(key_h, spec.output_size, spec.num_classes)}


def encode(spec: Spec, params: dict, tokens: jax.Array, lengths: jax.Array,
           key: jax.Array | None = None, **unroll_kwargs) -> jax.Array:
  """``tokens: [b, t]`` ids, ``lengths: [b]`` -> ``[b, t, k]`` outputs (zero past each length).

  ``key`` (None at evaluation) draws word dropout, embedding dropout and the dropout between
  layers; ``unroll_kwargs`` go to ``recurrent.unroll`` (``impl``, ``kernel_settings``, ...).
  """
  tokens = jnp.asarray(tokens)
  if key is not None and spec.word_dropout > 0:
    drop = jax.random.bernoulli(jax.random.fold_in(key, 0), spec.word_dropout, tokens.shape)
    tokens = jnp.where(drop, spec.unk_id, tokens)
  xs = layers.embed(params["embed"], tokens)
  if key is not None:
    xs = layers.dropout(jax.random.fold_in(key, 1), xs, spec.embed_dropout)
  ys, _ = recurrent.stack(spec.cell, params["rnn"], xs, lengths=lengths,
                          dropout_rate=spec.layer_dropout,
                          dropout_key=None if key is None else jax.random.fold_in(key, 2),
                          **unroll_kwargs)
  return ys


def apply(spec: Spec, params: dict, tokens: jax.Array, lengths: jax.Array,
          key: jax.Array | None = None, **unroll_kwargs) -> tuple[jax.Array, jax.Array | None]:
  """``(logits [b, c], attention weights [b, t] or None)``; ``key`` None turns dropout off."""
  ys = encode(spec, params, tokens, lengths, key, **unroll_kwargs)
  pooled, weights = pool(spec.pooling, params["pool"], ys, lengths, spec.bidirectional)
  if key is not None:
    pooled = layers.dropout(jax.random.fold_in(key, 3), pooled, spec.output_dropout)
  return layers.dense(params["head"], pooled), weights
