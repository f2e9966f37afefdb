"""The two model families of char_lm behind one set of functions (``config.model``).

* ``"rnn"``: ``seqjax.models.rnn_lm``, a stack of recurrent cells whose state can be carried
  from one chunk of text to the next (random windows or truncated BPTT, exact long evaluation).
* ``"transformer"``: ``seqjax.models.transformer_lm``, a decoder-only GPT whose context is
  ``config.seq_len`` characters. It carries no state: it trains on random windows only, the
  validation text is scored in consecutive windows of ``seq_len`` characters, each read from an
  empty context (every character after a window's first sees the earlier ones of its window, on
  average ``seq_len / 2`` of them, as in nanoGPT's estimate over random windows), and a sample
  reads the last ``seq_len`` characters at every step (``sampling.py``).
"""

from __future__ import annotations

import jax

from seqjax.models import rnn_lm
from seqjax.models import transformer_lm

FAMILIES = ("rnn", "transformer")


def family(config) -> str:
  """``config.model`` (a config or its ``config.json`` dict; runs from before the field: "rnn")."""
  return config.get("model", "rnn")


def label(config) -> tuple[str, str]:
  """``(cell, size)`` of a run for tables and plots: ``("lstm", "3x512")`` or
  ``("transformer", "6x384")`` (layers x width)."""
  if family(config) == "transformer":
    return "transformer", f"{config['num_layers']}x{config['d_model']}"
  return config["cell"], f"{config['num_layers']}x{config['hidden_size']}"


def is_transformer(spec) -> bool:
  return isinstance(spec, transformer_lm.LMSpec)


def num_chars(spec) -> int:
  return spec.vocab if is_transformer(spec) else spec.vocab_size


def make_spec(config, vocab_size: int):
  """``rnn_lm.Spec`` or ``transformer_lm.LMSpec``; ValueError naming the bad config field."""
  if family(config) not in FAMILIES:
    raise ValueError(f"config.model must be one of {FAMILIES}, got {config.model!r}")
  try:
    if family(config) == "rnn":
      return rnn_lm.Spec(config.cell, vocab_size, config.embed_size, config.hidden_size,
                         config.num_layers, config.dropout_rate)
    if config.mode != "windows":
      raise ValueError(f"the Transformer trains on random windows only (mode='windows'); got "
                       f"mode={config.mode!r}")
    return transformer_lm.LMSpec(
        vocab_size, d_model=config.d_model, num_heads=config.num_heads,
        ffn_size=config.ffn_size, num_layers=config.num_layers, dropout=config.dropout_rate,
        attention_dropout=config.dropout_rate, max_len=config.seq_len)
  except ValueError as e:
    raise ValueError(f"config: {e}") from None


def init(key, spec) -> dict:
  if is_transformer(spec):
    return transformer_lm.init_lm(key, spec)
  return rnn_lm.init(key, spec)


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))


def window_logits(params, spec, inputs: jax.Array, dropout_key=None,
                  kernel_settings=None) -> jax.Array:
  """Next-character logits ``[b, t, v]`` of windows ``inputs: [b, t]``, each read from scratch
  (a zero recurrent state, or an empty Transformer context)."""
  if is_transformer(spec):
    return transformer_lm.lm_forward(params, spec, inputs, dropout_key)
  carry = rnn_lm.initial_carry(spec, inputs.shape[0])
  logits, _ = rnn_lm.apply(params, spec, inputs, carry, dropout_key=dropout_key,
                           kernel_settings=kernel_settings)
  return logits
