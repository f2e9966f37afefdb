"""Epochs of example indices, batched by length or at random, for any list of sequences.

:class:`LengthBuckets` needs only each example's length: it decides which examples go together;
the caller pads them (``seqjax.data.text.pad``). Every epoch holds every example exactly once:
``batches_per_epoch = ceil(n / batch_size)`` batches of ``batch_size`` slots, the last one
completed with ``-1`` (empty rows that a loss must weigh 0), so nothing is dropped and nothing
repeats. An epoch is a pure function of ``(seed, epoch)``, so a resumed run sees the batches the
uninterrupted one saw.

* ``bucketed=True``: sort by length (ties broken at random), cut consecutive runs, shuffle the
  order of the batches: each batch pads to nearly its own length.
* ``bucketed=False``: a random permutation cut into batches: plain padding to each batch's
  longest example.

:func:`padding_cost` counts what a padded epoch costs: real tokens against padded slots.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def round_up(n: int, multiple: int) -> int:
  """``n`` rounded up to a multiple of ``multiple`` (padded lengths come in few shapes)."""
  return -(-int(n) // multiple) * multiple


def sort_by_length(lengths, rng: np.random.Generator) -> np.ndarray:
  """Indices of ``lengths`` shortest first, equal lengths in random order (``n`` uniform draws
  from ``rng``): the order every length-bucketed batcher cuts its batches from."""
  lengths = np.asarray(lengths)
  return np.argsort(lengths + rng.uniform(0.0, 0.5, len(lengths)), kind="stable")


class LengthBuckets:
  """Deterministic epochs of index batches; ``buckets(step)`` is the ``[batch_size]`` indices of
  training step ``step`` (``-1`` marks an empty row)."""

  def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0,
               bucketed: bool = True):
    self.lengths = np.asarray(lengths, np.int64)
    if self.lengths.ndim != 1 or not len(self.lengths):
      raise ValueError(f"lengths must be a non-empty [n] list; got shape {self.lengths.shape}")
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    self.batch_size, self.seed, self.bucketed = batch_size, seed, bucketed
    self.batches_per_epoch = -(-len(self.lengths) // batch_size)
    self._cache: dict[int, np.ndarray] = {}

  def epoch(self, epoch: int) -> np.ndarray:
    """``[batches_per_epoch, batch_size]`` indices of epoch ``epoch``, in training order."""
    if epoch not in self._cache:
      rng = np.random.default_rng((self.seed, epoch))
      n = len(self.lengths)
      if self.bucketed:
        order = sort_by_length(self.lengths, rng)
      else:
        order = rng.permutation(n)
      slots = self.batches_per_epoch * self.batch_size
      # The empty slots go after the longest examples (or the last random ones): one partial batch.
      order = np.concatenate([order, np.full(slots - n, -1, np.int64)])
      batches = order.reshape(self.batches_per_epoch, self.batch_size)
      self._cache = {epoch: batches[rng.permutation(self.batches_per_epoch)]}
    return self._cache[epoch]

  def __call__(self, step: int) -> np.ndarray:
    epoch, i = divmod(int(step), self.batches_per_epoch)
    return self.epoch(epoch)[i]


def padding_cost(buckets: LengthBuckets, epoch: int = 0, multiple: int = 1) -> dict:
  """Tokens against padded slots over one epoch, each batch padded to ``multiple`` steps.

  Returns:
    ``{"tokens": real tokens, "slots": batch rows x padded length summed over batches (empty
    rows count as slots), "padding": slots - tokens, "padding_fraction": padding / slots,
    "shapes": distinct padded lengths}``.
  """
  tokens = slots = 0
  shapes = set()
  for batch in buckets.epoch(epoch):
    lengths = buckets.lengths[batch[batch >= 0]]
    padded = round_up(max(int(lengths.max()), 1), multiple)
    shapes.add(padded)
    tokens += int(lengths.sum())
    slots += padded * len(batch)
  return {"tokens": tokens, "slots": slots, "padding": slots - tokens,
          "padding_fraction": (slots - tokens) / slots, "shapes": len(shapes)}
