"""experiments/adding: the generator (markers, targets, baseline), the config variants and the
table's steps-to-solve rule."""

import json

import numpy as np
import pytest

from experiments.adding import config as adding_config
from experiments.adding import experiment
from experiments.adding import table


def test_one_marker_per_half_and_the_target_is_the_sum_of_the_marked_values():
  xs, ys = experiment.make_examples(np.random.default_rng(0), 500, 11)
  assert xs.shape == (500, 11, 2) and ys.shape == (500,)
  values, markers = xs[..., 0], xs[..., 1]
  assert set(np.unique(markers)) == {0.0, 1.0}
  assert (markers[:, :5].sum(1) == 1).all() and (markers[:, 5:].sum(1) == 1).all()
  for x, m, y in zip(values, markers, ys):
    assert y == pytest.approx(sum(v for v, k in zip(x, m) if k), abs=1e-6)
  assert ((0 <= values) & (values < 1)).all()
  # Both halves' positions all occur (first half 0..4, second half 5..10).
  assert set(np.argmax(markers[:, :5], 1)) == set(range(5))
  assert set(5 + np.argmax(markers[:, 5:], 1)) == set(range(5, 11))
  with pytest.raises(ValueError, match="config.seq_len must be >= 2"):
    experiment.make_examples(np.random.default_rng(0), 1, 1)


def test_baseline_is_the_variance_of_the_eval_targets_near_one_sixth(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"seed": 3, "eval_size": 20000,
                                                    "seq_len": 30}))
  baseline = table.baseline_mse(str(tmp_path))
  _, ys = experiment.make_examples(np.random.default_rng([3, 1]), 20000, 30)
  assert baseline == pytest.approx(np.mean((ys - ys.mean()) ** 2), rel=1e-9)
  assert baseline == pytest.approx(1 / 6, abs=0.005)  # Var(U + U') = 2 / 12


def test_default_learns_with_adam_and_the_papers_irnn_setting_is_a_variant():
  default = adding_config.get_config()
  assert (default.cell, default.hidden_size, default.optimizer, default.learning_rate,
          default.grad_clip_norm, default.batch_size) == ("lstm", 128, "adam", 1e-3, 1.0, 50)
  irnn = adding_config.get_config("irnn-t300")
  assert (irnn.cell, irnn.hidden_size, irnn.optimizer, irnn.momentum, irnn.learning_rate,
          irnn.batch_size, irnn.seq_len) == ("irnn", 100, "sgd", 0.0, 1e-2, 16, 300)
  smoke = adding_config.get_config("smoke")
  assert (smoke.cell, smoke.optimizer, smoke.seq_len, smoke.num_steps) == ("irnn", "sgd", 12, 40)
  with pytest.raises(ValueError, match="unknown adding config variant 'x'"):
    adding_config.get_config("x")


def test_steps_to_solve_is_the_first_eval_below_a_tenth_of_the_baseline():
  evals = [(250, 0.17), (500, 0.02), (750, 0.016), (1000, 0.001)]
  assert table.steps_to_solve(evals, 0.167) == 750  # 0.0167 is the threshold; 0.02 is above it
  assert table.steps_to_solve(evals[:2], 0.167) is None
  row = {"cell": "rnn", "seq_len": 150, "steps_to_10pct": None, "last_step": 2000,
         "best_eval_mse": 0.1668, "baseline_mse": 0.1667, "hidden_size": 128, "optimizer": "adam",
         "learning_rate": 1e-3, "grad_clip_norm": 1.0, "batch_size": 50, "wall_seconds": 90.0}
  assert "| rnn | 150 | 128 units, adam 0.001, clip 1, batch 50 | not within 2,000 steps |" in \
      table.markdown([row])
