"""Text pipeline for translation: tokenisers, sentence-pair encoding, length-bucketed batches.

Every tokeniser here shares four special ids, so models and decoders never need to ask:
``PAD = 0``, ``BOS = 1``, ``EOS = 2``, ``UNK = 3``. Two tokenisers:

* :class:`SentencePieceTokenizer`: a subword model trained on the training split and saved as a
  ``.model`` file (in the experiment's workdir); characters never seen in training become ``UNK``.
* :class:`WordTokenizer`: words and punctuation kept when seen ``min_freq`` times in training,
  saved as JSON; anything else becomes ``UNK``.

Both detokenise (``decode``) back to plain text, which is what BLEU must be computed on.

:func:`encode_pairs` turns raw sentence pairs into id arrays and deals with bad input in one
place: empty lines are skipped and counted, sentences longer than the model's maximum are
truncated and counted, and both counts go to a warning. :class:`BucketedBatches` sorts by length,
cuts batches of similar lengths and pads each batch only to its own bucket.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Iterable, Sequence

import numpy as np

from seqjax import layers
from seqjax.data import bucketing

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")

_log = logging.getLogger(__name__)
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
# No space before closing punctuation, none after opening brackets: what 13a re-tokenises anyway.
_NO_SPACE_BEFORE = re.compile(r" ([.,!?;:%)\]}])")
_NO_SPACE_AFTER = re.compile(r"([(\[{]) ")


def _strip_specials(ids: Iterable[int]) -> list[int]:
  """Ids up to the first ``EOS``, without ``PAD``/``BOS``."""
  out = []
  for i in ids:
    i = int(i)
    if i == EOS:
      break
    if i not in (PAD, BOS):
      out.append(i)
  return out


class SentencePieceTokenizer:
  """A sentencepiece model with seqjax's special ids."""

  def __init__(self, model_file: str):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    if not os.path.exists(model_file):
      raise FileNotFoundError(f"no sentencepiece model at {model_file!r}")
    self.path = model_file
    self._sp = spm.SentencePieceProcessor(model_file=model_file)
    got = (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id(), self._sp.unk_id())
    if got != (PAD, BOS, EOS, UNK):
      raise ValueError(f"{model_file!r} has special ids (pad, bos, eos, unk) = {got}; seqjax "
                       f"needs {(PAD, BOS, EOS, UNK)} (train it with SentencePieceTokenizer.train)")

  @classmethod
  def train(cls, sentences: Sequence[str], model_prefix: str, vocab_size: int,
            model_type: str = "unigram") -> "SentencePieceTokenizer":
    """Trains on ``sentences`` and writes ``<model_prefix>.model`` (and ``.vocab``)."""
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    sentences = [s for s in sentences if s.strip()]
    if not sentences:
      raise ValueError("cannot train a sentencepiece model on no (non-empty) sentences")
    os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_prefix=model_prefix, vocab_size=vocab_size,
        model_type=model_type, pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK,
        # Every training character gets a piece; characters first seen at test time are UNK.
        character_coverage=1.0,
        # Small corpora cannot always fill vocab_size; take what they give instead of failing.
        hard_vocab_limit=False, num_threads=2, minloglevel=2)
    return cls(model_prefix + ".model")

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text, out_type=int)

  def decode(self, ids: Iterable[int]) -> str:
    return self._sp.decode(_strip_specials(ids))

  def piece(self, token: int) -> str:
    """The text of one token, for plots."""
    return self._sp.id_to_piece(int(token))


class WordTokenizer:
  """Words and punctuation marks with a training-frequency cut-off."""

  def __init__(self, words: Sequence[str], lowercase: bool = False):
    self.words = list(SPECIALS) + [w for w in words if w not in SPECIALS]
    self.lowercase = lowercase
    self._ids = {w: i for i, w in enumerate(self.words)}

  @staticmethod
  def split(text: str, lowercase: bool = False) -> list[str]:
    return _WORD.findall(text.lower() if lowercase else text)

  @classmethod
  def train(cls, sentences: Sequence[str], min_freq: int = 2, lowercase: bool = False,
            max_size: int | None = None) -> "WordTokenizer":
    """Keeps words seen at least ``min_freq`` times (most frequent first, ties alphabetical)."""
    if min_freq < 1:
      raise ValueError(f"min_freq must be >= 1; got {min_freq}")
    counts: dict[str, int] = {}
    for sentence in sentences:
      for word in cls.split(sentence, lowercase):
        counts[word] = counts.get(word, 0) + 1
    words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return cls(words[:max_size] if max_size else words, lowercase)

  @classmethod
  def load(cls, path: str) -> "WordTokenizer":
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    return cls(data["words"][len(SPECIALS):], data["lowercase"])

  def save(self, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
      json.dump({"words": self.words, "lowercase": self.lowercase}, f, ensure_ascii=False)

  @property
  def vocab_size(self) -> int:
    return len(self.words)

  def encode(self, text: str) -> list[int]:
    return [self._ids.get(w, UNK) for w in self.split(text, self.lowercase)]

  def piece(self, token: int) -> str:
    """The text of one token, for plots."""
    return self.words[int(token)]

  def decode(self, ids: Iterable[int]) -> str:
    text = " ".join(self.words[i] for i in _strip_specials(ids))
    return _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", text))


def build_tokenizer(kind: str, sentences: Sequence[str], directory: str, name: str, *,
                    vocab_size: int = 8000, min_freq: int = 2):
  """Loads ``directory/name`` if it was saved before (so resumed runs keep their vocabulary),
  else trains it on ``sentences`` and saves it.

  Args:
    kind: ``"sentencepiece"`` or ``"word"``.
    name: file stem, e.g. ``"spm_de"``.
  """
  os.makedirs(directory, exist_ok=True)
  if kind == "sentencepiece":
    prefix = os.path.join(directory, name)
    if os.path.exists(prefix + ".model"):
      return SentencePieceTokenizer(prefix + ".model")
    return SentencePieceTokenizer.train(sentences, prefix, vocab_size)
  if kind == "word":
    path = os.path.join(directory, name + ".json")
    if os.path.exists(path):
      return WordTokenizer.load(path)
    tokenizer = WordTokenizer.train(sentences, min_freq)
    tokenizer.save(path)
    return tokenizer
  raise ValueError(f"unknown tokenizer {kind!r}; use 'sentencepiece' or 'word'")


@dataclasses.dataclass
class EncodedPairs:
  """Id sequences of the sentence pairs that survived encoding.

  Attributes:
    src: source ids, each ending with ``EOS``.
    tgt: target ids, each ending with ``EOS`` (the decoder input is ``BOS`` + all but the last).
    index: ``[n]`` position of each kept pair in the input, to put outputs back in order.
    total: pairs given, kept or not.
    empty: pairs skipped because one side was empty (or blank).
    truncated: pairs with at least one side cut to ``max_len``.
    references: the raw target texts of all ``total`` pairs, for scoring (set by the caller).
  """
  src: list[np.ndarray]
  tgt: list[np.ndarray]
  index: np.ndarray
  total: int
  empty: int
  truncated: int
  references: list[str] | None = None

  def __len__(self) -> int:
    return len(self.src)


def encode_pairs(pairs: Iterable[tuple[str, str]], src_tokenizer, tgt_tokenizer, max_len: int,
                 name: str = "data") -> EncodedPairs:
  """Encodes ``(source, target)`` text pairs; ``max_len`` counts the final ``EOS``.

  Empty or blank lines are skipped and too-long sentences truncated (keeping their ``EOS``);
  both are counted, in the result and in one warning.
  """
  if max_len < 2:
    raise ValueError(f"max_len must be >= 2 (one token and EOS); got {max_len}")
  src, tgt, index = [], [], []
  total = empty = truncated = 0
  for i, (s, t) in enumerate(pairs):
    total += 1
    if not s.strip() or not t.strip():
      empty += 1
      continue
    s_ids, t_ids = src_tokenizer.encode(s), tgt_tokenizer.encode(t)
    if not s_ids or not t_ids:  # e.g. a line of characters the tokeniser drops
      empty += 1
      continue
    if len(s_ids) >= max_len or len(t_ids) >= max_len:
      truncated += 1
    src.append(np.asarray(s_ids[:max_len - 1] + [EOS], np.int32))
    tgt.append(np.asarray(t_ids[:max_len - 1] + [EOS], np.int32))
    index.append(i)
  if empty or truncated:
    _log.warning("%s: skipped %d empty line(s) and truncated %d sentence pair(s) longer than "
                 "max_len=%d tokens, of %d pairs", name, empty, truncated, max_len, total)
  return EncodedPairs(src, tgt, np.asarray(index, np.int64), total, empty, truncated)


def pad(seqs: Sequence[np.ndarray], length: int, rows: int | None = None,
        prefix: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Stacks ``seqs`` into ``[rows, length]`` (extra rows are empty) and returns their lengths.

  ``prefix`` (e.g. ``BOS``) is put in front of each sequence (and counted in its length).
  """
  rows = len(seqs) if rows is None else rows
  out = np.full((rows, length), PAD, np.int32)
  lengths = np.zeros((rows,), np.int32)
  for r, seq in enumerate(seqs):
    if prefix is not None:
      seq = np.concatenate([[prefix], seq])
    if len(seq) > length:
      raise ValueError(f"sequence of length {len(seq)} does not fit in padded length {length}")
    out[r, :len(seq)] = seq
    lengths[r] = len(seq)
  return out, lengths


def make_batch(data: EncodedPairs, indices: Sequence[int], rows: int, multiple: int = 8,
               length: int | None = None) -> dict:
  """The batch of pairs ``indices`` padded to ``rows`` rows and a multiple of ``multiple`` steps.

  Source and target share one padded length (``length`` if given) so that there are few
  distinct shapes to compile.

  Returns:
    ``src [rows, s]``, ``src_lengths [rows]``, ``tgt_in [rows, s]`` (``BOS`` + target),
    ``tgt_out [rows, s]`` (target + ``EOS``), ``tgt_mask [rows, s]`` float32 and ``index [rows]``
    (position in ``data``, -1 on padding rows).
  """
  if len(indices) > rows:
    raise ValueError(f"{len(indices)} pairs do not fit in a batch of {rows} rows")
  src = [data.src[i] for i in indices]
  tgt = [data.tgt[i] for i in indices]
  longest = max([len(x) for x in src] + [len(x) for x in tgt] + [1])
  length = bucketing.round_up(longest, multiple) if length is None else length
  src_ids, src_lengths = pad(src, length, rows)
  tgt_out, tgt_lengths = pad(tgt, length, rows)
  tgt_in, _ = pad([t[:-1] for t in tgt], length, rows, prefix=BOS)
  index = np.full((rows,), -1, np.int64)
  index[:len(indices)] = indices
  return {"src": src_ids, "src_lengths": src_lengths, "tgt_in": tgt_in, "tgt_out": tgt_out,
          "tgt_mask": np.asarray(layers.mask_from_lengths(tgt_lengths, length), np.float32),
          "index": index}


class BucketedBatches:
  """Deterministic epochs of length-bucketed batches: batch ``step`` is a pure function of step.

  Each epoch sorts the pairs by length (ties broken at random), cuts consecutive runs of
  ``batch_size`` pairs, and shuffles the order of those batches; the epoch's randomness comes
  from ``seed`` and the epoch number, so a resumed run sees exactly the batches it would have.
  """

  def __init__(self, data: EncodedPairs, batch_size: int, seed: int = 0, multiple: int = 8):
    if len(data) < batch_size:
      raise ValueError(f"{len(data)} training pairs are fewer than one batch of {batch_size}")
    self.data, self.batch_size, self.seed, self.multiple = data, batch_size, seed, multiple
    self._lengths = np.array([max(len(s), len(t)) for s, t in zip(data.src, data.tgt)])
    self.batches_per_epoch = len(data) // batch_size  # the remainder joins a later epoch at random
    self._cache: dict[int, list[np.ndarray]] = {}

  def epoch(self, epoch: int) -> list[np.ndarray]:
    if epoch not in self._cache:
      rng = np.random.default_rng((self.seed, epoch))
      order = bucketing.sort_by_length(self._lengths, rng)
      # Drop a random handful so every batch is full and the dropped pairs change every epoch.
      drop = len(order) - self.batches_per_epoch * self.batch_size
      if drop:
        order = np.delete(order, rng.choice(len(order), drop, replace=False))
      batches = order.reshape(self.batches_per_epoch, self.batch_size)
      self._cache = {epoch: list(batches[rng.permutation(len(batches))])}
    return self._cache[epoch]

  def __call__(self, step: int) -> dict:
    epoch, i = divmod(step, self.batches_per_epoch)
    return make_batch(self.data, self.epoch(epoch)[i], self.batch_size, self.multiple)


def eval_batches(data: EncodedPairs, batch_size: int, length: int | None = None,
                 multiple: int = 8):
  """Every pair once, sorted by source length, in batches of ``batch_size`` rows.

  ``length`` fixes the padded length of every batch (one shape to compile); by default each
  batch is padded to a multiple of ``multiple``.
  """
  order = np.argsort([len(s) for s in data.src], kind="stable")
  for start in range(0, len(order), batch_size):
    yield make_batch(data, order[start:start + batch_size], batch_size, multiple, length)
