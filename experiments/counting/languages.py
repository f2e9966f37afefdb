"""Formal languages for counting experiments: a^n b^n, a^n b^n c^n and Dyck-1, made on the fly.

Every language is indexed by a size ``n >= 1`` and gives, for each ``n``, one positive test string
and its off-by-one negatives, plus a training set. Strings are Python ``str`` over the language's
alphabet; :func:`encode` turns a list of them into padded token arrays for a model.

Token ids (shape letters: b batch, t time, v output vocabulary): the alphabet's letters are
``0 .. L-1``; id ``L`` is end-of-sequence (EOS) as an *output* class and beginning-of-sequence
(BOS) as an *input*. A string ``x_1 .. x_T`` becomes inputs ``[BOS, x_1, .., x_T]`` and targets
``[x_1, .., x_T, EOS]``, so position ``t`` of the model's output predicts the symbol after the
prefix ``x_1 .. x_t`` and position ``T`` must predict EOS.

What ``n`` means:

* ``anbn``: ``a^n b^n``. Negatives ``a^n b^(n+1)`` and ``a^(n+1) b^n`` (the ``-1`` variants are the
  ``+1`` variants of ``n - 1``).
* ``anbncn``: ``a^n b^n c^n``. Negatives: each of the three blocks one longer and one shorter.
* ``dyck1``: balanced brackets over ``()``; ``n`` is the *nesting depth*. The test string for ``n``
  is a fixed (seeded) Dyck word of maximum depth exactly ``n`` and length ``3n`` rounded to even:
  the mountain ``(^n )^n`` with ``n/2`` random pairs ``()`` (at depth < n) or ``)(`` (at depth >= 1)
  inserted, so it is not simply ``a^n b^n`` in other letters. Negatives: the word with its last
  ``)`` missing (ends at depth 1), and with one extra ``)`` appended (goes below depth 0).

Next-symbol sets (the set of symbols, EOS included, that may follow a prefix in *some* word of the
language) are what the set-rule model is trained on; :meth:`Language.next_sets` gives them.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

LANGUAGE_NAMES = ("anbn", "anbncn", "dyck1")


@dataclasses.dataclass(frozen=True)
class Language:
  """A counting language: its alphabet and default training sizes.

  Attributes:
    name: one of :data:`LANGUAGE_NAMES`.
    alphabet: the letters, in token-id order.
    train_max: training uses sizes ``n = 1 .. train_max``.
  """

  name: str
  alphabet: str
  train_max: int

  @property
  def eos(self) -> int:
    """Token id of EOS (an output class) and BOS (an input)."""
    return len(self.alphabet)

  @property
  def vocab_size(self) -> int:
    """Letters plus EOS/BOS: both the input and the output vocabulary size ``v``."""
    return len(self.alphabet) + 1

  # --------------------------------------------------------------------------- strings
  def positive(self, n: int) -> str:
    """The positive test string of size ``n``."""
    _check_size(n)
    if self.name == "anbn":
      return "a" * n + "b" * n
    if self.name == "anbncn":
      return "a" * n + "b" * n + "c" * n
    return _dyck_word(n, np.random.default_rng(n), n // 2)

  def negatives(self, n: int) -> list[str]:
    """The off-by-one negatives of size ``n`` (none of them is in the language)."""
    _check_size(n)
    if self.name == "anbn":
      return ["a" * n + "b" * (n + 1), "a" * (n + 1) + "b" * n]
    if self.name == "anbncn":
      out = []
      for block in range(3):
        for delta in (1, -1):
          counts = [n, n, n]
          counts[block] += delta
          out.append("".join(letter * k for letter, k in zip("abc", counts)))
      return out
    word = self.positive(n)
    return [word[:-1], word + ")"]

  def is_member(self, s: str) -> bool:
    """Whether ``s`` is in the language (sizes ``n >= 1``; the empty string is not)."""
    if self.name == "anbn":
      m = re.fullmatch(r"(a+)(b+)", s)
      return bool(m) and len(m.group(1)) == len(m.group(2))
    if self.name == "anbncn":
      m = re.fullmatch(r"(a+)(b+)(c+)", s)
      return bool(m) and len(m.group(1)) == len(m.group(2)) == len(m.group(3))
    if not s or set(s) - set("()"):
      return False
    depth = np.cumsum([1 if ch == "(" else -1 for ch in s])
    return bool(depth.min() >= 0 and depth[-1] == 0)

  def depth(self, s: str) -> int:
    """Size ``n`` of a member ``s``: its block length, or for Dyck-1 its maximum nesting depth."""
    if not self.is_member(s):
      raise ValueError(f"{s[:40]!r} is not in {self.name}")
    if self.name == "dyck1":
      return int(np.cumsum([1 if ch == "(" else -1 for ch in s]).max())
    return len(s) // len(self.alphabet)

  def train_strings(self, train_max: int | None = None, per_size: int = 1, seed: int = 0):
    """Training strings for sizes ``1 .. train_max`` (``per_size`` Dyck words per depth)."""
    train_max = self.train_max if train_max is None else train_max
    _check_size(train_max)
    if self.name != "dyck1":
      return [self.positive(n) for n in range(1, train_max + 1)]
    rng = np.random.default_rng(10_000 + seed)
    return [_dyck_word(n, rng, int(rng.integers(0, n + 1)))
            for n in range(1, train_max + 1) for _ in range(per_size)]

  # --------------------------------------------------------------------------- next-symbol sets
  def next_sets(self, s: str) -> np.ndarray:
    """``[len(s) + 1, v]`` bool: which symbols (EOS last) may follow each prefix of ``s``.

    Row ``t`` is for the prefix ``s[:t]``. A prefix that no word of the language starts with gets
    an empty set; such rows only occur in negatives. Vectorised (strings of thousands of symbols).
    """
    x = _codes(self, s)
    steps = np.arange(len(s) + 1)
    out = np.zeros((len(s) + 1, self.vocab_size), bool)
    if self.name == "dyck1":
      depth = np.concatenate([[0], np.cumsum(1 - 2 * x)])  # "(" is 0, ")" is 1.
      alive = np.minimum.accumulate(depth) >= 0
      out[:, 0] = alive
      out[:, 1] = alive & (depth > 0)
      out[:, self.eos] = alive & (depth == 0) & (steps > 0)
      return out
    letters = len(self.alphabet)
    counts = np.zeros((len(s) + 1, letters), np.int64)
    counts[1:] = np.cumsum(np.eye(letters, dtype=np.int64)[x], axis=0)
    phase = np.concatenate([[0], x])
    # A prefix is alive when its letters come in order a..., never skip a block, start with "a",
    # no later block outgrows the a's, and every finished block matched the a's exactly.
    step_ok = np.ones(len(s) + 1, bool)
    if len(s):
      step_ok[1] = x[0] == 0
      diffs = np.diff(x)
      step_ok[2:] = (diffs == 0) | (diffs == 1)
    alive = np.logical_and.accumulate(step_ok)
    rows = np.arange(len(s) + 1)
    current = counts[rows, phase]
    alive &= (phase == 0) | (current <= counts[:, 0])
    for block in range(1, letters - 1):
      alive &= (phase <= block) | (counts[:, block] == counts[:, 0])
    reading_a = alive & (phase == 0)
    out[:, 0] = reading_a
    out[:, 1] = reading_a & (counts[:, 0] > 0)
    inside = alive & (phase > 0) & (current < counts[:, 0])
    out[rows[inside], phase[inside]] = True
    done = alive & (phase > 0) & (current == counts[:, 0])
    last = phase == letters - 1
    out[rows[done & ~last], phase[done & ~last] + 1] = True
    out[done & last, self.eos] = True
    return out

  def next_distribution(self, s: str, stop_prob: float) -> np.ndarray:
    """``[len(s) + 1, v]`` float: a next-symbol distribution of a constant-hazard process.

    Where only one symbol may follow, it gets probability 1. Where the string may stop its current
    run (after ``a^k``: ``b``; in Dyck-1 at depth 0: EOS) that choice gets ``stop_prob`` and the
    other ``1 - stop_prob``; inside Dyck-1 (depth > 0) ``(`` and ``)`` get 1/2 each. This is the
    distribution of a generator that stops with the same probability at every size, so it does
    not depend on where a finite training set ends (see ``evaluation.py``).
    """
    if not 0.0 < stop_prob < 1.0:
      raise ValueError(f"stop_prob must be in (0, 1); got {stop_prob}")
    sets = self.next_sets(s).astype(np.float64)
    many = sets.sum(-1) > 1
    if self.name == "dyck1":
      open_id, close_id = 0, 1
      at_zero = many & sets[:, self.eos].astype(bool)
      sets[at_zero, open_id] = 1.0 - stop_prob
      sets[at_zero, self.eos] = stop_prob
      inside = many & ~sets[:, self.eos].astype(bool)
      sets[inside, open_id] = sets[inside, close_id] = 0.5
      return sets
    sets[many, 0] = 1.0 - stop_prob  # continue the a-run
    sets[many, 1] = stop_prob  # stop it
    return sets


def _check_size(n) -> None:
  if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
    raise ValueError(f"size n must be an integer >= 1; got {n!r}")


def _dyck_word(n: int, rng: np.random.Generator, inserts: int) -> str:
  """A Dyck-1 word of maximum depth exactly ``n``: ``(^n )^n`` plus ``inserts`` random pairs.

  Each pair goes into a gap of the mountain: ``()`` into a gap at depth < n (the maximum stays n),
  ``)(`` into a gap at depth >= 1 (it never goes below 0). Pairs that share a gap keep the depth
  within one of the gap's, so any number of them may.
  """
  gap_depth = np.minimum(np.arange(2 * n + 1), 2 * n - np.arange(2 * n + 1))
  peaks = rng.random(inserts) < 0.5
  # "()" fits every gap but the summit; ")(" every gap but the two ends.
  peak_gaps = np.flatnonzero(gap_depth < n)
  valley_gaps = np.flatnonzero(gap_depth >= 1)
  where = np.where(peaks, rng.choice(peak_gaps, inserts), rng.choice(valley_gaps, inserts))
  pieces = [[] for _ in range(2 * n + 1)]
  for gap, peak in zip(where.tolist(), peaks.tolist()):
    pieces[gap].append("()" if peak else ")(")
  mountain = "(" * n + ")" * n
  return "".join("".join(pieces[i]) + (mountain[i] if i < 2 * n else "")
                 for i in range(2 * n + 1))


def _codes(language: Language, s: str) -> np.ndarray:
  """``s`` as ``[len(s)] int32`` letter ids; a clear error for symbols outside the alphabet."""
  table = np.full(256, -1, np.int32)
  for i, ch in enumerate(language.alphabet):
    table[ord(ch)] = i
  raw = np.frombuffer(s.encode("latin-1", errors="replace"), np.uint8)
  codes = table[raw]
  if (codes < 0).any():
    bad = sorted(set(s) - set(language.alphabet))
    raise ValueError(f"string {s[:40]!r} has symbols {bad} outside the alphabet "
                     f"{language.alphabet!r} of {language.name}")
  return codes


def get_language(name: str) -> Language:
  """The language called ``name`` (one of :data:`LANGUAGE_NAMES`) with its paper training range."""
  if name == "anbn":
    return Language("anbn", "ab", 100)
  if name == "anbncn":
    return Language("anbncn", "abc", 50)
  if name == "dyck1":
    return Language("dyck1", "()", 50)
  raise ValueError(f"unknown language {name!r}; known: {', '.join(LANGUAGE_NAMES)}")


def encode(language: Language, strings: list[str], length: int | None = None):
  """Pads ``strings`` into model arrays.

  Args:
    language: the strings' language (for the alphabet and EOS id).
    strings: ``b`` strings over the alphabet.
    length: padded length ``t``; default the longest string plus one.

  Returns:
    ``(inputs, targets, lengths)``: ``inputs, targets: [b, t] int32`` (BOS + string, string + EOS,
    zero-padded) and ``lengths: [b] int32`` = ``len(string) + 1``.
  """
  if not strings:
    raise ValueError("encode needs at least one string")
  lengths = np.array([len(s) + 1 for s in strings], np.int32)
  t = int(lengths.max()) if length is None else length
  if t < lengths.max():
    raise ValueError(f"length {t} is shorter than the longest string + 1 ({lengths.max()})")
  inputs = np.zeros((len(strings), t), np.int32)
  targets = np.zeros((len(strings), t), np.int32)
  for row, s in enumerate(strings):
    codes = _codes(language, s)
    inputs[row, 0] = language.eos
    inputs[row, 1:len(s) + 1] = codes
    targets[row, :len(s)] = codes
    targets[row, len(s)] = language.eos
  return inputs, targets, lengths


def encode_sets(language: Language, strings: list[str], length: int | None = None) -> np.ndarray:
  """``[b, t, v]`` float32 next-symbol-set targets for ``strings`` (zeros past each length)."""
  t = max(len(s) + 1 for s in strings) if length is None else length
  out = np.zeros((len(strings), t, language.vocab_size), np.float32)
  for row, s in enumerate(strings):
    out[row, :len(s) + 1] = language.next_sets(s)
  return out
