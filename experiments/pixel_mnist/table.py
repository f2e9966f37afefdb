"""Gathers finished pixel-MNIST runs into one table, one results.json and one learning-curve plot.

  python -m experiments.pixel_mnist.table --out experiments/pixel_mnist/results/cpu-2026-12-03 \\
      runs/pm-lstm runs/pm-gru runs/pm-irnn runs/pm-rnn runs/pm-permuted_lstm

Each run is a workdir of ``python -m experiments.pixel_mnist`` (its results.json, config.json and
metrics.jsonl); a ``<workdir>.log`` beside it with ``start ... <unix seconds>`` and
``end rc=... <unix seconds>`` lines gives the wall time of the command. Writes ``table.md``,
``results.json`` (the runs' summaries and the published figures) and ``curves.png``.
"""

from __future__ import annotations

import argparse
import json
import os

from experiments.pixel_mnist import curves
from seqjax import train

# Published test accuracies on the full data (60,000 training / 10,000 test images), percent.
PUBLISHED = {
    ("rnn", False): (35.0, "Le et al. 2015 (tanh RNN, 100 units)"),
    ("irnn", False): (97.0, "Le et al. 2015 (100 units)"),
    ("lstm", False): (98.2, "Arjovsky et al. 2016 (128 units)"),
    ("gru", False): (96.2, "Bai et al. 2018, TCN paper (recalled, not checked)"),
    ("irnn", True): (82.0, "Le et al. 2015"),
    ("rnn", True): (35.0, "Le et al. 2015"),
    ("gru", True): (87.3, "Bai et al. 2018, TCN paper (recalled, not checked)"),
    ("lstm", True): (88.0, "Arjovsky et al. 2016"),
}


def _wall_seconds(workdir: str) -> float | None:
  """Seconds between the ``start`` and ``end`` lines of ``<workdir>.log``, if it has both."""
  try:
    with open(workdir.rstrip("/") + ".log", encoding="utf-8", errors="replace") as f:
      lines = [line.split() for line in f if line.startswith(("start ", "end "))]
  except OSError:
    return None
  start = [int(w[-1]) for w in lines if w[0] == "start"]
  end = [int(w[-1]) for w in lines if w[0] == "end"]
  return float(sum(end) - sum(start)) if start and len(start) == len(end) else None


def summarise(workdir: str) -> dict:
  """One row: the run's results.json plus its config, wall time and the published figure."""
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    result = json.load(f)
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    config = json.load(f)
  published = PUBLISHED.get((result["cell"], result["permuted"]))
  return {"run": os.path.basename(workdir.rstrip("/")), **{k: result[k] for k in (
      "cell", "hidden_size", "permuted", "data", "train_images", "heldout_images",
      "final_accuracy", "best_accuracy", "best_step", "train_seconds")},
          "steps": result["step"], "epochs": result["step"] * config["batch_size"]
          / result["train_images"], "optimizer": config["optimizer"],
          "learning_rate": config["learning_rate"], "batch_size": config["batch_size"],
          "grad_clip_norm": config["grad_clip_norm"],
          "chrono_t_max": config.get("chrono_t_max", 0), "wall_seconds": _wall_seconds(workdir),
          "published_accuracy": published[0] if published else None,
          "published_source": published[1] if published else None}


def variant(row: dict) -> str:
  """The table's variant column: pixel order, and the chrono initialisation when used."""
  order = "permuted" if row["permuted"] else "row by row"
  return f"{order}, chrono init" if row.get("chrono_t_max") else order


def label(row: dict) -> str:
  """The run's name in the plot legend, e.g. ``permuted lstm`` or ``lstm (chrono)``."""
  name = ("permuted " if row["permuted"] else "") + row["cell"]
  return f"{name} (chrono)" if row.get("chrono_t_max") else name


def legend_names(rows: list[dict]) -> list[str]:
  """One legend name per row; when two rows share a label, every name also gets its workdir."""
  names = [label(r) for r in rows]
  if len(set(names)) < len(names):
    names = [f"{name} [{r['run']}]" for name, r in zip(names, rows)]
  return names


def markdown(rows: list[dict], hardware: str, date: str) -> str:
  """The README's table: one row per run."""
  out = ["| cell | variant | units | held-out accuracy (final / best) | steps (epochs) | "
         "train time | wall time | published (full data) |",
         "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    wall = f"{r['wall_seconds'] / 60:.0f} min" if r["wall_seconds"] else "n/a"
    published = (f"{r['published_accuracy']:.1f}% ({r['published_source']})"
                 if r["published_accuracy"] else "none found")
    out.append(f"| {r['cell']} | {variant(r)} | "
               f"{r['hidden_size']} | {100 * r['final_accuracy']:.1f}% / "
               f"{100 * r['best_accuracy']:.1f}% | {r['steps']} ({r['epochs']:.1f}) | "
               f"{r['train_seconds'] / 60:.0f} min | {wall} | {published} |")
  out.append("")
  out.append(f"{hardware}, {date}. Accuracy on the held-out images named in results.json "
             f"({rows[0]['data']['heldout']}); trained on {rows[0]['data']['train']}.")
  return "\n".join(out) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="+", help="workdirs of finished runs")
  parser.add_argument("--out", required=True, help="folder for table.md, results.json, curves.png")
  parser.add_argument("--hardware", default="2-core CPU shared with other training jobs")
  parser.add_argument("--date", default="2026-12-03")
  args = parser.parse_args(argv)
  rows = [summarise(run) for run in args.runs]
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as f:
    f.write(markdown(rows, args.hardware, args.date))
  with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
    json.dump({"hardware": args.hardware, "date": args.date, "runs": rows}, f, indent=2)
  names = dict(zip(args.runs, legend_names(rows)))
  curves.plot(os.path.join(args.out, "curves.png"),
              {names[run]: train.read_metrics(run) for run in args.runs},
              {names[run]: r["train_images"] / r["batch_size"] for run, r in zip(args.runs, rows)},
              "pixel MNIST, held-out accuracy")
  print(markdown(rows, args.hardware, args.date))


if __name__ == "__main__":
  main()
