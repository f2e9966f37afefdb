"""The workdir contract: what a run writes, and how an existing workdir is checked before resuming.

A workdir describes its run::

  DIR/config.json       the resolved config (rewritten only when allow_config_change=True)
  DIR/metrics.jsonl     one JSON object per logged step and split:
                        {"step": 100, "split": "train", "train/loss": 0.17, ...,
                         "steps_per_sec": 41.2}
                        (steps_per_sec: training steps per second since the previous record)
  DIR/tensorboard/      TensorBoard event files (same scalars as metrics.jsonl)
  DIR/checkpoints/<step>/  orbax checkpoints: the last ``keep_checkpoints`` and the best
  DIR/results.json      the experiment's summary, written when the run finishes
  DIR/*.png             the experiment's plots
  DIR/corrupt_checkpoints/  checkpoints that failed to restore, moved aside (only if any did)
  DIR/.lock             held (flock) by the running job, so a second run on DIR is refused

Only process 0 writes these files; every process takes part in checkpointing.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
from typing import Any

from seqjax.train import config as config_lib

CONFIG = "config.json"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
CORRUPT = "corrupt_checkpoints"
LOCK = ".lock"


class WorkdirError(ValueError):
  """The workdir cannot be used (unwritable, or its config.json disagrees with this run)."""


def cpu_name() -> str:
  """``lscpu``'s model name (or the platform's processor string) and the core count, for the
  ``hardware`` field of a results file."""
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    name = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith("Model name"))
  except (OSError, subprocess.CalledProcessError, StopIteration):
    name = platform.processor() or "unknown CPU"
  return f"{name}, {os.cpu_count()} cores"


def check_writable(workdir: str) -> None:
  """Creates ``workdir`` if needed; raises WorkdirError if it cannot be created or written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_probe.{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(f"workdir {workdir!r} is not writable: {e.strerror or e}") from None


def lock(workdir: str):
  """Claims ``workdir`` for this run; WorkdirError if another live run holds it.

  The lock is an advisory ``flock`` on ``DIR/.lock``: the kernel releases it when the holder
  exits, even on SIGKILL, so a killed run never leaves a stale lock behind. Returns the open
  file, which must stay open (referenced) for the lock to last.
  """
  path = os.path.join(workdir, LOCK)
  f = open(path, "a+")
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    f.seek(0)
    holder = f.read().strip() or "another process"
    f.close()
    raise WorkdirError(f"workdir {workdir!r} is in use by a running job ({holder}); wait for "
                       "it to finish or stop it first") from None
  f.seek(0)
  f.truncate()
  f.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
  f.flush()
  return f


def check_config(workdir: str, config_dict: dict[str, Any], allow_change: bool) -> bool:
  """Compares ``config_dict`` with the workdir's config.json.

  Returns:
    True when config.json exists (the run resumes or extends an existing workdir).
  Raises:
    WorkdirError naming the differing keys, unless ``allow_change``.
  """
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    return False
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(f"cannot read {path}: {e}") from None
  changed = config_lib.diff(old, config_dict)
  if changed and not allow_change:
    shown = ", ".join(f"{k} ({_get(old, k)!r} -> {_get(config_dict, k)!r})" for k in changed[:8])
    more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
    raise WorkdirError(f"config differs from {path} in {shown}{more}; use a new --workdir or "
                       "pass --config.allow_config_change=True to resume anyway")
  return True


def _get(tree: dict[str, Any], dotted: str) -> Any:
  for part in dotted.split("."):
    if not isinstance(tree, dict) or part not in tree:
      return "<missing>"
    tree = tree[part]
  return tree


def write_config(workdir: str, config_dict: dict[str, Any]) -> None:
  _write_json_atomic(os.path.join(workdir, CONFIG), config_dict)


def write_results(workdir: str, results: dict[str, Any]) -> None:
  _write_json_atomic(os.path.join(workdir, RESULTS), results)


def _write_json_atomic(path: str, obj: Any) -> None:
  # Write-then-rename so a kill mid-write never leaves a half-written file behind.
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All complete records of metrics.jsonl, in file order (a torn last line is skipped)."""
  path = os.path.join(workdir, METRICS)
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        break  # A line torn by a kill mid-write; everything after it is dropped on resume.
  return records


def truncate_metrics(workdir: str, step: int) -> int:
  """Keeps the metrics.jsonl records with ``step <= step`` (and drops a torn last line).

  Called on resume from a checkpoint at ``step`` so that the steps re-run after it are not
  logged twice. Returns the number of records dropped.
  """
  path = os.path.join(workdir, METRICS)
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      break
    if record.get("step", 0) <= step:
      kept.append(line if line.endswith("\n") else line + "\n")
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    f.writelines(kept)
  os.replace(tmp, path)
  return len(lines) - len(kept)
