"""State carried across steps (``Experiment.init_carry``, ``TrainState.carry``): resume, devices.

The task (carry_task.py) trains an LSTM language model by truncated BPTT over 8 parallel
streams whose state the runtime carries from step to step. Shown here: a run killed with SIGKILL
and resumed ends bit for bit as the uninterrupted run, carried state included, on 2 devices (so
the carry is split over devices and put back together at every checkpoint); the carry is split
over slices exactly as the batch is (1 and 2 slices train alike); a carry of the wrong shape
is refused by name; a run that carries nothing still restores checkpoints of the earlier layout.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import train
from seqjax.train import loop

import carry_task
import runtime_harness as rh

TASK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "carry_task.py")
FINAL = 30  # carry_task's num_steps; a checkpoint every 5 steps, evaluations at 15 and 30.
DEVICES = 2
KILL_SEED = 3  # Picks the step of the SIGKILL; printed with every failure of that test.


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run of the carry task on 2 devices."""
  workdir = tmp_path_factory.mktemp("carry_reference")
  rh.assert_ok(rh.run(workdir, task=TASK, devices=DEVICES))
  return workdir


def test_sigkill_with_carried_state_resumes_bitwise(reference, tmp_path):
  # Given a run on 2 devices killed with SIGKILL at a seeded random step after a checkpoint,
  target = int(np.random.default_rng(KILL_SEED).integers(8, 22))
  proc = rh.start(tmp_path, task=TASK, devices=DEVICES)
  rh.wait_for_step(tmp_path, proc, target)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  saved = rh.checkpoint_steps(tmp_path)
  where = f"SIGKILL aimed at step {target} (KILL_SEED={KILL_SEED}), checkpoints {saved}"
  assert proc.returncode == -signal.SIGKILL and saved and saved[-1] < FINAL, where
  # When the same command runs again,
  rh.assert_ok(rh.run(tmp_path, task=TASK, devices=DEVICES))
  # then every checkpoint both kept holds the same step, parameters, optimiser state and carry,
  common = sorted(set(rh.checkpoint_steps(tmp_path)) & set(rh.checkpoint_steps(reference)))
  assert FINAL in common, where
  for step in common:
    got, want = rh.load_state(tmp_path, step), rh.load_state(reference, step)
    assert sorted(got) == ["carry", "opt_state", "params", "step"], where
    rh.assert_trees_equal(got, want)
  # the carry is a real state: all 8 streams' rows, changing from checkpoint to checkpoint,
  carries = [rh.load_state(reference, s)["carry"][0] for s in common[-2:]]  # layer 0's (h, c)
  assert carries[0][0].shape == (8, 16) and np.all(np.abs(carries[-1][0]).max(axis=1) > 0)
  assert not np.array_equal(carries[0][1], carries[1][1])
  # and the logs and results are the uninterrupted run's.
  assert rh.read_metrics(tmp_path) == rh.read_metrics(reference), where
  assert rh.read_json(tmp_path, "results.json") == rh.read_json(reference, "results.json")


def _train_on_slices(config, slices: int, steps: int):
  """The runtime's own state layout and step on ``slices`` slices (a vmap with the pmap's axis)."""
  experiment = carry_task.make_experiment(config)
  state, train_step = loop.make_training(experiment, config)
  state = loop._local_state(state, slices)  # pylint: disable=protected-access
  step = jax.jit(jax.vmap(train_step, axis_name=loop.AXIS))
  losses = []
  for i in range(steps):
    batch = loop._split_batch(  # pylint: disable=protected-access
        carry_task.get_batch_of_step(config, i), slices, config.batch_size)
    state, metrics = step(state, batch)
    losses.append(np.asarray(metrics["train/loss"])[0])
  carry = loop._host_state(state).carry  # pylint: disable=protected-access
  return np.array(losses), jax.tree.map(lambda x: np.asarray(x)[0], state.params), carry


def test_carry_is_split_over_devices_like_the_batch():
  # Given 4 steps (one stream reset among them) on 1 and 2 slices of every batch,
  config = carry_task.get_config()
  config.chunks = 3
  runs = {n: _train_on_slices(config, n, 4) for n in (1, 2)}
  # then losses, parameters and the carry put back in global row order agree (1e-5):
  # each stream's state stays with that stream's rows of the batch, wherever they are.
  for n in (2,):
    np.testing.assert_allclose(runs[n][0], runs[1][0], rtol=1e-5)
    for got, want in zip(jax.tree.leaves(runs[n][1:]), jax.tree.leaves(runs[1][1:])):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert runs[1][0][-1] < runs[1][0][0]
  # A process's share: process 1 of 2, with 2 devices, holds rows 4..7 of 8, two per device.
  state = train.TrainState(np.int32(0), {}, (), {"x": np.arange(8)})
  local = loop._local_state(state, 2, process_index=1, num_processes=2)  # pylint: disable=protected-access
  np.testing.assert_array_equal(local.carry["x"], [[4, 5], [6, 7]])


def test_a_carry_of_the_wrong_shape_is_refused():
  config = carry_task.get_config()
  experiment = carry_task.make_experiment(config)
  # init_carry must give the global batch as leading axis,
  bad_init = dataclasses.replace(experiment, init_carry=lambda rng: jnp.zeros((3, 2)))
  with pytest.raises(ValueError, match=r"leading axis is the global batch config.batch_size=8"):
    loop.make_training(bad_init, config)
  # and loss_fn must hand back a carry that fits the one it got.
  def loss_fn(params, batch, rng, carry):
    loss, metrics, _ = experiment.loss_fn(params, batch, rng, carry)
    return loss, metrics, jax.tree.map(lambda x: x[:1], carry)
  state, _ = loop.make_training(experiment, config)
  step = train.make_train_step(loss_fn, train.make_optimizer(config), jax.random.PRNGKey(0),
                               loss_reduction="global")
  with pytest.raises(ValueError, match="does not match the carry it was given"):
    jax.jit(step)(state, carry_task.get_batch_of_step(config, 0))


def test_runs_without_a_carry_restore_checkpoints_of_the_earlier_layout(tmp_path):
  # Given a checkpoint saved as every run saved it before carried state existed (a 3-field
  # train state),
  config = carry_task.get_config()
  experiment = carry_task.make_experiment(config)
  plain = dataclasses.replace(experiment, init_carry=None)
  state, _ = loop.make_training(plain, config)
  earlier = collections.namedtuple("TrainState", ["step", "params", "opt_state"])
  state = state._replace(step=np.int32(7))
  with train.Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
    ckpt.save(7, earlier(state.step, state.params, state.opt_state))
  # When it is loaded for an experiment that carries nothing, then it restores as it was.
  restored, step = train.load_checkpoint(plain, config, str(tmp_path))
  assert step == 7 and restored.carry is None and int(restored.step) == 7
  rh.assert_trees_equal(jax.tree.map(np.asarray, restored.params),
                        jax.tree.map(np.asarray, state.params))
