"""Entry point: ``python -m experiments.pixel_mnist --workdir DIR [--config PATH[:variant]]``.

PATH defaults to ``experiments/pixel_mnist/config.py`` (the LSTM); ``--config.<key>=<value>``
overrides a field. ``python -m experiments.pixel_mnist.table`` gathers finished runs into one
table and one plot; this folder's README.md gives the commands, times and results.
"""

import os

from experiments.pixel_mnist import experiment
from seqjax import train

if __name__ == "__main__":
  train.main(experiment.make_experiment,
             train.define_flags(os.path.join(os.path.dirname(__file__), "config.py")))
