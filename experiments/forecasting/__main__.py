"""Entry point: ``python -m experiments.forecasting --workdir DIR [--config PATH[:variant]]``.

PATH defaults to ``experiments/forecasting/config.py`` (the airline series); ``--config.<key>=<value>``
overrides a field. ``python -m experiments.forecasting.table --workdir DIR`` runs all three series and
writes the table; this folder's README.md gives the commands, times and results.
"""

import os

from experiments.forecasting import experiment
from seqjax import train

if __name__ == "__main__":
  train.main(experiment.make_experiment,
             train.define_flags(os.path.join(os.path.dirname(__file__), "config.py")))
