"""The BiLSTM tagger: word, casing and character-CNN features, a BiLSTM, softmax or CRF output.

Shapes: ``b`` sentences, ``t`` tokens, ``c`` characters per word, ``k`` tags, ``e`` word
embedding size, ``h`` hidden units per direction.

Each token is the concatenation of its word embedding (lower-cased, digits as 0), a small
casing embedding and a character feature: a width-3 convolution over the word's character
embeddings, max-pooled over the characters (Ma & Hovy 2016), which sees the original case.
A bidirectional LSTM reads the tokens; a dense layer gives ``[b, t, k]`` emission scores,
normalised per token (``output="softmax"``) or over whole tag sequences by the linear-chain
CRF of :mod:`seqjax.models.crf` (``output="crf"``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seqjax import kernels
from seqjax import layers
from seqjax import recurrent
from seqjax.models import crf
from experiments.ner import features

OUTPUTS = ("softmax", "crf")


@dataclasses.dataclass(frozen=True)
class Spec:
  """Sizes and choices of a tagger (hashable: a static argument of jit)."""
  num_words: int
  num_chars: int
  num_tags: int
  word_dim: int = 100
  casing_dim: int = 8
  char_dim: int = 30
  char_filters: int = 50
  hidden: int = 200
  output: str = "crf"
  cell: str = "lstm"
  # The native CPU LSTM kernels run their own threads, which stall when other jobs share the
  # cores; False keeps the fused XLA loops (see the experiment README for the measured times).
  native_kernels: bool = False

  def __post_init__(self):
    if self.output not in OUTPUTS:
      raise ValueError(f"output must be one of {OUTPUTS}; got {self.output!r}")


def init(key, spec: Spec) -> dict:
  """The tagger's params (a dict of arrays)."""
  keys = jax.random.split(key, 7)
  features_in = spec.word_dim + spec.casing_dim + spec.char_filters
  # Word vectors drawn U(-sqrt(3/e), sqrt(3/e)) (unit variance per vector, Ma & Hovy 2016).
  bound = (3.0 / spec.word_dim) ** 0.5
  params = {
      "words": jax.random.uniform(keys[0], (spec.num_words, spec.word_dim), jnp.float32,
                                  -bound, bound),
      "casings": layers.init_embedding(keys[1], len(features.CASINGS), spec.casing_dim),
      "chars": layers.init_embedding(keys[2], spec.num_chars, spec.char_dim),
      "char_conv": layers.init_dense(keys[3], 3 * spec.char_dim, spec.char_filters),
      "lstm": recurrent.init_bidirectional(keys[4], spec.cell, features_in, spec.hidden),
      "out": layers.init_dense(keys[5], 2 * spec.hidden, spec.num_tags),
  }
  if spec.output == "crf":
    params["crf"] = crf.init(keys[6], spec.num_tags)
  return params


def char_features(params: dict, chars: jax.Array) -> jax.Array:
  """``chars: [b, t, c]`` ids (0 = padding) -> ``[b, t, f]`` max-pooled convolution features."""
  x = layers.embed(params["chars"], chars)  # [b, t, c, char_dim]
  mask = chars > 0
  x = jnp.where(mask[..., None], x, 0.0)
  padded = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
  # A width-3 convolution as one matmul over each character's window [left, self, right].
  windows = jnp.concatenate([padded[:, :, :-2], padded[:, :, 1:-1], padded[:, :, 2:]], axis=-1)
  y = jnp.tanh(layers.dense(params["char_conv"], windows))  # [b, t, c, f]
  y = jnp.where(mask[..., None], y, -jnp.inf)
  pooled = jnp.max(y, axis=2)
  return jnp.where(jnp.any(mask, axis=2)[..., None], pooled, 0.0)  # padded tokens: 0


def emissions(spec: Spec, params: dict, batch: dict, keys=None, dropout: float = 0.0,
              word_dropout: float = 0.0) -> jax.Array:
  """``[b, t, k]`` tag scores of ``batch`` (see ``features.make_batch``).

  Args:
    keys: None (evaluation) or ``[b]`` per-example PRNG keys for the dropouts.
    dropout: rate on the token features and on the BiLSTM outputs.
    word_dropout: probability that a training singleton is read as ``UNK``.
  """
  words = batch["words"]
  if keys is not None and word_dropout > 0.0:
    drop = jax.vmap(lambda k, n: jax.random.bernoulli(k, word_dropout, n.shape))(
        layers.fold_keys(keys, 0), batch["singleton"])
    words = jnp.where(batch["singleton"] & drop, features.UNK, words)
  x = jnp.concatenate([jnp.take(params["words"], words, axis=0),
                       layers.embed(params["casings"], batch["casings"]),
                       char_features(params, batch["chars"])], axis=-1)
  if keys is not None:
    x = layers.dropout(layers.fold_keys(keys, 1), x, dropout)
  settings = kernels.Settings(native=None if spec.native_kernels else False)
  ys, _ = recurrent.bidirectional(spec.cell, params["lstm"], x, lengths=batch["lengths"],
                                  kernel_settings=settings)
  if keys is not None:
    ys = layers.dropout(layers.fold_keys(keys, 2), ys, dropout)
  return layers.dense(params["out"], ys)


def token_losses(spec: Spec, params: dict, scores: jax.Array, batch: dict) -> jax.Array:
  """``[b]`` summed negative log-likelihood of each sentence's gold tags (0 for padding rows)."""
  lengths = batch["lengths"]
  if spec.output == "crf":
    return crf.nll(params["crf"], scores, batch["tags"], lengths)
  mask = layers.mask_from_lengths(lengths, scores.shape[1])
  logp = jax.nn.log_softmax(scores, axis=-1)
  gold = jnp.take_along_axis(logp, batch["tags"][..., None], axis=-1)[..., 0]
  return -jnp.sum(jnp.where(mask, gold, 0.0), axis=1)


def predict(spec: Spec, params: dict, batch: dict) -> jax.Array:
  """``[b, t]`` int32 predicted tag ids (-1 on padding): argmax per token, or Viterbi."""
  scores = emissions(spec, params, batch)
  if spec.output == "crf":
    return crf.viterbi(params["crf"], scores, batch["lengths"], pad_tag=-1)[0]
  mask = layers.mask_from_lengths(batch["lengths"], scores.shape[1])
  return jnp.where(mask, jnp.argmax(scores, axis=-1).astype(jnp.int32), -1)
