"""One series: windows shifted by one step, an LSTM/GRU regressor, recursive and direct forecasts.

Training draws random windows of ``l`` consecutive values from the training split; the targets are
the inputs shifted one step into the future (and, for the direct head, the next ``H`` values of
every position). The forecasts of the test split start at every origin ``t`` from the context
``values[t - l + 1 .. t]`` only; persistence, seasonal-naive, a linear AR (and SARIMA when
statsmodels is installed) forecast the same origins. RMSE, MAE and MASE by horizon go to
``results.json``; ``forecast.png`` and ``error_by_horizon.png`` to the workdir.

  python -m experiments.forecasting --workdir runs/forecast-airline [--config ...:sunspots]
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments.forecasting import metrics
from experiments.forecasting import model
from experiments.forecasting import plots
from experiments.forecasting import timeseries
from experiments.forecasting import windows
from seqjax import train

_TRAIN_STREAM, _INTERVAL_STREAM = 0, 1


def load_series(config, workdir: str):
  """``(times, values [n])`` of ``config.series`` from ``config.data_dir`` or the download."""
  if config.series not in timeseries.SERIES:
    raise ValueError(f"config.series must be one of {', '.join(timeseries.SERIES)}, got "
                     f"{config.series!r}")
  if config.data_dir and not os.path.isdir(config.data_dir):
    raise ValueError(f"config.data_dir={config.data_dir!r} is not a folder (leave it empty to "
                     "download the series)")
  data = timeseries.load(config.tfds_dir or os.path.join(workdir, "tfds"), config.data_dir or None)
  return data[config.series]


def _orders(text: str):
  return tuple(int(v) for v in text.split(",")) if text else None


@dataclasses.dataclass
class Forecaster:
  """Everything fitted on the training split: scaler, AR coefficients, MASE scale; and the model."""
  config: object
  spec: model.Spec
  splits: windows.Splits
  scaler: windows.Scaler
  ar_coef: np.ndarray
  scale: float

  @classmethod
  def fit(cls, config, values: np.ndarray) -> "Forecaster":
    splits = windows.make_splits(len(values), config.val_size, config.test_size)
    train_len = splits.train_end
    if config.window + config.max_horizon > train_len:
      raise ValueError(f"config.window={config.window} plus config.max_horizon="
                       f"{config.max_horizon} is longer than the training split ({train_len} "
                       f"values of {config.series})")
    if config.ar_order > train_len - 1 or config.ar_order < 1:
      raise ValueError(f"config.ar_order={config.ar_order} must be in [1, {train_len - 1}]")
    scaler = windows.fit_scaler(values, splits, config.transform)
    season = config.season if config.phase_input else 0
    if not (config.level_input or config.difference_input):
      raise ValueError("config.level_input and config.difference_input are both False; the "
                       "model needs one of them")
    spec = model.Spec(config.cell, config.hidden_size, config.max_horizon, season, config.gaussian,
                      config.level_input, config.difference_input)
    z_train = scaler.transform(values[:train_len])
    coef = metrics.fit_ar(z_train, config.ar_order, season or None)
    return cls(config, spec, splits, scaler, coef, metrics.mase_scale(values[:train_len],
                                                                      config.season))

  def origins(self, split: str) -> np.ndarray:
    need = max(self.config.window, self.config.ar_order, self.config.season)
    return windows.origins(self.splits, split, need)

  def forecasts(self, params, values: np.ndarray, origin_idx: np.ndarray,
                baselines: bool = True) -> dict:
    """``{method: [o, H]}`` in the series' units; origin ``t`` reads ``values[: t + 1]`` only.

    ``baselines=False``: the model's two forecasts alone (the periodic validation).
    """
    cfg, h = self.config, self.config.max_horizon
    z = self.scaler.transform(values)
    ctx, times = model.origin_inputs(z, origin_idx, cfg.window)
    out = {
        "recursive": self.scaler.inverse(np.asarray(_recursive(self.spec, params, ctx, times, h))),
        "direct": self.scaler.inverse(np.asarray(_direct(self.spec, params, ctx, times)[0])),
    }
    if not baselines:
      return out
    out.update({
        "persistence": metrics.persistence(values, origin_idx, h),
        "seasonal_naive": metrics.seasonal_naive(values, origin_idx, h, cfg.season),
        "ar": self.scaler.inverse(metrics.ar_forecast(
            self.ar_coef, z, origin_idx, cfg.ar_order, self.spec.season or None, h)),
    })
    if cfg.sarima_order:
      sarima = metrics.sarima_forecast(values, self.splits, origin_idx, h,
                                       _orders(cfg.sarima_order),
                                       _orders(cfg.sarima_seasonal_order) or (0, 0, 0, 0),
                                       cfg.transform)
      if sarima is not None:
        out["sarima"] = sarima
    return out

  def score(self, params, values: np.ndarray, split: str, baselines: bool = True) -> dict:
    """``{method: {"mae"|"rmse"|"mase": [H]}}`` on the origins of ``split``."""
    origin_idx = self.origins(split)
    actual = windows.actuals(values, origin_idx, self.config.max_horizon,
                             self.splits.bounds(split)[1])
    return {name: metrics.by_horizon(f, actual, self.scale)
            for name, f in self.forecasts(params, values, origin_idx, baselines).items()}


_recursive = jax.jit(model.forecast_recursive, static_argnums=(0, 4))
_direct = jax.jit(model.forecast_direct, static_argnums=(0,))


def report_horizons(config) -> list[int]:
  """The table's horizons: 1, the season and the largest (when they fit in ``max_horizon``)."""
  return sorted({h for h in (1, config.season, config.max_horizon) if h <= config.max_horizon})


def make_experiment(config, workdir: str) -> train.Experiment:
  """One series as a :class:`seqjax.train.Experiment` (``workdir`` holds the tfds files)."""
  if config.hidden_size <= 0:
    raise ValueError(f"config.hidden_size must be > 0, got {config.hidden_size}")
  if config.window < 1 or config.max_horizon < 1 or config.season < 1:
    raise ValueError("config.window, config.max_horizon and config.season must be >= 1")
  times, values = load_series(config, workdir)
  fc = Forecaster.fit(config, values)
  spec, splits = fc.spec, fc.splits
  z_train = fc.scaler.transform(values[:splits.train_end]).astype(np.float32)
  n_starts = splits.train_end - config.window - config.max_horizon + 1

  def get_batch(step, shard_index, num_shards):
    rng = np.random.default_rng([config.seed, _TRAIN_STREAM, step])
    starts = rng.integers(0, n_starts, size=config.batch_size)
    xs, ys, direct = windows.shifted_windows(z_train, config.window, config.max_horizon, starts)
    pos = starts[:, None] + np.arange(config.window)[None, :]
    per = config.batch_size // num_shards
    keep = slice(shard_index * per, (shard_index + 1) * per)
    return {"z": xs[keep], "times": pos[keep].astype(np.int32), "next": ys[keep],
            "ahead": direct[keep]}

  def loss_fn(params, batch, rng):  # pylint: disable=unused-argument
    (m1, lv1), (mh, lvh), _ = model.apply(spec, params, batch["z"], batch["times"])
    one = model.nll(m1, lv1, batch["next"], spec.gaussian)
    ahead = model.nll(mh, lvh, batch["ahead"], spec.gaussian)
    one_share = jnp.sum(one) / train.global_sum(jnp.float32(one.size))
    ahead_share = jnp.sum(ahead) / train.global_sum(jnp.float32(ahead.size))
    mse = jnp.sum((m1 - batch["next"]) ** 2) / train.global_sum(jnp.float32(one.size))
    return one_share + config.direct_weight * ahead_share, {"one_step_mse": mse}

  test_mase = {}  # filled by results(), read by plot(): SARIMA's refits are slow

  def init(rng):
    return model.init(rng, spec)

  def evaluate(params, step):  # pylint: disable=unused-argument
    scores = fc.score(params, values, "validation", baselines=False)
    return {f"eval/mase_h1_{name}": float(scores[name]["mase"][0])
            for name in ("recursive", "direct")}

  def results(params, history):  # pylint: disable=unused-argument
    scores = fc.score(params, values, "test")
    test_mase.update({name: s["mase"] for name, s in scores.items()})
    horizons = report_horizons(config)
    table = {name: {metric: {str(h): float(v[h - 1]) for h in horizons}
                    for metric, v in s.items()} for name, s in scores.items()}
    beats = {}
    for name in ("recursive", "direct"):
      beats[name] = all(table[name]["mase"][str(h)] < table[base]["mase"][str(h)]
                        for h in sorted({1, config.season}) if h <= config.max_horizon
                        for base in ("persistence", "seasonal_naive"))
    coverage = _direct_coverage(params)
    b = splits
    return {"series": config.series, "cell": config.cell, "season": config.season,
            "splits": {"train": [times[0], times[b.train_end - 1], b.train_end],
                       "validation": [times[b.train_end], times[b.val_end - 1],
                                      b.val_end - b.train_end],
                       "test": [times[b.val_end], times[-1], b.n - b.val_end]},
            "test_origins": int(len(fc.origins("test"))), "mase_scale": fc.scale,
            "horizons": horizons, "table": table,
            "mase_by_horizon": {name: [float(v) for v in s["mase"]] for name, s in scores.items()},
            "beats_baselines": beats, "direct_interval95_coverage": coverage,
            "sarima": "fitted" if "sarima" in scores else
                      ("off" if not config.sarima_order else "skipped: statsmodels not installed")}

  def _direct_coverage(params):
    if not spec.gaussian:
      return None
    origin_idx = fc.origins("test")
    z = fc.scaler.transform(values)
    ctx, pos = model.origin_inputs(z, origin_idx, config.window)
    mean, var = (np.asarray(a) for a in _direct(spec, params, ctx, pos))
    actual = fc.scaler.transform(windows.actuals(values, origin_idx, config.max_horizon, splits.n))
    valid = ~np.isnan(actual)
    inside = np.abs(np.where(valid, actual, 0) - mean) <= 1.96 * np.sqrt(var)
    return float(np.sum(inside & valid) / np.sum(valid))

  def plot(workdir, params, history):  # pylint: disable=unused-argument
    # The test scores of results() (which runs first); computed afresh only if it did not run.
    mase = test_mase or {name: s["mase"] for name, s in fc.score(params, values, "test").items()}
    origin = fc.origins("test")[:1]
    z = fc.scaler.transform(values)
    ctx, pos = model.origin_inputs(z, origin, config.window)
    h = min(config.max_horizon, splits.n - 1 - int(origin[0]))
    direct_mean, direct_var = (np.asarray(a)[0, :h] for a in _direct(spec, params, ctx, pos))
    reps = config.interval_samples
    paths = _recursive(spec, params, np.repeat(ctx, reps, 0), np.repeat(pos, reps, 0),
                       config.max_horizon, jax.random.PRNGKey(_INTERVAL_STREAM))
    paths = np.asarray(paths)[:, :h]
    mean = np.asarray(_recursive(spec, params, ctx, pos, config.max_horizon))[0, :h]
    bands = {"recursive": (fc.scaler.inverse(mean),
                           fc.scaler.inverse(np.quantile(paths, 0.025, axis=0)),
                           fc.scaler.inverse(np.quantile(paths, 0.975, axis=0))),
             "direct": (fc.scaler.inverse(direct_mean),
                        fc.scaler.inverse(direct_mean - 1.96 * np.sqrt(direct_var)),
                        fc.scaler.inverse(direct_mean + 1.96 * np.sqrt(direct_var)))}
    plots.forecast(os.path.join(workdir, "forecast.png"), values, int(origin[0]), bands,
                   spec.gaussian, f"{config.series}: {config.cell} forecasts from the test origin")
    plots.error_by_horizon(os.path.join(workdir, "error_by_horizon.png"),
                           mase, config.season,
                           f"{config.series}: test MASE by horizon")

  return train.Experiment(init=init, loss_fn=loss_fn, get_batch=get_batch, evaluate=evaluate,
                          results=results, plot=plot, loss_reduction="global")
