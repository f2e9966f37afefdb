"""Entry point: ``python -m experiments.sentiment --workdir DIR [--config PATH[:variant]]``.

PATH defaults to ``experiments/sentiment/config.py`` (SST-2); ``--config.<key>=<value>``
overrides a field. This folder's README.md gives the commands, times and results.
"""

import os

from experiments.sentiment import experiment
from seqjax import train

if __name__ == "__main__":
  train.main(experiment.make_experiment,
             train.define_flags(os.path.join(os.path.dirname(__file__), "config.py")))
