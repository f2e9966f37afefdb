"""Chronological splits, training-only scaling, shifted windows and forecast origins.

Indices are positions in the whole series (0 = its first value). The splits are fixed and
contiguous: ``train = [0, train_end)``, ``validation = [train_end, val_end)``,
``test = [val_end, n)``. A forecast made at *origin* ``t`` sees the values ``0..t`` only and
predicts ``t + 1 .. t + H``; the origins of a split are the ``t`` whose first target ``t + 1`` lies
in that split, and a horizon ``h`` counts an origin only while ``t + h`` is still inside it.

Shapes: ``n`` series length, ``l`` window length, ``H`` the largest horizon, ``o`` origins.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Splits:
  """Ends of the chronological splits: train ``[0, train_end)``, validation, test ``[val_end, n)``."""
  train_end: int
  val_end: int
  n: int

  def bounds(self, split: str) -> tuple[int, int]:
    return {"train": (0, self.train_end), "validation": (self.train_end, self.val_end),
            "test": (self.val_end, self.n)}[split]


def make_splits(n: int, val_size: int, test_size: int) -> Splits:
  """The last ``test_size`` values are the test split, the ``val_size`` before them validation."""
  if val_size < 1 or test_size < 1 or val_size + test_size >= n:
    raise ValueError(f"val_size={val_size} and test_size={test_size} must be >= 1 and leave a "
                     f"training split of a series of {n} values")
  return Splits(train_end=n - val_size - test_size, val_end=n - test_size, n=n)


# Variance-stabilising transforms f and their inverses: log for a multiplicative season, sqrt for
# counts (sunspot numbers), none.
_TRANSFORMS = {"none": (lambda y: y, lambda y: y), "log": (np.log, np.exp),
               "sqrt": (np.sqrt, lambda y: np.square(np.maximum(y, 0.0)))}


@dataclasses.dataclass(frozen=True)
class Scaler:
  """``z = (f(y) - mean) / std`` with ``f`` one of "none", "log", "sqrt"; fitted on training data."""
  mean: float
  std: float
  transform_name: str = "none"

  def transform(self, values: np.ndarray) -> np.ndarray:
    return (_TRANSFORMS[self.transform_name][0](np.asarray(values, np.float64)) - self.mean) / self.std

  def inverse(self, z: np.ndarray) -> np.ndarray:
    return _TRANSFORMS[self.transform_name][1](np.asarray(z, np.float64) * self.std + self.mean)


def fit_scaler(values: np.ndarray, splits: Splits, transform: str = "none") -> Scaler:
  """Mean and standard deviation of the training split alone (never validation or test)."""
  if transform not in _TRANSFORMS:
    raise ValueError(f"unknown transform {transform!r}; use one of {', '.join(_TRANSFORMS)}")
  train = np.asarray(values[:splits.train_end], np.float64)
  if (transform == "log" and np.any(train <= 0)) or (transform == "sqrt" and np.any(train < 0)):
    raise ValueError(f"the {transform} transform needs positive values; the training split has "
                     f"{int(np.sum(train <= 0))} values <= 0")
  train = _TRANSFORMS[transform][0](train)
  std = float(np.std(train))
  return Scaler(mean=float(np.mean(train)), std=std if std > 0 else 1.0, transform_name=transform)


def shifted_windows(series: np.ndarray, length: int, horizon: int = 1, starts=None):
  """Windows of ``length`` inputs with targets shifted by one step, plus ``horizon``-wide targets.

  Returns ``(inputs [w, l], targets [w, l], direct [w, l, H])`` with, for window start ``s``,
  ``inputs[i] = series[s + i]``, ``targets[i] = series[s + i + 1]`` and
  ``direct[i, k] = series[s + i + 1 + k]``: every position predicts what follows it. ``starts``
  defaults to every start whose targets fit in ``series``.
  """
  series = np.asarray(series)
  span = length + horizon
  if length < 1 or horizon < 1:
    raise ValueError(f"window length and horizon must be >= 1, got {length} and {horizon}")
  if span > len(series):
    raise ValueError(f"a window of {length} inputs and {horizon} steps ahead needs {span} values, "
                     f"but the training split has only {len(series)}")
  if starts is None:
    starts = np.arange(len(series) - span + 1)
  starts = np.asarray(starts)
  idx = starts[:, None] + np.arange(span)[None, :]  # [w, l + H]
  chunk = series[idx]
  direct_idx = np.arange(length)[:, None] + 1 + np.arange(horizon)[None, :]  # [l, H]
  return chunk[:, :length], chunk[:, 1:length + 1], chunk[:, direct_idx]


def origins(splits: Splits, split: str, length: int) -> np.ndarray:
  """Forecast origins ``[o]`` of ``split``: the ``t`` with ``t + 1`` in the split and ``t >= l - 1``."""
  start, end = splits.bounds(split)
  first = max(start - 1, length - 1)
  if first > end - 2:
    raise ValueError(f"the {split} split [{start}, {end}) has no forecast origin for windows of "
                     f"{length} values")
  return np.arange(first, end - 1)


def context(series: np.ndarray, origin_idx: np.ndarray, length: int) -> np.ndarray:
  """``[o, l]``: the ``length`` values ending at each origin, ``series[t - l + 1 .. t]``."""
  idx = np.asarray(origin_idx)[:, None] - length + 1 + np.arange(length)[None, :]
  if idx.min() < 0:
    raise ValueError(f"an origin {int(np.min(origin_idx))} has fewer than {length} values behind it")
  return np.asarray(series)[idx]


def actuals(series: np.ndarray, origin_idx: np.ndarray, horizon: int, end: int) -> np.ndarray:
  """``[o, H]``: ``series[t + h]`` for ``h = 1..H``, NaN where ``t + h >= end`` (past the split)."""
  idx = np.asarray(origin_idx)[:, None] + 1 + np.arange(horizon)[None, :]
  out = np.full(idx.shape, np.nan)
  inside = idx < end
  out[inside] = np.asarray(series, np.float64)[idx[inside]]
  return out


def phase_features(times: np.ndarray, season: int) -> np.ndarray:
  """``[..., 2]``: ``sin`` and ``cos`` of the position in the season (known ahead of time)."""
  angle = 2 * np.pi * (np.asarray(times, np.float64) % season) / season
  return np.stack([np.sin(angle), np.cos(angle)], axis=-1)
