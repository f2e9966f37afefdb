"""experiments/forecasting: shifted windows, no leakage, training-only scaling, MASE, recursive and
direct forecasts against a hand-built linear model, the smoke variant end to end, bad input."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.forecasting import config as forecasting_config
from experiments.forecasting import experiment
from experiments.forecasting import metrics
from experiments.forecasting import model
from experiments.forecasting import timeseries
from experiments.forecasting import windows
from seqjax import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(REPO, "..", "shared", "data", "timeseries")


def _airline_like(n=144, seed=0):
  """A positive monthly series with trend and season (the shared file's shape when it is absent)."""
  t = np.arange(n)
  noise = np.random.default_rng(seed).normal(0, 3, n)
  return np.round(120 * 1.01 ** t * (1 + 0.15 * np.sin(2 * np.pi * t / 12)) + noise, 1)


def _write_csv(path, header, values, start=1949):
  rows = [header] + [f'"{start + i // 12}-{i % 12 + 1:02d}",{v}' for i, v in enumerate(values)]
  with open(path, "w", newline="") as f:
    f.write("\r\n".join(rows))  # CRLF, no trailing newline, as the official files


def _folder(tmp_path):
  """A data_dir: the shared airline file when there is one, short synthetic other series."""
  shared = os.path.join(SHARED, timeseries.SERIES["airline"])
  if os.path.exists(shared):
    with open(shared, newline="") as f, open(tmp_path / "airline-passengers.csv", "w",
                                              newline="") as g:
      g.write(f.read())
  else:
    _write_csv(tmp_path / "airline-passengers.csv", '"Month","Passengers"', _airline_like())
  for split, header in (("sunspots", '"Month","Sunspots"'), ("temperatures", '"Date","Temp"')):
    _write_csv(tmp_path / timeseries.SERIES[split], header, _airline_like(40, seed=1))
  return str(tmp_path)


def test_windows_and_targets_shifted_by_one_step():
  series = np.arange(10.0) * 10  # 0, 10, ..., 90
  inputs, targets, direct = windows.shifted_windows(series, 3, 2)
  assert inputs.shape == (6, 3) and targets.shape == (6, 3) and direct.shape == (6, 3, 2)
  np.testing.assert_array_equal(inputs[0], [0, 10, 20])
  np.testing.assert_array_equal(targets[0], [10, 20, 30])
  np.testing.assert_array_equal(direct[0], [[10, 20], [20, 30], [30, 40]])
  np.testing.assert_array_equal(inputs[-1], [50, 60, 70])
  np.testing.assert_array_equal(direct[-1, -1], [80, 90])  # the last window ends at the series' end
  np.testing.assert_array_equal(targets[:, :-1], inputs[:, 1:])


def _forecaster(values):
  config = forecasting_config.get_config("smoke")
  return experiment.Forecaster.fit(config, values), config


def test_no_test_forecast_reads_a_value_after_its_origin():
  values = _airline_like()
  fc, _ = _forecaster(values)
  params = model.init(np.asarray([0, 1], np.uint32), fc.spec)
  origin_idx = fc.origins("test")
  assert origin_idx[0] + 1 == fc.splits.val_end and origin_idx[-1] == len(values) - 2
  full = fc.forecasts(params, values, origin_idx)
  for i in (0, len(origin_idx) // 2, len(origin_idx) - 1):
    t = origin_idx[i]
    cut = values.copy()
    cut[t + 1:] = np.nan  # any read of the future turns a forecast into NaN
    alone = fc.forecasts(params, cut, origin_idx[i:i + 1])
    for name, forecast in alone.items():
      assert np.isfinite(forecast).all(), (name, t)
      np.testing.assert_allclose(forecast[0], full[name][i], rtol=1e-5, err_msg=name)


def test_scaling_uses_training_statistics_only():
  values = _airline_like()
  fc, _ = _forecaster(values)
  train_log = np.log(values[:fc.splits.train_end])
  assert fc.scaler.mean == pytest.approx(np.mean(train_log))
  assert fc.scaler.std == pytest.approx(np.std(train_log))
  changed = values.copy()
  changed[fc.splits.train_end:] *= 10  # validation and test values never move the scaler
  assert _forecaster(changed)[0].scaler == fc.scaler
  np.testing.assert_allclose(fc.scaler.inverse(fc.scaler.transform(values)), values)


def test_mase_against_its_formula():
  train_values = np.array([1.0, 2.0, 4.0, 7.0, 11.0])
  assert metrics.mase_scale(train_values, 1) == 2.5  # mean(1, 2, 3, 4)
  assert metrics.mase_scale(train_values, 2) == 5.0  # mean(|4-1|, |7-2|, |11-4|)
  forecast = np.array([[3.0, 5.0], [4.0, 0.0]])
  actual = np.array([[1.0, 2.0], [2.0, np.nan]])  # the second origin has no horizon-2 target
  scores = metrics.by_horizon(forecast, actual, 2.5)
  np.testing.assert_allclose(scores["mae"], [2.0, 3.0])
  np.testing.assert_allclose(scores["rmse"], [2.0, 3.0])
  np.testing.assert_allclose(scores["mase"], [0.8, 1.2])
  # Seasonal-naive repeats the last full season; persistence the last value.
  series = np.arange(8.0)
  np.testing.assert_array_equal(metrics.seasonal_naive(series, np.array([5]), 5, 3),
                                [[3, 4, 5, 3, 4]])
  np.testing.assert_array_equal(metrics.persistence(series, np.array([5]), 2), [[5, 5]])


def test_recursive_and_direct_forecasts_agree_with_a_linear_model():
  # Given a model that is z[t + 1] = a z[t]: an IRNN with one unit copies x (ReLU of a positive
  # value), the one-step head adds (a - 1) h and the direct head (a^k - 1) h for step k.
  a, horizon = 0.8, 5
  spec = model.Spec("irnn", 1, horizon)
  powers = a ** np.arange(1, horizon + 1)
  params = {"cell": {"w_ih": jnp.ones((1, 1)), "w_hh": jnp.zeros((1, 1)),
                     "b_ih": jnp.zeros(1), "b_hh": jnp.zeros(1)},
            "step": {"w": jnp.array([[a - 1, 0.0]]), "b": jnp.zeros(2)},
            "direct": {"w": jnp.concatenate([powers - 1, np.zeros(horizon)])[None, :]
                            .astype(np.float32), "b": jnp.zeros(2 * horizon)}}
  z = np.array([[0.5, 1.0, 2.0], [1.0, 3.0, 0.25]], np.float32)
  times = np.tile(np.arange(3), (2, 1))
  expected = z[:, -1:] * powers[None, :]
  recursive = model.forecast_recursive(spec, params, z, times, horizon)
  direct_mean, direct_var = model.forecast_direct(spec, params, z, times)
  np.testing.assert_allclose(recursive, expected, rtol=1e-5)
  np.testing.assert_allclose(direct_mean, expected, rtol=1e-5)
  np.testing.assert_allclose(direct_var, 1.0)  # logvar 0: the untrained variance
  # The AR baseline with the same coefficient forecasts the same numbers.
  ar = metrics.ar_forecast(np.array([0.0, a]), np.array([0.5, 1.0, 2.0]), np.array([2]), 1, None,
                           horizon)
  np.testing.assert_allclose(ar, expected[:1], rtol=1e-6)


def test_recursive_forecast_is_the_one_step_model_fed_its_own_predictions():
  # Given an LSTM reading value, change and season phase, the k-th recursive forecast equals the
  # many-to-many one-step mean over the context extended by the first k - 1 forecasts.
  spec = model.Spec("lstm", 4, 3, season=12, level=True, difference=True)
  params = model.init(np.asarray([0, 3], np.uint32), spec)
  z = np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32)
  times = np.tile(np.arange(10, 16), (2, 1))
  recursive = np.asarray(model.forecast_recursive(spec, params, z, times, 4))
  extended = np.concatenate([z, recursive[:, :3]], axis=1)
  (mean, _), _, _ = model.apply(spec, params, extended, np.tile(np.arange(10, 19), (2, 1)))
  np.testing.assert_allclose(recursive, np.asarray(mean)[:, 5:], rtol=1e-5, atol=1e-6)


def test_smoke_variant_end_to_end(tmp_path):
  config = forecasting_config.get_config("smoke")
  (tmp_path / "data").mkdir()
  config.data_dir = _folder(tmp_path / "data")
  workdir = str(tmp_path / "run")
  result = train.run(experiment.make_experiment(config, workdir), config, workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["table"] == result["table"]
  assert result["step"] == 20 and result["horizons"] == [1, 12, 13]
  assert result["splits"]["test"][2] == 36 and result["test_origins"] == 36
  # The persistence row, recomputed from the raw file: test MAE over the in-sample seasonal MAE.
  _, values = timeseries.read_series(os.path.join(config.data_dir, "airline-passengers.csv"))
  y_train, y = values[:96], values
  scale = np.mean(np.abs(y_train[12:] - y_train[:-12]))
  mae_1 = np.mean(np.abs(y[108:144] - y[107:143]))
  assert result["table"]["persistence"]["mase"]["1"] == pytest.approx(mae_1 / scale)
  assert result["sarima"] == "off"
  for name in ("recursive", "direct", "ar", "seasonal_naive"):
    assert np.isfinite(result["mase_by_horizon"][name]).all() and len(
        result["mase_by_horizon"][name]) == 13
  losses = [r["train/loss"] for r in train.read_metrics(workdir) if r["split"] == "train"]
  assert losses[-1] < losses[0]
  for png in ("forecast.png", "error_by_horizon.png"):
    assert os.path.getsize(os.path.join(workdir, png)) > 1000


@pytest.mark.parametrize("cell,message", [("", "value '' is not a number"),
                                          ("12O", "value '12O' is not a number")])
def test_missing_or_non_numeric_value_names_its_row(tmp_path, cell, message):
  folder = tmp_path / "data"
  folder.mkdir()
  _folder(folder)
  path = folder / "airline-passengers.csv"
  lines = path.read_text().split("\n")
  lines[5] = f'"1949-05",{cell}\r'  # line 6 of the file (header = line 1)
  path.write_text("\n".join(lines))
  config = forecasting_config.get_config("smoke")
  config.data_dir = str(folder)
  with pytest.raises(ValueError, match=f"^airline-passengers.csv:6: {message}") as err:
    experiment.load_series(config, str(tmp_path / "run"))
  assert "\n" not in str(err.value)


def test_window_longer_than_the_training_split_says_so():
  config = forecasting_config.get_config("smoke")
  config.window = 90  # + 13 ahead > the 96 training values
  with pytest.raises(ValueError, match=r"config.window=90 .* longer than the training split "
                                       r"\(96 values"):
    experiment.Forecaster.fit(config, _airline_like())
  with pytest.raises(ValueError, match="needs 103 values, but the training split has only 96"):
    windows.shifted_windows(np.zeros(96), 90, 13)
