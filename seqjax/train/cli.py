"""Command-line plumbing shared by every ``experiments/<name>/__main__.py`` entry point.

An entry point defines its flags with :func:`define_flags` and hands over to :func:`main`::

  train.main(experiment.make_experiment, train.define_flags(
      os.path.join(os.path.dirname(__file__), "config.py")))

where ``make_experiment(config, workdir)`` builds the :class:`seqjax.train.Experiment`
(``workdir`` for the files an experiment keeps beside the runtime's: a tokeniser, a vocabulary).

which gives ``python -m experiments.<name> --workdir DIR [--config PATH[:variant]]
[--config.key=value ...] [--coordinator_address HOST:PORT --num_processes N --process_id I]``.
Every error a user can cause (unknown or mistyped ``--config.*`` override, missing or unwritable
workdir, config change on resume, NaN loss) ends the program with one line on stderr starting
``error:`` and a non-zero exit status, never a traceback:

  exit 2   bad flags or config values
  exit 1   unusable workdir, refused resume, NaN/inf loss, other runtime failures
  128 + n  stopped by signal n (SIGTERM 143, SIGINT 130) after saving a checkpoint
  130      a second Ctrl-C: stopped at once, saving nothing new (a checkpoint being written
           is finished first)
"""

from __future__ import annotations

import dataclasses
import logging as std_logging
import sys
from typing import Any, Callable

import jax
import ml_collections
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from seqjax.train import checkpointing
from seqjax.train import config as config_lib
from seqjax.train import distributed
from seqjax.train import loop
from seqjax.train import workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class Flags:
  """Handles of the flags :func:`define_flags` defined."""
  workdir: flags.FlagHolder
  config: flags.FlagHolder
  coordinator_address: flags.FlagHolder
  num_processes: flags.FlagHolder
  process_id: flags.FlagHolder


def define_flags(default_config: str) -> Flags:
  """Defines ``--workdir``, ``--config`` (default ``default_config``) and the multi-host flags.

  ml_collections reads the ``--config`` overrides from ``sys.argv`` while the flag is defined,
  so a bad override or config file already fails here, with a one-line error.
  """
  config = _config_or_fail(lambda: config_flags.DEFINE_config_file(
      "config", default_config, "Config file, optionally with a variant: path.py:smoke.",
      lock_config=True))
  return Flags(
      workdir=flags.DEFINE_string(
          "workdir", None, "Run directory: created if missing; resumed if it holds a run."),
      config=config,
      coordinator_address=flags.DEFINE_string(
          "coordinator_address", None, "Multi-host: host:port of process 0's coordinator."),
      num_processes=flags.DEFINE_integer(
          "num_processes", None, "Multi-host: total number of processes."),
      process_id=flags.DEFINE_integer("process_id", None, "Multi-host: index of this process."),
  )


def _config_or_fail(load: Callable[[], Any]) -> Any:
  """``load()``, turning the ways a config file or override can be wrong into one-line errors."""
  try:
    config = load()
    if not isinstance(config, ml_collections.ConfigDict) and hasattr(config, "_ReportError"):
      config._ReportError()  # pylint: disable=protected-access  # ml_collections' failed load.
    return config
  except Exception as e:  # pylint: disable=broad-except
    fail(_config_error(e), 2)


def _config_error(error: BaseException) -> str:
  """A one-line description of why a config file or ``--config.*`` override failed to load."""
  inner = error
  while (inner.args and isinstance(inner.args[0], BaseException)) or inner.__cause__:
    inner = inner.args[0] if inner.args and isinstance(inner.args[0], BaseException) \
        else inner.__cause__
  if isinstance(inner, (KeyError, AttributeError)):
    message = inner.args[0] if inner.args else inner
    return f"unknown config field {message} (check the --config.* overrides)"
  message = str(inner.args[0]) if inner.args else type(inner).__name__
  message = message.replace("Configuration is not available because of an earlier failure to "
                            "load:", "")
  return f"cannot load --config: {message}"


def _one_line(message: str) -> str:
  """``message`` without embedded tracebacks (keeping their final line), on one line."""
  marker = "Traceback (most recent call last):"
  if marker in message:
    head, tail = message.split(marker, 1)
    lines = [l for l in tail.splitlines() if l.strip()]
    message = f"{head} {lines[-1].strip() if lines else ''}"
  return " ".join(message.split())


def fail(message: str, status: int = 1) -> None:
  """Prints ``error: message`` as one line on stderr and exits with ``status``."""
  sys.stderr.write(f"error: {_one_line(str(message))}\n")
  sys.stderr.flush()
  sys.exit(status)


class _QuietLibraries(std_logging.Filter):
  """Drops the INFO chatter of orbax (several lines per checkpoint); keeps its warnings."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e), 2)
  except Exception as e:  # pylint: disable=broad-except
    # Errors raised by the config file or an override while the flag is parsed.
    fail(_config_error(e), 2)
  return []


MakeExperiment = Callable[[ml_collections.ConfigDict, str], loop.Experiment]


def _run(make_experiment: MakeExperiment,
         handles: Flags, argv: list[str]) -> None:
  if len(argv) > 1:
    fail(f"unexpected positional arguments {argv[1:]}", 2)
  if not handles.workdir.value:
    fail("--workdir is required (the run's directory; an existing one is resumed)", 2)
  try:
    distributed.initialize(handles.coordinator_address.value, handles.num_processes.value,
                           handles.process_id.value)
  except ValueError as e:
    fail(str(e), 2)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  logging.info("%s: %s", handles.workdir.value, distributed.describe())
  config = _config_or_fail(lambda: handles.config.value)
  try:
    config_lib.validate(config)  # Before the experiment is built from it.
    experiment = make_experiment(config, handles.workdir.value)
    loop.run(experiment, config, handles.workdir.value)
  except loop.StopRequested as e:
    fail(str(e), 128 + e.signum)
  except KeyboardInterrupt:
    # Ctrl-C before the loop started, or a second one while it was saving.
    fail("interrupted; rerun the same command to resume from the last checkpoint", 130)
  except (workdir_lib.WorkdirError, loop.NonFiniteLossError, checkpointing.CheckpointError) as e:
    fail(str(e), 1)
  except ValueError as e:
    # Validation errors of the config or the experiment's inputs; the message names the field.
    fail(str(e), 2)
  if jax.process_index() == 0:
    logging.info("done: %s", handles.workdir.value)


def main(make_experiment: MakeExperiment, handles: Flags) -> None:
  """Parses flags and runs ``make_experiment(config, workdir)`` through :func:`seqjax.train.run`."""
  app.run(lambda argv: _run(make_experiment, handles, argv), flags_parser=_parse_flags)
