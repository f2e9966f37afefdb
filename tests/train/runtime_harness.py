"""Helpers of the runtime tests: run ``experiments.adding`` in a subprocess and read its workdir.

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
import tempfile
import time

import numpy as np
import orbax.checkpoint as ocp

from seqjax.train import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "experiments", "adding", "config.py")
# The smoke variant, long enough that a test can interrupt it mid-run.
LONG = ("--config.num_steps=200", "--config.log_every=5", "--config.checkpoint_every=20",
        "--config.eval_every=50", "--config.keep_checkpoints=2")
_LOG_LINE = re.compile(r"^[IWEF]\d{4} ")  # absl's log prefix, e.g. "I1122 17:00:53.03 ...".


def command(workdir: str, *overrides: str, variant: str = "smoke") -> list[str]:
  return [sys.executable, "-m", "experiments.adding", "--workdir", str(workdir),
          f"--config={CONFIG}:{variant}", *overrides]


def environment(devices: int = 1) -> dict[str, str]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  # This checkout's seqjax, also for scripts run by path (whose own folder heads sys.path).
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
  # A persistent compilation cache shared by the test runs: the same programs compile once.
  env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(tempfile.gettempdir(),
                                                  f"seqjax-test-jax-cache-{os.getuid()}")
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(name, None)
  return env


def run(workdir, *overrides, devices: int = 1, timeout: float = 180) -> subprocess.CompletedProcess:
  """Runs the smoke adding experiment to completion (or failure); returns the finished process."""
  return subprocess.run(command(workdir, *overrides), cwd=REPO, env=environment(devices),
                        capture_output=True, text=True, timeout=timeout, check=False)


def start(workdir, *overrides, extra_args=(), devices: int = 1) -> subprocess.Popen:
  return subprocess.Popen(command(workdir, *overrides) + list(extra_args), cwd=REPO,
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
    time.sleep(0.005)
  raise AssertionError(f"no metrics for step {step} after {timeout}s")


def assert_ok(proc) -> None:
  assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stderr[-3000:]}"


def error_lines(stderr: str) -> list[str]:
  """stderr lines that are not absl log lines (nor gloo's connection notes)."""
  return [l for l in stderr.splitlines()
          if l.strip() and not _LOG_LINE.match(l) and not l.startswith("[Gloo]")]


def read_metrics(workdir, drop=("steps_per_sec",)) -> list[dict]:
  """The runtime's own reader, minus the timing fields that differ between runs."""
  return [{k: v for k, v in record.items() if k not in drop}
          for record in workdir_lib.read_metrics(str(workdir))]


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
