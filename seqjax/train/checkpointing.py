"""Orbax checkpoints of the train state, with integrity checks and fallback on restore.

Each checkpoint ``DIR/checkpoints/<step>/`` holds two items: ``state`` (the host copy of the
:class:`~seqjax.train.loop.TrainState`: step, params, optimiser state) and ``meta`` (JSON with the
step and a SHA-256 digest of every array in ``state``). Restoring recomputes the digest, so a
checkpoint whose files were truncated, overwritten or half-written is detected even when orbax
itself would read it without complaint; it is then moved to ``DIR/corrupt_checkpoints/`` with a
warning and the previous checkpoint is tried.

Retention: the last ``keep`` checkpoints, plus the one with the best ``best_metric`` when set.
Every process calls :meth:`Checkpointer.save` and :meth:`Checkpointer.restore_latest` (orbax
synchronises the hosts); the state is saved as host numpy arrays, written by the primary host.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers

from seqjax.train import distributed


def digest(tree: Any) -> str:
  """SHA-256 over the dtype, shape and bytes of every leaf, in tree order."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    leaf = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{leaf.dtype.str}{leaf.shape}".encode())
    h.update(leaf.tobytes())
  return h.hexdigest()


class CheckpointError(RuntimeError):
  """No checkpoint of the workdir could be restored."""


class Checkpointer:
  """A CheckpointManager over ``directory`` that verifies what it restores.

  Args:
    directory: where step directories live (``workdir/checkpoints``).
    keep: how many most recent checkpoints to keep.
    best_metric: metric name whose best checkpoint is kept too ("" disables).
    best_mode: "min" or "max": whether smaller or larger ``best_metric`` is better.
    corrupt_dir: where checkpoints that fail verification are moved.
  """

  def __init__(self, directory: str, keep: int = 2, best_metric: str = "",
               best_mode: str = "min", corrupt_dir: str | None = None):
    self._directory = os.path.abspath(directory)
    self._corrupt_dir = corrupt_dir or os.path.join(os.path.dirname(self._directory),
                                                    "corrupt_checkpoints")
    policies = [checkpoint_managers.LatestN(keep)]
    if best_metric:
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=lambda metrics: metrics[best_metric],
          # BestN keeps the tail of the sorted list, so "min" needs a descending sort.
          reverse=(best_mode == "min"), n=1, keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
        # A kill during an async save leaves a tmp directory; clear it when the run restarts.
        cleanup_tmp_directories=True,
        create=True)
    self._best_metric = best_metric
    self._manager = ocp.CheckpointManager(self._directory, options=options)

  @property
  def directory(self) -> str:
    return self._directory

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, metrics: Mapping[str, float] | None = None) -> bool:
    """Saves ``state`` (a pytree of host arrays) at ``step`` unless that step is already saved.

    ``metrics`` (flat name -> float) are recorded for best-checkpoint retention; pass them only
    when they contain ``best_metric`` (i.e. at evaluation steps).
    """
    if step in self._manager.all_steps():
      return False
    # 0-d arrays, not numpy scalars: orbax restores only array leaves.
    state = jax.tree.map(np.asarray, jax.device_get(state))
    if metrics is not None and self._best_metric not in metrics:
      metrics = None
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave({"step": int(step), "digest": digest(state)}))
    return self._manager.save(step, args=args,
                              metrics=None if metrics is None else dict(metrics), force=True)

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def restore_latest(self, target: Any) -> tuple[Any, int] | None:
    """Restores the newest checkpoint that passes verification.

    A checkpoint that fails is moved to ``corrupt_dir`` with a warning and the previous one is
    tried. If every checkpoint fails, the failure is more likely in the caller (e.g. a model
    whose shapes changed) than on disk: the checkpoints are put back and CheckpointError raised.

    Args:
      target: a pytree with the structure, shapes and dtypes of the saved state (host arrays).
    Returns:
      ``(state, step)``, or None when there is no checkpoint at all.
    """
    target = jax.tree.map(np.asarray, target)
    failed = []
    for step in reversed(self.all_steps()):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        state, meta = restored["state"], restored["meta"]
        if meta.get("step") != step or meta.get("digest") != digest(state):
          raise ValueError("contents do not match the digest written when it was saved")
        _check_like(state, target)
        return state, step
      except Exception as e:  # pylint: disable=broad-except
        reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        logging.warning("checkpoint at step %d is corrupt or incomplete (%s); moving it to %s "
                        "and trying the previous one", step, reason, self._corrupt_dir)
        failed.append((step, reason))
        self._move(self._directory, self._corrupt_dir, step)
    if failed:
      for step, _ in failed:
        self._move(self._corrupt_dir, self._directory, step)
      step, reason = failed[0]
      raise CheckpointError(f"none of the {len(failed)} checkpoints in {self._directory} could "
                            f"be restored (step {step}: {reason}); if the model changed, use a "
                            "new --workdir")
    return None

  def _move(self, src_dir: str, dst_dir: str, step: int) -> None:
    """Moves step directory ``step`` from ``src_dir`` to ``dst_dir`` (on process 0 only)."""
    if distributed.is_primary():
      os.makedirs(dst_dir, exist_ok=True)
      src, dst = os.path.join(src_dir, str(step)), os.path.join(dst_dir, str(step))
      if os.path.exists(dst):
        shutil.rmtree(dst)
      if os.path.exists(src):
        shutil.move(src, dst)
    distributed.barrier(f"move_checkpoint_{step}_{os.path.basename(dst_dir)}")
    self._manager.reload()


def _check_like(state: Any, target: Any) -> None:
  if jax.tree.structure(state) != jax.tree.structure(target):
    raise ValueError("restored state has a different structure from the model's state")
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(target)):
    if np.shape(a) != np.shape(b) or np.asarray(a).dtype != np.asarray(b).dtype:
      raise ValueError(f"restored array {np.shape(a)} {np.asarray(a).dtype} does not match "
                       f"the model's {np.shape(b)} {np.asarray(b).dtype}")
