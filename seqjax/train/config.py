"""Runtime configuration: the fields every experiment config carries, validation, diffs.

Experiment configs are code (``experiments/<name>/config.py``): ``get_config(arg)`` starts from
:func:`runtime_config` and adds its own fields (model, data, ...). The runtime reads only the
fields defined here; the experiment owns every other field.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections

OPTIMIZERS = ("adam", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine")

# Fields that may differ between a workdir's config.json and a resumed run without counting as a
# config change: they say how to run, not what is computed.
_RESUME_IGNORED = ("allow_config_change",)


def runtime_config() -> ml_collections.ConfigDict:
  """The runtime's fields with their defaults; experiments extend the returned ConfigDict."""
  config = ml_collections.ConfigDict()
  # Seed of everything random: parameter init, data order, dropout (folded in by step).
  config.seed = 0
  # Number of optimiser steps of the whole run (resume continues up to this step).
  config.num_steps = 1000
  # Global batch size, split evenly across processes and then across each process's devices.
  config.batch_size = 32
  # Optimiser: "adam", "rmsprop" or "sgd" (SGD with momentum).
  config.optimizer = "adam"
  # Peak learning rate (reached after warmup_steps, then held or cosine-decayed).
  config.learning_rate = 1e-3
  # Momentum of "sgd" and "rmsprop" (0.0 gives plain SGD / RMSProp).
  config.momentum = 0.9
  # Adam's first and second moment decay rates.
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  # RMSProp's squared-gradient decay rate.
  config.rmsprop_decay = 0.9
  # Epsilon of Adam and RMSProp, added to the denominator for stability.
  config.eps = 1e-8
  # Clip gradients to this global L2 norm before the update; 0.0 disables clipping.
  config.grad_clip_norm = 0.0
  # Learning-rate schedule after warmup: "constant" or "cosine" (decays to min_lr_ratio * peak).
  config.schedule = "constant"
  # Linear warmup from 0 to learning_rate over this many steps; 0 disables warmup.
  config.warmup_steps = 0
  # Final learning rate of the cosine schedule as a fraction of the peak.
  config.min_lr_ratio = 0.0
  # Log training metrics (metrics.jsonl, TensorBoard, console) every this many steps.
  config.log_every = 50
  # Run the experiment's evaluation every this many steps, and always at the last step.
  config.eval_every = 500
  # Save a checkpoint every this many steps (also on exit, SIGTERM and SIGINT).
  config.checkpoint_every = 500
  # Keep this many most recent checkpoints (plus the best one, see best_metric).
  config.keep_checkpoints = 2
  # Also keep the checkpoint with the best value of this eval metric (e.g. "eval/loss"); "" = off.
  config.best_metric = ""
  # Whether best_metric is better when smaller ("min") or larger ("max").
  config.best_mode = "min"
  # Local devices the train step is pmapped over; 0 = all local devices.
  config.num_devices = 0
  # Resume even when this config differs from the workdir's config.json (the new one is saved).
  config.allow_config_change = False
  # Debugging only: make the loss NaN at this step (1-based) to exercise the NaN stop; -1 = off.
  config.nan_at_step = -1
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the offending field when a runtime field has a bad value."""
  def _check(ok, message):
    if not ok:
      raise ValueError(message)
  _check(config.seed >= 0, f"config.seed must be >= 0, got {config.seed}")
  _check(config.num_steps >= 0, f"config.num_steps must be >= 0, got {config.num_steps}")
  _check(config.batch_size > 0, f"config.batch_size must be > 0, got {config.batch_size}")
  _check(config.optimizer in OPTIMIZERS,
         f"config.optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")
  _check(config.schedule in SCHEDULES,
         f"config.schedule must be one of {SCHEDULES}, got {config.schedule!r}")
  _check(config.learning_rate >= 0,
         f"config.learning_rate must be >= 0, got {config.learning_rate}")
  _check(config.grad_clip_norm >= 0,
         f"config.grad_clip_norm must be >= 0 (0 disables), got {config.grad_clip_norm}")
  for name in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
    _check(config[name] > 0, f"config.{name} must be > 0, got {config[name]}")
  _check(config.warmup_steps >= 0, f"config.warmup_steps must be >= 0, got {config.warmup_steps}")
  _check(config.best_mode in ("min", "max"),
         f"config.best_mode must be 'min' or 'max', got {config.best_mode!r}")
  _check(config.num_devices >= 0, f"config.num_devices must be >= 0, got {config.num_devices}")


def to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The resolved config as plain JSON-able Python (tuples become lists, as in config.json)."""
  return json.loads(config.to_json())


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """Dotted keys whose values differ between two config dicts (missing keys count)."""
  old_flat, new_flat = _flatten(old), _flatten(new)
  keys = sorted(set(old_flat) | set(new_flat))
  missing = "<missing>"
  return [k for k in keys
          if k not in _RESUME_IGNORED and old_flat.get(k, missing) != new_flat.get(k, missing)]
