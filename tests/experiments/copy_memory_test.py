"""experiments/copy_memory: the generator's layout, the baseline against its formula and a
brute-force cross-entropy, bad sizes, and the smoke variant end to end."""

import json
import math

import numpy as np
import pytest

from experiments.copy_memory import experiment
from seqjax import layers

import forced_devices


def test_examples_hold_symbols_delimiter_and_recall_targets():
  xs, ys = experiment.make_examples(np.random.default_rng(0), 64, lag=7, num_symbols=10,
                                    alphabet=8)
  assert xs.shape == ys.shape == (64, 27)
  for x, y in zip(xs, ys):
    symbols = x[:10]
    assert ((1 <= symbols) & (symbols <= 8)).all()
    # Blanks through the lag, the delimiter (9) at its last step, blanks while recalling.
    assert (x[10:16] == 0).all() and x[16] == 9 and (x[17:] == 0).all()
    # Targets: blanks for T + S steps, then the symbols in order.
    assert (y[:17] == 0).all() and (y[17:] == symbols).all()
  assert set(np.unique(xs[:, :10])) == set(range(1, 9))  # every symbol of the alphabet drawn


def test_baseline_is_the_blank_then_uniform_guess():
  lag, s, a = 100, 10, 8
  assert experiment.baseline_cross_entropy(lag, s, a) == pytest.approx(10 * math.log(8) / 120)
  assert experiment.baseline_cross_entropy(500) == pytest.approx(0.0400, abs=1e-4)
  # Brute force: certain blanks for T + S steps, uniform over the A symbols for the last S.
  xs, ys = experiment.make_examples(np.random.default_rng(1), 4, lag, s, a)
  logp = np.full(ys.shape + (a + 1,), -np.inf)
  logp[:, :lag + s, 0] = 0.0
  logp[:, lag + s:, 1:] = -math.log(a)
  nll = np.asarray(layers.cross_entropy(np.maximum(logp, -1e9), ys))
  assert nll.mean() == pytest.approx(experiment.baseline_cross_entropy(lag, s, a), rel=1e-5)


def test_bad_sizes_name_the_problem():
  with pytest.raises(ValueError, match="lag >= 1.*got lag=0"):
    experiment.make_examples(np.random.default_rng(0), 2, lag=0)


def test_smoke_run_reports_its_eval_numbers(tmp_path):
  workdir = tmp_path / "copy"
  proc = forced_devices.run_experiment("copy_memory", workdir)
  forced_devices.assert_ok(proc)
  results = json.loads((workdir / "results.json").read_text())
  config = json.loads((workdir / "config.json").read_text())
  evals = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  evals = [r for r in evals if r["split"] == "eval"]
  assert [r["step"] for r in evals] == [15, 30]
  assert results["baseline_cross_entropy"] == pytest.approx(
      config["num_symbols"] * math.log(config["alphabet"]) / (config["lag"] + 2 * 3))
  assert results["final_eval_loss"] == evals[-1]["eval/loss"]
  assert results["best_eval_loss"] == min(r["eval/loss"] for r in evals)
  assert results["beats_baseline"] == (results["final_eval_loss"] <
                                       results["baseline_cross_entropy"])
  # The loss starts near ln 5 (5 output tokens, untrained) and falls while it trains.
  assert evals[-1]["eval/loss"] < evals[0]["eval/loss"] < math.log(5) + 0.3
  assert 0.0 <= results["final_recall_accuracy"] <= 1.0
  assert (workdir / "loss.png").stat().st_size > 5000
