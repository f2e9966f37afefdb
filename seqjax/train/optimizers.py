"""Optimisers and learning-rate schedules built from the runtime config fields.

``make_optimizer(config)`` returns an optax ``GradientTransformation``: optional gradient-norm
clipping (over all parameters, or per model with :func:`clip_per_model`), then Adam, RMSProp or
SGD with momentum driven by ``make_schedule(config)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
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


def clip_per_model(max_norm: float) -> optax.GradientTransformation:
  """Global-norm clipping of every model on its own, for models trained side by side.

  The parameters are ``{name: tree}`` and every leaf of a tree carries a leading ``[copies]``
  axis (e.g. seeds under ``vmap``): copy ``i`` of model ``name`` is clipped to norm ``max_norm``
  over its own leaves, exactly as ``optax.clip_by_global_norm`` would clip it if it trained
  alone, so one model's large gradient never shrinks another's step.
  """
  if max_norm <= 0:
    raise ValueError(f"max_norm must be > 0; got {max_norm}")

  def update(updates, state, params=None):
    del params
    if not isinstance(updates, dict):
      raise ValueError("clip_per_model needs parameters {name: tree of [copies, ...] leaves}; "
                       f"got a {type(updates).__name__}")
    out = {}
    for name, tree in updates.items():
      leaves = jax.tree.leaves(tree)
      norm = jnp.sqrt(sum(jnp.sum(jnp.square(leaf).reshape(leaf.shape[0], -1), axis=1)
                          for leaf in leaves))  # [copies]
      def clip(leaf, norm=norm):
        norm = norm.reshape((-1,) + (1,) * (leaf.ndim - 1))
        # The same expression as optax.clip_by_global_norm, per copy.
        return jnp.where(norm < max_norm, leaf, (leaf / norm) * max_norm).astype(leaf.dtype)
      out[name] = jax.tree.map(clip, tree)
    return out, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(config: ml_collections.ConfigDict,
                   per_model_clip: bool = False) -> optax.GradientTransformation:
  """Clipping (when ``grad_clip_norm > 0``) chained with the configured optimiser.

  With ``per_model_clip`` the clipping is :func:`clip_per_model` instead of one global norm.
  """
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
    clip = (clip_per_model if per_model_clip else optax.clip_by_global_norm)(
        config.grad_clip_norm)
    opt = optax.chain(clip, opt)
  return opt
