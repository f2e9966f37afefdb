"""Length bucketing against plain padding: padded tokens per epoch and training step time.

  python -m experiments.sentiment.padding --workdir runs/padding \\
      --data_dir ../shared/data/sst2 [--variant sst2] [--steps 40] [--num_seeds 1]

For each batching (``bucketed``: sorted by length; ``plain``: random batches padded to their
longest text) it counts real tokens and padded slots over one whole epoch (exact, from the
lengths), then times ``--steps`` training steps of the configured model on batches drawn at
random from that epoch (after compiling every padded shape the sample holds), and estimates
the epoch's time as median step time x batches per epoch. Writes ``padding.json`` and
``padding.md`` into the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from experiments.forecasting.table import cpu_name
from experiments.sentiment import config as config_lib
from experiments.sentiment import encoding
from experiments.sentiment import experiment
from seqjax.data import bucketing
from seqjax.train import loop


def measure(config, workdir: str, steps: int) -> dict:
  """``{"bucketed": {...}, "plain": {...}}``: padding cost and step times of one epoch."""
  exp = experiment.make_experiment(config, workdir)
  data = experiment.Data(config, workdir)
  state, train_step = loop.make_training(exp, config)
  p_step = jax.pmap(train_step, axis_name=loop.AXIS)
  state = loop._replicate(state, 1)  # pylint: disable=protected-access
  state = jax.block_until_ready(p_step(state, _device_batch(
      data.train, np.arange(config.batch_size), config.pad_multiple))[0])  # onto the device
  out, samples = {}, {}
  for name, bucketed in (("bucketed", True), ("plain", False)):
    buckets = bucketing.LengthBuckets(data.train.lengths, config.batch_size, config.seed,
                                      bucketed)
    epoch = buckets.epoch(0)
    picks = np.random.default_rng(0).choice(len(epoch), min(steps, len(epoch)), replace=False)
    samples[name] = [_device_batch(data.train, rows, config.pad_multiple)
                     for rows in epoch[picks]]
    out[name] = {**bucketing.padding_cost(buckets, 0, config.pad_multiple),
                 "batches_per_epoch": buckets.batches_per_epoch}
    compile_start = time.perf_counter()
    for length in sorted({b["tokens"].shape[-1] for b in samples[name]}):
      warm = next(b for b in samples[name] if b["tokens"].shape[-1] == length)
      # Chained, as the timed steps are: a state on the device compiles the program they run.
      state, metrics = p_step(state, warm)
      jax.block_until_ready(metrics)
    out[name]["compile_s"] = time.perf_counter() - compile_start
  # The two batchings take turns, step by step, so a change in the machine's load (other jobs
  # share the cores) touches both alike.
  times = {name: [] for name in samples}
  for i in range(min(len(s) for s in samples.values())):
    for name in samples:
      start = time.perf_counter()
      state, metrics = p_step(state, samples[name][i])
      jax.block_until_ready(metrics)
      times[name].append(time.perf_counter() - start)
  for name, t in times.items():
    out[name].update({"timed_steps": len(t), "step_ms_mean": 1e3 * float(np.mean(t)),
                      "step_ms_median": 1e3 * float(np.median(t)),
                      "epoch_s_estimate": float(np.median(t)) * out[name]["batches_per_epoch"]})
  return out


def _device_batch(data, rows, multiple):
  batch = encoding.make_batch(data, rows, multiple)
  del batch["index"]
  return jax.tree.map(lambda x: x[None], batch)  # one device's slice, as run() feeds pmap


def markdown(result: dict) -> str:
  lines = ["| batching | tokens / epoch | padded slots / epoch | padding | padded shapes | "
           "step (ms, median) | epoch (s, est.) |", "|---|---|---|---|---|---|---|"]
  for name, r in result.items():
    lines.append(f"| {name} | {r['tokens']:,} | {r['slots']:,} | {r['padding_fraction']:.1%} | "
                 f"{r['shapes']} | {r['step_ms_median']:.0f} | {r['epoch_s_estimate']:.0f} |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--data_dir", default="")
  parser.add_argument("--variant", default="")
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--num_seeds", type=int, default=0, help="seeds per step; 0 = the config's")
  args = parser.parse_args()
  config = config_lib.get_config(args.variant)
  config.data_dir = args.data_dir
  config.num_seeds = args.num_seeds or config.num_seeds
  os.makedirs(args.workdir, exist_ok=True)
  try:
    result = measure(config, args.workdir, args.steps)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  summary = {"hardware": cpu_name(), "variant": args.variant or "sst2",
             "batch_size": config.batch_size, "num_seeds": config.num_seeds,
             "pad_multiple": config.pad_multiple, "date": time.strftime("%Y-%m-%d"),
             "batchings": result}
  with open(os.path.join(args.workdir, "padding.json"), "w") as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(args.workdir, "padding.md"), "w") as f:
    f.write(markdown(result))
  print(markdown(result))


if __name__ == "__main__":
  main()
