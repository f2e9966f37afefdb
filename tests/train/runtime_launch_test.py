"""launch/: a sweep expands into runs (2 at a time, or a SLURM array) and a rerun finishes only the
unfinished ones; local.sh runs one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import runtime_harness as rh

SWEEP = os.path.join(rh.REPO, "launch", "sweep.py")
SMOKE = f"{rh.CONFIG}:smoke"


def sweep(*args):
  return subprocess.run([sys.executable, SWEEP, *args], cwd=rh.REPO, env=rh.environment(),
                        capture_output=True, text=True, timeout=240, check=False)


def files_with_mtimes(directory) -> dict[str, int]:
  return {os.path.relpath(os.path.join(d, f), directory): os.stat(os.path.join(d, f)).st_mtime_ns
          for d, _, fs in os.walk(directory) for f in fs}


def test_sweep_runs_every_point_two_at_a_time_and_a_rerun_finishes_the_rest(tmp_path):
  # 10 steps with a checkpoint at 5: a run can be left half done.
  args = ("--root", str(tmp_path), "--parallel", "2", "--", "--config.num_steps=10",
          "--config.eval_every=10", "--config.checkpoint_every=5")
  proc = sweep(SMOKE, *args)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "2 of 2 runs succeeded" in proc.stdout
  for cell in ("irnn", "lstm"):  # get_sweep("smoke") of adding/config.py.
    workdir = tmp_path / f"cell={cell}"
    config = rh.read_json(workdir, "config.json")
    assert config["cell"] == cell and config["num_steps"] == 10
    assert rh.read_json(workdir, "results.json")["cell"] == cell
    assert (tmp_path / f"cell={cell}.log").exists()
  # Given the lstm run left as a kill between its checkpoints at 5 and 10 leaves it,
  done, half = tmp_path / "cell=irnn", tmp_path / "cell=lstm"
  results, metrics = rh.read_json(half, "results.json"), rh.read_metrics(half)
  os.remove(half / "results.json")
  shutil.rmtree(half / "checkpoints" / "10")
  done_metrics = (done / "metrics.jsonl").read_bytes()
  done_checkpoints = files_with_mtimes(done / "checkpoints")
  # When the same sweep runs again,
  proc = sweep(SMOKE, *args)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  # then the finished run is not trained again (its training rates in metrics.jsonl would
  # change, and its checkpoints be rewritten),
  assert (done / "metrics.jsonl").read_bytes() == done_metrics
  assert files_with_mtimes(done / "checkpoints") == done_checkpoints
  # and the unfinished one resumes from step 5 and ends as it first did.
  assert rh.checkpoint_steps(half) == [5, 10]
  assert rh.read_metrics(half) == metrics
  assert rh.read_json(half, "results.json") == results


def test_sweep_writes_a_slurm_array_of_the_same_commands(tmp_path):
  script = tmp_path / "sweep.sbatch"
  dry = sweep(SMOKE, "--root", str(tmp_path), "--dry_run", "--", "--config.num_steps=7")
  assert dry.returncode == 0, dry.stderr
  lines = dry.stdout.splitlines()
  assert len(lines) == 2
  assert all("--config.num_steps=7" in l and f"--config={SMOKE}" in l for l in lines)
  proc = sweep(SMOKE, "--root", str(tmp_path), "--slurm", str(script), "--parallel", "2", "--",
               "--config.num_steps=7")
  assert proc.returncode == 0, proc.stderr
  text = script.read_text()
  assert "#SBATCH --array=0-1%2" in text
  # The array's commands are exactly the dry run's, one per task id.
  listed = subprocess.run(
      ["bash", "-c", text.replace('eval "${runs[$SLURM_ARRAY_TASK_ID]}"',
                                  'printf "%s\\n" "${runs[@]}"')],
      capture_output=True, text=True, check=True).stdout.splitlines()
  assert listed == lines


def test_sweep_without_get_sweep_is_a_clear_error(tmp_path):
  config = tmp_path / "plain.py"
  config.write_text("def get_config(arg=''):\n  return None\n")
  proc = sweep(str(config), "--dry_run")
  assert proc.returncode == 1
  assert proc.stderr.strip() == f"error: {config} declares no get_sweep(arg) next to get_config"


def test_local_sh_runs_in_a_timestamped_workdir(tmp_path):
  env = rh.environment()
  env["RUNS_DIR"] = str(tmp_path)
  env["PYTHON"] = sys.executable
  proc = subprocess.run([os.path.join(rh.REPO, "launch", "local.sh"), "adding",
                         f"--config={SMOKE}", "--config.num_steps=5"],
                        cwd=rh.REPO, env=env, capture_output=True, text=True, timeout=180)
  assert proc.returncode == 0, proc.stderr[-2000:]
  (workdir,) = os.listdir(tmp_path)
  assert workdir.startswith("adding-") and len(workdir) == len("adding-YYYYmmdd-HHMMSS")
  assert rh.read_json(tmp_path / workdir, "results.json")["step"] == 5
