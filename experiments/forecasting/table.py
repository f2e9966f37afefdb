"""The whole table in one command: the three series trained and scored one after another.

  python -m experiments.forecasting.table --workdir runs/forecasting [--data_dir DIR] [--cell gru]

Each series runs in ``<workdir>/<series>`` through the shared runtime (rerunning resumes or reuses
it); then ``<workdir>`` gets ``results.json`` (every series' summary, the hardware and the times),
``table.md`` (test MASE, MAE and RMSE at horizon 1, the season and the largest horizon) and each
series' plots as ``<series>_forecast.png`` and ``<series>_error_by_horizon.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import jax

from experiments.forecasting import config as config_lib
from experiments.forecasting import experiment
from seqjax import train
from seqjax.train import workdir as workdir_lib

METHODS = ("recursive", "direct", "persistence", "seasonal_naive", "ar", "sarima")
_NAMES = {"recursive": "{cell}, recursive", "direct": "{cell}, direct head",
          "persistence": "persistence", "seasonal_naive": "seasonal-naive",
          "ar": "linear AR({order})", "sarima": "SARIMA{sarima}"}



def markdown(summaries: dict) -> str:
  """One table: a row per series and method, MASE / MAE / RMSE at the reported horizons."""
  lines = ["| series | method | horizons | MASE | MAE | RMSE |", "|---|---|---|---|---|---|"]
  for series, s in summaries.items():
    hs = [str(h) for h in s["horizons"]]
    for method in METHODS:
      if method not in s["table"]:
        continue
      row = s["table"][method]
      name = _NAMES[method].format(cell=s["cell"].upper(), order=s["ar_order"],
                                   sarima=s.get("sarima_orders", ""))
      fmt = lambda metric: " / ".join(f"{row[metric][h]:.3f}" for h in hs)
      lines.append(f"| {series} | {name} | {' / '.join(hs)} | {fmt('mase')} | {fmt('mae')} | "
                   f"{fmt('rmse')} |")
  return "\n".join(lines) + "\n"


def run_all(workdir: str, data_dir: str = "", cell: str = "lstm", variants=None,
            overrides: dict | None = None) -> dict:
  """Trains every series of ``variants`` (default: the three) and writes the combined outputs."""
  os.makedirs(workdir, exist_ok=True)
  summaries, seconds = {}, {}
  for variant in variants or config_lib.SERIES:
    config = config_lib.get_config(variant)
    config.data_dir = data_dir
    config.cell = cell
    config.tfds_dir = os.path.join(workdir, "tfds")
    for key, value in (overrides or {}).items():
      setattr(config, key, value)
    run_dir = os.path.join(workdir, config.series)
    start = time.time()
    result = train.run(experiment.make_experiment(config, run_dir), config, run_dir)
    seconds[config.series] = round(time.time() - start, 1)
    result["ar_order"] = config.ar_order
    result["sarima_orders"] = "".join(f"({o})" for o in (config.sarima_order,
                                                         config.sarima_seasonal_order) if o)
    summaries[config.series] = result
    for plot in ("forecast", "error_by_horizon"):
      src = os.path.join(run_dir, f"{plot}.png")
      if os.path.exists(src):
        shutil.copy(src, os.path.join(workdir, f"{config.series}_{plot}.png"))
  combined = {"hardware": workdir_lib.cpu_name(), "devices": [str(d) for d in jax.devices()],
              "seconds": seconds, "total_seconds": round(sum(seconds.values()), 1),
              "series": summaries}
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(combined, f, indent=1, sort_keys=True)
  with open(os.path.join(workdir, "table.md"), "w") as f:
    f.write(markdown(summaries))
  return combined


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--data_dir", default="", help="folder with the three CSV files; "
                      "empty downloads them")
  parser.add_argument("--cell", default="lstm")
  args = parser.parse_args()
  try:
    combined = run_all(args.workdir, args.data_dir, args.cell)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  print(markdown(combined["series"]))
  print(f"{combined['total_seconds']} s on {combined['hardware']}")


if __name__ == "__main__":
  main()
