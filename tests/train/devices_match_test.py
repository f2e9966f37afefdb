"""A token-averaged loss with dropout trains the same on 1 device, 8 devices and 2 processes.

The task (token_task.py) has ragged strings, so the devices hold different numbers of tokens,
dropout on (one mask per string from ``train.example_keys``), Adam and an evaluation after the
last step. slices_match_test.py checks the runtime's step on 2 to 8 slices in this process; here
the real thing runs once each, exactly as a user would start it: ``token_task.py`` as an entry
point in one interpreter with 8 forced CPU devices, and in two interpreters of 2 CPU devices each
joined by ``jax.distributed``. The 1-device reference trains in this process. Every train and eval
metric of every step, the parameters of every checkpoint (one per step) and results.json must
agree within 1e-5; only process 0 writes metrics; checkpoints are saved at the same steps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

import runtime_harness as rh
import token_task
from seqjax import train
from seqjax.train import distributed

HERE = os.path.dirname(os.path.abspath(__file__))
TASK = os.path.join(HERE, "token_task.py")
RTOL = 1e-5
STEPS = token_task.get_config().num_steps  # Metrics and a checkpoint at every step.


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  """The reference: token_task trained by ``train.run`` in this process, on one device."""
  workdir = tmp_path_factory.mktemp("one_device")
  config = token_task.get_config()
  config.num_devices = 1
  train.run(token_task.make_experiment(config), config, str(workdir))
  return workdir


def _start(workdir, devices: int, *args: str) -> subprocess.Popen:
  env = rh.environment(devices)
  env["PYTHONPATH"] = os.pathsep.join([HERE, env["PYTHONPATH"]])  # token_task itself.
  return subprocess.Popen([sys.executable, TASK, "--workdir", str(workdir), f"--config={TASK}",
                           *args], cwd=rh.REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _assert_close(got, want, what: str) -> None:
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL, err_msg=what)


def assert_runs_agree(workdir, reference) -> None:
  """Metrics, checkpointed parameters and results.json of two runs agree within RTOL."""
  got, want = rh.read_metrics(workdir), rh.read_metrics(reference)
  # One record per step and split: a second process writing too would duplicate them.
  assert [(r["step"], r["split"]) for r in got] == [(r["step"], r["split"]) for r in want]
  assert [r["step"] for r in want] == list(range(1, STEPS + 1)) + [STEPS]
  for g, w in zip(got, want):
    assert sorted(g) == sorted(w)
    for key in sorted(set(w) - {"step", "split"}):
      _assert_close(g[key], w[key], f"{key} at step {w['step']}")
  assert rh.checkpoint_steps(workdir) == rh.checkpoint_steps(reference) == list(
      range(1, STEPS + 1))
  for step in range(1, STEPS + 1):
    got_state, want_state = rh.load_state(workdir, step), rh.load_state(reference, step)
    assert int(got_state["step"]) == int(want_state["step"]) == step
    jax.tree.map(lambda g, w, s=step: _assert_close(g, w, f"parameters at step {s}"),
                 got_state["params"], want_state["params"])
  got_results, want_results = (rh.read_json(w, "results.json") for w in (workdir, reference))
  assert sorted(got_results) == sorted(want_results)
  jax.tree.map(lambda g, w: _assert_close(g, w, "results.json"), got_results, want_results)


def test_reference_run_trains_with_dropout_on_uneven_devices(one_device):
  # On 8 devices the global batch of 16 ragged strings puts 2 on each: the fullest device holds
  # at least twice the tokens of the emptiest, and "tokens" counts the global batch's.
  config = token_task.get_config()
  mask = token_task.get_batch_of_step(config, 0)["mask"]
  per_device = mask.reshape(8, -1).sum(axis=1)
  assert per_device.max() >= 2 * per_device.min(), per_device
  assert config.dropout_rate > 0 and config.optimizer == "adam"
  assert rh.read_metrics(one_device)[0]["train/tokens"] == mask.sum()
  # The parameters moved: the comparisons below are not of two untrained copies.
  start, end = rh.load_state(one_device, 1)["params"], rh.load_state(one_device, STEPS)["params"]
  assert min(float(np.max(np.abs(end[k] - start[k]))) for k in start) > 1e-3


def test_eight_devices_match_one_device(one_device, tmp_path):
  # Given 8 forced CPU devices, the whole host (config.num_devices=0),
  (_, stderr), = rh.finish_all([_start(tmp_path, 8)], timeout=300)
  assert "process 0/1, 8 local cpu devices of 8 global" in stderr
  # then token shares psummed over the pmap and per-string dropout keys train as one device.
  assert_runs_agree(tmp_path, one_device)


def test_two_processes_match_one_process(one_device, tmp_path):
  # Given two processes of 2 CPU devices each, joined through jax.distributed on localhost,
  # each reading its half of every global batch,
  port = rh.free_port()
  procs = [_start(tmp_path, 2, f"--coordinator_address=localhost:{port}", "--num_processes=2",
                  f"--process_id={i}") for i in range(2)]
  outputs = rh.finish_all(procs, timeout=300)
  assert "process 1/2, 2 local cpu devices of 4 global" in outputs[1][1]
  # then the 4 devices (global positions 0..3) train as the single device does, and process 0
  # alone wrote the metrics and results.
  assert_runs_agree(tmp_path, one_device)


def test_num_devices_takes_the_first_devices_of_every_process(monkeypatch):
  # Given two processes of 4 devices each (as jax lists them, process by process),
  fake = [types.SimpleNamespace(id=i, process_index=i // 4, platform="cpu") for i in range(8)]
  monkeypatch.setattr(jax, "local_devices", lambda: fake[:4])
  monkeypatch.setattr(jax, "devices", lambda: fake)
  # config.num_devices=2 runs on 2 local devices and the pmap spans 2 of each process, in
  # process order (what global_batch's example numbering assumes); 0 means all of them.
  local, chosen = distributed.select_devices(2)
  assert [d.id for d in local] == [0, 1] and [d.id for d in chosen] == [0, 1, 4, 5]
  local, chosen = distributed.select_devices(0)
  assert [d.id for d in local] == [0, 1, 2, 3] and [d.id for d in chosen] == list(range(8))
  with pytest.raises(ValueError, match="config.num_devices=5 but this process has only 4"):
    distributed.select_devices(5)
