"""Transformer layers shared by the encoder-decoder and the language model (Vaswani et al. 2017).

Shapes as in the glossary of ``seqjax/__init__.py``; here ``d`` is ``d_model``, ``f`` the
feed-forward size, ``heads`` the number of attention heads and ``dh = d / heads``.

A layer reads its options from a spec with the fields ``d_model``, ``num_heads``, ``ffn_size``,
``dropout``, ``attention_dropout``, ``norm``, ``activation`` (``transformer.Spec`` and
``transformer_lm.LMSpec`` both have them). One function, :func:`layer`, runs an encoder layer
(self-attention, feed-forward), a decoder layer (plus cross-attention) and a language-model layer,
over a whole sequence (teacher forcing) or one step at a time with a key/value cache.

Parameters of one layer, and the ``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer``
weights they correspond to (``W.T`` is a transpose; torch keeps ``[out, in]``, seqjax ``[in, out]``):

* ``self_attn``: ``qkv`` ``{w: [d, 3d], b: [3d]}`` = ``self_attn.in_proj_weight.T``,
  ``in_proj_bias`` (query, key, value columns in that order, each split into heads as torch does);
  ``out`` ``{w: [d, d], b: [d]}`` = ``self_attn.out_proj``;
* ``cross_attn`` (decoder): ``q`` = ``multihead_attn.in_proj_weight[:d].T`` (bias ``[:d]``),
  ``kv`` ``{w: [d, 2d]}`` = ``in_proj_weight[d:].T`` (bias ``[d:]``), ``out`` = ``out_proj``;
* ``ffn``: ``in`` ``{w: [d, f]}`` = ``linear1``, ``out`` ``{w: [f, d]}`` = ``linear2``;
* ``self_norm``, ``cross_norm``, ``ffn_norm``: ``{scale, bias}`` = ``norm1``, ``norm2``, ``norm3``
  of a decoder layer (an encoder layer's ``norm1``, ``norm2`` are ``self_norm``, ``ffn_norm``).

Dropout (training only) sits where PyTorch puts it: on the attention weights
(``attention_dropout``), after the feed-forward activation and on each sublayer's output before
the residual sum (``dropout``). Keys are one PRNG key or ``[b]`` per-example keys; each site
folds in its own number, so no two sites share a mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import attention as attention_lib
from seqjax import layers

POSITIONS = ("learned", "sinusoidal")
NORMS = ("post", "pre")
ACTIVATIONS = {"relu": jax.nn.relu, "gelu": lambda x: jax.nn.gelu(x, approximate=False)}
# Dropout sites of one layer (folded into the layer's key).
_SELF_WEIGHTS, _SELF_OUT, _CROSS_WEIGHTS, _CROSS_OUT, _FFN_HIDDEN, _FFN_OUT = range(6)


def check_options(spec) -> None:
  """The checks every spec with Transformer layers shares; one-line ValueErrors naming values."""
  for name in ("d_model", "num_heads", "ffn_size", "max_len"):
    if getattr(spec, name) < 1:
      raise ValueError(f"{name} must be >= 1; got {getattr(spec, name)}")
  if spec.d_model % spec.num_heads:
    raise ValueError(f"d_model={spec.d_model} is not divisible by num_heads={spec.num_heads}")
  for name in ("dropout", "attention_dropout"):
    if not 0.0 <= getattr(spec, name) < 1.0:
      raise ValueError(f"{name} must be in [0, 1); got {getattr(spec, name)}")
  for name, known in (("positions", POSITIONS), ("norm", NORMS), ("activation", ACTIVATIONS)):
    if getattr(spec, name) not in known:
      raise ValueError(f"unknown {name} {getattr(spec, name)!r}; choose one of {tuple(known)}")


def check_length(spec, length: int, what: str) -> None:
  """Positions exist up to ``spec.max_len``: a longer sequence is a one-line ValueError."""
  if length > spec.max_len:
    raise ValueError(f"{what} length {length} exceeds max_len={spec.max_len}")


# ----------------------------------------------------------------------------- parameters
def xavier_uniform(key, shape: tuple[int, int]) -> jax.Array:
  """U(-a, a), ``a = sqrt(6 / (fan_in + fan_out))``: what ``torch.nn.Transformer`` (and the
  bentrevett recipe) applies to every matrix, embeddings included."""
  bound = (6.0 / (shape[0] + shape[1])) ** 0.5
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def _init_linear(key, d_in: int, d_out: int) -> dict:
  """Xavier weight; the bias as ``nn.Linear`` draws it, U(-1/sqrt(d_in), 1/sqrt(d_in))."""
  key_w, key_b = jax.random.split(key)
  bound = d_in ** -0.5
  return {"w": xavier_uniform(key_w, (d_in, d_out)),
          "b": jax.random.uniform(key_b, (d_out,), jnp.float32, -bound, bound)}


def _init_attention(key, d: int) -> dict:
  """Fused ``[d, 3d]`` projection drawn as torch draws ``in_proj_weight`` ``[3d, d]``; zero biases."""
  key_qkv, key_out = jax.random.split(key)
  return {"qkv": {"w": xavier_uniform(key_qkv, (d, 3 * d)), "b": jnp.zeros((3 * d,))},
          "out": {"w": xavier_uniform(key_out, (d, d)), "b": jnp.zeros((d,))}}


def init_layer(key, d: int, ffn_size: int, cross: bool) -> dict:
  """One layer's parameters (layout in the module docstring); ``cross`` adds cross-attention."""
  key_self, key_cross, key_in, key_out = jax.random.split(key, 4)
  params = {
      "self_attn": _init_attention(key_self, d),
      "ffn": {"in": _init_linear(key_in, d, ffn_size), "out": _init_linear(key_out, ffn_size, d)},
      "self_norm": layers.init_layer_norm(d),
      "ffn_norm": layers.init_layer_norm(d),
  }
  if cross:
    fused = _init_attention(key_cross, d)
    w, b = fused["qkv"]["w"], fused["qkv"]["b"]
    params["cross_attn"] = {"q": {"w": w[:, :d], "b": b[:d]}, "kv": {"w": w[:, d:], "b": b[d:]},
                            "out": fused["out"]}
    params["cross_norm"] = layers.init_layer_norm(d)
  return params


def sinusoids(max_len: int, d: int) -> np.ndarray:
  """``[max_len, d]``: sin at even features, cos at odd ones, wavelengths 2 pi .. 10000 * 2 pi."""
  position = np.arange(max_len, dtype=np.float64)[:, None]
  frequency = np.exp(-np.log(10000.0) * np.arange(0, d, 2) / d)
  table = np.zeros((max_len, d))
  table[:, 0::2] = np.sin(position * frequency)
  table[:, 1::2] = np.cos(position * frequency)[:, :d // 2]
  return table.astype(np.float32)


def embed(spec, table: jax.Array, position_table: jax.Array | None, tokens: jax.Array,
          positions: jax.Array, scale: bool, key=None) -> jax.Array:
  """Token plus position embeddings, then dropout: ``tokens, positions: [b, t]`` -> ``[b, t, d]``.

  ``position_table`` is the learned ``[max_len, d]`` table, or None for sinusoids. A position
  ``>= max_len`` (reachable only under ``jit``, where it cannot raise) gives NaN, as an
  out-of-range token id does, instead of silently reusing the last position.
  """
  x = layers.embed({"embedding": table}, tokens)
  if scale:
    x = x * np.float32(spec.d_model ** 0.5)
  if position_table is None:
    position_table = jnp.asarray(sinusoids(spec.max_len, spec.d_model))
  x = x + jnp.take(position_table, positions, axis=0, mode="fill", fill_value=jnp.nan)
  return layers.dropout(key, x, spec.dropout)


# ----------------------------------------------------------------------------- layers
def _site(key, site: int):
  return None if key is None else layers.fold_keys(key, site)


def _heads(spec, x: jax.Array, parts: int) -> jax.Array:
  """``[b, t, parts * d]`` -> ``[b, t, parts, heads, dh]`` (torch's head split)."""
  b, t, _ = x.shape
  return x.reshape(b, t, parts, spec.num_heads, spec.d_model // spec.num_heads)


def memory_keys_values(params: dict, spec, memory: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A decoder layer's cross-attention keys and values, ``[b, s, heads, dh]`` each, once per
  source: ``memory: [b, s, d]`` (the encoder output)."""
  kv = _heads(spec, layers.dense(params["cross_attn"]["kv"], memory), 2)
  return kv[:, :, 0], kv[:, :, 1]


def _self_attention(params, spec, x, mask, key, cache, steps, need_weights):
  """``x: [b, t, d]``; with a ``cache`` (``{'k', 'v'}: [b, max_len, heads, dh]``) the new keys
  and values are written at positions ``steps: [b]`` onwards and the queries read the cache."""
  q, k, v = jnp.moveaxis(_heads(spec, layers.dense(params["qkv"], x), 3), 2, 0)
  if cache is not None:
    write = jax.vmap(lambda c, u, i: jax.lax.dynamic_update_slice_in_dim(c, u, i, axis=0))
    cache = {"k": write(cache["k"], k, steps), "v": write(cache["v"], v, steps)}
    k, v = cache["k"], cache["v"]
  out, weights = attention_lib.multi_head_attention(
      q, k, v, mask, dropout_rate=spec.attention_dropout, dropout_key=_site(key, _SELF_WEIGHTS),
      return_weights=need_weights)
  return layers.dense(params["out"], out.reshape(x.shape)), weights, cache


def _cross_attention(params, spec, x, memory_kv, mask, key, need_weights):
  q = _heads(spec, layers.dense(params["q"], x), 1)[:, :, 0]
  out, weights = attention_lib.multi_head_attention(
      q, *memory_kv, mask, dropout_rate=spec.attention_dropout,
      dropout_key=_site(key, _CROSS_WEIGHTS), return_weights=need_weights)
  return layers.dense(params["out"], out.reshape(x.shape)), weights


def _feed_forward(params, spec, x, key):
  hidden = ACTIVATIONS[spec.activation](layers.dense(params["in"], x))
  return layers.dense(params["out"], layers.dropout(_site(key, _FFN_HIDDEN), hidden, spec.dropout))


def _residual(norm_params, spec, x, sublayer, key):
  """Post-LN ``norm(x + drop(f(x)))`` (Vaswani, torch's default) or pre-LN
  ``x + drop(f(norm(x)))`` (trains without warm-up; needs a final norm after the stack)."""
  if spec.norm == "pre":
    y, extra = sublayer(layers.layer_norm(norm_params, x))
    return x + layers.dropout(key, y, spec.dropout), extra
  y, extra = sublayer(x)
  return layers.layer_norm(norm_params, x + layers.dropout(key, y, spec.dropout)), extra


def layer(params: dict, spec, x: jax.Array, self_mask: jax.Array, *, key=None, cache=None,
          steps=None, memory_kv=None, cross_mask=None, need_weights: bool = False,
          need_cross_weights: bool = False):
  """One Transformer layer.

  Args:
    params: from :func:`init_layer`.
    x: ``[b, t, d]``.
    self_mask: bool ``[b | 1, 1, t, t]`` (or ``[b, 1, t, max_len]`` with a cache), True where a
      query may read a key (``attention.padding_mask``, ``causal_mask``, ``cache_mask``).
    key: this layer's dropout key (one key or ``[b]`` keys); None: no dropout.
    cache: None, or ``{'k', 'v'}: [b, max_len, heads, dh]`` for incremental decoding, written at
      positions ``steps: [b]`` onwards.
    memory_kv, cross_mask: a decoder layer's source: :func:`memory_keys_values` and a bool
      ``[b, 1, 1, s]`` mask; None for encoder and language-model layers.
    need_weights: return the self- (and cross-) attention weights; need_cross_weights: the
      cross-attention weights only. Either forces the explicit softmax for those attentions.

  Returns:
    ``(x [b, t, d], cache, weights)``: ``weights`` a dict with ``'self' [b, heads, t, t]`` and
    ``'cross' [b, heads, t, s]`` where asked for (None otherwise).
  """
  def self_attention(y):
    out, self_weights, new_cache = _self_attention(params["self_attn"], spec, y, self_mask, key,
                                                   cache, steps, need_weights)
    return out, (self_weights, new_cache)

  def cross_attention(y):
    return _cross_attention(params["cross_attn"], spec, y, memory_kv, cross_mask, key,
                            need_weights or need_cross_weights)

  def feed_forward(y):
    return _feed_forward(params["ffn"], spec, y, key), None

  weights = {}
  x, (weights["self"], cache) = _residual(params["self_norm"], spec, x, self_attention,
                                          _site(key, _SELF_OUT))
  if memory_kv is not None:
    x, weights["cross"] = _residual(params["cross_norm"], spec, x, cross_attention,
                                    _site(key, _CROSS_OUT))
  x, _ = _residual(params["ffn_norm"], spec, x, feed_forward, _site(key, _FFN_OUT))
  return x, cache, weights


def empty_cache(spec, batch_size: int) -> dict:
  """One layer's key/value cache, zeros: ``{'k', 'v'}: [b, max_len, heads, dh]``."""
  shape = (batch_size, spec.max_len, spec.num_heads, spec.d_model // spec.num_heads)
  return {"k": jnp.zeros(shape, jnp.float32), "v": jnp.zeros(shape, jnp.float32)}
