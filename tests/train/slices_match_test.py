"""The runtime's train step on 2, 4 and 8 slices of each global batch trains as on one slice.

The task (token_task.py) is where device counts go wrong: ragged strings, so the slices hold
different numbers of tokens, a loss averaged over the tokens of the whole batch, dropout (one
mask per string from ``train.example_keys``) and Adam. The step, its state and the split of the
batch are the runtime's own, run under ``jax.vmap(..., axis_name=AXIS)`` in this process
(sliced_training.py), which binds the collectives a pmap over N devices binds. Loss, every
metric and every parameter must agree within 1e-5 at each of 5 steps; measured, the largest gap
is about 1e-7, so Adam does not amplify the summation-order rounding toward the bound.

The legacy per-device averaging (``loss_reduction="device_mean"``) is shown to misweigh tokens
on the same batches while still serving a per-string mean over equal slices.

The real pmap over 8 devices and over 2 processes, which need their own interpreters, are in
devices_match_test.py (one run each).
"""

from __future__ import annotations

import numpy as np
import pytest

import sliced_training
import token_task

RTOL = 1e-5
STEPS = 5
SLICES = (2, 4, 8)


@pytest.fixture(scope="module")
def global_runs():
  """The token task with the global reduction on 1, 2, 4 and 8 slices: {slices: history}."""
  config = token_task.get_config()
  experiment = token_task.make_experiment(config)
  return sliced_training.train_on_slices(experiment, config, (1,) + SLICES, STEPS)


@pytest.fixture(scope="module")
def legacy_runs():
  """The legacy reduction, dropout off, a per-string training loss, on 1 and 8 slices."""
  config = token_task.get_config()
  config.update({"loss_reduction": "device_mean", "dropout_rate": 0.0, "loss": "string"})
  experiment = token_task.make_experiment(config)
  return sliced_training.train_on_slices(experiment, config, (1, 8), STEPS)


@pytest.mark.parametrize("slices", SLICES)
def test_slices_of_a_ragged_batch_train_as_one(global_runs, slices):
  # Given each step's global batch of 16 ragged strings cut into `slices` slices that hold
  # different numbers of tokens (on 8 slices the fullest holds twice the emptiest or more),
  config = token_task.get_config()
  mask = token_task.get_batch_of_step(config, 0)["mask"]
  per_slice = mask.reshape(slices, -1).sum(axis=1)
  assert per_slice.max() > per_slice.min(), per_slice
  if slices == 8:
    assert per_slice.max() >= 2 * per_slice.min(), per_slice
  # When the runtime's step trains 5 Adam steps with dropout on them,
  got, want = global_runs[slices], global_runs[1]
  # Then every slice's loss, metrics and parameters equal the one slice's at every step:
  # token shares added over slices give the batch's token mean, and the dropout masks follow
  # the strings, not the slices.
  largest = sliced_training.largest_gap(got, want, RTOL)
  print(f"{slices} slices: largest relative gap {largest:.2g}")
  # "tokens" is the global count, not the slice's.
  np.testing.assert_array_equal(got[0]["metrics"]["train/tokens"], mask.sum())


def test_the_compared_runs_train_with_dropout(global_runs, legacy_runs):
  # The comparison is of trained parameters, not of two untrained copies,
  history = global_runs[1]
  start, end = history[0]["params"], history[-1]["params"]
  assert min(float(np.max(np.abs(end[k] - start[k]))) for k in start) > 1e-3
  # and dropout is on: the legacy runs start from the same parameters without dropout, and on
  # one slice their first token loss is the same function of them, yet differs.
  loss = history[0]["metrics"]["train/token_loss"][0]
  loss_without = legacy_runs[1][0]["metrics"]["train/token_loss"][0]
  assert abs(loss - loss_without) > 1e-3 * abs(loss_without), (loss, loss_without)


def test_legacy_per_device_mean_misweighs_tokens(legacy_runs):
  # Given the same parameters and batch on 1 and 8 slices (step 1, before any update),
  one, eight = (legacy_runs[n][0]["metrics"] for n in (1, 8))
  gap = {k: float(np.max(np.abs(eight[k] - one[k][0]) / np.abs(one[k][0]))) for k in one}
  # the mean of the slices' token means is not the batch's token mean: the multi-device bug
  # the "global" reduction fixes, by far more than rounding,
  assert gap["train/token_loss"] > 1e-4 and gap["train/accuracy"] > 1e-4, gap
  # while the per-string mean, 2 strings on every slice, agrees: only the token weighting differs.
  assert gap["train/string_loss"] < RTOL, gap


def test_legacy_reduction_still_serves_a_per_string_mean(legacy_runs):
  # A mean per string and then over strings, with 2 strings on each slice: the mean of the slice
  # means is the batch's mean, so the legacy reduction trains the same on 1 and 8 slices
  # (its token-level metrics do not agree, as above; they are left out).
  kept = ("train/loss", "train/string_loss", "train/grad_norm")

  def per_string(history):
    return [{"metrics": {k: r["metrics"][k] for k in kept}, "params": r["params"]}
            for r in history]
  sliced_training.largest_gap(per_string(legacy_runs[8]), per_string(legacy_runs[1]), RTOL)
