"""Exact resume, signals, corrupt checkpoints, config changes, NaN stops and flag errors.

The resume tests drive tests/train/lstm_task.py in a subprocess (ragged strings, dropout, the
fused LSTM, Adam with a warm-up + cosine schedule: a resume that restored the wrong dropout keys,
reset Adam's moments or restarted the schedule shows) and compare with one uninterrupted
reference run: the same saved state (step, parameters, optimiser state) bit for bit, the same
metrics.jsonl (apart from timings), the same results.json. The error-path tests, which need no
reference, run the cheaper ``python -m experiments.adding`` smoke variant.
"""

from __future__ import annotations

import json
import os
import shutil
import signal

import jax
import numpy as np
import pytest

from seqjax import train
from seqjax.train import workdir as workdir_lib

import lstm_task
import runtime_harness as rh

TASK = rh.LSTM_TASK
FINAL = 60  # lstm_task's num_steps; a checkpoint every 10 steps, evaluations at 30 and 60.
KILL_SEED = 1  # Picks the step of the SIGKILL; printed with every failure of that test.


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run of the LSTM task."""
  workdir = tmp_path_factory.mktemp("reference")
  rh.assert_ok(rh.run(workdir, task=TASK))
  return workdir


def assert_same_run(workdir, reference, where: str = "") -> None:
  """``workdir`` ended exactly as the uninterrupted reference: state, metrics, results."""
  assert rh.checkpoint_steps(workdir)[-1] == FINAL, where
  # Every checkpoint both runs kept holds the same step, parameters and optimiser state.
  common = set(rh.checkpoint_steps(workdir)) & set(rh.checkpoint_steps(reference))
  for step in sorted(common):
    got, want = rh.load_state(workdir, step), rh.load_state(reference, step)
    assert sorted(got) == ["opt_state", "params", "step"], where
    for part in ("params", "opt_state"):
      leaves, tree = jax.tree_util.tree_flatten_with_path(got[part])
      assert tree == jax.tree.structure(want[part]), where
      for (path, leaf), expected in zip(leaves, jax.tree.leaves(want[part])):
        np.testing.assert_array_equal(
            leaf, expected, err_msg=f"{part}{jax.tree_util.keystr(path)} at step {step}; {where}")
  assert rh.read_metrics(workdir) == rh.read_metrics(reference), where
  assert rh.read_json(workdir, "results.json") == rh.read_json(reference, "results.json"), where


def test_reference_run_writes_the_workdir_contract(reference):
  # Given an uninterrupted run, its workdir holds every file of the contract.
  names = set(os.listdir(reference))
  assert {"config.json", "metrics.jsonl", "checkpoints", "tensorboard", "results.json"} <= names
  assert os.listdir(os.path.join(reference, "tensorboard"))
  # metrics.jsonl: one train record every step (log_every=1), an eval record every eval_every.
  records = rh.read_metrics(reference, drop=())
  train = [r for r in records if r["split"] == "train"]
  evals = [r for r in records if r["split"] == "eval"]
  assert [r["step"] for r in train] == list(range(1, FINAL + 1))
  assert [r["step"] for r in evals] == [30, 60]
  assert all(r["steps_per_sec"] > 0 for r in records)  # Eval records carry the train rate.
  # The run exercises what a resume can break: strings of many lengths, a learning rate that
  # warms up linearly over 10 steps and then decays on a cosine to 0.1 x the peak,
  assert len({r["train/tokens"] for r in train}) > 10
  rates = [r["train/learning_rate"] for r in train]
  np.testing.assert_allclose(rates[:11], np.linspace(0.0, 0.02, 11), rtol=1e-6)
  np.testing.assert_allclose(rates[-1], 0.002 + 0.009 * (1 + np.cos(np.pi * 49 / 50)), rtol=1e-5)
  # Adam's moments in the saved optimiser state, and the fused LSTM (its XLA loops) as chosen by
  # recurrent.unroll in the run itself.
  adam, schedule = rh.load_state(reference, FINAL)["opt_state"]
  assert int(adam["count"]) == int(schedule["count"]) == FINAL
  assert np.max(np.abs(adam["mu"]["lstm"]["w_hh"])) > 0 and np.min(adam["nu"]["emb"]) > 0
  results = rh.read_json(reference, "results.json")
  assert results["lstm_impl"] == {"name": "fused", "native_threads": 0}
  # Retention: the last 3 checkpoints plus the best by eval/loss.
  best = min(evals, key=lambda r: r["eval/loss"])["step"]
  assert rh.checkpoint_steps(reference) == sorted({40, 50, 60, best})
  config = rh.read_json(reference, "config.json")
  assert config["num_steps"] == FINAL and config["schedule"] == "cosine"
  assert results["final_eval"] == {k: v for k, v in evals[-1].items()
                                   if k not in ("split", "steps_per_sec")}
  assert results["step"] == FINAL


def test_sigkill_at_a_random_step_then_resume_matches_uninterrupted(reference, tmp_path):
  # Given a run killed with SIGKILL at a step drawn at random, after its first checkpoint
  # (the step is seeded, so a failure reproduces),
  target = int(np.random.default_rng(KILL_SEED).integers(20, 37))
  proc = rh.start(tmp_path, task=TASK)
  rh.wait_for_step(tmp_path, proc, target)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  logged = max(r["step"] for r in rh.read_metrics(tmp_path))
  saved = rh.checkpoint_steps(tmp_path)
  where = (f"SIGKILL aimed at step {target} (KILL_SEED={KILL_SEED}) landed after step "
           f"{logged}, checkpoints {saved}")
  assert proc.returncode == -signal.SIGKILL, where
  assert not os.path.exists(tmp_path / "results.json"), where
  assert saved and saved[-1] < FINAL, where
  # When the same command runs again, then it ends exactly as the uninterrupted run.
  rh.assert_ok(rh.run(tmp_path, task=TASK))
  assert_same_run(tmp_path, reference, where)


def _stop_with(workdir, sig: signal.Signals, after_step: int) -> int:
  """Starts the task and sends ``sig`` once ``after_step`` is logged; returns the stop step."""
  proc = rh.start(workdir, task=TASK)
  rh.wait_for_step(workdir, proc, after_step)
  proc.send_signal(sig)
  _, stderr = proc.communicate(timeout=120)
  # It exits with 128 + signal after saving a checkpoint at the step it stopped at.
  assert proc.returncode == 128 + sig, stderr[-2000:]
  lines = rh.error_lines(stderr)
  assert len(lines) == 1 and lines[0].startswith(f"error: stopped by {sig.name} at step "), lines
  stopped = int(lines[0].split("at step ")[1].split(";")[0])
  assert after_step <= stopped < FINAL
  assert rh.checkpoint_steps(workdir)[-1] == stopped
  assert max(r["step"] for r in rh.read_metrics(workdir)) <= stopped
  return stopped


def test_signals_save_a_checkpoint_and_resume_exactly(reference, tmp_path):
  # Given a run stopped by SIGINT (Ctrl-C), resumed, and stopped again by SIGTERM (a
  # scheduler's preemption), each time between two regular checkpoints,
  first = _stop_with(tmp_path, signal.SIGINT, 13)
  second = _stop_with(tmp_path, signal.SIGTERM, first + 12)
  # When it is resumed once more, then it ends exactly as the uninterrupted run.
  rh.assert_ok(rh.run(tmp_path, task=TASK))
  assert_same_run(tmp_path, reference, f"stopped at steps {first} and {second}")


def _damage(state_dir, how: str) -> None:
  files = [os.path.join(d, f) for d, _, fs in os.walk(state_dir) for f in fs
           if os.path.getsize(os.path.join(d, f)) > 64 and "METADATA" not in f]
  assert files
  for path in files:
    with open(path, "r+b") as f:
      if how == "truncate":  # A partial write.
        f.truncate(os.path.getsize(path) // 2)
      else:  # Silent corruption of the stored bytes, same length.
        data = bytearray(f.read())
        for i in range(len(data) // 2, len(data)):
          data[i] ^= 0xFF
        f.seek(0)
        f.write(data)


def test_corrupt_checkpoints_fall_back_to_the_last_good_one(reference, tmp_path):
  # Given a finished run whose latest checkpoint was truncated (a partial write) and whose
  # previous one had its bytes flipped (silent corruption, same length),
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  os.remove(workdir / "results.json")
  damaged = {FINAL: "truncate", FINAL - 10: "flip_bytes"}
  for step, how in damaged.items():
    _damage(workdir / "checkpoints" / str(step) / "state", how)
  # When the run is restarted, then it warns about each, sets both aside,
  proc = rh.run(workdir, task=TASK)
  rh.assert_ok(proc)
  for step in damaged:
    assert f"checkpoint at step {step} is corrupt" in proc.stderr
    assert os.path.isdir(workdir / "corrupt_checkpoints" / str(step))
  # and recomputes the lost steps from the checkpoint before them, exactly.
  assert "resuming from the checkpoint at step 40" in proc.stderr
  assert_same_run(workdir, reference)


def test_changed_config_is_refused_unless_allowed(reference, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  # A different learning rate on an existing workdir is refused, naming the key, before
  # anything is written (in-process: the entry point turns a WorkdirError into one line and
  # exit status 1, as test_unwritable_or_missing_workdir_gives_one_line_error shows).
  config = lstm_task.get_config()
  config.learning_rate = 0.03
  with pytest.raises(workdir_lib.WorkdirError, match=r"learning_rate \(0\.02 -> 0\.03\)"):
    train.run(lstm_task.make_experiment(config), config, str(workdir))
  assert rh.read_json(workdir, "config.json")["learning_rate"] == 0.02
  # With allow_config_change it resumes, records the new config and trains on to num_steps.
  proc = rh.run(workdir, "--config.learning_rate=0.03", f"--config.num_steps={FINAL + 5}",
                "--config.allow_config_change=True", task=TASK)
  rh.assert_ok(proc)
  config = rh.read_json(workdir, "config.json")
  assert config["learning_rate"] == 0.03 and config["num_steps"] == FINAL + 5
  steps = [r["step"] for r in rh.read_metrics(workdir) if r["split"] == "train"]
  assert steps == list(range(1, FINAL + 6))
  assert rh.read_json(workdir, "results.json")["step"] == FINAL + 5


def test_nan_loss_stops_cleanly_and_keeps_last_good_checkpoint(tmp_path):
  # Given a run whose loss turns NaN at step 47 (the debugging knob nan_at_step),
  proc = rh.run(tmp_path, *rh.LONG, "--config.nan_at_step=47")
  # Then it exits 1 with one clear line, and the state at step 47 was never saved.
  assert proc.returncode == 1
  lines = rh.error_lines(proc.stderr)
  assert lines == ["error: loss is nan at step 47; stopping (the checkpoint at step 40 is kept); "
                   "lower config.learning_rate or set config.grad_clip_norm"], lines
  assert rh.checkpoint_steps(tmp_path) == [20, 40]
  assert not os.path.exists(tmp_path / "results.json")
  records = rh.read_metrics(tmp_path)
  assert max(r["step"] for r in records) == 45
  assert all(json.dumps(r).count("NaN") == 0 for r in records)


# (config.validate's other messages, e.g. an unknown optimizer, are checked in-process in
# train_loop_test.py; batch_size=0 here shows the entry point turns them into one line, exit 2.)
@pytest.mark.parametrize("args, message", [
    (["--config.no_such_field=1"], "error: unknown config field 'no_such_field'"),
    (["--config.num_steps=ten"], "error: flag --config.num_steps=ten: invalid literal for int()"),
    (["--config.batch_size=0"], "error: config.batch_size must be > 0, got 0"),
])
def test_bad_config_overrides_give_one_line_errors(tmp_path, args, message):
  proc = rh.run(tmp_path / "run", *args)
  assert proc.returncode == 2
  lines = rh.error_lines(proc.stderr)
  assert len(lines) == 1 and lines[0].startswith(message), proc.stderr[-2000:]


def test_unwritable_or_missing_workdir_gives_one_line_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  proc = rh.run(blocker / "run")
  assert proc.returncode == 1
  assert rh.error_lines(proc.stderr) == [
      f"error: workdir '{blocker / 'run'}' is not writable: Not a directory"]
  proc = rh.run("")
  assert proc.returncode == 2
  assert rh.error_lines(proc.stderr)[0].startswith("error: --workdir is required")


def test_a_workdir_in_use_is_refused(tmp_path):
  # Given a run in progress, a second run on the same workdir stops with one line, touching
  # nothing; the lock dies with its holder, so after a SIGKILL the workdir is usable again.
  endless = ("--config.num_steps=1000000", "--config.log_every=5")
  proc = rh.start(tmp_path, *endless)
  rh.wait_for_step(tmp_path, proc, 5)
  second = rh.run(tmp_path, *endless)
  assert proc.poll() is None  # The first run was alive throughout.
  proc.kill()
  proc.communicate()
  assert second.returncode == 1
  lines = rh.error_lines(second.stderr)
  assert len(lines) == 1 and f"workdir '{tmp_path}' is in use by a running job (pid {proc.pid}" \
      in lines[0], lines
  rh.assert_ok(rh.run(tmp_path, "--config.num_steps=20", "--config.allow_config_change=True"))
