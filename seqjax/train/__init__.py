"""The experiment runtime: one train loop, one workdir layout, exact resume, pmap, multi-host.

How an experiment plugs in
--------------------------
An experiment is two files. ``experiments/configs/<name>.py`` holds ``get_config(arg)``, which
starts from :func:`runtime_config` (seed, num_steps, batch_size, optimizer, learning_rate,
schedule, grad_clip_norm, log/eval/checkpoint intervals, num_devices, ...; see
``seqjax/train/config.py``) and adds the experiment's own fields, one comment above each. Variants
are picked by ``arg`` (every experiment has a ``smoke`` variant that runs in under a minute).

``experiments/<name>.py`` builds an :class:`Experiment` from the config and hands it to the
runtime::

  from seqjax import train

  def make_experiment(config) -> train.Experiment:
    return train.Experiment(
        init=lambda rng: ...,                      # rng -> params pytree
        loss_fn=loss_fn,                           # (params, batch, rng) -> (loss, {"acc": ...})
        get_batch=get_batch,                       # (step, shard_index, num_shards) -> batch
        evaluate=evaluate,                         # optional (params, step) -> {"eval/loss": ...}
        results=results,                           # optional (params, history) -> dict
        plot=plot)                                 # optional (workdir, params, history) -> None

  if __name__ == "__main__":
    train.main(make_experiment, train.define_flags(<path of experiments/configs/<name>.py>))

Contract of the pieces:

* ``loss_fn`` is traced inside the pmapped, jitted ``train_step(state, batch) -> (state,
  metrics)``; it sees one device's slice of the batch and returns the mean loss over it (the
  runtime averages loss, metrics and gradients over devices with ``lax.pmean``, so use a mean
  over examples if 1 and N devices are to agree). ``rng`` is already folded with the step and
  the device index. Metric names without ``/`` get the ``train/`` prefix.
* ``get_batch(step, shard_index, num_shards)`` returns this process's shard of global batch
  ``step`` as a pytree of numpy arrays with leading axis ``config.batch_size // num_shards``.
  It must be a pure function of ``(config.seed, step, shard)`` (e.g. seed a
  ``np.random.default_rng((seed, step))`` and slice the global batch), never of how many steps
  this process has run: that is what makes resume exact and multi-host runs equal one host.
* ``evaluate(params, step)`` gets host (numpy) params on every process every
  ``config.eval_every`` steps and at the last step; names its metrics ``eval/...`` (or
  ``test/...``; names without ``/`` get ``eval/``); with ``config.best_metric`` set, the best
  checkpoint by that metric is kept.
* ``results(params, history)`` returns the experiment's summary, merged into results.json
  (which also holds ``step`` and the last record of each split). ``history`` is the list of
  metrics.jsonl records. ``plot(workdir, params, history)`` writes PNGs (use matplotlib's Agg backend).
  Both run on process 0 only, after the last step (also when a finished run is rerun).
* ``optimizer`` (optional) replaces the optax transformation built from the config.
* Validation: raise ``ValueError`` naming the config field (``config.hidden_size must be > 0,
  got 0``) from ``make_experiment``; the entry point turns it into a one-line error.

Lower-level pieces for experiments with special needs: :func:`make_train_step`,
:func:`make_optimizer`, :class:`Checkpointer`, :class:`MetricsWriter`, and
``seqjax.train.workdir`` (the file layout; ``read_metrics``).

The workdir contract (``seqjax/train/workdir.py``)::

  config.json  metrics.jsonl  tensorboard/  checkpoints/<step>/  results.json  *.png
"""

from seqjax.train.checkpointing import CheckpointError
from seqjax.train.checkpointing import Checkpointer
from seqjax.train.cli import define_flags
from seqjax.train.cli import main
from seqjax.train.config import runtime_config
from seqjax.train.loop import Experiment
from seqjax.train.loop import NonFiniteLossError
from seqjax.train.loop import StopRequested
from seqjax.train.loop import TrainState
from seqjax.train.loop import make_train_step
from seqjax.train.loop import run
from seqjax.train.metrics_log import MetricsWriter
from seqjax.train.optimizers import clip_per_model
from seqjax.train.optimizers import make_optimizer
from seqjax.train.optimizers import make_schedule
from seqjax.train.workdir import read_metrics

__all__ = [
    "CheckpointError", "Checkpointer", "Experiment", "clip_per_model", "MetricsWriter", "NonFiniteLossError", "StopRequested",
    "TrainState", "define_flags", "main", "make_optimizer", "make_schedule", "make_train_step",
    "read_metrics", "run", "runtime_config",
]
