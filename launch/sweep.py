"""Expands the sweep declared next to a config into runs, and runs them or writes a SLURM array.

A config module declares its sweep as ``get_sweep(arg)`` beside ``get_config(arg)``: a list of
dicts, each mapping dotted config keys to values (one dict per run). Every run gets the workdir
``ROOT/<key>=<value>,...`` and the command ``python -m experiments.<name> --workdir ... --config
<path>[:arg] --config.<key>=<value> ...`` plus any flags given after ``--``.

  python launch/sweep.py experiments/adding/config.py                  # one after another
  python launch/sweep.py experiments/adding/config.py --parallel 3     # 3 at a time
  python launch/sweep.py experiments/adding/config.py:smoke --dry_run  # print the commands
  python launch/sweep.py experiments/adding/config.py --slurm sweep.sbatch --parallel 8
  sbatch sweep.sbatch                                                   # one array task per run

Runs resume like any run: rerunning a sweep finishes the runs that did not finish.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import inspect
import os
import re
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_sweep(config_arg: str) -> tuple[str, str, list[dict]]:
  """``(experiment name, config path, runs)`` from ``path.py[:arg]``."""
  path, _, arg = config_arg.partition(":")
  if not os.path.exists(path):
    raise SystemExit(f"error: config file {path!r} not found")
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise SystemExit(f"error: {path} declares no get_sweep(arg) next to get_config")
  get_sweep = module.get_sweep
  runs = get_sweep(arg) if inspect.signature(get_sweep).parameters else get_sweep()
  if not runs or not all(isinstance(r, dict) for r in runs):
    raise SystemExit(f"error: {path}: get_sweep must return a non-empty list of dicts")
  return experiment_name(path), path, runs


def experiment_name(path: str) -> str:
  """``adding`` from ``experiments/adding/config.py``: the folder that holds the config."""
  return os.path.basename(os.path.dirname(os.path.abspath(path)))


def run_name(overrides: dict) -> str:
  """``key=value,...`` with characters that are awkward in paths replaced by ``_``."""
  text = ",".join(f"{k}={v}" for k, v in overrides.items()) or "default"
  return re.sub(r"[^A-Za-z0-9=,.+-]", "_", text)


def commands(config_arg: str, root: str, python: str, extra: list[str]) -> list[list[str]]:
  name, path, runs = load_sweep(config_arg)
  arg = config_arg.partition(":")[2]
  config = os.path.abspath(path) + (f":{arg}" if arg else "")  # Runs start in the repo root.
  out = []
  for overrides in runs:
    workdir = os.path.join(root, run_name(overrides))
    out.append([python, "-m", f"experiments.{name}", "--workdir", workdir,
                f"--config={config}", *[f"--config.{k}={v}" for k, v in overrides.items()],
                *extra])
  return out


def run_local(cmds: list[list[str]], parallel: int, root: str) -> int:
  """Runs ``cmds`` ``parallel`` at a time; each run's output goes to ROOT/<run>.log."""
  os.makedirs(root, exist_ok=True)
  pending, running, failed = list(cmds), [], []
  while pending or running:
    while pending and len(running) < parallel:
      cmd = pending.pop(0)
      log = os.path.join(root, os.path.basename(cmd[4]) + ".log")
      with open(log, "w") as f:
        running.append((cmd, subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)))
      print(f"started {cmd[4]} (log {log})", flush=True)
    for cmd, proc in list(running):
      if proc.poll() is not None:
        running.remove((cmd, proc))
        status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        print(f"{status}: {cmd[4]}", flush=True)
        if proc.returncode:
          failed.append(cmd[4])
    time.sleep(0.2)
  print(f"{len(cmds) - len(failed)} of {len(cmds)} runs succeeded", flush=True)
  return 1 if failed else 0


def slurm_script(cmds: list[list[str]], parallel: int, root: str) -> str:
  """An sbatch array script running ``cmds[SLURM_ARRAY_TASK_ID]``, ``parallel`` at a time."""
  lines = [
      "#!/usr/bin/env bash",
      f"#SBATCH --job-name=sweep-{os.path.basename(root)}",
      f"#SBATCH --array=0-{len(cmds) - 1}%{parallel}",
      f"#SBATCH --output={root}/slurm-%A_%a.out",
      "#SBATCH --time=04:00:00",
      "#SBATCH --signal=TERM@120",
      "set -euo pipefail",
      f"cd {shlex.quote(REPO)}",
      "runs=(",
      *[f"  {shlex.quote(shlex.join(c))}" for c in cmds],
      ")",
      'eval "${runs[$SLURM_ARRAY_TASK_ID]}"',
  ]
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
  extra = []
  if "--" in argv:
    i = argv.index("--")
    argv, extra = argv[:i], argv[i + 1:]
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("config", help="experiments/<name>/config.py[:arg] declaring get_sweep")
  parser.add_argument("--root", help="directory of the runs' workdirs "
                      "(default runs/sweep-<name>-<timestamp>)")
  parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
  parser.add_argument("--slurm", metavar="FILE", help="write a SLURM array script, run nothing")
  parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  parser.add_argument("--python", default=sys.executable, help="interpreter of the runs")
  args = parser.parse_args(argv)
  if args.parallel < 1:
    parser.error(f"--parallel must be >= 1, got {args.parallel}")
  name = experiment_name(args.config.partition(":")[0])
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  root = os.path.abspath(args.root or os.path.join(REPO, "runs", f"sweep-{name}-{stamp}"))
  cmds = commands(args.config, root, args.python, extra)
  if args.dry_run:
    for cmd in cmds:
      print(shlex.join(cmd))
    return 0
  if args.slurm:
    os.makedirs(root, exist_ok=True)
    with open(args.slurm, "w") as f:
      f.write(slurm_script(cmds, args.parallel, root))
    print(f"wrote {args.slurm}: {len(cmds)} runs; submit with: sbatch {args.slurm}")
    return 0
  return run_local(cmds, args.parallel, root)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
