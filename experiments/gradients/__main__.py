"""Entry point: ``python -m experiments.gradients --workdir DIR [--config PATH[:variant]]``.

PATH defaults to ``experiments/gradients/config.py``; ``--config.<key>=<value>`` overrides a
field. This folder's README.md gives the commands, times and results.
"""

import os

from absl import app

from experiments.gradients import experiment
from seqjax import train
from seqjax.train import cli

if __name__ == "__main__":
  handles = train.define_flags(os.path.join(os.path.dirname(__file__), "config.py"))

  def _main(argv):
    if len(argv) > 1:
      cli.fail(f"unexpected positional arguments {argv[1:]}", 2)
    if not handles.workdir.value:
      cli.fail("--workdir is required", 2)
    experiment.run(handles.config.value, handles.workdir.value)

  app.run(_main)
