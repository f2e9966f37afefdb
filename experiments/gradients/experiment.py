"""Vanishing and exploding gradients, measured: one command, a table and three plots.

For every model (``config.models``) the adding problem's loss is differentiated with respect to
the recurrent state at every step (``probes.state_gradient_norms``), at initialisation and after
``config.train_steps`` steps of the adding experiment's own training (``experiments.adding``
through the shared runtime, in ``<workdir>/train/<model>``). The per-step rate fitted to
``log norm`` against the lag is compared with the recurrent matrix's singular values. Outputs in
the workdir: ``results.json``, ``table.md``, ``gradient_norms.png``, ``rates.png``, ``cliff.png``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.adding import config as adding_config
from experiments.adding import experiment as adding
from experiments.gradients import cliff
from experiments.gradients import plots
from experiments.gradients import probes
from seqjax import cells
from seqjax import train
from seqjax.train import workdir as workdir_lib

_PROBE_STREAM = 2  # The probe batch is disjoint from the adding runs' train and eval streams.


def model_names(config) -> list[str]:
  """``config.models`` expanded: one ``linear-<r>`` / ``tanh-<r>`` per radius."""
  names = []
  for model in config.models:
    if model in ("linear", "tanh"):
      names += [f"{model}-{r:g}" for r in config.radii]
    elif model in ("irnn", "lstm", "gru"):
      names.append(model)
    else:
      raise ValueError(f"config.models: unknown model {model!r}; use linear, tanh, irnn, lstm, gru")
  return names


def adding_setup(config, name: str):
  """The adding experiment's config and :class:`train.Experiment` for model ``name``."""
  cfg = adding_config.get_config(f"t{config.seq_len}")
  kind = name.split("-")[0]
  cfg.cell = {"linear": "rnn", "tanh": "rnn"}.get(kind, kind)
  cfg.hidden_size = config.hidden_size
  cfg.seed = config.seed
  cfg.num_steps = config.train_steps
  cfg.eval_every = cfg.log_every = max(1, config.train_steps // 4)
  cfg.checkpoint_every = config.train_steps  # only the final state is needed
  cfg.eval_size = 200
  exp = adding.make_experiment(cfg, "")
  if kind in ("linear", "tanh"):
    radius = float(name.split("-")[1])
    nonlinearity = "linear" if kind == "linear" else "tanh"
    base_init = exp.init

    def init(rng):
      params = base_init(rng)
      # A fresh key for the matrix: the cell's own init keeps its other weights.
      key = jax.random.fold_in(rng, 7)
      params["cell"]["w_hh"] = probes.scaled_orthogonal(key, config.hidden_size, radius)
      return params
    cell = cells.get_cell("rnn", nonlinearity=nonlinearity)
    exp = dataclasses.replace(exp, init=init)
    return cfg, exp, cell
  return cfg, exp, adding.make_cell(cfg)


def measure(config, cell, params, xs, ys) -> dict:
  """Gradient norms at every lag, the fitted rate and the recurrent matrix's singular values."""
  lags = np.arange(config.seq_len + 1)

  def loss_of_state(h):
    return ((h @ params["w_out"] + params["b_out"])[:, 0] - ys) ** 2

  norms = probes.state_gradient_norms(cell, params["cell"], xs, loss_of_state, lags)
  values = probes.singular_values(params["cell"]["w_hh"])
  tanh = cell.name == "rnn" and cell.nonlinearity == "tanh"
  return {"norms": norms.tolist(), "rate": probes.fit_rate(lags, norms, config.fit_min_lag),
          "tanh_predicted_rate": probes.tanh_rate(cell, params["cell"], xs) if tanh else None,
          "singular_values": values.tolist(), "sigma_max": float(values[0]),
          "spectral_radius": float(np.max(np.abs(np.linalg.eigvals(
              np.asarray(params["cell"]["w_hh"], np.float64)))))
          if cell.gates == 1 else None}


def _train(config, name, cfg, exp, workdir):
  """Trains through the runtime; returns the final params and the run's final eval MSE."""
  captured = {}
  base_results = exp.results

  def results(params, history):
    captured["params"] = jax.tree.map(jnp.asarray, params)
    return base_results(params, history)
  exp = dataclasses.replace(exp, results=results)
  out = train.run(exp, cfg, os.path.join(workdir, "train", name))
  return captured["params"], out["final_eval_mse"], out["baseline_mse"]


def run(config, workdir: str) -> dict:
  """Measures every model, draws the cliff, writes results.json, table.md and the plots."""
  start = time.time()
  os.makedirs(workdir, exist_ok=True)
  xs, ys = adding.make_examples(np.random.default_rng([config.seed, _PROBE_STREAM]),
                                config.probe_batch, config.seq_len)
  models = {}
  for name in model_names(config):
    cfg, exp, cell = adding_setup(config, name)
    init_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))[0]  # the runtime's init key
    params0 = jax.jit(exp.init)(init_rng)
    entry = {"init": measure(config, cell, params0, xs, ys)}
    if not name.startswith("linear"):
      params, mse, baseline = _train(config, name, cfg, exp, workdir)
      entry["trained"] = measure(config, cell, params, xs, ys)
      entry["adding_eval_mse"], entry["adding_baseline_mse"] = mse, baseline
    models[name] = entry

  ws = np.linspace(*config.cliff_w, config.cliff_grid)
  bs = np.linspace(*config.cliff_b, config.cliff_grid)
  args = (config.cliff_steps, config.cliff_h0, config.cliff_target)
  surface = cliff.surface(ws, bs, *args)
  plain = cliff.descend(config.cliff_start, config.cliff_lr, config.cliff_descent_steps, *args)
  clipped = cliff.descend(config.cliff_start, config.cliff_lr, config.cliff_descent_steps, *args,
                          clip=config.cliff_clip)
  final_loss = {k: float(cliff.loss(*path[-1], *args)) for k, path in
                (("plain", plain), ("clipped", clipped))}

  results = {"config": json.loads(config.to_json()), "models": models,
             "cliff": {"plain_path": plain.tolist(), "clipped_path": clipped.tolist(),
                       "final_loss": final_loss},
             "hardware": workdir_lib.cpu_name(), "date": time.strftime("%Y-%m-%d"),
             "wall_seconds": round(time.time() - start, 1)}
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(workdir, "table.md"), "w") as f:
    f.write(plots.markdown(models, final_loss))
  plots.gradient_norms(models, os.path.join(workdir, "gradient_norms.png"))
  plots.rates(models, os.path.join(workdir, "rates.png"))
  plots.cliff(ws, bs, surface, plain, clipped, config, os.path.join(workdir, "cliff.png"))
  return results
