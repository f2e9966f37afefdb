"""Entry point: ``python -m experiments.ner --workdir DIR [--config PATH[:variant]]``.

PATH defaults to ``experiments/ner/config.py`` (the CRF tagger, three seeds);
``--config.<key>=<value>`` overrides a field. This folder's README.md gives the commands, times
and results.
"""

import os

from experiments.ner import experiment
from seqjax import train

if __name__ == "__main__":
  train.main(experiment.make_experiment,
             train.define_flags(os.path.join(os.path.dirname(__file__), "config.py")))
