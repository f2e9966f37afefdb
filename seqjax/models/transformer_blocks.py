"""Transformer layers shared by the encoder-decoder and the language model (Vaswani et al. 2017).

Shapes as in the glossary of ``seqjax/__init__.py``; here ``d`` is ``d_model``, ``f`` the
feed-forward size, ``heads`` the number of attention heads and ``dh = d / heads``.

A layer reads its options from a spec with the fields ``d_model``, ``num_heads``, ``ffn_size``,
``dropout``, ``attention_dropout``, ``norm``, ``activation`` (``transformer.Spec`` and
``transformer_lm.LMSpec`` both have them). One function, :func:`layer`, runs an encoder layer
(self-attention, feed-forward), a decoder layer (plus cross-attention) and a language-model layer,
over a whole sequence (teacher forcing) or one step at a time with a key/value cache.

Parameters of one layer, and the ``torch.nn.TransformerEncoderLayer`` /
``TransformerDecoderLayer`` weights they correspond to (``W.T`` is a transpose; torch keeps
``[out, in]``, seqjax ``[in, out]``):

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

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import attention as attention_lib
from seqjax import checks
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


def check_step(spec, steps, cache_len: int) -> None:
  """Decoding past the cache raises, when the steps are known; under ``jit`` they are not, and
  the caller poisons the logits instead (a clamped cache write would go unnoticed)."""
  steps = checks.concrete(steps)
  if steps is None or not steps.size:
    return
  position = int(np.max(steps))
  if position >= cache_len:
    limit = (f"max_len={spec.max_len}" if cache_len == spec.max_len
             else f"the cache's {cache_len} slots (max_len={spec.max_len})")
    raise ValueError(f"decoding position {position} is beyond {limit}")


# ----------------------------------------------------------------------------- parameters
@dataclasses.dataclass(frozen=True)
class Uniform:
  """A parameter still to be drawn, U(-bound, bound) of this shape (see :func:`materialize`)."""
  shape: tuple[int, ...]
  bound: float


def xavier_uniform(shape: tuple[int, int]) -> Uniform:
  """U(-a, a), ``a = sqrt(6 / (fan_in + fan_out))``: what ``torch.nn.Transformer`` (and the
  bentrevett recipe) applies to every matrix, embeddings included."""
  return Uniform(tuple(shape), (6.0 / (shape[0] + shape[1])) ** 0.5)


def materialize(key, tree):
  """Draws every :class:`Uniform` leaf of ``tree`` from one flat uniform sample.

  One draw instead of one per matrix: XLA compiles each ``jax.random`` call's counter-based
  generator separately, and dozens of them made ``init`` take seconds to compile.
  """
  def is_draw(leaf):
    return isinstance(leaf, Uniform)
  leaves, treedef = jax.tree.flatten(tree, is_leaf=is_draw)
  draws = [leaf for leaf in leaves if is_draw(leaf)]
  sizes = [int(np.prod(leaf.shape)) for leaf in draws]
  flat = jax.random.uniform(key, (sum(sizes),), jnp.float32, -1.0, 1.0)
  pieces = iter(jnp.split(flat, np.cumsum(sizes)[:-1]))
  return jax.tree.unflatten(treedef, [
      next(pieces).reshape(leaf.shape) * np.float32(leaf.bound) if is_draw(leaf) else leaf
      for leaf in leaves])


def init_linear(d_in: int, d_out: int) -> dict:
  """Xavier weight; the bias as ``nn.Linear`` draws it, U(-1/sqrt(d_in), 1/sqrt(d_in))."""
  return {"w": xavier_uniform((d_in, d_out)), "b": Uniform((d_out,), d_in ** -0.5)}


def init_layer(d: int, ffn_size: int, cross: bool) -> dict:
  """One layer's parameters (layout in the module docstring), :class:`Uniform` leaves still to
  be drawn by :func:`materialize`; ``cross`` adds cross-attention.

  Attention projections are drawn as torch draws the fused ``in_proj_weight [3d, d]`` (Xavier
  over that shape, so cross-attention's ``q`` and ``kv`` share its bound); their biases are 0.
  """
  fused_bound = xavier_uniform((d, 3 * d)).bound

  def attention_out():
    return {"w": xavier_uniform((d, d)), "b": jnp.zeros((d,))}
  params = {
      "self_attn": {"qkv": {"w": Uniform((d, 3 * d), fused_bound), "b": jnp.zeros((3 * d,))},
                    "out": attention_out()},
      "ffn": {"in": init_linear(d, ffn_size), "out": init_linear(ffn_size, d)},
      "self_norm": layers.init_layer_norm(d),
      "ffn_norm": layers.init_layer_norm(d),
  }
  if cross:
    params["cross_attn"] = {"q": {"w": Uniform((d, d), fused_bound), "b": jnp.zeros((d,))},
                            "kv": {"w": Uniform((d, 2 * d), fused_bound),
                                   "b": jnp.zeros((2 * d,))},
                            "out": attention_out()}
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
  return layers.dropout(key, x, spec.dropout, flat=True)


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
  return layers.dense(params["out"], layers.dropout(_site(key, _FFN_HIDDEN), hidden, spec.dropout,
                                                      flat=True))


def _residual(norm_params, spec, x, sublayer, key):
  """Post-LN ``norm(x + drop(f(x)))`` (Vaswani, torch's default) or pre-LN
  ``x + drop(f(norm(x)))`` (trains without warm-up; needs a final norm after the stack)."""
  if spec.norm == "pre":
    y, extra = sublayer(layers.layer_norm(norm_params, x))
    return x + layers.dropout(key, y, spec.dropout, flat=True), extra
  y, extra = sublayer(x)
  return layers.layer_norm(norm_params, x + layers.dropout(key, y, spec.dropout, flat=True)), extra


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


def empty_cache(spec, batch_size: int, cache_len: int | None = None) -> dict:
  """One layer's key/value cache, zeros: ``{'k', 'v'}: [b, cache_len, heads, dh]`` (default
  ``cache_len``: ``spec.max_len``)."""
  cache_len = spec.max_len if cache_len is None else cache_len
  shape = (batch_size, cache_len, spec.num_heads, spec.d_model // spec.num_heads)
  return {"k": jnp.zeros(shape, jnp.float32), "v": jnp.zeros(shape, jnp.float32)}
