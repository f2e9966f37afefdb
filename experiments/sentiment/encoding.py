"""Texts to padded id batches: tokenisers, encoding with skipped-and-counted empties, batches,
and pretrained word vectors read from a word2vec / GloVe text file.

Tokenisers: ``word`` (the training vocabulary, words seen ``min_freq`` times; the rest is
``UNK``), split on whitespace (``word_split='whitespace'``: SST-2 is already PTB-tokenised) or
into words and punctuation marks (``'punct'``: tweets), lower-cased; or ``sentencepiece``
(subwords trained on the training texts, ``seqjax.data.text.SentencePieceTokenizer``).
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
from typing import Sequence

import numpy as np

from seqjax.data import bucketing
from seqjax.data import text as text_lib

_log = logging.getLogger(__name__)
WORD_SPLITS = ("whitespace", "punct")


class WhitespaceTokenizer(text_lib.WordTokenizer):
  """A :class:`~seqjax.data.text.WordTokenizer` that splits on whitespace only, for text that is
  tokenised already (SST-2 writes ``it 's`` and ``does n't``; the punctuation split would cut
  ``n't`` into three tokens)."""

  @staticmethod
  def split(text: str, lowercase: bool = False) -> list[str]:
    return (text.lower() if lowercase else text).split()


def make_tokenizer(kind: str, texts: Sequence[str], directory: str, *, word_split: str = "punct",
                   min_freq: int = 1, vocab_size: int = 8000):
  """The tokeniser of ``kind`` (``'word'`` or ``'sentencepiece'``) trained on ``texts``.

  The vocabulary is saved in ``directory`` (``vocab.json`` or ``spm.model``); a saved
  sentencepiece model is reused, so a resumed run keeps its ids.
  """
  if kind == "sentencepiece":
    return text_lib.build_tokenizer("sentencepiece", texts, directory, "spm",
                                    vocab_size=vocab_size)
  if kind != "word":
    raise ValueError(f"config.tokenizer must be 'word' or 'sentencepiece'; got {kind!r}")
  if word_split not in WORD_SPLITS:
    raise ValueError(f"config.word_split must be one of {WORD_SPLITS}; got {word_split!r}")
  cls = WhitespaceTokenizer if word_split == "whitespace" else text_lib.WordTokenizer
  # Training a word vocabulary is deterministic and takes a second: no cache needed.
  tokenizer = cls.train(texts, min_freq=min_freq, lowercase=True)
  os.makedirs(directory, exist_ok=True)
  tokenizer.save(os.path.join(directory, "vocab.json"))
  return tokenizer


@dataclasses.dataclass
class EncodedTexts:
  """Id sequences of the texts that survived encoding.

  Attributes:
    ids: one ``[length]`` int32 array per kept text.
    labels: ``[n]`` class ids of the kept texts.
    index: ``[n]`` position of each kept text in the input.
    texts: the kept texts, as given.
    total: texts given; ``empty``: skipped as empty or blank (or with no tokens);
    ``truncated``: cut to ``max_len`` tokens.
  """
  ids: list[np.ndarray]
  labels: np.ndarray
  index: np.ndarray
  texts: list[str]
  total: int
  empty: int
  truncated: int

  def __len__(self) -> int:
    return len(self.ids)

  @property
  def lengths(self) -> np.ndarray:
    return np.array([len(x) for x in self.ids], np.int64)


def encode_texts(texts: Sequence[str], labels: Sequence[int], tokenizer, max_len: int,
                 name: str = "data") -> EncodedTexts:
  """Tokenises ``texts``; empty ones are skipped, long ones cut to ``max_len``; both counted
  (in the result and in one warning naming ``name``)."""
  if max_len < 1:
    raise ValueError(f"max_len must be >= 1; got {max_len}")
  if len(texts) != len(labels):
    raise ValueError(f"{name}: {len(texts)} texts but {len(labels)} labels")
  ids, kept_labels, index, kept = [], [], [], []
  empty = truncated = 0
  for i, (text, label) in enumerate(zip(texts, labels)):
    tokens = tokenizer.encode(text) if text.strip() else []
    if not tokens:
      empty += 1
      continue
    if len(tokens) > max_len:
      truncated += 1
      tokens = tokens[:max_len]
    ids.append(np.asarray(tokens, np.int32))
    kept_labels.append(int(label))
    index.append(i)
    kept.append(text)
  if empty or truncated:
    _log.warning("%s: skipped %d empty text(s) and truncated %d longer than max_len=%d tokens, "
                 "of %d", name, empty, truncated, max_len, len(texts))
  return EncodedTexts(ids, np.asarray(kept_labels, np.int64), np.asarray(index, np.int64), kept,
                      len(texts), empty, truncated)


def make_batch(data: EncodedTexts, indices: np.ndarray, multiple: int = 8,
               length: int | None = None) -> dict:
  """Rows ``indices`` (``-1``: an empty row) padded to a multiple of ``multiple`` steps.

  Returns:
    ``tokens [r, t]`` int32, ``lengths [r]`` int32 (empty rows get length 1 and weight 0, so
    every pooling stays finite), ``labels [r]`` int32, ``weights [r]`` float32, ``index [r]``.
  """
  indices = np.asarray(indices, np.int64)
  real = indices >= 0
  seqs = [data.ids[i] if ok else np.array([text_lib.PAD], np.int32)
          for i, ok in zip(indices, real)]
  longest = max(len(s) for s in seqs)
  length = bucketing.round_up(longest, multiple) if length is None else length
  tokens, lengths = text_lib.pad(seqs, length)
  labels = np.where(real, data.labels[np.maximum(indices, 0)], 0).astype(np.int32)
  return {"tokens": tokens, "lengths": lengths, "labels": labels,
          "weights": real.astype(np.float32), "index": indices}


def eval_batches(data: EncodedTexts, batch_size: int, multiple: int = 8):
  """Every text once, sorted by length, in batches of ``batch_size`` rows (few padded shapes)."""
  order = np.argsort(data.lengths, kind="stable")
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    yield make_batch(data, np.concatenate([rows, np.full(batch_size - len(rows), -1)]), multiple)


def load_vectors(path: str, words: Sequence[str], dim: int, seed: int = 0,
                 stddev: float = 0.1) -> tuple[np.ndarray, int]:
  """``([v, dim] table, words found)``: rows of a word2vec / GloVe text file for ``words``.

  The file has one ``word x_1 ... x_dim`` line per word (an optional word2vec header line
  ``count dim`` is skipped); words it lacks keep N(0, stddev^2) rows and the padding row is 0.
  A line with the wrong number of values is an error naming the file and line.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.pretrained_vectors {path!r} does not exist")
  table = np.random.default_rng(seed).normal(0.0, stddev, (len(words), dim)).astype(np.float32)
  table[text_lib.PAD] = 0.0
  row = {w: i for i, w in enumerate(words)}
  lower = {}
  for w, i in row.items():
    lower.setdefault(w.lower(), i)
  found = set()
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8", errors="replace") as f:
    for number, line in enumerate(f, start=1):
      parts = line.rstrip("\n").rstrip(" ").split(" ")
      if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
        continue  # word2vec header
      if len(parts) != dim + 1:
        raise ValueError(f"{path}:{number}: expected a word and {dim} values (config.embed_dim), "
                         f"got {len(parts) - 1} values")
      i = row.get(parts[0], lower.get(parts[0].lower()))
      if i is not None and i not in found:
        try:
          table[i] = np.asarray(parts[1:], np.float32)
        except ValueError:
          raise ValueError(f"{path}:{number}: a value of {parts[0]!r} is not a number") from None
        found.add(i)
  return table, len(found)
