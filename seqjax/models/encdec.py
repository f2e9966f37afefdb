"""RNN encoder-decoder with optional attention (Sutskever 2014, Cho 2014, Bahdanau 2015, Luong 2015).

Shapes as in the glossary of ``seqjax/__init__.py``; ``m`` is the encoder output size (``h``, or
``2h`` when the encoder is bidirectional), the features the attention reads.

The model is a :class:`Spec` (static, hashable: sizes and choices) and a params pytree from
:func:`init`. Its parts are pure functions:

* :func:`encode` runs the (bi)directional multi-layer encoder and returns the decoder's initial
  state: the decoder carries plus everything the decoder reads from the source, every leaf with
  the batch as its leading axis so that :mod:`seqjax.decoding` can repeat and gather it for beams;
* :func:`decode_step` is one decoder step ``(state, token) -> (state, logits, attention)``;
* :func:`forward` is teacher forcing: ``lax.scan`` of the very same step over the gold prefix.

Embedding lookups, dense maps, dropout, the source mask and the loss are ``seqjax.layers``'. Dropout
takes one PRNG key or one key per example (``[b]``); with per-example keys every mask of a row
depends on that row's key alone, so a batch split over devices trains as it would on one.

The decoder's conditioning on the source depends on ``Spec.attention``:

* ``"none"``: no attention. With ``feed_context`` (Cho et al.) the encoder's final state is a fixed
  context concatenated to the decoder input and to the output layer at every step; without it
  (Sutskever et al.) the source reaches the decoder only through its initial state.
* ``"additive"`` (Bahdanau): the previous top decoder state queries the encoder outputs; the
  context is fed to the decoder input and to the output layer.
* ``"dot"`` / ``"general"`` (Luong): the new top decoder state queries the encoder outputs; the
  context goes to the output layer.

The output layer reads ``[h_t; context; embedding]`` (``h_t`` alone without a context), as in the
bentrevett/pytorch-seq2seq models these configurations reproduce.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import attention as attention_lib
from seqjax import cells as cells_lib
from seqjax import layers
from seqjax import recurrent

ATTENTIONS = ("none",) + attention_lib.KINDS
# Logit given to pad and bos, which are never a correct next token; finite so no NaN can appear.
_NEVER = -1e9
# Dropout sites: each gets its own keys via layers.fold_keys, so no two sites share a mask.
_ENCODER, _DECODER = 0, 1
_EMBEDDING, _STEPS = 0, 1


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static description of an encoder-decoder (hashable, so it can be a jit static argument).

  Attributes:
    src_vocab, tgt_vocab: vocabulary sizes.
    embed_size: ``e`` for both embeddings.
    hidden_size: ``h`` of every encoder and decoder layer (per direction in the encoder).
    cell: core cell name (``"gru"``, ``"lstm"``, ...).
    encoder_layers, decoder_layers: stack depths.
    bidirectional: bidirectional encoder.
    reverse_source: feed each source sentence backwards (Sutskever et al.); outputs are
      re-aligned, so attention weights still index the original source positions.
    attention: one of :data:`ATTENTIONS`.
    attention_size: hidden size of the additive score.
    feed_context: with ``attention="none"``, feed the encoder's final state at every step.
    dropout: rate on the embeddings and between stacked layers (training only).
    pad_id, bos_id: special ids whose logits are pinned to a very negative value.
  """

  src_vocab: int
  tgt_vocab: int
  embed_size: int = 256
  hidden_size: int = 512
  cell: str = "gru"
  encoder_layers: int = 1
  decoder_layers: int = 1
  bidirectional: bool = False
  reverse_source: bool = False
  attention: str = "additive"
  attention_size: int = 512
  feed_context: bool = True
  dropout: float = 0.0
  pad_id: int = 0
  bos_id: int = 1

  def __post_init__(self):
    if self.attention not in ATTENTIONS:
      raise ValueError(f"unknown attention {self.attention!r}; choose one of {ATTENTIONS}")
    cells_lib.get_cell(self.cell)
    for name in ("src_vocab", "tgt_vocab", "embed_size", "hidden_size", "encoder_layers",
                 "decoder_layers"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
    if self.attention == "dot" and self.key_size != self.hidden_size:
      raise ValueError(f"dot attention needs decoder size == encoder output size; got "
                       f"{self.hidden_size} and {self.key_size} (bidirectional doubles it)")

  @property
  def key_size(self) -> int:
    """``m``: features of each encoder output (what the attention reads)."""
    return self.hidden_size * (2 if self.bidirectional else 1)

  @property
  def uses_context(self) -> bool:
    return self.attention != "none" or self.feed_context

  @property
  def copies_encoder_state(self) -> bool:
    """Decoder starts from the encoder's final carries, layer by layer; else a learnt bridge."""
    return not self.bidirectional and self.encoder_layers == self.decoder_layers


def init(key, spec: Spec) -> dict:
  """Parameters of the model described by ``spec``."""
  cell = cells_lib.get_cell(spec.cell)
  keys = iter(jax.random.split(key, 8 + spec.decoder_layers))
  e, h = spec.embed_size, spec.hidden_size
  context = spec.key_size if spec.uses_context else 0
  # Bahdanau and Cho feed the context into the decoder RNN; Luong only into the output layer.
  first_input = e + (context if spec.attention in ("none", "additive") else 0)
  params = {
      "src_embed": jax.random.uniform(next(keys), (spec.src_vocab, e), jnp.float32, -0.1, 0.1),
      "tgt_embed": jax.random.uniform(next(keys), (spec.tgt_vocab, e), jnp.float32, -0.1, 0.1),
      "encoder": recurrent.init_stack(next(keys), cell, e, h, spec.encoder_layers,
                                      spec.bidirectional),
      "decoder": [cell.init(next(keys), first_input if layer == 0 else h, h)
                  for layer in range(spec.decoder_layers)],
      "output": layers.init_dense(next(keys), h + (context + e if context else 0),
                                  spec.tgt_vocab),
  }
  if not spec.copies_encoder_state:
    params["bridge"] = layers.init_dense(next(keys), spec.key_size, h * spec.decoder_layers)
  if spec.attention != "none":
    params["attention"] = attention_lib.init_attention(next(keys), spec.attention, h,
                                                       spec.key_size, spec.attention_size)
  return params


def count_params(params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def _embed(table, tokens):
  return layers.embed({"embedding": table}, tokens)


def _fold(key, site):
  """Keys of one dropout site (one key or per-example keys alike); None stays None."""
  return None if key is None else layers.fold_keys(key, site)


def _top_output(spec: Spec, finals) -> jax.Array:
  """Final hidden state of the top encoder layer, ``[b, m]`` (both directions concatenated)."""
  top = finals[-1]
  if spec.bidirectional:
    return jnp.concatenate([cells_lib.output_of(top[0]), cells_lib.output_of(top[1])], axis=-1)
  return cells_lib.output_of(top)


def encode(params, spec: Spec, src: jax.Array, src_lengths: jax.Array,
           dropout_key: jax.Array | None = None) -> dict:
  """Encodes ``src: [b, s]`` ids (valid lengths ``src_lengths: [b]``) into the decoder state.

  ``dropout_key``: None (no dropout), one PRNG key, or ``[b]`` per-example keys.

  Returns:
    A dict pytree, leaves ``[b, ...]``: ``carry`` (a list, one decoder carry per layer) and,
    depending on the attention, ``keys [b, s, m]``, ``projected`` keys, ``mask [b, s]``, or the
    fixed ``context [b, m]``.
  """
  if np.ndim(src) != 2 or np.shape(src_lengths) != np.shape(src)[:1]:
    raise ValueError(f"src must be [b, s] ids and src_lengths [b]; got {np.shape(src)} and "
                     f"{np.shape(src_lengths)}")
  cell = cells_lib.get_cell(spec.cell)
  src_lengths = jnp.asarray(src_lengths, jnp.int32)
  time = src.shape[1]
  if spec.reverse_source:
    src = jnp.take_along_axis(src, recurrent.reverse_index(src_lengths, time), axis=1)
  xs = layers.dropout(_fold(dropout_key, _EMBEDDING), _embed(params["src_embed"], src),
                      spec.dropout)
  # Layer by layer so that the dropout between layers is layers.dropout, per-example keys too.
  finals = []
  for layer, layer_params in enumerate(params["encoder"]):
    if layer:
      xs = layers.dropout(_fold(dropout_key, layer), xs, spec.dropout)  # sites 1 .. L - 1
    xs, (final,) = recurrent.stack(cell, [layer_params], xs, lengths=src_lengths)
    finals.append(final)
  outputs = xs
  if spec.reverse_source:
    index = recurrent.reverse_index(src_lengths, time)
    outputs = jnp.take_along_axis(outputs, index[:, :, None], axis=1)

  h = spec.hidden_size
  if spec.copies_encoder_state:
    carry = list(finals)
  else:
    start = jnp.tanh(layers.dense(params["bridge"], _top_output(spec, finals)))
    carry = []
    for layer in range(spec.decoder_layers):
      h0 = start[:, layer * h:(layer + 1) * h]
      carry.append((h0, jnp.zeros_like(h0)) if cell.has_cell_state else h0)
  state = {"carry": carry}
  if spec.attention == "none":
    if spec.feed_context:
      state["context"] = _top_output(spec, finals)
  else:
    state["keys"] = outputs
    state["projected"] = attention_lib.project_keys(spec.attention, params["attention"], outputs)
    state["mask"] = layers.mask_from_lengths(src_lengths, time)
  return state


def _attend(params, spec, state, query):
  return attention_lib.attend(spec.attention, params["attention"], query, state["keys"],
                              state["projected"], state["mask"])


def _step_features(params, spec: Spec, state: dict, embedded: jax.Array, dropout_key=None):
  """Decoder recurrence for one step; returns ``(state, features [b, f], attention [b, s] | None)``.

  ``features`` is the output layer's input; the output matmul itself is left to the caller so
  that teacher forcing can do it once for all steps. ``dropout_key`` (one key or ``[b]`` keys)
  is this step's; layer ``l``'s dropout uses ``fold_keys(dropout_key, l)``.
  """
  cell = cells_lib.get_cell(spec.cell)
  weights = None
  context = state.get("context")
  if spec.attention == "additive":
    context, weights = _attend(params, spec, state, cells_lib.output_of(state["carry"][-1]))
  x = embedded
  if spec.attention in ("none", "additive") and context is not None:
    x = jnp.concatenate([embedded, context.astype(embedded.dtype)], axis=-1)
  carry = []
  for layer, (layer_params, layer_carry) in enumerate(zip(params["decoder"], state["carry"])):
    new_carry, x = cell.step(layer_params, layer_carry, cell.project(layer_params, x))
    carry.append(new_carry)
    if layer + 1 < spec.decoder_layers:
      x = layers.dropout(_fold(dropout_key, layer), x, spec.dropout)
  if spec.attention in ("dot", "general"):
    context, weights = _attend(params, spec, state, x)
  if context is not None:
    x = jnp.concatenate([x, context, embedded], axis=-1)
  return dict(state, carry=carry), x, weights


def _readout(params, spec: Spec, features: jax.Array) -> jax.Array:
  logits = layers.dense(params["output"], features)
  never = jnp.zeros((spec.tgt_vocab,), bool).at[jnp.array([spec.pad_id, spec.bos_id])].set(True)
  return jnp.where(never, _NEVER, logits)


def decode_step(params, spec: Spec, state: dict, tokens: jax.Array, dropout_key=None):
  """One decoder step: ``tokens: [b]`` (previous outputs) -> ``(state, logits [b, v], attention)``.

  ``attention`` is ``[b, s]``, or None when ``spec.attention == "none"``. ``dropout_key``: None,
  one key or ``[b]`` keys for this step.
  """
  # Site decoder_layers: after the sites 0 .. decoder_layers - 2 of the layers in between.
  embedded = layers.dropout(_fold(dropout_key, spec.decoder_layers),
                            _embed(params["tgt_embed"], tokens), spec.dropout)
  state, features, weights = _step_features(params, spec, state, embedded, dropout_key)
  return state, _readout(params, spec, features), weights


def log_prob_step(params, spec: Spec):
  """``step_fn(state, tokens) -> (state, log_probs[, attention])`` for :mod:`seqjax.decoding`."""
  def step_fn(state, tokens):
    state, logits, weights = decode_step(params, spec, state, tokens)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return (state, log_probs) if weights is None else (state, log_probs, weights)
  return step_fn


def forward(params, spec: Spec, src, src_lengths, tgt_in, dropout_key=None):
  """Teacher forcing: logits for every position of ``tgt_in: [b, t]`` (``bos`` + gold prefix).

  Args:
    src, src_lengths: as in :func:`encode`.
    tgt_in: ``[b, t]`` int ids.
    dropout_key: None (no dropout), one PRNG key, or ``[b]`` per-example keys (then every mask of
      row ``i`` depends on ``dropout_key[i]`` alone, however the batch is split over devices).

  Returns:
    ``(logits [b, t, v], attention [b, t, s] | None)``.
  """
  key_encoder, key_decoder = _fold(dropout_key, _ENCODER), _fold(dropout_key, _DECODER)
  state = encode(params, spec, src, src_lengths, key_encoder)
  embedded = layers.dropout(_fold(key_decoder, _EMBEDDING), _embed(params["tgt_embed"], tgt_in),
                            spec.dropout)
  key_steps = _fold(key_decoder, _STEPS)

  def body(state, inputs):
    step, embedded_t = inputs
    state, features, weights = _step_features(params, spec, state, embedded_t,
                                              _fold(key_steps, step))
    return state, (features, weights)

  steps = jnp.arange(tgt_in.shape[1])
  _, (features, weights) = jax.lax.scan(body, state, (steps, jnp.swapaxes(embedded, 0, 1)))
  logits = _readout(params, spec, jnp.swapaxes(features, 0, 1))
  return logits, None if weights is None else jnp.swapaxes(weights, 0, 1)


def token_log_probs(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """``log p(targets)`` per position: ``[b, t, v], [b, t] -> [b, t]``; ``-layers.cross_entropy``."""
  return -layers.cross_entropy(logits, targets)


def loss(logits, targets, mask, label_smoothing: float = 0.0, reduction: str = "mean"):
  """Cross-entropy over the positions where ``mask`` is True.

  ``layers.masked_cross_entropy``, with label smoothing spread over the tokens the model may emit
  (pad and bos, pinned to a huge negative logit, are left out).

  Args:
    logits: ``[b, t, v]`` from :func:`forward`; ``targets``: ``[b, t]`` ids; ``mask``: ``[b, t]``.
    label_smoothing: as in ``layers.cross_entropy``.
    reduction: ``"mean"`` returns ``(mean over valid tokens, tokens)``; ``"sum"`` returns
      ``(sum over valid tokens, tokens)``, to be divided by a count summed over devices.
  """
  if reduction not in ("mean", "sum"):
    raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}")
  total, tokens = layers.masked_cross_entropy(
      logits, targets, mask=mask, label_smoothing=label_smoothing,
      smooth_over=logits > _NEVER / 2, reduction="sum")
  if reduction == "sum":
    return total, tokens
  return total / jnp.maximum(tokens, 1.0), tokens


@functools.partial(jax.jit, static_argnames=("spec",))
def score(params, spec: Spec, src, src_lengths, tgt_in, tgt_out, tgt_mask):
  """Teacher-forced ``log p(tgt_out | src)`` per sentence, ``[b]``, summed over ``tgt_mask``."""
  logits, _ = forward(params, spec, src, src_lengths, tgt_in)
  return jnp.sum(token_log_probs(logits, tgt_out) * tgt_mask, axis=1)
