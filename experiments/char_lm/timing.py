"""Seconds per training step of a config variant, seqjax and the PyTorch peer, on this machine.

  python -m experiments.char_lm.timing --variant "" --steps 3 --torch_threads 1 --data_dir DIR
  python -m experiments.char_lm.timing --variant "" --steps 4 --native_kernels auto --data_dir DIR

Times the runtime's own pmapped train step (``seqjax.train``'s ``make_training``, the batches of
``get_batch``) and the peer's step (``torch_peer.make_training``) on the same batches: the first
two steps (compilation, start-up; pmap compiles again for the second, whose state is the first's
device output) on their own, then ``--steps`` more, whose mean is the step time.
Prints one JSON line; estimates of whole runs multiply the step time by the variant's steps.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax

from experiments.char_lm import config as config_lib
from experiments.char_lm import experiment
from experiments.char_lm import torch_peer
from seqjax.train import loop


def time_seqjax(config, workdir: str, steps: int) -> dict:
  exp = experiment.make_experiment(config, workdir)
  state, train_step = loop.make_training(exp, config)
  state = loop._local_state(state, 1)  # pylint: disable=protected-access
  step = jax.pmap(train_step, axis_name=loop.AXIS, donate_argnums=(0,),
                  devices=jax.local_devices()[:1])
  seconds = []
  for i in range(steps + 2):
    batch = loop._split_batch(exp.get_batch(i, 0, 1), 1, config.batch_size)  # pylint: disable=protected-access
    began = time.perf_counter()
    state, metrics = step(state, batch)
    float(metrics["train/loss"][0])
    seconds.append(time.perf_counter() - began)
  return {"first_steps_s": seconds[:2], "step_s": sum(seconds[2:]) / steps}


def time_torch(config, data_dir: str, steps: int) -> dict:
  vocab, train_ids, _ = torch_peer.load_data(data_dir)
  _, step = torch_peer.make_training(config, len(vocab), config.seed)
  from experiments.char_lm import batches  # pylint: disable=import-outside-toplevel
  seconds = []
  for i in range(steps + 2):
    batch = batches.windows(train_ids, config.seed, i, config.batch_size, config.seq_len)
    began = time.perf_counter()
    step(batch)
    seconds.append(time.perf_counter() - began)
  return {"first_steps_s": seconds[:2], "step_s": sum(seconds[2:]) / steps}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--variant", default="")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--frameworks", default="seqjax,torch")
  parser.add_argument("--torch_threads", type=int, default=0, help="0: torch's default")
  parser.add_argument("--native_kernels", default="", choices=("", "auto", "off"),
                      help="seqjax's config.native_kernels; '': the variant's")
  args = parser.parse_args(argv)
  if args.torch_threads:
    torch_peer.torch.set_num_threads(args.torch_threads)
  config = config_lib.get_config(args.variant)
  config.data_dir = args.data_dir
  config.native_kernels = args.native_kernels or config.native_kernels
  out = {"variant": args.variant, "steps": args.steps, "cpus": os.cpu_count(),
         "num_steps": config.num_steps, "native_kernels": config.native_kernels,
         "torch_threads": args.torch_threads or "default"}
  with tempfile.TemporaryDirectory() as workdir:
    for name in args.frameworks.split(","):
      got = (time_seqjax(config, workdir, args.steps) if name == "seqjax"
             else time_torch(config, args.data_dir, args.steps))
      got["estimated_run_hours"] = got["step_s"] * config.num_steps / 3600
      out[name] = got
  print(json.dumps(out))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
