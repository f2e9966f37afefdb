"""Building and loading the native CPU kernels' library, keyed by the CPU it was built for.

The library is compiled with ``-march=native``: it may use every instruction the building
machine's CPU has. A checkout shared by machines with different CPUs (the nodes of a cluster)
could otherwise load a library that dies with an illegal instruction on the first call. So
:func:`build` writes, beside the library, the CPU features of the machine that built it
(``librnn_cpu.cpu.json``), and the library is loaded only where the running CPU has every one of
them. Where it has not, or where the library is older than its sources, the fused LSTM runs its
XLA loops, and one line says why and how to rebuild.

CPU features are the ``flags`` (x86) or ``Features`` (Arm) line of ``/proc/cpuinfo`` plus the
machine's architecture; where ``/proc/cpuinfo`` is missing, the architecture alone.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import platform
import subprocess
import warnings
from pathlib import Path

import jax

HERE = Path(__file__).parent
SOURCE = HERE / "rnn_cpu.cc"
HEADERS = (HERE / "blocks.h",)  # included by SOURCE: a newer one also needs a rebuild
LIBRARY = HERE / "librnn_cpu.so"
TARGETS = {"forward_train": "SeqjaxLstmForwardTrain", "forward_infer": "SeqjaxLstmForwardInfer",
           "backward": "SeqjaxLstmBackward", "weight_grads": "SeqjaxLstmWeightGrads"}
REBUILD = "python -m seqjax.kernels.native"


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
  """This machine's CPU features: ``arch:<machine>`` and the flags ``/proc/cpuinfo`` lists."""
  features = {f"arch:{platform.machine()}"}
  try:
    with open(cpuinfo, encoding="utf-8", errors="replace") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
          features.update(value.split())
          break
  except OSError:
    pass
  return frozenset(features)


def record_path(library: Path) -> Path:
  """Where the CPU features a library was built for are recorded: ``<name>.cpu.json``."""
  return library.with_name(library.name.split(".")[0] + ".cpu.json")


def build(compiler: str | None = None, output: Path | None = None) -> Path:
  """Compiles ``rnn_cpu.cc`` into ``output`` for this CPU and records this CPU's features.

  Raises ``RuntimeError`` with the compiler's log when it fails.
  """
  output = Path(LIBRARY if output is None else output)
  compiler = compiler or os.environ.get("CXX", "g++")
  command = [compiler, "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC",
             "-isystem", jax.ffi.include_dir(), str(SOURCE), "-o", str(output) + ".tmp"]
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  if result.returncode != 0:
    raise RuntimeError(f"building the native kernels failed: {' '.join(command)}\n"
                       f"{result.stdout}{result.stderr}")
  record = record_path(output)
  record.with_suffix(".tmp").write_text(json.dumps(
      {"cpu_features": sorted(cpu_features()), "command": command}, indent=1))
  # Atomic renames: a concurrent loader sees the old library or the new one, with its record.
  os.replace(record.with_suffix(".tmp"), record)
  os.replace(str(output) + ".tmp", output)
  return output


def refusal(library: Path) -> str:
  """Why ``library`` must not be loaded on this machine ('' when it may be)."""
  for source in (SOURCE,) + tuple(HEADERS):
    if source.exists() and library.stat().st_mtime < source.stat().st_mtime:
      return f"{library} is older than {source.name}; rebuild it (`{REBUILD}`)"
  record = record_path(library)
  try:
    built_for = frozenset(json.loads(record.read_text())["cpu_features"])
  except (OSError, ValueError, KeyError, TypeError):
    return (f"{library} has no readable record of the CPU it was built for ({record.name}); "
            f"rebuild it on this machine (`{REBUILD}`)")
  missing = sorted(built_for - cpu_features())
  if missing:
    shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    return (f"{library} was built for a CPU with features this one lacks ({shown}); rebuild it "
            f"on this machine (`{REBUILD}`)")
  return ""


@functools.cache
def _register(path: str) -> None:
  """Loads the library at ``path`` and registers its targets with XLA, once per process."""
  library = ctypes.cdll.LoadLibrary(path)
  for target in TARGETS.values():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, target)),
                                platform="cpu")


@functools.cache
def _note(reason: str) -> None:
  """Says once per process and reason that the XLA loops run instead of a library found."""
  warnings.warn(f"seqjax: native CPU kernels not loaded, the XLA loops run: {reason}",
                RuntimeWarning, stacklevel=4)


def load() -> tuple[bool, str]:
  """``(True, '')`` once the kernels are registered, else ``(False, why not)``.

  A library that exists but is refused (stale, built for another CPU, failing to load) is
  also reported once as a ``RuntimeWarning``; one that is simply not built is not.
  """
  if not LIBRARY.exists():
    return False, f"{LIBRARY} is not built (run `make install` or `{REBUILD}`)"
  reason = refusal(LIBRARY)
  if not reason:
    try:
      _register(str(LIBRARY))
      return True, ""
    except (OSError, AttributeError) as error:
      reason = f"loading {LIBRARY} failed: {error}; rebuild it (`{REBUILD}`)"
  _note(reason)
  return False, reason


def available() -> bool:
  """True when the kernels are built for this CPU and loaded (they run on the CPU backend)."""
  return load()[0]


def unavailable_reason() -> str:
  """Why :func:`available` is False ('' when it is True)."""
  return load()[1]
