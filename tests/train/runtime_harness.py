"""Helpers of the runtime tests: run ``experiments.adding`` (or a test task) in a subprocess and
read its workdir.

Signals, device counts (``XLA_FLAGS``) and multi-process runs all need a fresh interpreter, so
the runtime tests drive the real entry point exactly as a user would.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp

# Shared with the experiments' device tests; re-exported as rh.environment etc.
from forced_devices import assert_ok, environment, read_metrics  # pylint: disable=unused-import

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "experiments", "adding", "config.py")
# The smoke variant, long enough that a test can interrupt it mid-run.
LONG = ("--config.num_steps=200", "--config.log_every=5", "--config.checkpoint_every=20",
        "--config.eval_every=50", "--config.keep_checkpoints=2")
# A test task run by path (its config is the script itself): Adam, a warm-up + cosine schedule,
# dropout, ragged strings and the fused LSTM (see the script's docstring).
LSTM_TASK = os.path.join(REPO, "tests", "train", "lstm_task.py")
_LOG_LINE = re.compile(r"^[IWEF]\d{4} ")  # absl's log prefix, e.g. "I1122 17:00:53.03 ...".


def command(workdir: str, *overrides: str, variant: str = "smoke", task: str = "") -> list[str]:
  """The smoke adding experiment's command line, or with ``task`` that script's (e.g. LSTM_TASK)."""
  if task:
    return [sys.executable, task, "--workdir", str(workdir), f"--config={task}", *overrides]
  return [sys.executable, "-m", "experiments.adding", "--workdir", str(workdir),
          f"--config={CONFIG}:{variant}", *overrides]


def run(workdir, *overrides, devices: int = 1, timeout: float = 180,
        task: str = "") -> subprocess.CompletedProcess:
  """Runs the smoke adding experiment (or ``task``) to the end; returns the finished process."""
  return subprocess.run(command(workdir, *overrides, task=task), cwd=REPO,
                        env=environment(devices), capture_output=True, text=True,
                        timeout=timeout, check=False)


def start(workdir, *overrides, extra_args=(), devices: int = 1, task: str = "") -> subprocess.Popen:
  return subprocess.Popen(command(workdir, *overrides, task=task) + list(extra_args), cwd=REPO,
                          env=environment(devices), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def wait_for_step(workdir, proc: subprocess.Popen, step: int, timeout: float = 120) -> int:
  """Polls metrics.jsonl until a record with ``step >= step`` appears; returns that step."""
  path = os.path.join(str(workdir), "metrics.jsonl")
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      raise AssertionError(f"run ended (rc={proc.returncode}) before step {step}: "
                           f"{proc.stderr.read()[-2000:]}")
    steps = [r["step"] for r in read_metrics(workdir)]
    if steps and max(steps) >= step:
      return max(steps)
    time.sleep(0.05)  # Finer polling only takes CPU from the run it waits for.
  raise AssertionError(f"no metrics for step {step} after {timeout}s")


def error_lines(stderr: str) -> list[str]:
  """stderr lines that are not absl log lines (nor gloo's connection notes)."""
  return [l for l in stderr.splitlines()
          if l.strip() and not _LOG_LINE.match(l) and not l.startswith("[Gloo]")]


def read_json(workdir, name: str):
  with open(os.path.join(str(workdir), name)) as f:
    return json.load(f)


def checkpoint_steps(workdir) -> list[int]:
  directory = os.path.join(str(workdir), "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def load_state(workdir, step: int):
  """The saved train state at ``step`` as nested numpy arrays (restored without a target)."""
  path = os.path.join(str(workdir), "checkpoints", str(step), "state")
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(path)


def assert_trees_equal(a, b) -> None:
  """Bitwise equality of two nested dict/list trees of arrays."""
  if isinstance(a, dict):
    assert sorted(a) == sorted(b)
    for key in a:
      assert_trees_equal(a[key], b[key])
  elif isinstance(a, (list, tuple)):
    assert len(a) == len(b)
    for x, y in zip(a, b):
      assert_trees_equal(x, y)
  else:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def finish_all(procs: list[subprocess.Popen], timeout: float) -> list[tuple[str, str]]:
  """Waits for every process (killing all if one hangs), asserts each exited 0, returns outputs."""
  outputs = []
  for proc in procs:
    try:
      outputs.append(proc.communicate(timeout=timeout))
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      raise
  for proc, (_, stderr) in zip(procs, outputs):
    assert proc.returncode == 0, stderr[-3000:]
  return outputs
