"""Subprocess runs on forced CPU devices, for the runtime's and the experiments' tests.

JAX fixes the device count when it starts, so a test that compares 1 and 8 devices (or 2
processes) runs the real entry point in a fresh interpreter with ``XLA_FLAGS`` set, exactly as a
user would. Imported by ``tests/train/runtime_harness.py`` and ``tests/experiments/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from seqjax.train import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Compile-time flag of the whole suite (see conftest.py): LLVM's optimisations of the CPU code off.
_FAST_COMPILE = "--xla_backend_optimization_level=0"


def xla_flags(flags: str = "", devices: int | None = None) -> str:
  """``flags`` plus the suite's compile setting (and a forced CPU device count, if given)."""
  parts = flags.split()
  if os.environ.get("SEQJAX_TEST_XLA_OPT", "fast") != "default":
    parts = [p for p in parts if not p.startswith("--xla_backend_optimization_level")]
    parts.append(_FAST_COMPILE)
  if devices is not None:
    parts = [p for p in parts if not p.startswith("--xla_force_host_platform_device_count")]
    parts.append(f"--xla_force_host_platform_device_count={devices}")
  return " ".join(parts)


def environment(devices: int = 1) -> dict[str, str]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = xla_flags(devices=devices)
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


def _command(name: str, workdir, overrides, variant: str) -> list[str]:
  config = os.path.join(REPO, "experiments", name, "config.py")
  return [sys.executable, "-m", f"experiments.{name}", f"--workdir={workdir}",
          f"--config={config}:{variant}", *overrides]


def run_experiment(name: str, workdir, *overrides: str, variant: str = "smoke",
                   devices: int = 1, timeout: float = 600) -> subprocess.CompletedProcess:
  """``python -m experiments.<name> --workdir=W --config=<its config.py>:<variant> ...``.

  Runs from the checkout with :func:`environment` (``devices`` forced CPU devices, the shared
  compilation cache); returns the finished process without checking its exit status.
  """
  return subprocess.run(_command(name, workdir, overrides, variant), cwd=REPO,
                        env=environment(devices), capture_output=True, text=True,
                        timeout=timeout, check=False)


def start_experiment(name: str, workdir, *overrides: str, variant: str = "smoke",
                     devices: int = 1) -> subprocess.Popen:
  """:func:`run_experiment` without waiting: the running process (stdout, stderr piped)."""
  return subprocess.Popen(_command(name, workdir, overrides, variant), cwd=REPO,
                          env=environment(devices), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def assert_ok(proc) -> None:
  assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stderr[-3000:]}"


def read_metrics(workdir, drop=("steps_per_sec",)) -> list[dict]:
  """The runtime's own reader, minus the timing fields that differ between runs."""
  return [{k: v for k, v in record.items() if k not in drop}
          for record in workdir_lib.read_metrics(str(workdir))]
