"""The runs side by side: learning curves of each cell in one PNG, a table, time to a loss.

  python -m experiments.char_lm.table --out experiments/char_lm/results/DIR \\
      --runs runs/small-lstm,runs/small-gru --peers runs/torch-small --target 1.70

``--runs`` are seqjax workdirs (``python -m experiments.char_lm``), ``--peers`` workdirs of
``torch_peer.py``. For each: the best validation loss (nats and bits per character over the whole
validation text), the step and training seconds where it was reached, and the training seconds to
the first evaluation at or below ``--target`` (evaluations excluded, compilation and start-up
included, from ``wall_time.jsonl``). Writes ``learning_curves.png`` (validation loss against step
and against training seconds), ``table.md`` and ``results.json`` (the same rows) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform

from experiments.char_lm import models


def _jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def summarise(workdir: str, framework: str, target: float) -> dict:
  """One row: what the run is and its best / time-to-target figures."""
  timeline = _jsonl(os.path.join(workdir, "wall_time.jsonl"))
  if not timeline:
    raise SystemExit(f"error: {workdir} has no wall_time.jsonl (no evaluation yet)")
  if framework == "seqjax":
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
      config = json.load(f)
  else:
    from experiments.char_lm import config as config_lib  # pylint: disable=import-outside-toplevel
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
      peer = json.load(f)
    config = config_lib.get_config(peer["variant"]).to_dict()
    framework = peer["framework"]
  best = min(timeline, key=lambda r: r["eval/loss"])
  reached = next((r for r in timeline if r["eval/loss"] <= target), None)
  return {
      "name": os.path.basename(os.path.normpath(workdir)), "framework": framework,
      **dict(zip(("cell", "size"), models.label(config))),
      "mode": config["mode"], "batch": config["batch_size"], "seq_len": config["seq_len"],
      "best_eval_loss": best["eval/loss"], "best_bits_per_char": best["eval/loss"] / math.log(2),
      "best_step": best["step"], "best_train_seconds": best["train_seconds"],
      "target": target, "seconds_to_target": reached and reached["train_seconds"],
      "steps": timeline[-1]["step"], "train_seconds": timeline[-1]["train_seconds"],
      "curve": [(r["step"], r["train_seconds"], r["eval/loss"]) for r in timeline]}


def write_table(rows: list[dict], out: str, hardware: str) -> None:
  lines = ["| run | framework | cell | size | mode | steps | best val nats/char | bits/char | "
           "at step | train s to best | train s to target | hardware |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    to_target = "not reached" if r["seconds_to_target"] is None else f"{r['seconds_to_target']:.0f}"
    lines.append(f"| {r['name']} | {r['framework']} | {r['cell']} | {r['size']} | {r['mode']} | "
                 f"{r['steps']} | {r['best_eval_loss']:.4f} | {r['best_bits_per_char']:.4f} | "
                 f"{r['best_step']} | {r['best_train_seconds']:.0f} | {to_target} "
                 f"(<= {r['target']}) | {hardware} |")
  with open(os.path.join(out, "table.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def plot(rows: list[dict], out: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4))
  for r in rows:
    steps, seconds, losses = zip(*r["curve"])
    label = f"{r['name']} ({r['framework'].split()[0]}, {r['size']} {r['cell']}, {r['mode']})"
    by_step.plot(steps, losses, marker=".", label=label)
    by_time.plot([s / 60 for s in seconds], losses, marker=".", label=label)
  by_step.set(xlabel="step", ylabel="validation loss (nats/char, whole text)")
  by_time.set(xlabel="training minutes (evaluations excluded)")
  for ax in (by_step, by_time):
    ax.grid(alpha=0.3)
  by_step.legend(fontsize=7)
  fig.suptitle("Tiny Shakespeare, character level: validation loss")
  fig.tight_layout()
  fig.savefig(os.path.join(out, "learning_curves.png"), dpi=100)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--runs", default="", help="comma-separated seqjax workdirs")
  parser.add_argument("--peers", default="", help="comma-separated torch_peer workdirs")
  parser.add_argument("--target", type=float, default=1.50)
  parser.add_argument("--hardware", default=f"{os.cpu_count()}-core {platform.machine()} CPU")
  args = parser.parse_args(argv)
  rows = [summarise(w, "seqjax", args.target) for w in args.runs.split(",") if w]
  rows += [summarise(w, "torch", args.target) for w in args.peers.split(",") if w]
  os.makedirs(args.out, exist_ok=True)
  write_table(rows, args.out, args.hardware)
  plot(rows, args.out)
  with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
    json.dump({"hardware": args.hardware, "runs": rows}, f, indent=2)
  print(open(os.path.join(args.out, "table.md"), encoding="utf-8").read())
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
