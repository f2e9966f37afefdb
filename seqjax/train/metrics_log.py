"""Metric sinks of a run: metrics.jsonl, TensorBoard events, and the console.

Metric names are ``<split>/<name>`` (``train/loss``, ``eval/accuracy``); a record in metrics.jsonl
holds one split at one step:
``{"step": s, "split": "train", "train/loss": ..., "steps_per_sec": ...}``.
On a terminal the console shows a tqdm progress bar (step, loss, steps/s, ETA) with evaluations
printed above it; otherwise (log files, CI) it prints plain log lines at every logged step.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping, TextIO

import tqdm
from absl import logging

from seqjax.train import workdir as workdir_lib


def _split_of(name: str) -> str:
  return name.split("/", 1)[0] if "/" in name else "train"


def _format_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _summary_writer(logdir: str):
  """A tensorboardX SummaryWriter, imported without dragging in PyTorch.

  tensorboardX imports torch (seconds of start-up) only to recognise torch tensors; we log
  Python floats, so torch is hidden while tensorboardX loads unless something already loaded it.
  """
  hide_torch = "torch" not in sys.modules
  if hide_torch:
    sys.modules["torch"] = None  # Makes `import torch` raise ImportError, which it tolerates.
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  finally:
    if hide_torch:
      del sys.modules["torch"]
  return SummaryWriter(logdir)


class MetricsWriter:
  """Writes metrics of process 0 to metrics.jsonl, TensorBoard and the console.

  On other processes (``enabled=False``) every method is a no-op, so callers need no branches.
  ``first_step`` is where the run starts (a resumed run's checkpoint step), so the progress bar
  and its rate count only this run's steps; ``console`` is the stream of the bar (stderr).
  """

  def __init__(self, workdir: str, num_steps: int, enabled: bool = True, first_step: int = 0,
               console: TextIO | None = None):
    self._enabled = enabled
    self._num_steps = num_steps
    self._console_stream = console or sys.stderr
    self._bar = None
    self._file = None
    self._tb = None
    if not enabled:
      return
    if self._console_stream.isatty():
      self._bar = tqdm.tqdm(total=num_steps, initial=first_step, file=self._console_stream,
                            unit="step", dynamic_ncols=True)
    self._file = open(os.path.join(workdir, workdir_lib.METRICS), "a")
    try:
      self._tb = _summary_writer(os.path.join(workdir, workdir_lib.TENSORBOARD))
    except ImportError:  # TensorBoard is a convenience; metrics.jsonl is the record.
      logging.warning("tensorboardX not installed; writing metrics.jsonl only")

  def write(self, step: int, metrics: Mapping[str, float], steps_per_sec: float | None = None):
    """Logs ``metrics`` (flat ``split/name -> scalar``) at ``step``, one record per split."""
    if not self._enabled:
      return
    by_split: dict[str, dict[str, Any]] = {}
    for name, value in metrics.items():
      by_split.setdefault(_split_of(name), {})[name] = float(value)
    for split, values in by_split.items():
      record = {"step": int(step), "split": split, **values}
      if steps_per_sec is not None:
        record["steps_per_sec"] = float(steps_per_sec)
      # One write + flush per line: a SIGKILL can tear at most the last line, which resume drops.
      self._file.write(json.dumps(record) + "\n")
      if self._tb is not None:
        for name, value in values.items():
          self._tb.add_scalar(name, value, step)
        if "steps_per_sec" in record and split == "train":
          self._tb.add_scalar("train/steps_per_sec", record["steps_per_sec"], step)
    self._file.flush()
    if self._tb is not None:
      self._tb.flush()
    self._console(step, metrics, steps_per_sec, is_train="train" in by_split)

  def _console(self, step, metrics, steps_per_sec, is_train):
    shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                     if k.endswith("loss") or k.startswith("eval/"))
    if self._bar is not None and not is_train:  # Evaluations: a line that stays above the bar.
      self._bar.write(f"{step}/{self._num_steps} {shown}", file=self._console_stream)
    elif self._bar is not None:
      self._bar.set_postfix_str(shown, refresh=False)
      self._bar.update(step - self._bar.n)
    else:
      rate = ""
      if steps_per_sec:
        eta = _format_eta((self._num_steps - step) / steps_per_sec)
        rate = f" {steps_per_sec:.1f} steps/s ETA {eta}"
      logging.info("step %d/%d %s%s", step, self._num_steps, shown, rate)

  def close(self):
    if not self._enabled:
      return
    if self._bar is not None:
      self._bar.close()
    self._file.close()
    if self._tb is not None:
      self._tb.close()


class RateMeter:
  """Training steps per second over the window since the previous call at an earlier step."""

  def __init__(self, step: int):
    self._step, self._time, self._rate = step, time.perf_counter(), None

  def rate(self, step: int) -> float | None:
    """The rate up to ``step``; a second call at the same step repeats the first's answer."""
    if step == self._step:
      return self._rate
    now = time.perf_counter()
    self._rate = (step - self._step) / max(now - self._time, 1e-9)
    self._step, self._time = step, now
    return self._rate
