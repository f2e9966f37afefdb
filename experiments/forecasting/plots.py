"""The experiment's two figures: forecasts against the actual series, and MASE by horizon."""

from __future__ import annotations

import numpy as np


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def forecast(path: str, values: np.ndarray, origin: int, bands: dict, intervals: bool,
             title: str) -> None:
  """Actual values around ``origin`` and each method's ``(mean, low, high): [h]`` after it."""
  plt = _pyplot()
  h = len(next(iter(bands.values()))[0])
  before = max(0, origin + 1 - 2 * h)
  fig, ax = plt.subplots(figsize=(9, 4))
  ax.plot(np.arange(before, min(len(values), origin + 1 + h)),
          values[before:origin + 1 + h], color="black", lw=1, label="actual")
  steps = origin + 1 + np.arange(h)
  for (name, (mean, low, high)), color in zip(bands.items(), ("tab:blue", "tab:orange")):
    ax.plot(steps, mean, color=color, label=f"{name} mean")
    if intervals:
      ax.fill_between(steps, low, high, color=color, alpha=0.2, label=f"{name} 95% interval")
  ax.axvline(origin, color="gray", ls="--", lw=0.8)
  ax.set(xlabel="time step", ylabel="value", title=title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def error_by_horizon(path: str, mase: dict, season: int, title: str) -> None:
  """MASE ``[H]`` of every method against the horizon, the season marked."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 4))
  for name, curve in mase.items():
    ax.plot(np.arange(1, len(curve) + 1), curve, label=name, lw=1.2)
  ax.axvline(season, color="gray", ls="--", lw=0.8, label="season")
  ax.set(xlabel="horizon (steps)", ylabel="test MASE", title=title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
