"""Runs the experiment: ``python -m experiments.translate --workdir DIR [--config PATH[:variant]]``.

Without ``--config`` the default variant of ``experiments/translate/config.py`` runs;
``--config experiments/translate/config.py:smoke`` picks a variant and ``--config.<key>=<value>``
overrides a field. The runtime logs the devices and this process's index when the run starts.
"""

import os

from experiments.translate import experiment
from seqjax import train

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.py")


def main():
  # Flags are defined here, not at import, so tests and other modules can import this package.
  flags = train.define_flags(CONFIG)
  train.main(lambda config: experiment.make_experiment(config, flags.workdir.value), flags)


if __name__ == "__main__":
  main()
