"""Cells x lengths in one command: steps to 10% of the baseline MSE, and the learning curves.

  python -m experiments.adding.table --workdir runs/adding-table \\
      --cells lstm,gru,rnn,irnn,irnn_sgd --lengths 150,400 --max_steps 6000

Every (cell, T) trains in ``<workdir>/<cell>-t<T>`` through ``python -m experiments.adding``
(a rerun resumes or reuses it). A run stops as soon as its eval MSE is below 10% of the
predict-the-mean baseline (the runtime checkpoints on SIGTERM; the run is then closed at that
step, which writes its ``results.json`` and ``mse.png``), else at ``--max_steps``. Cells:
``lstm``, ``gru``, ``rnn`` (tanh), ``irnn`` with the default training (Adam 1e-3, clipping 1,
batch 50), and ``irnn_sgd``: Le et al.'s setting (config variant ``irnn``). Then ``<workdir>`` gets
``results.json`` (every run's summary, wall time and the hardware), ``table.md`` and
``learning_curves.png`` (eval MSE over the baseline against the step, a panel per T).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from experiments.adding import config as config_lib
from experiments.adding import experiment
from seqjax.train import workdir as workdir_lib

_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.py")
# A table cell name -> (config variant prefix, extra overrides; "{seq_len}" is the run's T).
CELLS = {"lstm": ("", ["--config.cell=lstm"]), "gru": ("", ["--config.cell=gru"]),
         "rnn": ("", ["--config.cell=rnn"]), "irnn": ("", ["--config.cell=irnn"]),
         "irnn_sgd": ("irnn-", []),
         # The LSTM with chrono-initialised gate biases for lags up to T.
         "lstm_chrono": ("", ["--config.cell=lstm", "--config.chrono_t_max={seq_len}"])}
SOLVED = 0.1  # A run counts as solved below this fraction of the baseline MSE.



def baseline_mse(run_dir: str) -> float:
  """The run's eval set's predict-the-mean MSE: the variance of its targets (about 1/6)."""
  with open(os.path.join(run_dir, "config.json")) as f:
    config = json.load(f)
  _, ys = experiment.make_examples(np.random.default_rng([config["seed"], 1]),
                                   config["eval_size"], config["seq_len"])
  return float(np.var(ys))


def _evals(run_dir: str) -> list[tuple[int, float]]:
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  return [(r["step"], r["eval/mse"]) for r in records if r["split"] == "eval"]


def steps_to_solve(evals: list[tuple[int, float]], baseline: float) -> int | None:
  """The first eval step whose MSE is below ``SOLVED * baseline``; None if there is none."""
  return next((step for step, mse in evals if mse < SOLVED * baseline), None)


def train_one(run_dir: str, cell: str, seq_len: int, max_steps: int, extra: list[str],
              poll_s: float = 10.0) -> float:
  """Trains one (cell, T) until solved or ``max_steps``; returns the wall seconds spent."""
  variant, overrides = CELLS[cell]
  command = [sys.executable, "-m", "experiments.adding", f"--workdir={run_dir}",
             f"--config={_CONFIG}:{variant}t{seq_len}",
             *(o.format(seq_len=seq_len) for o in overrides), *extra]
  start = time.time()
  proc = subprocess.Popen(command + [f"--config.num_steps={max_steps}"])
  stopped_at = None
  while proc.poll() is None:
    time.sleep(poll_s)
    evals = _evals(run_dir)
    solved = steps_to_solve(evals, baseline_mse(run_dir)) if evals else None
    if solved is not None and stopped_at is None:
      stopped_at = solved
      proc.send_signal(signal.SIGTERM)  # checkpoints and stops (a later step than `solved`)
  proc.wait()
  if stopped_at is not None:  # Close the run where it stopped: results.json and the plot.
    last = max(step for step, _ in _evals(run_dir))
    subprocess.run(command + [f"--config.num_steps={last}", "--config.allow_config_change=true"],
                   check=True)
  elif proc.returncode:
    raise RuntimeError(f"{' '.join(command)} failed with exit status {proc.returncode}")
  return time.time() - start


def summarise(run_dir: str, cell: str, seq_len: int, max_steps: int, seconds: float | None):
  evals = _evals(run_dir)
  baseline = baseline_mse(run_dir)
  with open(os.path.join(run_dir, "config.json")) as f:
    config = json.load(f)
  return {"cell": cell, "seq_len": seq_len, "baseline_mse": baseline,
          "steps_to_10pct": steps_to_solve(evals, baseline), "max_steps": max_steps,
          "last_step": evals[-1][0] if evals else 0,
          "best_eval_mse": min((m for _, m in evals), default=float("nan")),
          "final_eval_mse": evals[-1][1] if evals else float("nan"), "evals": evals,
          "hidden_size": config["hidden_size"], "optimizer": config["optimizer"],
          "learning_rate": config["learning_rate"], "grad_clip_norm": config["grad_clip_norm"],
          "batch_size": config["batch_size"], "wall_seconds": seconds}


def markdown(rows: list[dict]) -> str:
  lines = ["| cell | T | training | steps to 10% of the baseline | best eval MSE | baseline | "
           "wall time |", "|---|---|---|---|---|---|---|"]
  for r in rows:
    solved = (f"{r['steps_to_10pct']:,}" if r["steps_to_10pct"] is not None
              else f"not within {r['last_step']:,} steps")
    training = (f"{r['hidden_size']} units, {r['optimizer']} {r['learning_rate']:g}, clip "
                f"{r['grad_clip_norm']:g}, batch {r['batch_size']}")
    wall = f"{r['wall_seconds'] / 60:.1f} min" if r["wall_seconds"] else "n/a"
    lines.append(f"| {r['cell']} | {r['seq_len']} | {training} | {solved} | "
                 f"{r['best_eval_mse']:.4f} | {r['baseline_mse']:.4f} | {wall} |")
  return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  lengths = sorted({r["seq_len"] for r in rows})
  fig, axes = plt.subplots(1, len(lengths), figsize=(5 * len(lengths), 4), squeeze=False,
                           sharey=True)
  for ax, seq_len in zip(axes[0], lengths):
    for r in (r for r in rows if r["seq_len"] == seq_len):
      steps, mses = zip(*r["evals"]) if r["evals"] else ((), ())
      ax.plot(steps, np.asarray(mses) / r["baseline_mse"], label=r["cell"])
    ax.axhline(1.0, color="gray", linestyle="--", label="predict the mean")
    ax.axhline(SOLVED, color="gray", linestyle=":", label="10% of it")
    ax.set(xlabel="step", yscale="log", title=f"adding problem, T = {seq_len}")
    ax.legend(fontsize=8)
  axes[0][0].set_ylabel("eval MSE / baseline MSE")
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--cells", default="lstm,gru,rnn,irnn,irnn_sgd")
  parser.add_argument("--lengths", default="150,400")
  parser.add_argument("--max_steps", type=int, default=6000, help="cap of every run")
  parser.add_argument("--only_table", action="store_true", help="summarise existing runs only")
  parser.add_argument("extra", nargs="*", help="after --: overrides for every run")
  args = parser.parse_args(argv)
  cells = args.cells.split(",")
  unknown = [c for c in cells if c not in CELLS]
  if unknown:
    parser.error(f"unknown cell(s) {unknown}; known: {', '.join(CELLS)}")
  lengths = [int(t) for t in args.lengths.split(",")]
  config_lib.get_config(f"t{lengths[0]}")  # validates the variant names early
  os.makedirs(args.workdir, exist_ok=True)
  summary_path = os.path.join(args.workdir, "results.json")
  previous = {}
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      previous = {(r["cell"], r["seq_len"]): r for r in json.load(f)["runs"]}
  rows = []
  for seq_len in lengths:
    for cell in cells:
      run_dir = os.path.join(args.workdir, f"{cell}-t{seq_len}")
      seconds = previous.get((cell, seq_len), {}).get("wall_seconds")
      if not args.only_table and not os.path.exists(os.path.join(run_dir, "results.json")):
        seconds = train_one(run_dir, cell, seq_len, args.max_steps, args.extra)
      if os.path.exists(os.path.join(run_dir, "config.json")):
        rows.append(summarise(run_dir, cell, seq_len, args.max_steps, seconds))
        previous[(cell, seq_len)] = rows[-1]
      # Runs of other invocations sharing the workdir stay in the summary (reread: another
      # invocation may have written since this one started).
      if os.path.exists(summary_path):
        with open(summary_path) as f:
          previous = {**{(r["cell"], r["seq_len"]): r for r in json.load(f)["runs"]},
                      **{(r["cell"], r["seq_len"]): r for r in rows}}
      with open(summary_path, "w") as f:
        json.dump({"hardware": workdir_lib.cpu_name(), "date": time.strftime("%Y-%m-%d"),
                   "runs": list(previous.values())}, f, indent=1)
  with open(os.path.join(args.workdir, "table.md"), "w") as f:
    f.write(markdown(rows))
  plot(rows, os.path.join(args.workdir, "learning_curves.png"))
  print(markdown(rows))


if __name__ == "__main__":
  main()
