"""The counting and translation experiments train the same on 1 and 8 devices.

Both return their losses as shares of the global batch's averages (``loss_reduction="global"``):
counting's token-averaged LSTM set heads and per-string heads, and translation's token mean over
ragged sentences, whose slices hold different token counts; translation also draws its dropout
(on in the smoke variant) from ``train.example_keys``. So the same global batch gives the same
step on any device count. Each experiment's own ``init``, ``loss_fn``, ``get_batch`` and
optimizer go through the runtime's step, state and batch split, on 1 and on 8 slices of every
global batch in this process (``jax.vmap`` with the pmap's axis name binds the same
collectives; sliced_training.py): loss, every metric and every parameter agree within 1e-5 at
each of 4 Adam steps. Measured on the 2-core CPU, the largest gap (relative, absolute near
zero) was 1.6e-7 for counting and 2.3e-6 for translation; the earlier per-device averaging
missed by 0.4% on the a^n b^n LSTM set head's loss and 3.5% on the gradient norm. In process
there is no interpreter to start and no final evaluation: about a quarter less CPU time than
the entry point run twice with 8 forced devices.

A real pmap over 8 devices and over 2 processes of the runtime is tested once, on a task with
the same ingredients, in tests/train/devices_match_test.py; evaluation reads the host's
parameters and so follows from them.
"""

from __future__ import annotations

import numpy as np

import multi30k_slice
import sliced_training
from experiments.counting import config as counting_config
from experiments.counting import experiment as counting
from experiments.translate import config as translate_config
from experiments.translate import experiment as translate

RTOL = 1e-5
STEPS = 4


def test_counting_smoke_on_1_and_8_devices_agree(tmp_path):
  # Given the smoke study (every language, cell and head, 2 seeds) with a batch of 8 strings
  # per language, so that each of 8 devices holds one string of each,
  config = counting_config.get_config("smoke")
  config.update({"batch_size": 8, "time_seed_vmap": False})
  experiment = counting.make_experiment(config, str(tmp_path))
  # When its own step trains on 1 and on 8 slices of each batch,
  runs = sliced_training.train_on_slices(experiment, config, (1, 8), STEPS)
  # Then per-token (LSTM set heads) and per-string heads of every language, cell and head,
  # and every parameter, agree at every step.
  metrics = runs[1][0]["metrics"]
  assert "train/anbn_lstm_sets_loss" in metrics and "train/dyck1_gru_softmax_loss" in metrics
  largest = sliced_training.largest_gap(runs[8], runs[1], RTOL)
  print(f"counting: largest relative gap, 1 vs 8 devices: {largest:.2g}")


def test_translate_smoke_on_1_and_8_devices_agree(tmp_path):
  # Given the smoke model (LSTM encoder-decoder with attention, dropout on) and batches of 32
  # ragged sentence pairs, 4 on each of 8 devices,
  config = translate_config.get_config("smoke")
  config.data_dir = multi30k_slice.write(tmp_path)
  assert config.model.dropout > 0
  experiment = translate.make_experiment(config, str(tmp_path))
  batch = experiment.get_batch(0, 0, 1)
  per_device = np.asarray(batch["tgt_mask"]).reshape(8, -1).sum(axis=1)
  assert per_device.max() > per_device.min(), per_device
  # When its own step trains on 1 and on 8 slices of each batch,
  runs = sliced_training.train_on_slices(experiment, config, (1, 8), STEPS)
  # Then the loss, the token count (the global batch's on both) and every parameter agree.
  np.testing.assert_array_equal(runs[8][0]["metrics"]["train/tokens"], per_device.sum())
  largest = sliced_training.largest_gap(runs[8], runs[1], RTOL)
  print(f"translate: largest relative gap, 1 vs 8 devices: {largest:.2g}")
