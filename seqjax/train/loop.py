"""The one train loop every experiment runs: pmapped ``train_step``, evaluation, logs, checkpoints.

``run(experiment, config, workdir)`` trains ``experiment`` for ``config.num_steps`` steps,
resuming from the workdir's latest checkpoint when there is one. Everything a step consumes is a
pure function of ``(config.seed, step)``: the batch comes from ``experiment.get_batch(step, ...)``
and the step's key is ``fold_in(key, step)`` (``key`` derived from the seed; the legacy
``"device_mean"`` reduction also folds in the device index); so a run stopped at any moment and
restarted from its checkpoint computes bit for bit what the uninterrupted run computes.

How losses combine over devices (``Experiment.loss_reduction``, see ``global_batch.py``):
``"global"``: each device returns its share of the global average and the runtime adds the shares
(``lax.psum`` of loss, metrics and gradients), so 1 and N devices compute the same numbers;
``"device_mean"`` (legacy): each device returns the mean over its own slice and the runtime
averages those (``lax.pmean``), equal to the global mean only when every slice weighs the same.

State carried across steps (``Experiment.init_carry``, e.g. the recurrent state of B parallel
streams in truncated backpropagation through time) lives in ``TrainState.carry``: a pytree whose
leaves have the global batch as leading axis, split over processes and devices exactly as the
batch is, handed to ``loss_fn`` and replaced by what it returns, saved in every checkpoint and
restored on resume, so a resumed run carries on with the very same state. Gradients never flow
into it (it is an input of the step, not a parameter).

Order of events after step ``s`` (``state.step == s``): log train metrics, evaluate, then save a
checkpoint. A checkpoint at step ``s`` therefore always comes after every metrics line of steps
``<= s``, and on resume from it the lines of later steps (which will be re-run) are dropped.
"""

from __future__ import annotations

import dataclasses
import math
import signal
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from seqjax.train import checkpointing
from seqjax.train import config as config_lib
from seqjax.train import distributed
from seqjax.train import global_batch
from seqjax.train import metrics_log
from seqjax.train import optimizers
from seqjax.train import workdir as workdir_lib

Params = Any
Batch = Any  # A pytree of numpy arrays whose leaves all have the (local) batch as leading axis.
Metrics = dict[str, Any]

AXIS = global_batch.AXIS  # pmap axis name: gradients and metrics are combined over it.


class TrainState(NamedTuple):
  """Everything that changes during training. ``step`` counts completed steps.

  ``carry`` is the experiment's state carried from step to step (``Experiment.init_carry``),
  leaves ``[B, ...]`` with the global batch ``B`` leading (``[b, ...]`` inside the step: this
  device's rows); None when the experiment carries nothing.
  """
  step: jax.Array  # int32 scalar.
  params: Params
  opt_state: optax.OptState
  carry: Any = None


class _SavedState(NamedTuple):
  """A TrainState without a carry as it is checkpointed: the layout of every earlier
  checkpoint (same tree, same digest), so runs that carry nothing restore them unchanged."""
  step: jax.Array
  params: Params
  opt_state: optax.OptState


def _to_saved(state: TrainState):
  return _SavedState(state.step, state.params, state.opt_state) if state.carry is None else state


def _from_saved(saved) -> TrainState:
  return saved if isinstance(saved, TrainState) else TrainState(*saved)


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What an experiment supplies to :func:`run` (see ``seqjax/train/__init__.py``).

  Attributes:
    init: ``rng -> params``; the initial parameters.
    loss_fn: ``(params, batch, rng) -> (loss, metrics)``: the scalar loss and a flat dict of
      scalar metrics (names without a split prefix get ``train/``) of one device's slice of the
      batch, traced under ``jax.pmap``. What they are depends on ``loss_reduction``. With
      ``init_carry``: ``(params, batch, rng, carry) -> (loss, metrics, new_carry)``, where
      ``carry`` holds this device's rows of the carried state and ``new_carry`` has its
      structure, shapes and dtypes.
    get_batch: ``(step, shard_index, num_shards) -> batch``: this process's shard
      (``config.batch_size // num_shards`` examples) of the global batch of ``step``; must be a
      pure function of ``(config.seed, step, shard_index, num_shards)``.
    evaluate: optional ``(params, step) -> metrics`` with names like ``eval/loss``; called
      every ``config.eval_every`` steps and at the last step on every process, with host params.
    results: optional ``(params, history) -> dict`` for results.json; ``history`` is the list of
      metrics.jsonl records. Must not depend on ``steps_per_sec`` if resumed runs are to match.
    plot: optional ``(workdir, params, history) -> None`` writing PNGs into the workdir; gets
      the final host params, as ``results`` does.
    optimizer: optional optax transformation replacing the one built from the config.
    loss_reduction: how the devices' losses combine. ``"global"``: ``loss_fn`` returns this
      device's share of the global average (local sums over global counts from
      :func:`global_batch.global_sum`), for the loss and every metric; the runtime adds the
      shares; ``rng`` is the step key, shared by all devices (per-example keys:
      :func:`global_batch.example_keys`). ``"device_mean"`` (legacy, the default): ``loss_fn``
      returns means over its slice, the runtime averages them over devices, and ``rng`` is also
      folded with the device index.
    init_carry: optional ``rng -> carry``: the state carried from one step to the next, a
      pytree whose every leaf has the global batch (``config.batch_size``) as leading axis;
      row ``i`` travels with example ``i`` of every batch (the same process, device and row).
      It is kept in :class:`TrainState`, checkpointed and restored with it.
  """
  init: Callable[[jax.Array], Params]
  loss_fn: Callable[[Params, Batch, jax.Array], tuple[jax.Array, Metrics]]
  get_batch: Callable[[int, int, int], Batch]
  evaluate: Callable[[Params, int], Metrics] | None = None
  results: Callable[[Params, list[dict]], dict] | None = None
  plot: Callable[[str, Params, list[dict]], None] | None = None
  optimizer: optax.GradientTransformation | None = None
  loss_reduction: str = "device_mean"
  init_carry: Callable[[jax.Array], Any] | None = None

  def __post_init__(self):
    global_batch.check_reduction(self.loss_reduction)


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN or infinite loss; the run stopped without saving that state."""


class StopRequested(RuntimeError):
  """SIGTERM or SIGINT stopped the run after a checkpoint was saved."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


def make_train_step(loss_fn, optimizer: optax.GradientTransformation, rng: jax.Array,
                    axis_name: str | None = None,
                    schedule: optax.Schedule | None = None, nan_at_step: int = -1,
                    loss_reduction: str = "device_mean"):
  """Builds the pure ``train_step(state, batch) -> (state, metrics)``.

  Args:
    loss_fn: ``(params, batch, rng) -> (loss, metrics)``; for a state whose ``carry`` is not
      None, ``(params, batch, rng, carry) -> (loss, metrics, new_carry)`` and the step's state
      gets ``new_carry`` (no gradient flows into or out of the carry).
    optimizer: the optax transformation (clipping included).
    rng: the run's base key; the step's key is ``fold_in(rng, state.step)`` (with
      ``"device_mean"`` under ``axis_name`` also folded with the device index), so randomness
      depends on the step alone, never on history.
    axis_name: when set, the step runs under ``jax.pmap`` with that axis name (it must be
      ``AXIS`` for the ``global_batch`` helpers) and gradients, loss and metrics are combined
      over it: added (``lax.psum``) for ``"global"``, averaged (``lax.pmean``) for
      ``"device_mean"``.
    schedule: when given, the step's learning rate is reported as ``train/learning_rate``.
    nan_at_step: debugging only; the loss of this (1-based) step becomes NaN.
    loss_reduction: ``"global"`` or ``"device_mean"``, as in :class:`Experiment`.
  """
  global_batch.check_reduction(loss_reduction)
  if loss_reduction == "global" and axis_name not in (None, AXIS):
    raise ValueError(f"loss_reduction='global' needs axis_name={AXIS!r} (what global_sum and "
                     f"example_keys reduce over), got {axis_name!r}")

  def train_step(state: TrainState, batch: Batch):
    step_rng = jax.random.fold_in(rng, state.step)
    if axis_name is not None and loss_reduction == "device_mean":
      step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))

    def loss_and_metrics(params):
      with global_batch.tracing_reduction(loss_reduction):
        if state.carry is None:
          loss, metrics = loss_fn(params, batch, step_rng)
          new_carry = None
        else:
          loss, metrics, new_carry = loss_fn(params, batch, step_rng, state.carry)
          _check_new_carry(state.carry, new_carry)
      if nan_at_step >= 0:
        loss = loss * jnp.where(state.step + 1 == nan_at_step, jnp.nan, 1.0)
      return loss, (metrics, new_carry)

    (loss, (metrics, new_carry)), grads = jax.value_and_grad(
        loss_and_metrics, has_aux=True)(state.params)
    metrics = {(k if "/" in k else f"train/{k}"): v for k, v in metrics.items()}
    metrics["train/loss"] = loss
    if axis_name is not None:
      combine = jax.lax.psum if loss_reduction == "global" else jax.lax.pmean
      grads, metrics = combine((grads, metrics), axis_name)
    metrics["train/grad_norm"] = optax.tree.norm(grads)
    if schedule is not None:
      metrics["train/learning_rate"] = schedule(state.step)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state, new_carry), metrics

  return train_step


def _check_new_carry(carry, new_carry) -> None:
  """The carry a loss_fn returns must fit the one it got (it is fed back next step)."""
  def spec(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)
  if (jax.tree.structure(carry) != jax.tree.structure(new_carry)
      or spec(carry) != spec(new_carry)):
    raise ValueError(f"loss_fn returned a carry {spec(new_carry)} that does not match the carry "
                     f"it was given {spec(carry)} (structure, shapes and dtypes must agree)")


def make_training(experiment: Experiment, config: ml_collections.ConfigDict):
  """The initial state and the train step of a run, before :func:`run` maps the step.

  Returns:
    ``(state, train_step)``: the state from ``config.seed`` (host arrays, no device axis; the
    carry, if any, with the global batch leading) and
    :func:`make_train_step` of ``experiment`` with ``axis_name=AXIS``. :func:`run` pmaps the
    step over the devices; ``jax.vmap(train_step, axis_name=AXIS)`` over slices of one
    global batch runs the same collectives in one process (how the tests compare 1 and N).
  """
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  optimizer = experiment.optimizer or optimizers.make_optimizer(config)
  carry = None
  if experiment.init_carry is not None:  # First: a wrong carry fails before the model compiles.
    # A key of its own, so that carrying state leaves the parameters' initialisation as it was.
    carry = jax.device_get(jax.jit(experiment.init_carry)(jax.random.fold_in(init_rng, 1)))
    carry = jax.tree.map(np.asarray, carry)
    sizes = {np.shape(leaf)[:1] for leaf in jax.tree.leaves(carry)}
    if not jax.tree.leaves(carry) or sizes != {(config.batch_size,)}:
      raise ValueError(f"init_carry must return a pytree of arrays whose leading axis is the "
                       f"global batch config.batch_size={config.batch_size}; got "
                       f"{jax.tree.map(np.shape, carry)}")
  # One jitted init: a single compilation instead of one per eager op of the initialisers.
  state = jax.device_get(jax.jit(lambda key: _init_state(experiment.init, optimizer, key))(
      init_rng))._replace(carry=carry)
  train_step = make_train_step(experiment.loss_fn, optimizer, step_rng, axis_name=AXIS,
                               schedule=optimizers.make_schedule(config),
                               nan_at_step=config.nan_at_step,
                               loss_reduction=experiment.loss_reduction)
  return state, train_step


def _init_state(init, optimizer, rng) -> TrainState:
  params = init(rng)
  return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))


def _first_replica(tree):
  """Host copy of device 0's replica of a pmapped pytree (bitwise, no arithmetic)."""
  def first(x):
    if isinstance(x, np.ndarray):  # Not yet through pmap (a resumed run with no steps left).
      return x[0].copy()
    # A copy, never a view: the device buffer is donated to the next step while an async
    # checkpoint may still be writing this array.
    shard = np.array(x.addressable_data(0), copy=True)
    # pmap's shard_map-based outputs keep a length-1 device axis on each shard.
    return shard[0] if shard.ndim == x.ndim else shard
  return jax.tree.map(first, tree)


def _replicate(tree, n: int):
  return jax.tree.map(lambda x: np.stack([np.asarray(x)] * n), tree)


def _local_state(state: TrainState, n: int, process_index: int = 0,
                 num_processes: int = 1) -> TrainState:
  """The host state laid out for the pmap over this process's ``n`` devices.

  Step, parameters and optimiser state are replicated; the carry is split as the batch is:
  this process's contiguous share of the global rows, then contiguously over its devices.
  """
  local = _replicate(_SavedState(state.step, state.params, state.opt_state), n)
  carry = None
  if state.carry is not None:
    def split(x):
      x = np.asarray(x)
      rows = x.shape[0] // num_processes
      mine = x[process_index * rows:(process_index + 1) * rows]
      return mine.reshape((n, rows // n) + x.shape[1:])
    carry = jax.tree.map(split, state.carry)
  return TrainState(*local, carry)


def _on_devices(tree, devices: list):
  """``tree`` (this process's ``[n_local, ...]`` rows) as the arrays the pmapped step returns:
  sharded over ``devices`` along a mesh axis named ``AXIS``.

  Fed host arrays, the step would compile once for them and again for its own outputs at the
  second step (jax 0.10's pmap keys its cache on the inputs' shardings); laid out as its outputs
  are, it compiles once.
  """
  sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(devices), (AXIS,)),
                                        jax.sharding.PartitionSpec(AXIS))
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      tree)


def _host_state(state_rep: TrainState) -> TrainState:
  """The host copy of a pmapped state (bitwise): device 0's replica and the whole carry.

  The carry's device slices are put back in order into the global rows (gathered from every
  process in a multi-host run, so that each saves the same checkpoint).
  """
  saved = _first_replica(_SavedState(state_rep.step, state_rep.params, state_rep.opt_state))
  if state_rep.carry is None:
    return TrainState(*saved)

  def join(x):
    # A copy, never a view: the device buffers are donated to the next step.
    x = np.array(x, copy=True)
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])
  carry = jax.tree.map(join, state_rep.carry)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    carry = jax.tree.map(np.asarray, multihost_utils.process_allgather(carry, tiled=True))
  return TrainState(*saved, carry)


def _split_batch(batch: Batch, n: int, local_batch: int) -> Batch:
  def split(x):
    x = np.asarray(x)
    if x.shape[:1] != (local_batch,):
      raise ValueError(f"get_batch returned an array of shape {x.shape}; every leaf needs the "
                       f"local batch size {local_batch} as its leading axis")
    return x.reshape((n, local_batch // n) + x.shape[1:])
  return jax.tree.map(split, batch)


class _StopSignals:
  """Records SIGTERM / SIGINT so the loop can checkpoint and exit between two steps."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. called from a test runner thread).
        pass
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # A second Ctrl-C: stop now, without waiting for the checkpoint.
    self.signum = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def agreed(self) -> int | None:
    """The signal, if any process received one (all processes must stop at the same step)."""
    if jax.process_count() == 1:
      return self.signum
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    got = multihost_utils.process_allgather(np.int32(self.signum or 0))
    return int(np.max(got)) or None


def load_checkpoint(experiment: Experiment, config: ml_collections.ConfigDict,
                    workdir: str) -> tuple[TrainState, int] | None:
  """The workdir's latest verified checkpoint as ``(state, step)`` (host arrays), or None.

  For tools that read a run's parameters (sampling, evaluation) without training it; the state
  has the structure :func:`run` saves for ``experiment`` and ``config``.
  """
  state, _ = make_training(experiment, config)
  with checkpointing.Checkpointer(f"{workdir}/{workdir_lib.CHECKPOINTS}",
                                  corrupt_dir=f"{workdir}/{workdir_lib.CORRUPT}") as ckpt:
    restored = ckpt.restore_latest(_to_saved(state))
  return None if restored is None else (_from_saved(restored[0]), restored[1])


def run(experiment: Experiment, config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains ``experiment`` in ``workdir``; returns the results dict (also in results.json).

  Raises:
    ValueError / WorkdirError: bad config, unusable workdir, or a config change on resume.
    NonFiniteLossError: the loss became NaN or inf (the last good checkpoint is kept).
    StopRequested: SIGTERM / SIGINT arrived; a checkpoint was saved first.
  """
  config_lib.validate(config)
  workdir_lib.check_writable(workdir)
  # Two runs writing one workdir would interleave metrics and fight over checkpoints.
  held_lock = workdir_lib.lock(workdir) if distributed.is_primary() else None
  try:
    return _run_locked(experiment, config, workdir)
  finally:
    if held_lock is not None:
      held_lock.close()


def _run_locked(experiment: Experiment, config: ml_collections.ConfigDict, workdir: str) -> dict:
  config_dict = config_lib.to_dict(config)
  primary = distributed.is_primary()
  existed = workdir_lib.check_config(workdir, config_dict, config.allow_config_change)
  distributed.barrier("config_checked")
  if primary and (not existed or config.allow_config_change):
    workdir_lib.write_config(workdir, config_dict)

  local_devices, devices = distributed.select_devices(config.num_devices)
  n_local, n_proc = len(local_devices), jax.process_count()
  if config.batch_size % (n_local * n_proc):
    raise ValueError(f"config.batch_size={config.batch_size} is not divisible by the "
                     f"{n_proc} processes x {n_local} devices")
  local_batch = config.batch_size // n_proc

  state, train_step = make_training(experiment, config)

  ckpt = checkpointing.Checkpointer(
      f"{workdir}/{workdir_lib.CHECKPOINTS}", keep=config.keep_checkpoints,
      best_metric=config.best_metric, best_mode=config.best_mode,
      corrupt_dir=f"{workdir}/{workdir_lib.CORRUPT}")
  restored = ckpt.restore_latest(_to_saved(state))
  start = 0
  if restored is not None:
    state, start = _from_saved(restored[0]), restored[1]
    logging.info("resuming from the checkpoint at step %d in %s", start, ckpt.directory)
  if primary:
    dropped = workdir_lib.truncate_metrics(workdir, start)
    if dropped:
      logging.info("dropped %d metrics.jsonl records past step %d (they will be re-run)",
                   dropped, start)

  p_train_step = jax.pmap(train_step, axis_name=AXIS, devices=devices, donate_argnums=(0,))
  writer = metrics_log.MetricsWriter(workdir, config.num_steps, enabled=primary,
                                     first_step=start)
  state_rep = _on_devices(_local_state(state, n_local, jax.process_index(), n_proc), devices)
  last_saved = start if restored is not None else None
  try:
    with _StopSignals() as signals:
      meter = metrics_log.RateMeter(start)
      for step in range(start, config.num_steps):
        batch = experiment.get_batch(step, jax.process_index(), n_proc)
        state_rep, metrics = p_train_step(state_rep, _split_batch(batch, n_local, local_batch))
        metrics = {k: float(v) for k, v in _first_replica(metrics).items()}
        done = step + 1
        if not math.isfinite(metrics["train/loss"]):
          where = (f"the checkpoint at step {last_saved} is kept" if last_saved is not None
                   else "no checkpoint was saved")
          raise NonFiniteLossError(f"loss is {metrics['train/loss']} at step {done}; stopping "
                                   f"({where}); lower config.learning_rate or set "
                                   "config.grad_clip_norm")
        last = done == config.num_steps
        if done % config.log_every == 0 or last:
          writer.write(done, metrics, meter.rate(done))
        eval_metrics = None
        if experiment.evaluate is not None and (done % config.eval_every == 0 or last):
          eval_metrics = experiment.evaluate(_first_replica(state_rep.params), done)
          eval_metrics = {(k if "/" in k else f"eval/{k}"): float(v)
                          for k, v in eval_metrics.items()}
          writer.write(done, eval_metrics, meter.rate(done))
        signum = signals.agreed() if (n_proc == 1 or done % config.log_every == 0) else None
        if done % config.checkpoint_every == 0 or last or signum:
          ckpt.save(done, _to_saved(_host_state(state_rep)), eval_metrics)
          last_saved = done
        if signum:
          ckpt.wait()
          name = signal.Signals(signum).name
          raise StopRequested(f"stopped by {name} at step {done}; checkpoint saved in "
                              f"{ckpt.directory}; rerun the same command to resume", signum)
    ckpt.wait()
    final_state = _host_state(state_rep)
    results = None
    if primary:
      results = _write_results(experiment, workdir, final_state, config)
    distributed.barrier("results_written")
    return results
  finally:
    writer.close()
    ckpt.close()


def _write_results(experiment: Experiment, workdir: str, state, config) -> dict:
  history = workdir_lib.read_metrics(workdir)
  results: dict[str, Any] = {"step": int(state.step), "num_steps": config.num_steps}
  for record in history:  # The last record of each split: the run's final numbers.
    results[f"final_{record['split']}"] = {k: v for k, v in record.items()
                                           if k not in ("split", "steps_per_sec")}
  if experiment.results is not None:
    results.update(experiment.results(state.params, history))
  workdir_lib.write_results(workdir, results)
  if experiment.plot is not None:
    experiment.plot(workdir, state.params, history)
  return results

