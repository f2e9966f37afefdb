"""Samples text from a char_lm run's latest checkpoint.

  python -m experiments.char_lm.sample --workdir DIR --prompt "ROMEO:" --length 500 \\
      --temperature 0.8 [--top_k K] [--seed S]

prints the prompt followed by ``--length`` sampled characters. The model is rebuilt from the
workdir's ``config.json`` and ``vocab.json``; the parameters are those of its latest checkpoint
(verified by the runtime's digest). Mistakes end in one line on stderr starting ``error:``: a
workdir without a checkpoint, a prompt character the model never saw.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import ml_collections

from experiments.char_lm import models
from experiments.char_lm import sampling
from experiments.char_lm import shakespeare
from seqjax import train
from seqjax.models import rnn_lm


def load_run(workdir: str):
  """``(params, spec, vocab, step)`` of the workdir's latest checkpoint.

  Raises:
    FileNotFoundError: the workdir, its config.json or vocab.json is missing, or it holds no
      checkpoint yet.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist; is {workdir!r} a char_lm workdir?")
  with open(path, encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  vocab = shakespeare.Vocabulary.load(workdir)
  checkpoints = os.path.join(workdir, "checkpoints")
  no_checkpoint = (f"no checkpoint in {checkpoints}; train first (python -m experiments.char_lm "
                   "--workdir ...)")
  if not os.path.isdir(checkpoints) or not any(n.isdigit() for n in os.listdir(checkpoints)):
    raise FileNotFoundError(no_checkpoint)  # Said before the model is built for nothing.
  spec = models.make_spec(config, len(vocab))
  stateful = config.mode == "stateful"
  structure = train.Experiment(
      init=lambda rng: models.init(rng, spec), loss_fn=None, get_batch=None,
      init_carry=(lambda rng: rnn_lm.initial_carry(spec, config.batch_size)) if stateful
      else None)
  loaded = train.load_checkpoint(structure, config, workdir)
  if loaded is None:
    raise FileNotFoundError(no_checkpoint)
  state, step = loaded
  return state.params, spec, vocab, step


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--prompt", default="\n")
  parser.add_argument("--length", type=int, default=500)
  parser.add_argument("--temperature", type=float, default=1.0)
  parser.add_argument("--top_k", type=int, default=0)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  try:
    params, spec, vocab, _ = load_run(args.workdir)
    prompt = vocab.encode(args.prompt, "prompt")
    ids = sampling.generate(params, spec, prompt, args.length, args.temperature, args.top_k,
                            args.seed)
  except (ValueError, FileNotFoundError, train.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2 if isinstance(e, ValueError) else 1
  print(args.prompt + vocab.decode(ids))
  return 0


if __name__ == "__main__":
  sys.exit(main())
