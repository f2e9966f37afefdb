"""One device, eight devices and two processes run the same program: same losses, same results.

Device counts are fixed when JAX starts (``XLA_FLAGS``), and two processes need two interpreters,
so every run here is a subprocess of ``python -m experiments.adding`` (smoke variant, 40 steps,
global batch 16). Float32 sums in a different order differ in the last bits, so the comparison is
at 1e-4 relative, at every logged step.
"""

from __future__ import annotations


import numpy as np
import pytest

import runtime_harness as rh

RTOL = 1e-4
# The gradient norm is a sum of near-cancelling per-example terms, so it carries the rounding
# differences of the reduction order ~10x more than the loss does; it gets a looser bound.
GRAD_NORM_RTOL = 1e-3


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("one_device")
  rh.assert_ok(rh.run(workdir))
  return workdir


def assert_same_numbers(workdir, reference) -> None:
  """Every logged loss and eval metric at every step agrees within RTOL."""
  got, want = rh.read_metrics(workdir), rh.read_metrics(reference)
  assert [(r["step"], r["split"]) for r in got] == [(r["step"], r["split"]) for r in want]
  assert len(want) == 10  # 8 train records (every 5 steps) + 2 evals (steps 20 and 40).
  for g, w in zip(got, want):
    assert sorted(g) == sorted(w)
    for key in w:
      if key not in ("step", "split"):
        rtol = GRAD_NORM_RTOL if key == "train/grad_norm" else RTOL
        np.testing.assert_allclose(g[key], w[key], rtol=rtol, err_msg=f"{key} at step {w['step']}")
  got_results = rh.read_json(workdir, "results.json")
  want_results = rh.read_json(reference, "results.json")
  for key in ("final_eval_mse", "best_eval_mse", "baseline_mse"):
    np.testing.assert_allclose(got_results[key], want_results[key], rtol=RTOL)


def test_eight_cpu_devices_match_one(one_device, tmp_path):
  # Given 8 simulated CPU devices, the global batch of 16 is split 2 per device,
  proc = rh.run(tmp_path, devices=8)
  rh.assert_ok(proc)
  assert "8 local cpu devices of 8 global" in proc.stderr
  # then the pmean of per-device losses and gradients reproduces the 1-device run.
  assert_same_numbers(tmp_path, one_device)


def test_num_devices_restricts_the_pmap(one_device, tmp_path):
  # --config.num_devices=2 on an 8-device host uses 2 devices (8 per device), same numbers.
  rh.assert_ok(rh.run(tmp_path, "--config.num_devices=2", devices=8))
  assert_same_numbers(tmp_path, one_device)


def test_two_processes_on_localhost_match_one_process(one_device, tmp_path):
  # Given two processes joined through jax.distributed, each reading half of every batch,
  port = rh.free_port()
  procs = [rh.start(tmp_path, extra_args=[f"--coordinator_address=localhost:{port}",
                                          "--num_processes=2", f"--process_id={i}"])
           for i in range(2)]
  outputs = rh.finish_all(procs, timeout=240)
  assert "process 1/2, 1 local cpu devices of 2 global" in outputs[1][1]
  # Then only process 0 logged (no duplicated records), and the numbers equal one process's.
  assert_same_numbers(tmp_path, one_device)
  assert rh.checkpoint_steps(tmp_path) == rh.checkpoint_steps(one_device)
