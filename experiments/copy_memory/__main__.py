"""Entry point: ``python -m experiments.copy_memory --workdir DIR [--config PATH[:variant]]``.

PATH defaults to ``experiments/copy_memory/config.py`` (its default variant);
``--config.<key>=<value>`` overrides a field. This folder's README.md gives the commands, times
and results.
"""

import os

from experiments.copy_memory import experiment
from seqjax import train

if __name__ == "__main__":
  train.main(experiment.make_experiment,
             train.define_flags(os.path.join(os.path.dirname(__file__), "config.py")))
