"""Decoder-only Transformer language model, from the encoder-decoder's layers.

Shapes as in the glossary of ``seqjax/__init__.py``; ``d`` is ``d_model``, ``heads`` the number of
attention heads, ``dh = d / heads``.

Every layer is a ``transformer_blocks.layer`` without cross-attention under a causal mask.
:func:`lm_forward` scores a whole sequence at once (training); :func:`lm_start` and :func:`lm_step`
generate one token at a time with a key/value cache, and give the same logits.

Parameters: ``embed [v, d]``, ``pos [max_len, d]`` (learned positions only), ``layers`` (a list,
layout in ``transformer_blocks``), ``final_norm`` (pre-LN only), ``output`` ``{w: [d, v], b: [v]}``
(``{b}`` alone with ``tie_output``: the weight is ``embed.T``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import attention as attention_lib
from seqjax import layers
from seqjax.models import transformer_blocks as blocks


@dataclasses.dataclass(frozen=True)
class LMSpec:
  """Static description of a decoder-only Transformer (hashable).

  Attributes:
    vocab: ``v``.
    d_model, num_heads, ffn_size, num_layers: sizes (``num_heads`` divides ``d_model``).
    dropout, attention_dropout: as in ``transformer.Spec``.
    max_len: longest sequence (positions ``0 .. max_len - 1``; the cache's length).
    positions, norm, activation: as in ``transformer.Spec`` (GPT-style pre-LN and GELU here).
    tie_output: the output projection is the embedding, transposed.
    scale_embeddings: multiply token embeddings by ``sqrt(d)`` before adding positions.
  """

  vocab: int
  d_model: int = 256
  num_heads: int = 8
  ffn_size: int = 1024
  num_layers: int = 4
  dropout: float = 0.1
  attention_dropout: float = 0.0
  max_len: int = 256
  positions: str = "learned"
  norm: str = "pre"
  activation: str = "gelu"
  tie_output: bool = True
  scale_embeddings: bool = False

  def __post_init__(self):
    for name in ("vocab", "num_layers"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
    blocks.check_options(self)


def init_lm(key, spec: LMSpec) -> dict:
  """Parameters of the language model described by ``spec`` (layout in the module docstring)."""
  key_embed, key_pos, key_output, *key_layers = jax.random.split(key, 3 + spec.num_layers)
  d = spec.d_model
  params = {"embed": blocks.xavier_uniform(key_embed, (spec.vocab, d))}
  if spec.positions == "learned":
    params["pos"] = blocks.xavier_uniform(key_pos, (spec.max_len, d))
  params["layers"] = [blocks.init_layer(k, d, spec.ffn_size, cross=False) for k in key_layers]
  if spec.norm == "pre":
    params["final_norm"] = layers.init_layer_norm(d)
  output = blocks._init_linear(key_output, d, spec.vocab)  # pylint: disable=protected-access
  params["output"] = {"b": output["b"]} if spec.tie_output else output
  return params


def _run(params, spec: LMSpec, tokens, positions, self_mask, key=None, caches=None, steps=None):
  x = blocks.embed(spec, params["embed"], params.get("pos"), tokens, positions,
                   spec.scale_embeddings, None if key is None else layers.fold_keys(key, 0))
  new_caches = []
  for index, layer_params in enumerate(params["layers"]):
    x, cache, _ = blocks.layer(
        layer_params, spec, x, self_mask,
        key=None if key is None else layers.fold_keys(key, 1 + index),
        cache=None if caches is None else caches[index], steps=steps)
    new_caches.append(cache)
  if spec.norm == "pre":
    x = layers.layer_norm(params["final_norm"], x)
  if spec.tie_output:
    logits = jnp.dot(x, params["embed"].T) + params["output"]["b"]
  else:
    logits = layers.dense(params["output"], x)
  return logits, new_caches


def lm_forward(params, spec: LMSpec, tokens: jax.Array, dropout_key=None) -> jax.Array:
  """Next-token logits at every position: ``tokens: [b, t]`` -> ``[b, t, v]`` (causal).

  ``dropout_key``: None (no dropout), one PRNG key or ``[b]`` per-example keys.
  """
  if np.ndim(tokens) != 2:
    raise ValueError(f"tokens must be [b, t] ids; got shape {np.shape(tokens)}")
  time = tokens.shape[1]
  blocks.check_length(spec, time, "sequence")
  positions = jnp.broadcast_to(jnp.arange(time), tokens.shape)
  logits, _ = _run(params, spec, tokens, positions, attention_lib.causal_mask(time), dropout_key)
  return logits


def lm_start(params, spec: LMSpec, batch_size: int) -> dict:
  """The state before the first token: ``cache`` (per layer ``{'k', 'v'}: [b, max_len, heads,
  dh]`` zeros) and ``step [b]`` int32 zeros."""
  del params  # The cache's shape is the spec's; the argument keeps the encoder-decoder's form.
  return {"cache": [blocks.empty_cache(spec, batch_size) for _ in range(spec.num_layers)],
          "step": jnp.zeros((batch_size,), jnp.int32)}


def lm_step(params, spec: LMSpec, state: dict, tokens: jax.Array):
  """One cached step: ``tokens: [b]`` -> ``(state, logits [b, v])``, the next token's logits.

  Past ``spec.max_len`` it raises when the step is known (outside ``jit``), else gives NaN.
  """
  steps = state["step"]
  if not isinstance(steps, jax.core.Tracer) and np.max(np.asarray(steps)) >= spec.max_len:
    raise ValueError(f"decoding position {int(np.max(np.asarray(steps)))} is beyond "
                     f"max_len={spec.max_len}")
  logits, caches = _run(params, spec, tokens[:, None], steps[:, None],
                        attention_lib.cache_mask(steps, 1, spec.max_len), caches=state["cache"],
                        steps=steps)
  return dict(state, cache=caches, step=steps + 1), logits[:, 0]
