"""An experiment's own train step on N slices of every global batch, in this one process.

The runtime pmaps ``train_step`` over the devices with axis name ``AXIS``; ``jax.vmap`` with the
same axis name binds the same collectives (``psum``, ``pmean``, ``axis_index``), so N slices of
one batch on one CPU device compute what N devices compute, without a new interpreter. The state,
the step (optimizer, schedule, step key, loss reduction) and the split of the batch are the
runtime's own (``loop.make_training``, ``loop._split_batch``): a device-count bug in any of them
shows here. Imported by ``tests/train/`` and ``tests/experiments/``.
"""

from __future__ import annotations

import jax
import numpy as np

from seqjax.train import loop


def train_on_slices(experiment, config, counts: tuple[int, ...], steps: int) -> dict:
  """Trains ``steps`` steps on ``n`` slices of each global batch, for each ``n`` in ``counts``.

  Returns:
    ``{n: history}``; ``history`` holds one record per step, host arrays with the slice axis
    first: ``{"metrics": {name: [n]}, "params": params with leaves [n, ...]}``.
  """
  initial, train_step = loop.make_training(experiment, config)  # One init for every count.
  step = jax.jit(jax.vmap(train_step, axis_name=loop.AXIS))
  runs = {}
  for n in counts:
    state = loop._replicate(initial, n)  # pylint: disable=protected-access
    runs[n] = []
    for i in range(steps):
      batch = loop._split_batch(  # pylint: disable=protected-access
          experiment.get_batch(i, 0, 1), n, config.batch_size)
      state, metrics = step(state, batch)
      runs[n].append(jax.device_get({"metrics": metrics, "params": state.params}))
  return runs


def largest_gap(got: list[dict], want: list[dict], rtol: float) -> float:
  """Asserts every slice of ``got`` equals the one slice of ``want`` within ``rtol``.

  Metrics and parameters at every step, each element within ``rtol * (1 + |want|)`` (relative,
  and absolute near zero). Returns the largest ``|got - want| / (1 + |want|)`` seen.
  """
  assert len(got) == len(want)
  largest = 0.0
  for step, (g, w) in enumerate(zip(got, want), start=1):
    assert sorted(g["metrics"]) == sorted(w["metrics"])
    flat_g = jax.tree_util.tree_leaves_with_path(g)
    flat_w = jax.tree_util.tree_leaves_with_path(w)
    assert [p for p, _ in flat_g] == [p for p, _ in flat_w]
    for (path, a), (_, b) in zip(flat_g, flat_w):
      want_b = np.asarray(b, np.float64)[0]
      gap = np.abs(np.asarray(a, np.float64) - want_b) / (1.0 + np.abs(want_b))
      worst = float(np.max(gap))
      where = int(np.argmax(gap)) // max(1, gap[0].size)  # The slice holding the worst gap.
      assert worst <= rtol, (f"{jax.tree_util.keystr(path)} at step {step}: relative gap "
                             f"{worst:.3g} > {rtol:g} on slice {where} of {gap.shape[0]}")
      largest = max(largest, worst)
  return largest
