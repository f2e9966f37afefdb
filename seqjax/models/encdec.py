"""RNN encoder-decoder with optional attention (Sutskever 2014, Cho 2014, Bahdanau 2015, Luong 2015).

Shape letters: b batch, s source time, t target time, e embedding, h hidden, v vocabulary,
k encoder output features (``h``, or ``2h`` when the encoder is bidirectional).

The model is a :class:`Spec` (static, hashable: sizes and choices) and a params pytree from
:func:`init`. Its parts are pure functions:

* :func:`encode` runs the (bi)directional multi-layer encoder and returns the decoder's initial
  state: the decoder carries plus everything the decoder reads from the source, every leaf with
  the batch as its leading axis so that :mod:`seqjax.decoding` can repeat and gather it for beams;
* :func:`decode_step` is one decoder step ``(state, token) -> (state, logits, attention)``;
* :func:`forward` is teacher forcing: ``lax.scan`` of the very same step over the gold prefix.

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
from seqjax import recurrent

ATTENTIONS = ("none",) + attention_lib.KINDS
# Logit given to pad and bos, which are never a correct next token; finite so no NaN can appear.
_NEVER = -1e9


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
    """``k``: features of each encoder output."""
    return self.hidden_size * (2 if self.bidirectional else 1)

  @property
  def uses_context(self) -> bool:
    return self.attention != "none" or self.feed_context

  @property
  def copies_encoder_state(self) -> bool:
    """Decoder starts from the encoder's final carries, layer by layer; else a learnt bridge."""
    return not self.bidirectional and self.encoder_layers == self.decoder_layers


def _dense(key, d_in, d_out):
  """PyTorch ``nn.Linear`` default init, ``[d_in, d_out]``."""
  k_w, k_b = jax.random.split(key)
  bound = d_in ** -0.5
  return {"w": jax.random.uniform(k_w, (d_in, d_out), jnp.float32, -bound, bound),
          "b": jax.random.uniform(k_b, (d_out,), jnp.float32, -bound, bound)}


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
      "output": _dense(next(keys), h + (context + e if context else 0), spec.tgt_vocab),
  }
  if not spec.copies_encoder_state:
    params["bridge"] = _dense(next(keys), spec.key_size, h * spec.decoder_layers)
  if spec.attention != "none":
    params["attention"] = attention_lib.init_attention(next(keys), spec.attention, h,
                                                       spec.key_size, spec.attention_size)
  return params


def count_params(params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def _dropout(x, rate, key):
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


def _top_output(spec: Spec, finals) -> jax.Array:
  """Final hidden state of the top encoder layer, ``[b, k]`` (both directions concatenated)."""
  top = finals[-1]
  if spec.bidirectional:
    return jnp.concatenate([cells_lib.output_of(top[0]), cells_lib.output_of(top[1])], axis=-1)
  return cells_lib.output_of(top)


def encode(params, spec: Spec, src: jax.Array, src_lengths: jax.Array,
           dropout_key: jax.Array | None = None) -> dict:
  """Encodes ``src: [b, s]`` ids (valid lengths ``src_lengths: [b]``) into the decoder state.

  Returns:
    A dict pytree, leaves ``[b, ...]``: ``carry`` (a list, one decoder carry per layer) and,
    depending on the attention, ``keys [b, s, k]``, ``projected`` keys, ``mask [b, s]``, or the
    fixed ``context [b, k]``.
  """
  if np.ndim(src) != 2 or np.shape(src_lengths) != np.shape(src)[:1]:
    raise ValueError(f"src must be [b, s] ids and src_lengths [b]; got {np.shape(src)} and "
                     f"{np.shape(src_lengths)}")
  cell = cells_lib.get_cell(spec.cell)
  src_lengths = jnp.asarray(src_lengths, jnp.int32)
  time = src.shape[1]
  if spec.reverse_source:
    src = jnp.take_along_axis(src, recurrent.reverse_index(src_lengths, time), axis=1)
  k_embed, k_stack = (None, None) if dropout_key is None else jax.random.split(dropout_key)
  xs = _dropout(params["src_embed"][src], spec.dropout, k_embed)
  outputs, finals = recurrent.stack(cell, params["encoder"], xs, lengths=src_lengths,
                                    dropout_rate=spec.dropout, dropout_key=k_stack)
  if spec.reverse_source:
    index = recurrent.reverse_index(src_lengths, time)
    outputs = jnp.take_along_axis(outputs, index[:, :, None], axis=1)

  h = spec.hidden_size
  if spec.copies_encoder_state:
    carry = list(finals)
  else:
    start = jnp.tanh(_top_output(spec, finals) @ params["bridge"]["w"] + params["bridge"]["b"])
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
    state["mask"] = attention_lib.padding_mask(src_lengths, time)
  return state


def _attend(params, spec, state, query):
  return attention_lib.attend(spec.attention, params["attention"], query, state["keys"],
                              state["projected"], state["mask"])


def _step_features(params, spec: Spec, state: dict, embedded: jax.Array, dropout_key=None):
  """Decoder recurrence for one step; returns ``(state, features [b, f], attention [b, s] | None)``.

  ``features`` is the output layer's input; the output matmul itself is left to the caller so
  that teacher forcing can do it once for all steps.
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
    if dropout_key is not None and layer + 1 < spec.decoder_layers:
      x = _dropout(x, spec.dropout, jax.random.fold_in(dropout_key, layer))
  if spec.attention in ("dot", "general"):
    context, weights = _attend(params, spec, state, x)
  if context is not None:
    x = jnp.concatenate([x, context, embedded], axis=-1)
  return dict(state, carry=carry), x, weights


def _readout(params, spec: Spec, features: jax.Array) -> jax.Array:
  logits = features @ params["output"]["w"] + params["output"]["b"]
  never = jnp.zeros((spec.tgt_vocab,), bool).at[jnp.array([spec.pad_id, spec.bos_id])].set(True)
  return jnp.where(never, _NEVER, logits)


def decode_step(params, spec: Spec, state: dict, tokens: jax.Array, dropout_key=None):
  """One decoder step: ``tokens: [b]`` (previous outputs) -> ``(state, logits [b, v], attention)``.

  ``attention`` is ``[b, s]``, or None when ``spec.attention == "none"``.
  """
  embedded = _dropout(params["tgt_embed"][tokens], spec.dropout,
                      None if dropout_key is None else jax.random.fold_in(dropout_key, 1000))
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

  Returns:
    ``(logits [b, t, v], attention [b, t, s] | None)``.
  """
  k_enc, k_dec = (None, None) if dropout_key is None else jax.random.split(dropout_key)
  state = encode(params, spec, src, src_lengths, k_enc)
  embedded = _dropout(params["tgt_embed"][tgt_in], spec.dropout,
                      None if k_dec is None else jax.random.fold_in(k_dec, 1000))

  def body(state, inputs):
    step, embedded_t = inputs
    key = None if k_dec is None else jax.random.fold_in(k_dec, step)
    state, features, weights = _step_features(params, spec, state, embedded_t, key)
    return state, (features, weights)

  steps = jnp.arange(tgt_in.shape[1])
  _, (features, weights) = jax.lax.scan(body, state, (steps, jnp.swapaxes(embedded, 0, 1)))
  logits = _readout(params, spec, jnp.swapaxes(features, 0, 1))
  return logits, None if weights is None else jnp.swapaxes(weights, 0, 1)


def token_log_probs(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """``log p(targets)`` per position: ``[b, t, v], [b, t] -> [b, t]``."""
  return jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), targets[..., None], -1)[..., 0]


def loss(logits, targets, mask, label_smoothing: float = 0.0):
  """Mean cross-entropy over the positions where ``mask`` is True; returns ``(loss, tokens)``."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
  if label_smoothing:
    # Smooth over the tokens the model may emit (pad and bos pinned to _NEVER are excluded).
    valid = log_probs > _NEVER / 2
    smooth = -jnp.sum(jnp.where(valid, log_probs, 0.0), -1) / jnp.sum(valid, -1)
    nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth
  mask = mask.astype(jnp.float32)
  tokens = jnp.sum(mask)
  return jnp.sum(nll * mask) / jnp.maximum(tokens, 1.0), tokens


@functools.partial(jax.jit, static_argnames=("spec",))
def score(params, spec: Spec, src, src_lengths, tgt_in, tgt_out, tgt_mask):
  """Teacher-forced ``log p(tgt_out | src)`` per sentence, ``[b]``, summed over ``tgt_mask``."""
  logits, _ = forward(params, spec, src, src_lengths, tgt_in)
  return jnp.sum(token_log_probs(logits, tgt_out) * tgt_mask, axis=1)
