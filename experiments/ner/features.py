"""Sentences to arrays: word, casing and character ids, tags; length-bucketed batches.

Shapes: ``b`` sentences, ``t`` tokens (padded to a bucket), ``c`` characters per word
(:data:`MAX_CHARS`, longer words keep their first ``c``).

Words are looked up lower-cased with every digit replaced by ``0`` (so "1996-08-22" and
"1997-01-05" share one embedding); what lower-casing throws away comes back through a casing
category per token and through the characters, which keep their case. Only training words get
an embedding; everything else is ``UNK``. ``singleton`` marks training words seen once, which
the trainer replaces by ``UNK`` at random so that ``UNK`` learns what a rare word looks like.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from typing import Sequence

import numpy as np

from experiments.ner import conll
from seqjax.data import bucketing

PAD, UNK = 0, 1
MAX_CHARS = 20
# Padded sentence lengths: one compiled program per bucket; CoNLL sentences reach 124 tokens.
BUCKETS = (8, 16, 24, 32, 40, 48, 64, 80, 128)
CASINGS = ("pad", "numeric", "mostly_numeric", "lower", "upper", "initial_upper", "has_digit",
           "other")
_DIGIT = re.compile(r"\d")


def normalise(word: str) -> str:
  """The word-embedding key: lower case, every digit 0."""
  return _DIGIT.sub("0", word.lower())


def casing(word: str) -> int:
  """The index in :data:`CASINGS` of ``word``'s casing category."""
  digits = sum(ch.isdigit() for ch in word)
  if word.isdigit():
    return 1
  if digits / max(len(word), 1) > 0.5:
    return 2
  if word.islower():
    return 3
  if word.isupper():
    return 4
  if word[0].isupper():
    return 5
  if digits:
    return 6
  return 7


@dataclasses.dataclass
class Vocab:
  """Word ids (normalised training words), character ids (training characters), tag ids."""
  words: dict[str, int]
  chars: dict[str, int]
  singletons: frozenset

  @classmethod
  def build(cls, sentences: Sequence[tuple[list[str], list[str]]]) -> "Vocab":
    counts = collections.Counter(normalise(w) for tokens, _ in sentences for w in tokens)
    chars = collections.Counter(ch for tokens, _ in sentences for w in tokens for ch in w)
    # Most frequent first; ties alphabetical so the ids do not depend on hash order.
    words = sorted(counts, key=lambda w: (-counts[w], w))
    return cls(words={w: i + 2 for i, w in enumerate(words)},
               chars={ch: i + 2 for i, ch in enumerate(sorted(chars, key=lambda c: (-chars[c], c)))},
               singletons=frozenset(w for w, n in counts.items() if n == 1))

  @property
  def num_words(self) -> int:
    return len(self.words) + 2

  @property
  def num_chars(self) -> int:
    return len(self.chars) + 2


@dataclasses.dataclass
class Encoded:
  """One split as ragged arrays, one entry per sentence."""
  words: list[np.ndarray]      # [n] int32 word ids
  casings: list[np.ndarray]    # [n] int32 casing ids
  chars: list[np.ndarray]      # [n, MAX_CHARS] int32 character ids, 0-padded
  singleton: list[np.ndarray]  # [n] bool: a word seen once in training
  tags: list[np.ndarray]       # [n] int32 tag ids (conll.TAGS)
  tokens: list[list[str]]      # the original tokens, for the prediction files

  def __len__(self) -> int:
    return len(self.words)

  @property
  def lengths(self) -> np.ndarray:
    return np.array([len(w) for w in self.words])


def encode(sentences: Sequence[tuple[list[str], list[str]]], vocab: Vocab) -> Encoded:
  """Looks every token up in ``vocab``; tags by their index in ``conll.TAGS``."""
  tag_ids = {t: i for i, t in enumerate(conll.TAGS)}
  out = Encoded([], [], [], [], [], [])
  for tokens, tags in sentences:
    keys = [normalise(w) for w in tokens]
    out.words.append(np.array([vocab.words.get(k, UNK) for k in keys], np.int32))
    out.casings.append(np.array([casing(w) for w in tokens], np.int32))
    chars = np.zeros((len(tokens), MAX_CHARS), np.int32)
    for i, w in enumerate(tokens):
      ids = [vocab.chars.get(ch, UNK) for ch in w[:MAX_CHARS]]
      chars[i, :len(ids)] = ids
    out.chars.append(chars)
    out.singleton.append(np.array([k in vocab.singletons for k in keys], bool))
    out.tags.append(np.array([tag_ids[t] for t in tags], np.int32))
    out.tokens.append(list(tokens))
  return out


def bucket_length(n: int, buckets: Sequence[int] = BUCKETS) -> int:
  """The padded length of a sentence of ``n`` tokens (a bucket, or a multiple of 32 beyond)."""
  for b in buckets:
    if n <= b:
      return b
  return bucketing.round_up(n, 32)


def make_batch(data: Encoded, indices: Sequence[int], rows: int,
               buckets: Sequence[int] = BUCKETS) -> dict:
  """Sentences ``indices`` padded into ``rows`` rows (extra rows have length 0).

  Returns ``{"words", "casings", "tags": [b, t] int32, "singleton": [b, t] bool,
  "chars": [b, t, c] int32, "lengths": [b] int32, "index": [b] int32 (-1 on extra rows)}``.
  """
  time = bucket_length(max([len(data.words[i]) for i in indices] + [1]), buckets)
  batch = {"words": np.zeros((rows, time), np.int32), "casings": np.zeros((rows, time), np.int32),
           "tags": np.zeros((rows, time), np.int32), "singleton": np.zeros((rows, time), bool),
           "chars": np.zeros((rows, time, MAX_CHARS), np.int32),
           "lengths": np.zeros((rows,), np.int32), "index": np.full((rows,), -1, np.int32)}
  for row, i in enumerate(indices):
    n = len(data.words[i])
    batch["words"][row, :n] = data.words[i]
    batch["casings"][row, :n] = data.casings[i]
    batch["tags"][row, :n] = data.tags[i]
    batch["singleton"][row, :n] = data.singleton[i]
    batch["chars"][row, :n] = data.chars[i]
    batch["lengths"][row] = n
    batch["index"][row] = i
  return batch


class BucketedBatches:
  """Epochs of length-sorted batches; batch ``step`` is a pure function of ``(seed, step)``.

  Each epoch sorts the sentences by length with random tie-breaking, cuts runs of
  ``batch_size``, and shuffles the order of the batches, so a batch pads little and a resumed
  run sees the batches it would have seen. The sentences left over by the last full batch change
  from epoch to epoch.
  """

  def __init__(self, data: Encoded, batch_size: int, seed: int,
               buckets: Sequence[int] = BUCKETS):
    if len(data) < batch_size:
      raise ValueError(f"{len(data)} training sentences are fewer than one batch of {batch_size}")
    self.data, self.batch_size, self.seed, self.buckets = data, batch_size, seed, buckets
    self.batches_per_epoch = len(data) // batch_size
    self._cache: dict[int, np.ndarray] = {}

  def epoch(self, epoch: int) -> np.ndarray:
    """``[batches_per_epoch, batch_size]`` sentence indices of one epoch."""
    if epoch not in self._cache:
      rng = np.random.default_rng((self.seed, epoch))
      order = bucketing.sort_by_length(self.data.lengths, rng)
      keep = np.sort(rng.permutation(len(order))[:self.batches_per_epoch * self.batch_size])
      batches = order[keep].reshape(self.batches_per_epoch, self.batch_size)
      self._cache = {epoch: batches[rng.permutation(len(batches))]}
    return self._cache[epoch]

  def __call__(self, step: int) -> dict:
    epoch, i = divmod(step, self.batches_per_epoch)
    return make_batch(self.data, self.epoch(epoch)[i], self.batch_size, self.buckets)


def eval_batches(data: Encoded, batch_size: int, buckets: Sequence[int] = BUCKETS):
  """Every sentence once, sorted by length, in batches of ``batch_size`` rows."""
  order = np.argsort(data.lengths, kind="stable")
  for start in range(0, len(order), batch_size):
    yield make_batch(data, order[start:start + batch_size], batch_size, buckets)
