"""The experiment runtime: one train loop, one workdir layout, exact resume, pmap, multi-host.

The full contract is in ``docs/runtime.md``; the essentials:

An experiment is a folder ``experiments/<name>/``: ``__main__.py`` (thin: flags, then one call),
``config.py`` (``get_config(arg)`` starting from :func:`runtime_config`, one comment above each
field, variants picked by ``arg`` including ``smoke``), ``README.md`` and ``results/``. Every
experiment starts the same way::

  python -m experiments.<name> --workdir DIR [--config experiments/<name>/config.py[:variant]] \
      [--config.key=value ...]

``__main__.py`` hands an :class:`Experiment` built from the config to the runtime::

  from seqjax import train

  def make_experiment(config, workdir) -> train.Experiment:
    def loss_fn(params, batch, rng):  # one device's slice of the global batch
      keys = train.example_keys(rng, batch["tokens"].shape[0])  # [b] per-example dropout keys
      nll, mask = ...                                            # [b, t] each
      tokens = train.global_sum(jnp.sum(mask))                   # the count over all devices
      return jnp.sum(nll * mask) / tokens, {"tokens": jnp.sum(mask)}  # shares, added up

    return train.Experiment(
        init=init,                # rng -> params
        loss_fn=loss_fn,          # (params, batch, rng) -> (loss, metrics)  [+ carry: see below]
        get_batch=get_batch,      # (step, shard_index, num_shards) -> this process's shard
        loss_reduction="global",  # loss and metrics are shares of the global average
        evaluate=evaluate,        # optional (params, step) -> {"eval/...": ...}
        results=results,          # optional (params, history) -> dict for results.json
        plot=plot,                # optional (workdir, params, history) -> None
        init_carry=None)          # optional rng -> state carried across steps, [B, ...] leaves

  train.main(make_experiment, train.define_flags(<path of experiments/<name>/config.py>))

* ``loss_reduction="global"``: loss and metrics are this device's share of the global average
  (local sums over :func:`global_sum` counts) and dropout comes from :func:`example_keys`; such a
  model trains the same on 1 and N devices and processes. ``"device_mean"`` (legacy, default):
  means over the device's slice, averaged over devices.
* ``get_batch`` is a pure function of ``(config.seed, step, shard)``: that makes resume exact and
  multi-host runs equal one host.
* Workdir: ``config.json  metrics.jsonl  tensorboard/  checkpoints/<step>/  results.json  *.png``;
  rerunning the same command resumes from the latest checkpoint.
* State carried across steps (truncated backpropagation through time over B parallel streams):
  ``Experiment(init_carry=..., ...)`` with ``init_carry: rng -> carry``, a pytree whose leaves
  have the global batch ``config.batch_size`` as leading axis (row ``i`` belongs to example ``i``
  of every batch); ``loss_fn`` then is ``(params, batch, rng, carry) -> (loss, metrics,
  new_carry)``, sees its device's rows of the carry as it sees its rows of the batch, and returns
  the carry for the next step (same structure, shapes and dtypes). The runtime keeps it in
  ``TrainState.carry``, splits it over processes and devices like the batch, saves it in every
  checkpoint (put back together in global row order) and restores it, so a run killed at any
  moment resumes bit for bit with the same carried state. Gradients do not cross steps: the carry
  is an input of the step, never differentiated. Without ``init_carry``, ``carry`` is None and
  checkpoints keep their earlier layout::

    def init_carry(rng):          # zeros: every stream starts afresh
      return [cell.initial_carry(config.batch_size, h) for _ in range(layers)]

    def loss_fn(params, batch, rng, carry):
      carry = reset(carry, batch["starts"])        # [b] streams that begin again
      logits, new_carry = apply(params, batch["inputs"], carry)
      ...
      return loss, metrics, new_carry

Lower-level pieces: :func:`load_checkpoint` (a workdir's latest state, for sampling and
evaluation tools), :func:`make_train_step`, :func:`make_optimizer`, :class:`Checkpointer`,
:class:`MetricsWriter`, ``seqjax.train.workdir`` (the file layout; ``read_metrics``).
"""

from seqjax.train.checkpointing import CheckpointError
from seqjax.train.checkpointing import Checkpointer
from seqjax.train.cli import define_flags
from seqjax.train.cli import main
from seqjax.train.config import runtime_config
from seqjax.train.global_batch import example_keys
from seqjax.train.global_batch import global_sum
from seqjax.train.loop import Experiment
from seqjax.train.loop import NonFiniteLossError
from seqjax.train.loop import StopRequested
from seqjax.train.loop import TrainState
from seqjax.train.loop import load_checkpoint
from seqjax.train.loop import make_train_step
from seqjax.train.loop import run
from seqjax.train.metrics_log import MetricsWriter
from seqjax.train.optimizers import clip_per_model
from seqjax.train.optimizers import make_optimizer
from seqjax.train.optimizers import make_schedule
from seqjax.train.workdir import read_metrics

__all__ = [
    "CheckpointError", "Checkpointer", "Experiment", "MetricsWriter", "NonFiniteLossError",
    "StopRequested", "TrainState", "clip_per_model", "define_flags", "example_keys",
    "global_sum", "load_checkpoint", "main", "make_optimizer", "make_schedule",
    "make_train_step", "read_metrics", "run", "runtime_config",
]
