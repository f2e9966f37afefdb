"""What docs/runtime.md promises of a run, checked in-process on a tiny regression.

A second Ctrl-C stops at once and leaves a workdir that resumes exactly; an infinite loss stops
the run as a NaN does; TensorBoard's event files hold the scalars of metrics.jsonl. The runs go
through ``cli._run`` (the entry point after flag parsing) or ``train.run`` in this process: the
signals are raised by the process itself at chosen points, so they land where a test wants them,
which a signal sent from outside to a subprocess cannot guarantee.
"""

from __future__ import annotations

import os
import signal
import struct
import threading
import types

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.crc32c import crc32c
from tensorboardX.proto import event_pb2

from seqjax import train
from seqjax.train import checkpointing
from seqjax.train import cli

import runtime_harness as rh

W_TRUE = np.array([0.5, -1.0, 2.0], np.float32)
EVAL_XS = np.random.default_rng(99).normal(size=(32, 3)).astype(np.float32)


def tiny_config(**fields):
  """12 steps: train records every 2, evaluations at 4, 8, 12, checkpoints at 4, 8, 12."""
  config = train.runtime_config()
  config.update(num_steps=12, batch_size=4, learning_rate=0.05, log_every=2, eval_every=4,
                checkpoint_every=4, keep_checkpoints=5)
  # Step (1-based) whose batch has a target of 1e30: its squared error overflows float32 to inf.
  config.inf_at_step = -1
  config.update(fields)
  return config


def make_experiment(config, workdir, on_batch=None):  # pylint: disable=unused-argument
  """Linear regression; ``on_batch(step)`` runs when a batch is drawn (a hook for the tests)."""

  def get_batch(step, shard_index, num_shards):  # pylint: disable=unused-argument
    if on_batch is not None:
      on_batch(step)
    rng = np.random.default_rng((config.seed, step))
    xs = rng.normal(size=(config.batch_size, 3)).astype(np.float32)
    ys = xs @ W_TRUE + 0.1 * rng.normal(size=config.batch_size).astype(np.float32)
    if step + 1 == config.inf_at_step:
      ys[0] = 1e30
    return {"xs": xs, "ys": ys}

  def loss_fn(params, batch, rng):  # pylint: disable=unused-argument
    err = batch["xs"] @ params["w"] + params["b"] - batch["ys"]
    examples = train.global_sum(jnp.float32(err.shape[0]))
    return jnp.sum(err ** 2) / examples, {"abs_err": jnp.sum(jnp.abs(err)) / examples}

  def evaluate(params, step):  # pylint: disable=unused-argument
    err = EVAL_XS @ params["w"] + params["b"] - EVAL_XS @ W_TRUE
    return {"eval/mse": float(np.mean(err ** 2))}

  return train.Experiment(init=lambda rng: {"w": jnp.zeros(3), "b": jnp.zeros(())},
                          loss_fn=loss_fn, get_batch=get_batch, evaluate=evaluate,
                          loss_reduction="global")


@pytest.fixture
def entry_point(capsys):
  """Runs the entry point after flag parsing: ``(exit status, stderr lines that are not logs)``."""
  def run(workdir, config, on_batch=None):
    value = types.SimpleNamespace
    handles = cli.Flags(workdir=value(value=str(workdir)), config=value(value=config),
                        coordinator_address=value(value=None), num_processes=value(value=None),
                        process_id=value(value=None))
    capsys.readouterr()
    run_entry_point = cli._run  # pylint: disable=protected-access
    with pytest.raises(SystemExit) as stopped:
      run_entry_point(lambda c, w: make_experiment(c, w, on_batch), handles, ["prog"])
    return stopped.value.code, rh.error_lines(capsys.readouterr().err)
  return run


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """An uninterrupted run of tiny_config()."""
  workdir = tmp_path_factory.mktemp("finished")
  train.run(make_experiment(tiny_config(), workdir), tiny_config(), str(workdir))
  return workdir


def assert_same_run(workdir, reference) -> None:
  """``workdir`` ended as the uninterrupted run: final state bit for bit, metrics, results."""
  rh.assert_trees_equal(rh.load_state(workdir, 12), rh.load_state(reference, 12))
  assert rh.read_metrics(workdir) == rh.read_metrics(reference)
  assert rh.read_json(workdir, "results.json") == rh.read_json(reference, "results.json")


def test_second_ctrl_c_stops_at_once_and_the_run_resumes(finished, tmp_path, monkeypatch,
                                                         entry_point):
  if threading.current_thread() is not threading.main_thread():
    pytest.skip("signal handlers can only be installed from the main thread")
  # Given a Ctrl-C while step 6's batch is drawn (the run then saves a checkpoint at step 6 and
  # stops), and a second one while that checkpoint is being written,
  def on_batch(step):
    if step == 5:
      signal.raise_signal(signal.SIGINT)  # Runs the handler before it returns.

  save = checkpointing.Checkpointer.save

  def save_then_interrupt(self, step, state, metrics=None):
    saved = save(self, step, state, metrics)
    if step == 6:
      signal.raise_signal(signal.SIGINT)  # The asynchronous write is still in flight.
    return saved

  monkeypatch.setattr(checkpointing.Checkpointer, "save", save_then_interrupt)
  status, lines = entry_point(tmp_path, tiny_config(), on_batch)
  monkeypatch.undo()
  # Then the run stops without finishing the orderly stop (whose message names the step),
  assert status == 130
  assert lines == ["error: interrupted; rerun the same command to resume from the last "
                   "checkpoint"], lines
  assert not os.path.exists(tmp_path / "results.json")
  # leaving the checkpoint whose write had begun finished, not torn (resuming below would move
  # a torn one aside),
  assert rh.checkpoint_steps(tmp_path) == [4, 6]
  assert max(r["step"] for r in rh.read_metrics(tmp_path)) == 6
  # And rerunning resumes from the newest checkpoint and ends exactly as the uninterrupted run.
  train.run(make_experiment(tiny_config(), tmp_path), tiny_config(), str(tmp_path))
  assert not os.path.exists(tmp_path / "corrupt_checkpoints")
  assert_same_run(tmp_path, finished)


def test_infinite_loss_stops_the_run_like_nan(tmp_path, entry_point):
  # Given a run whose 7th batch makes the loss overflow to +inf (not NaN),
  status, lines = entry_point(tmp_path, tiny_config(inf_at_step=7))
  # Then it exits 1 with one line, before logging or saving anything of step 7.
  assert status == 1
  assert lines == ["error: loss is inf at step 7; stopping (the checkpoint at step 4 is kept); "
                   "lower config.learning_rate or set config.grad_clip_norm"], lines
  assert rh.checkpoint_steps(tmp_path) == [4]
  assert not os.path.exists(tmp_path / "results.json")
  records = rh.read_metrics(tmp_path)
  assert max(r["step"] for r in records) == 6
  assert "Infinity" not in (tmp_path / "metrics.jsonl").read_text()


def _masked_crc(data: bytes) -> int:
  """TFRecord's checksum: CRC-32C, rotated right by 15 bits plus a constant."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_scalars(directory) -> list[tuple[str, int, float]]:
  """``(tag, step, value)`` of every scalar in the TFRecord event files of ``directory``.

  Each record is ``length: u64, crc(length): u32, data, crc(data): u32`` (little-endian); the
  checksums are verified so that a file TensorBoard would reject fails here too.
  """
  scalars = []
  for name in sorted(os.listdir(directory)):
    with open(os.path.join(directory, name), "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      header = data[pos:pos + 8]
      (length,), (header_crc,) = struct.unpack("<Q", header), struct.unpack(
          "<I", data[pos + 8:pos + 12])
      payload = data[pos + 12:pos + 12 + length]
      (payload_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
      assert header_crc == _masked_crc(header) and payload_crc == _masked_crc(payload), name
      pos += 16 + length
      event = event_pb2.Event.FromString(payload)
      scalars += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
  return scalars


def test_tensorboard_events_hold_the_scalars_of_metrics_jsonl(finished):
  # Given a finished run, every value of metrics.jsonl is in its TensorBoard events under the
  # same tag and step (as float32, TensorBoard's scalar type), and nothing else is; the
  # training rate is there as train/steps_per_sec.
  expected = []
  for record in rh.read_metrics(finished, drop=()):
    values = {k: v for k, v in record.items() if k not in ("step", "split", "steps_per_sec")}
    if record["split"] == "train":
      values["train/steps_per_sec"] = record["steps_per_sec"]
    expected += [(k, record["step"], float(np.float32(v))) for k, v in values.items()]
  assert {tag for tag, _, _ in expected} == {
      "train/loss", "train/abs_err", "train/grad_norm", "train/learning_rate",
      "train/steps_per_sec", "eval/mse"}
  assert sorted(read_scalars(finished / "tensorboard")) == sorted(expected)
