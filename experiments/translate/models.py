"""The two model families of the translation experiment behind one set of functions.

``config.model.family`` picks the module: ``"rnn"`` is :mod:`seqjax.models.encdec`,
``"transformer"`` is :mod:`seqjax.models.transformer`. Both expose the same pure functions (``init``,
``count_params``, ``encode``, ``log_prob_step``, ``forward``), so the translator, the training loss
and the decoders of ``experiment.py`` call whichever module :func:`module` returns. Every other
field of ``config.model`` is a field of that module's ``Spec``.
"""

from __future__ import annotations

import types

from seqjax.data import bucketing
from seqjax.data import text

FAMILIES = ("rnn", "transformer")


def family(config) -> str:
  """``config.model.family``, checked (configs written before the field existed mean ``"rnn"``)."""
  name = config.model.get("family", "rnn")
  if name not in FAMILIES:
    raise ValueError(f"unknown config.model.family {name!r}; use one of {FAMILIES}")
  return name


def module(config) -> types.ModuleType:
  """The model module of ``config.model.family``."""
  if family(config) == "transformer":
    from seqjax.models import transformer  # pylint: disable=g-import-not-at-top
    return transformer
  from seqjax.models import encdec  # pylint: disable=g-import-not-at-top
  return encdec


def positions_needed(config) -> int:
  """Longest sequence the model meets: a padded batch or a decoded output.

  Sentences keep at most ``config.max_len`` tokens (longer ones are truncated and counted by
  ``text.encode_pairs``); batches pad them up to a multiple of ``config.pad_multiple``, and the
  decoders run ``config.max_decode_len`` steps.
  """
  return max(bucketing.round_up(config.max_len, config.pad_multiple), config.max_decode_len)


def make_spec(config, src_vocab: int, tgt_vocab: int):
  """The ``Spec`` of ``config.model`` for these vocabulary sizes, with the tokenisers' ids.

  A field the family's ``Spec`` does not have is a one-line error naming it (e.g. an RNN field
  such as ``cell`` left in a Transformer config).
  """
  fields = {k: v for k, v in config.model.to_dict().items() if k != "family"}
  lib = module(config)
  spec_fields = set(lib.Spec.__dataclass_fields__)
  unknown = sorted(set(fields) - spec_fields)
  if unknown:
    raise ValueError(f"config.model has field(s) {unknown} that the {family(config)!r} family's "
                     f"Spec does not take; its fields: {sorted(spec_fields)}")
  ids = dict(src_vocab=src_vocab, tgt_vocab=tgt_vocab, pad_id=text.PAD, bos_id=text.BOS)
  if family(config) == "transformer":
    ids.update(eos_id=text.EOS, max_len=positions_needed(config))
  return lib.Spec(**ids, **fields)
