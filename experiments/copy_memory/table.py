"""Cells x lags in one command: cross-entropy against the baseline, and the learning curves.

  python -m experiments.copy_memory.table --workdir runs/copy-table --cells lstm,gru --lags 100 \\
      [-- --config.num_steps=1500]

Every (cell, T) trains in ``<workdir>/<cell>-t<T>`` through the shared runtime (a rerun resumes
or reuses it); then ``<workdir>`` gets ``results.json`` (every run's summary, wall time and the
hardware), ``table.md`` and ``learning_curves.png`` (one panel per lag).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from experiments.copy_memory import config as config_lib
from experiments.copy_memory import experiment
from seqjax import train
from seqjax.train import workdir as workdir_lib


def _override(config, text: str) -> None:
  """``--config.key=value`` on a ConfigDict, the value parsed as its field's type."""
  key, value = text[len("--config."):].split("=", 1)
  kind = type(config[key])
  config[key] = (value.lower() in ("1", "true")) if kind is bool else kind(value)


def markdown(rows: list[dict]) -> str:
  lines = ["| cell | T | steps | eval cross-entropy (best) | baseline 10 ln 8 / (T + 20) | "
           "recall accuracy | first eval below the baseline | wall time |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    below = r["first_step_below_baseline"]
    lines.append(f"| {r['cell']} | {r['lag']} | {r['step']:,} | {r['final_eval_loss']:.4f} "
                 f"({r['best_eval_loss']:.4f}) | {r['baseline_cross_entropy']:.4f} | "
                 f"{r['final_recall_accuracy']:.3f} | "
                 f"{f'step {below:,}' if below else 'not within the run'} | "
                 f"{r['wall_seconds'] / 60:.1f} min |")
  return "\n".join(lines) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--cells", default="lstm,gru")
  parser.add_argument("--lags", default="100")
  parser.add_argument("extra", nargs="*", help="after --: --config.key=value for every run")
  args = parser.parse_args(argv)
  os.makedirs(args.workdir, exist_ok=True)
  rows, histories = [], {}
  for lag in (int(t) for t in args.lags.split(",")):
    for cell in args.cells.split(","):
      config = config_lib.get_config(f"t{lag}")
      config.cell = cell
      for text in args.extra:
        _override(config, text)
      run_dir = os.path.join(args.workdir, f"{cell}-t{lag}")
      start = time.time()
      result = train.run(experiment.make_experiment(config, run_dir), config, run_dir)
      # The training's wall time, kept with the run so a rerun that only reuses it keeps it.
      wall_path = os.path.join(run_dir, "wall_seconds.json")
      if not os.path.exists(wall_path):
        with open(wall_path, "w") as f:
          json.dump(round(time.time() - start, 1), f)
      with open(wall_path) as f:
        result["wall_seconds"] = json.load(f)
      rows.append(result)
      histories.setdefault(lag, {})[cell] = workdir_lib.read_metrics(run_dir)
  for lag, runs in histories.items():
    experiment.curves(args.workdir, runs, experiment.baseline_cross_entropy(lag), lag,
                      name=f"learning_curves_t{lag}.png")
  with open(os.path.join(args.workdir, "results.json"), "w") as f:
    json.dump({"hardware": workdir_lib.cpu_name(), "date": time.strftime("%Y-%m-%d"),
               "runs": rows}, f, indent=1)
  with open(os.path.join(args.workdir, "table.md"), "w") as f:
    f.write(markdown(rows))
  print(markdown(rows))


if __name__ == "__main__":
  main()
