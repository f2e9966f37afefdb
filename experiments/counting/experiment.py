"""GRU vs LSTM counting as a ``seqjax.train.Experiment``: data, loss, results and plots.

Trains, for every language, cell and output head in the config, ``num_seeds`` networks at once
on the shared runtime (``seqjax.train``: workdir, metrics.jsonl, checkpoints, exact resume), then
finds each network's generalisation limit under both acceptance rules (``evaluation.py``) and
writes results.json and the plots into the workdir. See ``config.py`` for the command.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.counting import evaluation
from experiments.counting import languages
from experiments.counting import model
from experiments.counting import plots
from experiments.counting import timing
from seqjax import cells as cells_lib
from seqjax import train

ACCEPTANCE_FILE = "acceptance.json"


def _names(field: str, value: str, allowed) -> list[str]:
  names = [v.strip() for v in value.split(",") if v.strip()]
  bad = [n for n in names if n not in allowed]
  if not names or bad:
    raise ValueError(f"config.{field}={value!r}: use a comma-separated subset of "
                     f"{', '.join(allowed)}" + (f" (unknown: {', '.join(bad)})" if bad else ""))
  return names


def _weighting(value, cell: str, head: str) -> str:
  """``config.loss_weighting["<cell>_<head>"]``, with an error naming a missing entry."""
  key = f"{cell}_{head}"
  if key not in value:
    raise ValueError(f"config.loss_weighting has no entry {key!r} (for cell {cell!r}, head "
                     f"{head!r}); add it to the config (has: {', '.join(value.keys())})")
  return value[key]


class CountingStudy:
  """The experiment's pieces for ``seqjax.train``: one param subtree per (language, cell, head).

  Params are ``{"<language>/<cell>/<head>": params with a leading [num_seeds] axis}``.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.languages = [languages.get_language(n) for n in
                      _names("languages", config.languages, languages.LANGUAGE_NAMES)]
    cell_names = _names("cells", config.cells, cells_lib.CELL_NAMES)
    self.heads = _names("heads", config.heads, model.HEADS)
    if config.softmax_targets not in model.TARGETS:
      raise ValueError(f"config.softmax_targets={config.softmax_targets!r}: use one of "
                       f"{', '.join(model.TARGETS)}")
    if config.minibatch_order not in ("shared", "per_seed"):
      raise ValueError(f"config.minibatch_order={config.minibatch_order!r}: use 'shared' or "
                       "'per_seed'")
    self.per_seed = config.minibatch_order == "per_seed"
    if config.minibatch_sampling not in ("uniform", "stratified"):
      raise ValueError(f"config.minibatch_sampling={config.minibatch_sampling!r}: use 'uniform' "
                       "or 'stratified'")
    if config.curriculum_steps < 0:
      raise ValueError(f"config.curriculum_steps must be >= 0; got {config.curriculum_steps}")
    if config.num_seeds < 1:
      raise ValueError(f"config.num_seeds must be >= 1; got {config.num_seeds}")
    if config.eval_n_max < 1:
      raise ValueError(f"config.eval_n_max must be >= 1; got {config.eval_n_max}")
    self.cells = {}
    for name in cell_names:
      options = {"forget_bias": config.forget_bias} if "lstm" in name else {}
      self.cells[name] = cells_lib.get_cell(name, **options)
    self.models = [(lang, cell, head) for lang in self.languages for cell in cell_names
                   for head in self.heads]
    # The full training set of every language and head, as arrays; minibatches are row picks.
    self.data = {}
    for lang in self.languages:
      train_max = config.train_max.get(lang.name, lang.train_max)
      strings = lang.train_strings(train_max, per_size=config.dyck_per_depth, seed=config.seed)
      for head in self.heads:
        self.data[lang.name, head] = model.training_batch(
            lang, strings, head, config.softmax_targets, config.stop_prob)
    # The loss average of every (cell, head): {(cell, head): "string" | "token" | "mixed"}.
    self.weighting = {(name, head): _weighting(config.loss_weighting, name, head)
                      for name in self.cells for head in self.heads}
    self.losses = {head: {name: model.make_seed_loss(cell, head, self.weighting[name, head])
                          for name, cell in self.cells.items()} for head in self.heads}
    # Shares of the global batch's averages (train.global_sum): the same on any device count.
    self.logits_losses = {head: {name: model.make_logits_loss(head, self.weighting[name, head],
                                                              train.global_sum)
                                 for name in self.cells} for head in self.heads}
    self._verdicts = None  # kept by results() for plot(): evaluating is the expensive part

  @staticmethod
  def key(lang, cell: str, head: str) -> str:
    return f"{lang.name}/{cell}/{head}"

  # ------------------------------------------------------------------------- runtime pieces
  def init(self, rng):
    params = {}
    for index, (lang, cell, head) in enumerate(self.models):
      keys = jax.random.split(jax.random.fold_in(rng, index), self.config.num_seeds)
      params[self.key(lang, cell, head)] = jax.vmap(
          lambda k, c=self.cells[cell], v=lang.vocab_size: model.init_params(
              k, c, v, self.config.embed_size, self.config.hidden_size,
              self.config.embed_init))(keys)
    return params

  def get_batch(self, step: int, shard_index: int, num_shards: int):
    """``batch_size`` strings per language, read by every cell and head.

    With ``config.minibatch_order == "shared"`` every seed reads the same strings (leaves
    ``[batch, ...]``); with ``"per_seed"`` seed ``s`` reads its own, drawn from
    ``(config.seed, step, language, s)`` alone (leaves ``[batch, num_seeds, ...]``), so a
    network's minibatches do not depend on how many seeds train beside it.
    """
    config = self.config
    per_shard = config.batch_size // num_shards
    rows = slice(shard_index * per_shard, (shard_index + 1) * per_shard)
    rng = np.random.default_rng((config.seed, step))
    batch = {}
    for index, lang in enumerate(self.languages):
      first = self.data[lang.name, self.heads[0]]
      size = len(first["inputs"])
      if config.minibatch_order == "per_seed":
        pick = np.stack([self._pick(np.random.default_rng((config.seed, step, index, s)), size,
                                    step) for s in range(config.num_seeds)], axis=1)
      else:
        pick = self._pick(rng, size, step)
      pick = pick[rows]
      batch[lang.name] = {k: first[k][pick] for k in ("inputs", "lengths", "mask")}
      for head in self.heads:
        batch[lang.name][f"goal/{head}"] = self.data[lang.name, head]["goal"][pick]
    return batch

  def _pick(self, rng, size: int, step: int) -> np.ndarray:
    """``batch_size`` row indices into a training set of ``size`` strings, ordered by size n."""
    count = self.config.batch_size
    if step < self.config.curriculum_steps:  # the shortest strings first, growing linearly
      frac = 0.1 + 0.9 * step / self.config.curriculum_steps
      size = max(1, int(np.ceil(size * frac)))
    if self.config.minibatch_sampling == "uniform":
      return rng.integers(0, size, count)
    # Stratified: one string from each of ``count`` equal slices of the size range, so every
    # minibatch spans short to long strings (same expected loss, less variance between steps).
    edges = np.linspace(0, size, count + 1)
    return np.minimum(np.floor(edges[:-1] + rng.random(count) * (edges[1:] - edges[:-1])),
                      size - 1).astype(np.int64)

  def loss_fn(self, params, batch, rng):
    del rng  # deterministic: the minibatch is the only randomness of a step
    seeds, total, metrics = self.config.num_seeds, 0.0, {}
    data = {}
    for lang in self.languages:
      data[lang.name] = batch[lang.name]
      if self.per_seed:  # [batch, seeds, ...] -> [seeds, batch, ...]
        data[lang.name] = {k: jnp.swapaxes(v, 0, 1) for k, v in data[lang.name].items()}
    for cell in self.cells:
      # Every network of a cell (all languages, heads and seeds) runs in one time loop.
      groups = []
      for lang in self.languages:
        keys = [self.key(lang, cell, head) for head in self.heads]
        stacked = jax.tree.map(lambda *xs: jnp.concatenate(xs), *[params[k] for k in keys])
        inputs, lengths = data[lang.name]["inputs"], data[lang.name]["lengths"]
        if self.per_seed:  # each seed's strings, repeated for every head's networks
          inputs, lengths = (jnp.concatenate([a] * len(self.heads)) for a in (inputs, lengths))
        else:  # every network reads the same strings
          inputs, lengths = (jnp.broadcast_to(a, (len(keys) * seeds,) + a.shape)
                             for a in (inputs, lengths))
        groups.append((stacked, inputs, lengths))
      for lang, logits in zip(self.languages,
                              model.apply_together(self.cells[cell], groups)):
        lang_data, axis = data[lang.name], 0 if self.per_seed else None
        for index, head in enumerate(self.heads):
          mine = logits[index * seeds:(index + 1) * seeds]
          per_seed = jax.vmap(self.logits_losses[head][cell], in_axes=(0, axis, axis))(
              mine, lang_data[f"goal/{head}"], lang_data["mask"])
          # Summed, not averaged: every network's gradient is exactly its own loss's gradient.
          # Each is this device's share of the network's loss; sums and means over seeds of
          # shares are shares too, so the runtime's psum makes them the global batch's.
          total = total + per_seed.sum()
          metrics[f"train/{lang.name}_{cell}_{head}_loss"] = per_seed.mean()
    return total, metrics

  # ------------------------------------------------------------------------- results
  def results(self, params, history):
    del history
    config = self.config
    out = {"models": {}, "summary": {}}
    verdicts = {}
    for lang, cell, head in self.models:
      key = self.key(lang, cell, head)
      p = jax.tree.map(jnp.asarray, params[key])
      data = self.data[lang.name, head]
      final_loss = jax.vmap(self.losses[head][cell], in_axes=(0, None))(p, data)
      start = time.perf_counter()
      passed = evaluation.evaluate(self.cells[cell], p, lang, config.eval_n_max, head,
                                 tuple(config.thresholds), config.eval_budget, config.eval_min_n,
                                 parts=True)
      seconds = time.perf_counter() - start
      verdicts[key] = passed
      limits = {rule: evaluation.generalisation_limit(ok).tolist() for rule, ok in passed.items()}
      tested = int(next(iter(passed.values())).shape[1])
      out["models"][key] = {
          "language": lang.name, "cell": cell, "head": head,
          "final_train_loss": np.asarray(final_loss).tolist(),
          "limit": limits, "tested_up_to_n": tested, "eval_seconds": round(seconds, 2)}
      for rule, values in limits.items():
        out["summary"].setdefault(f"{lang.name}/{rule}", {})[cell] = {
            "median": float(np.median(values)), "min": int(min(values)),
            "max": int(max(values)), "seeds": values,
            # A limit equal to tested_up_to_n means "at least": nothing larger was tested.
            "capped": bool(max(values) >= tested)}
    out["ordering"] = _ordering(out["summary"])
    if config.time_seed_vmap:
      lang, cell, head = self.models[0]
      data = self.get_batch(0, 0, 1)[lang.name]
      if self.per_seed:  # the timing compares seeds reading one shared minibatch
        data = {k: v[:, 0] for k, v in data.items()}
      batch = {"inputs": data["inputs"], "lengths": data["lengths"], "mask": data["mask"],
               "goal": data[f"goal/{head}"]}
      out["seed_vmap_timing"] = {"model": self.key(lang, cell, head), **timing.time_seed_vmap(
          self.cells[cell], head, params[self.key(lang, cell, head)], batch)}
    self._verdicts = verdicts
    return out

  def plot(self, workdir: str, params, history):
    del history
    if self._verdicts is None:
      return
    verdicts = self._verdicts
    with open(os.path.join(workdir, ACCEPTANCE_FILE), "w") as f:
      # One string of 0/1 per seed: n = 1, 2, ... left to right.
      json.dump({k: {rule: ["".join(map(str, row)) for row in v.astype(int)]
                     for rule, v in rules.items()} for k, rules in verdicts.items()}, f)
    for lang in self.languages:
      plots.plot_acceptance(workdir, lang, self.config, self.cells, self.heads, verdicts)
    anbn = [lang for lang in self.languages if lang.name == "anbn"]
    if anbn:
      plots.plot_states(workdir, anbn[0], self.cells, self.heads[0], params,
                        self.config.state_plot_n)


def _ordering(summary: dict) -> dict:
  """Per language and rule: whether every GRU seed is below every LSTM seed."""
  out = {}
  for name, by_cell in summary.items():
    if "lstm" in by_cell and "gru" in by_cell:
      out[name] = {"every_gru_below_every_lstm":
                   bool(max(by_cell["gru"]["seeds"]) < min(by_cell["lstm"]["seeds"]))}
  return out


def make_experiment(config: ml_collections.ConfigDict, workdir: str) -> train.Experiment:
  """The counting study as a :class:`seqjax.train.Experiment` that trains in ``workdir``."""
  started = time.perf_counter()
  if jax.process_index() == 0:
    print(f"workdir: {os.path.abspath(workdir)}", flush=True)
  study = CountingStudy(config)
  # Clipping per network and seed: a global norm over all of them would couple their steps.
  optimizer = train.make_optimizer(config, per_model_clip=True)

  def plot(plot_workdir, params, history):
    study.plot(plot_workdir, params, history)
    print(f"results: {os.path.abspath(os.path.join(plot_workdir, 'results.json'))} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)

  return train.Experiment(init=study.init, loss_fn=study.loss_fn, get_batch=study.get_batch,
                          results=study.results, plot=plot, optimizer=optimizer,
                          loss_reduction="global")
