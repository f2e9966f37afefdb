"""Entry point: ``python -m experiments.char_lm --workdir DIR [--config PATH[:variant]]``.

PATH defaults to ``experiments/char_lm/config.py`` (the 3x512 LSTM peer recipe);
``--config.<key>=<value>`` overrides a field. ``python -m experiments.char_lm.sample --workdir DIR``
samples from a run; this folder's README.md gives the commands, times and results.
"""

import os

from experiments.char_lm import experiment
from seqjax import train

if __name__ == "__main__":
  train.main(experiment.make_experiment,
             train.define_flags(os.path.join(os.path.dirname(__file__), "config.py")))
