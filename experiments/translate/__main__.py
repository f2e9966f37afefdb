"""``python -m experiments.translate --workdir DIR [--config experiments/translate/config.py[:variant]]``.

Without ``--config`` the default variant of ``config.py`` runs; ``--config.<key>=<value>``
overrides a field. The commands, times and results are in this folder's README.md.
"""

import os

from experiments.translate import experiment
from seqjax import train

if __name__ == "__main__":
  train.main(experiment.make_experiment,
             train.define_flags(os.path.join(os.path.dirname(__file__), "config.py")))
