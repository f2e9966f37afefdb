"""Exact resume, signals, corrupt checkpoints, config changes, NaN stops and flag errors.

Every test drives ``python -m experiments.adding`` (smoke variant) in a subprocess and compares
with one uninterrupted reference run: same final parameters bit for bit, same metrics.jsonl
(apart from timings), same results.json.
"""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest

import runtime_harness as rh

FINAL = 200  # rh.LONG's num_steps.


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run of rh.LONG."""
  workdir = tmp_path_factory.mktemp("reference")
  rh.assert_ok(rh.run(workdir, *rh.LONG))
  return workdir


def assert_same_run(workdir, reference) -> None:
  """``workdir`` ended exactly as the uninterrupted reference: params, metrics, results."""
  assert rh.checkpoint_steps(workdir)[-1] == FINAL
  rh.assert_trees_equal(rh.load_state(workdir, FINAL), rh.load_state(reference, FINAL))
  assert rh.read_metrics(workdir) == rh.read_metrics(reference)
  assert rh.read_json(workdir, "results.json") == rh.read_json(reference, "results.json")


def test_reference_run_writes_the_workdir_contract(reference):
  # Given an uninterrupted run, its workdir holds every file of the contract.
  names = set(os.listdir(reference))
  assert {"config.json", "metrics.jsonl", "checkpoints", "tensorboard", "results.json",
          "mse.png"} <= names
  assert os.listdir(os.path.join(reference, "tensorboard"))
  # metrics.jsonl: one train record every log_every steps, an eval record every eval_every.
  records = rh.read_metrics(reference, drop=())
  train = [r for r in records if r["split"] == "train"]
  evals = [r for r in records if r["split"] == "eval"]
  assert [r["step"] for r in train] == list(range(5, FINAL + 1, 5))
  assert [r["step"] for r in evals] == [50, 100, 150, 200]
  assert all("train/loss" in r for r in train) and all("eval/mse" in r for r in evals)
  assert all(r["steps_per_sec"] > 0 for r in records)  # Eval records carry the train rate.
  # Retention: the last 2 checkpoints plus the best by eval/mse.
  best = min(evals, key=lambda r: r["eval/mse"])["step"]
  assert rh.checkpoint_steps(reference) == sorted({180, 200, best})
  config = rh.read_json(reference, "config.json")
  assert config["num_steps"] == FINAL and config["seq_len"] == 12
  results = rh.read_json(reference, "results.json")
  assert results["final_eval_mse"] == evals[-1]["eval/mse"]
  assert results["step"] == FINAL


def test_sigkill_mid_run_then_resume_matches_uninterrupted(reference, tmp_path):
  # Given a run killed with SIGKILL between two checkpoints,
  proc = rh.start(tmp_path, *rh.LONG)
  rh.wait_for_step(tmp_path, proc, 45)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  assert not os.path.exists(tmp_path / "results.json")
  assert max(rh.checkpoint_steps(tmp_path), default=0) < FINAL
  # When the same command runs again, then it ends exactly as the uninterrupted run.
  rh.assert_ok(rh.run(tmp_path, *rh.LONG))
  assert_same_run(tmp_path, reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_resumes_exactly(reference, tmp_path, sig):
  # Given a run sent SIGTERM (a scheduler's preemption) or SIGINT (Ctrl-C) mid-run,
  proc = rh.start(tmp_path, *rh.LONG)
  rh.wait_for_step(tmp_path, proc, 45)
  proc.send_signal(sig)
  _, stderr = proc.communicate(timeout=120)
  # Then it exits with 128 + signal after saving a checkpoint at the step it stopped at.
  assert proc.returncode == 128 + sig, stderr[-2000:]
  lines = rh.error_lines(stderr)
  assert len(lines) == 1 and lines[0].startswith(f"error: stopped by {sig.name} at step "), lines
  stopped = int(lines[0].split("at step ")[1].split(";")[0])
  assert 45 <= stopped < FINAL
  assert rh.checkpoint_steps(tmp_path)[-1] == stopped
  assert max(r["step"] for r in rh.read_metrics(tmp_path)) <= stopped
  # And resuming ends exactly as the uninterrupted run.
  rh.assert_ok(rh.run(tmp_path, *rh.LONG))
  assert_same_run(tmp_path, reference)


@pytest.mark.parametrize("damage", ["truncate", "flip_bytes"])
def test_corrupt_latest_checkpoint_falls_back_to_previous(reference, tmp_path, damage):
  # Given a finished run whose latest checkpoint was damaged on disk,
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  os.remove(workdir / "results.json")
  state_dir = workdir / "checkpoints" / str(FINAL) / "state"
  files = [os.path.join(d, f) for d, _, fs in os.walk(state_dir) for f in fs
           if os.path.getsize(os.path.join(d, f)) > 64 and "METADATA" not in f]
  assert files
  for path in files:
    with open(path, "r+b") as f:
      if damage == "truncate":  # A partial write.
        f.truncate(os.path.getsize(path) // 2)
      else:  # Silent corruption of the stored bytes, same length.
        data = bytearray(f.read())
        for i in range(len(data) // 2, len(data)):
          data[i] ^= 0xFF
        f.seek(0)
        f.write(data)
  # When the run is restarted, then it warns, sets the damaged checkpoint aside,
  proc = rh.run(workdir, *rh.LONG)
  rh.assert_ok(proc)
  assert f"checkpoint at step {FINAL} is corrupt" in proc.stderr
  assert os.path.isdir(workdir / "corrupt_checkpoints" / str(FINAL))
  # and recomputes the lost steps from the previous checkpoint, exactly.
  assert_same_run(workdir, reference)


def test_changed_config_is_refused_unless_allowed(reference, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  # A different learning rate on an existing workdir is refused, naming the key.
  proc = rh.run(workdir, *rh.LONG, "--config.learning_rate=0.02")
  assert proc.returncode == 1
  lines = rh.error_lines(proc.stderr)
  assert len(lines) == 1 and "learning_rate (0.01 -> 0.02)" in lines[0], lines
  assert rh.read_json(workdir, "config.json")["learning_rate"] == 0.01
  # With allow_config_change it resumes, records the new config and trains on to num_steps.
  proc = rh.run(workdir, *rh.LONG, "--config.learning_rate=0.02", "--config.num_steps=210",
                "--config.allow_config_change=True")
  rh.assert_ok(proc)
  config = rh.read_json(workdir, "config.json")
  assert config["learning_rate"] == 0.02 and config["num_steps"] == 210
  steps = [r["step"] for r in rh.read_metrics(workdir) if r["split"] == "train"]
  assert steps == list(range(5, 211, 5))
  assert rh.read_json(workdir, "results.json")["step"] == 210


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


@pytest.mark.parametrize("args, message", [
    (["--config.no_such_field=1"], "error: unknown config field 'no_such_field'"),
    (["--config.num_steps=ten"], "error: flag --config.num_steps=ten: invalid literal for int()"),
    (["--config.optimizer=adagrad"], "error: config.optimizer must be one of"),
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
