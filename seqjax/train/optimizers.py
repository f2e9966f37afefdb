"""Optimisers and learning-rate schedules built from the runtime config fields.

``make_optimizer(config)`` returns an optax ``GradientTransformation``: optional global-norm
clipping, then Adam, RMSProp or SGD with momentum driven by ``make_schedule(config)``.
"""

from __future__ import annotations

import ml_collections
import optax


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning rate as a function of the step: linear warmup, then constant or cosine decay."""
  peak = config.learning_rate
  warmup = config.warmup_steps
  if config.schedule == "constant":
    after = optax.constant_schedule(peak)
  elif config.schedule == "cosine":
    decay_steps = max(config.num_steps - warmup, 1)
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.min_lr_ratio)
  else:
    raise ValueError(f"unknown config.schedule {config.schedule!r}; use 'constant' or 'cosine'")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Clipping (when ``grad_clip_norm > 0``) chained with the configured optimiser."""
  schedule = make_schedule(config)
  if config.optimizer == "adam":
    opt = optax.adam(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.eps)
  elif config.optimizer == "rmsprop":
    opt = optax.rmsprop(schedule, decay=config.rmsprop_decay, eps=config.eps,
                        momentum=config.momentum or None)
  elif config.optimizer == "sgd":
    opt = optax.sgd(schedule, momentum=config.momentum or None)
  else:
    raise ValueError(f"unknown config.optimizer {config.optimizer!r}; use adam, rmsprop or sgd")
  if config.grad_clip_norm > 0:
    # Clip before the optimiser so Adam's moments see the clipped gradients, as in the papers.
    opt = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), opt)
  return opt
