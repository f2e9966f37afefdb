"""Baselines on the same splits (persistence, seasonal-naive, linear AR, optional SARIMA) and metrics.

Every forecaster maps origins ``[o]`` to forecasts ``[o, H]`` in the series' own units, reading
``values[: t + 1]`` only for origin ``t``.
"""

from __future__ import annotations

import numpy as np

from experiments.forecasting import windows


def persistence(values: np.ndarray, origin_idx: np.ndarray, horizon: int) -> np.ndarray:
  """``y_hat[t + h] = y[t]``: the last value, for every horizon."""
  last = np.asarray(values, np.float64)[origin_idx]
  return np.repeat(last[:, None], horizon, axis=1)


def seasonal_naive(values: np.ndarray, origin_idx: np.ndarray, horizon: int,
                   season: int) -> np.ndarray:
  """``y_hat[t + h] = y[t + h - season * ceil(h / season)]``: the same point one season earlier."""
  h = np.arange(1, horizon + 1)
  back = season * np.ceil(h / season).astype(int)
  idx = np.asarray(origin_idx)[:, None] + h[None, :] - back[None, :]
  if idx.min() < 0:
    raise ValueError(f"seasonal-naive needs a full season ({season}) before every origin")
  return np.asarray(values, np.float64)[idx]


def ar_design(z: np.ndarray, times: np.ndarray, order: int, season: int | None) -> np.ndarray:
  """Rows ``[1, z[t], ..., z[t - order + 1], phase(t + 1)]`` predicting ``z[t + 1]``: ``[o, k]``."""
  lags = z[:, ::-1][:, :order]  # newest first
  cols = [np.ones((len(z), 1)), lags]
  if season:
    cols.append(windows.phase_features(times + 1, season))
  return np.concatenate(cols, axis=1)


def fit_ar(z_train: np.ndarray, order: int, season: int | None, ridge: float = 1e-6) -> np.ndarray:
  """Least-squares AR(``order``) coefficients ``[k]`` (intercept, lags, phase) on the training split."""
  inputs, targets, _ = windows.shifted_windows(z_train, order, 1)
  times = np.arange(order - 1, len(z_train) - 1)
  x = ar_design(inputs, times, order, season)
  y = targets[:, -1]
  return np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)


def ar_forecast(coef: np.ndarray, z: np.ndarray, origin_idx: np.ndarray, order: int,
                season: int | None, horizon: int) -> np.ndarray:
  """Recursive AR forecasts ``[o, H]`` (scaled units), each prediction fed back as a lag."""
  ctx = windows.context(z, origin_idx, order)
  times = np.asarray(origin_idx).copy()
  out = np.empty((len(ctx), horizon))
  for k in range(horizon):
    out[:, k] = ar_design(ctx, times, order, season) @ coef
    ctx = np.concatenate([ctx[:, 1:], out[:, k:k + 1]], axis=1)
    times = times + 1
  return out


def sarima_forecast(values, splits, origin_idx, horizon, order, seasonal_order, transform):
  """SARIMA forecasts ``[o, H]`` fitted on the training split, or None without statsmodels.

  The fitted parameters are kept; for each origin the model is filtered over ``values[: t + 1]``.
  """
  try:
    from statsmodels.tsa.statespace.sarimax import SARIMAX  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  scaler = windows.Scaler(0.0, 1.0, transform)  # only the transform: SARIMA fits its own level
  y = scaler.transform(values)
  fit = SARIMAX(y[:splits.train_end], order=order, seasonal_order=seasonal_order).fit(disp=False)
  out = np.empty((len(origin_idx), horizon))
  for i, t in enumerate(origin_idx):
    out[i] = fit.apply(y[:t + 1]).forecast(horizon)
  return scaler.inverse(out)


def mase_scale(train_values: np.ndarray, season: int) -> float:
  """MASE's denominator: the in-sample seasonal-naive MAE, ``mean |y[t] - y[t - season]|`` (train)."""
  train_values = np.asarray(train_values, np.float64)
  if len(train_values) <= season:
    raise ValueError(f"MASE needs more than one season ({season}) of training values, got "
                     f"{len(train_values)}")
  return float(np.mean(np.abs(train_values[season:] - train_values[:-season])))


def by_horizon(forecast: np.ndarray, actual: np.ndarray, scale: float) -> dict[str, np.ndarray]:
  """``{"mae", "rmse", "mase"}: [H]`` over the origins whose target exists (actual not NaN)."""
  err = np.asarray(forecast, np.float64) - actual
  valid = ~np.isnan(actual)
  count = np.maximum(valid.sum(axis=0), 1)
  abs_err = np.where(valid, np.abs(err), 0.0)
  mae = abs_err.sum(axis=0) / count
  rmse = np.sqrt(np.where(valid, err ** 2, 0.0).sum(axis=0) / count)
  return {"mae": mae, "rmse": rmse, "mase": mae / scale}
