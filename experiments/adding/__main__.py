"""Entry point: ``python -m experiments.adding --workdir DIR [--config PATH[:variant]]``.

PATH defaults to ``experiments/adding/config.py`` (its default variant);
``--config.<key>=<value>`` overrides a field. This folder's README.md gives the commands, times
and results.
"""

import os

from experiments.adding import experiment
from seqjax import train

if __name__ == "__main__":
  train.main(experiment.make_experiment,
             train.define_flags(os.path.join(os.path.dirname(__file__), "config.py")))
