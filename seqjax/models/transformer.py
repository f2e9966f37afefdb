"""Transformer encoder-decoder (Vaswani et al. 2017) with a key/value cache for decoding.

Shapes as in the glossary of ``seqjax/__init__.py``; ``d`` is ``d_model``, ``heads`` the number
of attention heads, ``dh = d / heads``, ``L`` the layers of the encoder or the decoder.

The same interface as :mod:`seqjax.models.encdec`, so that training, :mod:`seqjax.decoding` and
the loss serve both families unchanged: a static, hashable :class:`Spec`, a params pytree from
:func:`init`, and pure functions:

* :func:`encode` runs the encoder and returns the decoding state (batch-leading leaves);
* :func:`decode_step` is one incremental decoder step with the key/value cache;
* :func:`log_prob_step` wraps it for ``decoding.greedy`` / ``beam_search`` / ``sample``;
* :func:`forward` is teacher forcing, every target position at once under a causal mask;
* :func:`attention_maps` returns every layer's and head's attention weights, for plots.

The loss is ``encdec.loss`` / ``encdec.token_log_probs`` (label smoothing over the emittable
tokens): like the RNN decoder, the logits of ``pad`` and ``bos`` are pinned to a huge negative
value, which is how that loss leaves them out of the smoothing.

Parameters (``layer`` dicts as in :mod:`seqjax.models.transformer_blocks`, which maps them onto
``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer``):
``src_embed [src_vocab, d]`` (absent with ``share_embeddings``: the source reads ``tgt_embed``),
``tgt_embed [tgt_vocab, d]``, ``src_pos``, ``tgt_pos [max_len, d]`` (learned positions only),
``encoder``, ``decoder``: lists of layers, ``encoder_norm``, ``decoder_norm`` (pre-LN only: the
final norms of a pre-LN stack), ``output`` ``{w: [d, v], b: [v]}`` (``{b}`` alone with
``tie_output``: the weight is ``tgt_embed.T``).

Dropout takes None, one PRNG key or ``[b]`` per-example keys (``train.example_keys``); with
per-example keys every mask of a row depends on that row's key alone, so a batch split over
devices trains as it would on one.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import attention as attention_lib
from seqjax import layers
from seqjax.models import encdec
from seqjax.models import transformer_blocks as blocks
# The decoder-only language model shares the layers; its functions live beside.
from seqjax.models.transformer_lm import LMSpec, init_lm, lm_forward, lm_start, lm_step  # pylint: disable=unused-import

# The pinned logit of pad and bos: encdec's, so that encdec.loss recognises and skips them.
_NEVER = encdec._NEVER  # pylint: disable=protected-access
# Dropout sites; a stack's embedding is site 0 and its layer l site 1 + l.
_ENCODER, _DECODER = 0, 1


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static description of an encoder-decoder Transformer (hashable: a jit static argument).

  Attributes:
    src_vocab, tgt_vocab: vocabulary sizes.
    pad_id, bos_id, eos_id: special target ids (pad and bos are never predicted).
    d_model: ``d``, the width of every layer; num_heads: attention heads (divide ``d``).
    ffn_size: hidden size of each feed-forward block.
    encoder_layers, decoder_layers: stack depths.
    dropout: on the embeddings, the feed-forward hidden layer and every sublayer's output.
    attention_dropout: on the attention weights (as ``torch.nn.MultiheadAttention``).
    max_len: longest source and target (positions ``0 .. max_len - 1``; the cache's length).
    positions: ``"learned"`` tables or fixed ``"sinusoidal"`` ones.
    norm: ``"post"`` (Vaswani; torch's default) or ``"pre"`` (norm inside the residual branch).
    activation: ``"relu"`` or ``"gelu"`` in the feed-forward blocks.
    share_embeddings: one token table for source and target (needs equal vocabularies).
    tie_output: the output projection is the target embedding, transposed.
    scale_embeddings: multiply token embeddings by ``sqrt(d)`` before adding positions.
  """

  src_vocab: int
  tgt_vocab: int
  pad_id: int
  bos_id: int
  eos_id: int
  d_model: int = 256
  num_heads: int = 8
  ffn_size: int = 512
  encoder_layers: int = 3
  decoder_layers: int = 3
  dropout: float = 0.1
  attention_dropout: float = 0.1
  max_len: int = 128
  positions: str = "learned"
  norm: str = "post"
  activation: str = "relu"
  share_embeddings: bool = False
  tie_output: bool = False
  scale_embeddings: bool = True

  def __post_init__(self):
    for name in ("src_vocab", "tgt_vocab", "encoder_layers", "decoder_layers"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
    blocks.check_options(self)
    for name in ("pad_id", "bos_id", "eos_id"):
      if not 0 <= getattr(self, name) < self.tgt_vocab:
        raise ValueError(f"{name}={getattr(self, name)} is outside the target vocabulary "
                         f"[0, {self.tgt_vocab})")
    if self.share_embeddings and self.src_vocab != self.tgt_vocab:
      raise ValueError(f"share_embeddings needs src_vocab == tgt_vocab; got {self.src_vocab} "
                       f"and {self.tgt_vocab}")


def init(key, spec: Spec) -> dict:
  """Parameters of the model described by ``spec`` (layout in the module docstring)."""
  keys = iter(jax.random.split(key, 8 + spec.encoder_layers + spec.decoder_layers))
  d = spec.d_model
  params = {"tgt_embed": blocks.xavier_uniform(next(keys), (spec.tgt_vocab, d))}
  key_src = next(keys)
  if not spec.share_embeddings:
    params["src_embed"] = blocks.xavier_uniform(key_src, (spec.src_vocab, d))
  key_src_pos, key_tgt_pos = next(keys), next(keys)
  if spec.positions == "learned":
    params["src_pos"] = blocks.xavier_uniform(key_src_pos, (spec.max_len, d))
    params["tgt_pos"] = blocks.xavier_uniform(key_tgt_pos, (spec.max_len, d))
  params["encoder"] = [blocks.init_layer(next(keys), d, spec.ffn_size, cross=False)
                       for _ in range(spec.encoder_layers)]
  params["decoder"] = [blocks.init_layer(next(keys), d, spec.ffn_size, cross=True)
                       for _ in range(spec.decoder_layers)]
  if spec.norm == "pre":
    params["encoder_norm"] = layers.init_layer_norm(d)
    params["decoder_norm"] = layers.init_layer_norm(d)
  output = blocks._init_linear(next(keys), d, spec.tgt_vocab)  # pylint: disable=protected-access
  params["output"] = {"b": output["b"]} if spec.tie_output else output
  return params


def count_params(params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def _fold(key, site):
  return None if key is None else layers.fold_keys(key, site)


def _check_batch(src, src_lengths):
  if np.ndim(src) != 2 or np.shape(src_lengths) != np.shape(src)[:1]:
    raise ValueError(f"src must be [b, s] ids and src_lengths [b]; got {np.shape(src)} and "
                     f"{np.shape(src_lengths)}")


def _encoder(params, spec: Spec, src, src_lengths, key):
  """``memory [b, s, d]``, the source mask ``[b, s]`` and, with ``need_weights``, the layers'
  self-attention weights."""
  _check_batch(src, src_lengths)
  time = src.shape[1]
  blocks.check_length(spec, time, "source")
  src_lengths = jnp.asarray(src_lengths, jnp.int32)
  table = params["src_embed"] if "src_embed" in params else params["tgt_embed"]
  positions = jnp.broadcast_to(jnp.arange(time), src.shape)
  x = blocks.embed(spec, table, params.get("src_pos"), src, positions, spec.scale_embeddings,
                   _fold(key, 0))
  mask = layers.mask_from_lengths(src_lengths, time)
  return x, mask


def _encode(params, spec, src, src_lengths, key, need_weights=False):
  x, mask = _encoder(params, spec, src, src_lengths, key)
  self_mask = mask[:, None, None, :]
  weights = []
  for index, layer_params in enumerate(params["encoder"]):
    x, _, layer_weights = blocks.layer(layer_params, spec, x, self_mask, key=_fold(key, 1 + index),
                                       need_weights=need_weights)
    weights.append(layer_weights["self"])
  if spec.norm == "pre":
    x = layers.layer_norm(params["encoder_norm"], x)
  return x, mask, weights


def _readout(params, spec: Spec, x):
  if spec.tie_output:
    logits = jnp.dot(x, params["tgt_embed"].T) + params["output"]["b"]
  else:
    logits = layers.dense(params["output"], x)
  never = np.zeros((spec.tgt_vocab,), bool)
  never[[spec.pad_id, spec.bos_id]] = True
  return jnp.where(never, _NEVER, logits)


def _decode(params, spec, tokens, positions, memory_kv, src_mask, self_mask, key, caches=None,
            steps=None, need_weights=False, need_cross=True):
  """The decoder over ``tokens: [b, t]``: ``(logits [b, t, v], caches, weights per layer)``."""
  x = blocks.embed(spec, params["tgt_embed"], params.get("tgt_pos"), tokens, positions,
                   spec.scale_embeddings, _fold(key, 0))
  cross_mask = src_mask[:, None, None, :]
  new_caches, weights = [], []
  last = spec.decoder_layers - 1
  for index, layer_params in enumerate(params["decoder"]):
    x, cache, layer_weights = blocks.layer(
        layer_params, spec, x, self_mask, key=_fold(key, 1 + index),
        cache=None if caches is None else caches[index], steps=steps,
        memory_kv=memory_kv[index], cross_mask=cross_mask, need_weights=need_weights,
        need_cross_weights=need_cross and index == last)
    new_caches.append(cache)
    weights.append(layer_weights)
  if spec.norm == "pre":
    x = layers.layer_norm(params["decoder_norm"], x)
  return _readout(params, spec, x), new_caches, weights


def _memory_kv(params, spec, memory):
  return [blocks.memory_keys_values(layer_params, spec, memory)
          for layer_params in params["decoder"]]


def encode(params, spec: Spec, src: jax.Array, src_lengths: jax.Array,
           dropout_key: jax.Array | None = None) -> dict:
  """Encodes ``src: [b, s]`` ids (valid lengths ``src_lengths: [b]``) into the decoding state.

  Returns:
    A dict pytree, every leaf ``[b, ...]``: ``memory_kv`` (per decoder layer, the encoder output
    projected to that layer's cross-attention keys and values, ``[b, s, heads, dh]`` each),
    ``src_mask [b, s]`` bool, ``cache`` (per decoder layer, ``{'k', 'v'}: [b, max_len, heads,
    dh]`` zeros) and ``step [b]`` int32 zeros, the position of the next token.
  """
  memory, mask, _ = _encode(params, spec, src, src_lengths, dropout_key)
  batch = src.shape[0]
  return {"memory_kv": _memory_kv(params, spec, memory), "src_mask": mask,
          "cache": [blocks.empty_cache(spec, batch) for _ in range(spec.decoder_layers)],
          "step": jnp.zeros((batch,), jnp.int32)}


def decode_step(params, spec: Spec, state: dict, tokens: jax.Array, dropout_key=None):
  """One incremental decoder step: ``tokens: [b]`` -> ``(state, logits [b, v], attention [b, s])``.

  ``attention`` is the last decoder layer's cross-attention, averaged over heads. ``dropout_key``:
  None, one key or ``[b]`` keys for this step. Decoding past ``spec.max_len`` raises when the
  step is known (outside ``jit``); under ``jit`` it gives NaN logits.
  """
  steps = state["step"]
  if not isinstance(steps, jax.core.Tracer) and np.max(np.asarray(steps)) >= spec.max_len:
    raise ValueError(f"decoding position {int(np.max(np.asarray(steps)))} is beyond "
                     f"max_len={spec.max_len}")
  self_mask = attention_lib.cache_mask(steps, 1, spec.max_len)
  logits, caches, weights = _decode(params, spec, tokens[:, None], steps[:, None],
                                    state["memory_kv"], state["src_mask"], self_mask,
                                    dropout_key, caches=state["cache"], steps=steps)
  state = dict(state, cache=caches, step=steps + 1)
  return state, logits[:, 0], jnp.mean(weights[-1]["cross"], axis=1)[:, 0]


def log_prob_step(params, spec: Spec):
  """``step_fn(state, tokens) -> (state, log_probs [b, v], attention [b, s])`` for
  :mod:`seqjax.decoding`."""
  def step_fn(state, tokens):
    state, logits, weights = decode_step(params, spec, state, tokens)
    return state, jax.nn.log_softmax(logits, axis=-1), weights
  return step_fn


def check_decode_length(spec: Spec, max_decode_len: int) -> None:
  """Raises the one-line ValueError before decoding if ``max_decode_len > spec.max_len``."""
  blocks.check_length(spec, max_decode_len, "decoding")


def forward(params, spec: Spec, src, src_lengths, tgt_in, dropout_key=None):
  """Teacher forcing: logits for every position of ``tgt_in: [b, t]`` (``bos`` + gold prefix).

  Args:
    src, src_lengths: as in :func:`encode`.
    tgt_in: ``[b, t]`` int ids; each position reads itself and earlier ones only (causal mask).
    dropout_key: None (no dropout), one PRNG key, or ``[b]`` per-example keys.

  Returns:
    ``(logits [b, t, v], attention [b, t, s])``: the last decoder layer's cross-attention,
    averaged over heads.
  """
  if np.ndim(tgt_in) != 2 or np.shape(tgt_in)[0] != np.shape(src)[0]:
    raise ValueError(f"tgt_in must be [b, t] ids with src's b; got {np.shape(tgt_in)} and src "
                     f"{np.shape(src)}")
  time = tgt_in.shape[1]
  blocks.check_length(spec, time, "target")
  memory, mask, _ = _encode(params, spec, src, src_lengths, _fold(dropout_key, _ENCODER))
  positions = jnp.broadcast_to(jnp.arange(time), tgt_in.shape)
  logits, _, weights = _decode(params, spec, tgt_in, positions, _memory_kv(params, spec, memory),
                               mask, attention_lib.causal_mask(time),
                               _fold(dropout_key, _DECODER))
  return logits, jnp.mean(weights[-1]["cross"], axis=1)


def attention_maps(params, spec: Spec, src, src_lengths, tgt_in) -> dict:
  """Every layer's and head's attention weights under teacher forcing (no dropout).

  Returns:
    ``{'encoder_self': [L, b, heads, s, s], 'decoder_self': [L, b, heads, t, t],
    'cross': [L, b, heads, t, s]}``; padded keys have weight 0.
  """
  time = tgt_in.shape[1]
  blocks.check_length(spec, time, "target")
  memory, mask, encoder_self = _encode(params, spec, src, src_lengths, None, need_weights=True)
  positions = jnp.broadcast_to(jnp.arange(time), tgt_in.shape)
  _, _, weights = _decode(params, spec, tgt_in, positions, _memory_kv(params, spec, memory), mask,
                          attention_lib.causal_mask(time), None, need_weights=True)
  return {"encoder_self": jnp.stack(encoder_self),
          "decoder_self": jnp.stack([w["self"] for w in weights]),
          "cross": jnp.stack([w["cross"] for w in weights])}
