"""How much faster one ``vmap``-ed training step over the seeds is than a loop over them.

The experiment writes this comparison into results.json (``seed_vmap_timing``) when
``config.time_seed_vmap`` is set; it trains nothing that the results depend on.
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import numpy as np
import optax

from experiments.counting import model
from seqjax import cells as cells_lib


def make_seed_step(loss_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
  """``(params, opt_state, batch) -> (params, opt_state, loss)``: one Adam step of one network."""
  def one_step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return one_step


def time_seed_vmap(cell: cells_lib.Cell, head: str, params: dict, batch: dict,
                   repeats: int = 20, weighting: str = "string") -> dict:
  """Seconds per training step for all seeds: one ``vmap``-ed step vs a loop of per-seed steps.

  ``params`` carry the seed axis; ``batch`` is one minibatch from :func:`model.training_batch`. Both
  variants are compiled first; the time is the fastest of ``repeats`` (on a shared machine the
  fastest is the least disturbed by other jobs).
  """
  optimizer = optax.adam(1e-3)
  one_step = make_seed_step(model.make_seed_loss(cell, head, weighting), optimizer)
  opt_state = jax.vmap(optimizer.init)(params)
  num_seeds = jax.tree.leaves(params)[0].shape[0]
  vmapped = jax.jit(jax.vmap(one_step, in_axes=(0, 0, None)))
  single = jax.jit(one_step)
  seeds = [jax.tree.map(lambda a, i=i: a[i], (params, opt_state)) for i in range(num_seeds)]

  def run_vmapped():
    return vmapped(params, opt_state, batch)

  def run_loop():
    return [single(p, o, batch) for p, o in seeds]

  timings = {}
  for name, fn in (("vmap", run_vmapped), ("loop", run_loop)):
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times.append(time.perf_counter() - start)
    timings[f"{name}_s_per_step"] = float(np.min(times))
  timings["speedup"] = timings["loop_s_per_step"] / timings["vmap_s_per_step"]
  timings["num_seeds"] = num_seeds
  return timings
