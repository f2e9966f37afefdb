"""The recipe sweep behind ``sweep_anbn.jsonl``: one (language, cell, head) setting, 5 seeds.

Uses the standalone trainer ``seqjax.counting.make_train_chunk`` (each seed draws its own
minibatches), not the runtime, so its numbers differ from a run of ``experiments.counting``.

  python experiments/results/counting/sweep_anbn.py LANG CELL HEAD STEPS LR BATCH SCHEDULE \
      FORGET_BIAS WEIGHTING TARGETS N_MAX

e.g. ``anbn lstm sets 3000 2e-2 16 cosine 5.0 string sampled 1000``. Prints one JSON line.
"""

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import cells
from seqjax import counting
from seqjax.data import languages


def main(argv):
  (lang_name, cell_name, head, steps, lr, batch_size, schedule, forget_bias, weighting, targets,
   n_max) = argv
  steps, lr, batch_size, n_max = int(steps), float(lr), int(batch_size), int(n_max)
  num_seeds = 5
  lang = languages.get_language(lang_name)
  options = {"forget_bias": float(forget_bias)} if cell_name == "lstm" else {}
  cell = cells.get_cell(cell_name, **options)
  batch = counting.training_batch(lang, lang.train_strings(per_size=2), head, targets)
  optimizer = counting.make_optimizer(lr, steps, schedule,
                                      warmup_steps=100 if schedule == "cosine" else 0)
  params = counting.init_seeds(range(num_seeds), cell, lang.vocab_size)
  opt_state = counting.init_opt_state(optimizer, params)
  keys = jnp.stack([jax.random.PRNGKey(1000 + s) for s in range(num_seeds)])
  chunk = counting.make_train_chunk(cell, head, optimizer, batch_size, weighting)
  start, done = time.time(), 0
  while done < steps:
    k = min(500, steps - done)
    params, opt_state, losses = chunk(params, opt_state, keys, batch, done, k)
    done += k
  train_s = time.time() - start
  start = time.time()
  passed = counting.evaluate(cell, params, lang, n_max, head, min_n=300, parts=True)
  print(json.dumps({
      "args": argv, "train_s": round(train_s), "eval_s": round(time.time() - start),
      "loss": np.asarray(losses[-50:]).mean(0).round(4).tolist(),
      "limits": {k: counting.generalisation_limit(v).tolist() for k, v in passed.items()}}))


if __name__ == "__main__":
  main(sys.argv[1:])
