"""seqjax.data.bucketing: every epoch holds every example exactly once, in both batchings; the
padding count against a brute-force sum; determinism by (seed, epoch)."""

import numpy as np
import pytest

from seqjax.data import bucketing


def _lengths(n=203, seed=0):
  return np.random.default_rng(seed).integers(1, 40, n)


@pytest.mark.parametrize("bucketed", [True, False])
def test_every_epoch_has_every_example_once(bucketed):
  lengths = _lengths()
  buckets = bucketing.LengthBuckets(lengths, 16, seed=3, bucketed=bucketed)
  assert buckets.batches_per_epoch == 13  # ceil(203 / 16)
  for epoch in range(3):
    steps = [buckets(epoch * 13 + i) for i in range(13)]
    flat = np.concatenate(steps)
    real = flat[flat >= 0]
    assert len(real) == 203 and len(np.unique(real)) == 203  # nothing lost, nothing repeated
    assert np.sum(flat < 0) == 13 * 16 - 203  # the empty rows of the one partial batch
    assert sum(np.any(s < 0) for s in steps) == 1


def test_bucketed_batches_are_near_uniform_and_pad_less():
  lengths = _lengths(2000)
  bucketed = bucketing.LengthBuckets(lengths, 32, seed=0, bucketed=True)
  plain = bucketing.LengthBuckets(lengths, 32, seed=0, bucketed=False)
  spread = [np.ptp(lengths[b[b >= 0]]) for b in bucketed.epoch(0)]
  assert max(spread) <= 1  # sorted runs of 32 out of 39 lengths in 2000 texts
  assert (bucketing.padding_cost(bucketed)["padding"]
          < 0.1 * bucketing.padding_cost(plain)["padding"])


def test_padding_cost_matches_brute_force():
  lengths = _lengths(101, seed=4)
  buckets = bucketing.LengthBuckets(lengths, 8, seed=1, bucketed=False)
  cost = bucketing.padding_cost(buckets, epoch=2, multiple=8)
  tokens = slots = 0
  for batch in buckets.epoch(2):
    longest = max(lengths[i] for i in batch if i >= 0)
    padded = longest if longest % 8 == 0 else longest + 8 - longest % 8
    slots += padded * len(batch)
    tokens += sum(lengths[i] for i in batch if i >= 0)
  assert (cost["tokens"], cost["slots"], cost["padding"]) == (tokens, slots, slots - tokens)
  assert tokens == lengths.sum()


def test_epochs_are_a_function_of_seed_and_epoch():
  lengths = _lengths()
  a = bucketing.LengthBuckets(lengths, 16, seed=5)
  b = bucketing.LengthBuckets(lengths, 16, seed=5)
  b.epoch(4)  # another epoch first: no hidden state carries over
  np.testing.assert_array_equal(a.epoch(1), b.epoch(1))
  assert not np.array_equal(a.epoch(1), a.epoch(2))
  with pytest.raises(ValueError, match="batch_size must be >= 1"):
    bucketing.LengthBuckets(lengths, 0)
