"""``python -m experiments.adding`` end to end on the smoke variant: results.json's numbers."""

import json

import numpy as np
import pytest

from experiments.adding import experiment

import forced_devices



def test_smoke_run_reports_its_eval_numbers(tmp_path):
  workdir = tmp_path / "adding"
  proc = forced_devices.run_experiment("adding", workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((workdir / "results.json").read_text())
  config = json.loads((workdir / "config.json").read_text())
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  train = [r["train/loss"] for r in records if r["split"] == "train"]
  evals = [r["eval/mse"] for r in records if r["split"] == "eval"]
  assert results["step"] == config["num_steps"] == 40
  assert len(train) == 40 // config["log_every"] and len(evals) == 2  # steps 20 and 40

  # The baseline is the variance of the held-out targets, regenerated here from the seed.
  _, eval_ys = experiment.make_examples(np.random.default_rng([config["seed"], 1]),
                                        config["eval_size"], config["seq_len"])
  assert results["baseline_mse"] == pytest.approx(float(np.var(eval_ys)), rel=1e-6)
  assert 1 / 12 < results["baseline_mse"] < 1 / 4  # the sum of two U[0, 1]: variance 1/6
  # Final and best eval MSE are the logged ones; "solved" is 10x below the baseline.
  assert results["final_eval_mse"] == evals[-1]
  assert results["best_eval_mse"] == min(evals)
  assert results["solved"] == (results["final_eval_mse"] < 0.1 * results["baseline_mse"])
  assert (results["cell"], results["seq_len"], results["hidden_size"]) == ("irnn", 12, 8)
  # SGD learnt from its first, untrained steps.
  assert np.isfinite(train).all() and train[-1] < train[0]
  assert (workdir / "mse.png").stat().st_size > 1000
