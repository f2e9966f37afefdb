"""The Transformer training-step benchmark's plumbing (``experiments/benchmark/transformer.py``);
no speed is asserted: benchmarks are not tests."""

import math

from absl import app
import numpy as np
import pytest

from experiments.benchmark import transformer as bench
from experiments.translate import config as translate_config


def _tiny_config():
  """transformer_smoke's model (width 16, 2 heads) with 1+1 layers, vocabularies of 50."""
  config = translate_config.get_config("transformer_smoke")
  config.model.encoder_layers = config.model.decoder_layers = 1  # compiles in half the time
  config.vocab_size = 50
  config.learning_rate = 1e-2  # a few steps on one batch must visibly lower the loss
  return config


def test_batch_pads_each_row_after_its_length_and_shifts_the_target():
  batch = bench._batch(8, 6, 5, 50, 60, seed=3)  # pylint: disable=protected-access
  lengths = batch["tgt_mask"].sum(1)
  # The first three quarters of the rows are full; the last quarter ragged, padded with 0.
  np.testing.assert_array_equal(batch["src_lengths"][:6], 6)
  np.testing.assert_array_equal(lengths[:6], 5)
  for row in range(8):
    n, m = batch["src_lengths"][row], lengths[row]
    assert np.all(batch["src"][row, :n] >= 3) and np.all(batch["src"][row, n:] == 0)
    # BOS then the target's prefix in, the target out (one position ahead), pad after.
    assert batch["tgt_in"][row, 0] == 1 and np.all(batch["tgt_in"][row, m:] == 0)
    np.testing.assert_array_equal(batch["tgt_in"][row, 1:m], batch["tgt_out"][row, :m - 1])
    assert np.all(batch["tgt_out"][row, :m] >= 3) and np.all(batch["tgt_out"][row, m:] == 0)
    assert np.all(batch["tgt_out"][row] < 60)


def test_both_steps_train_and_count_the_same_parameters():
  config = _tiny_config()
  rows = {row["impl"]: row for row in bench.benchmark(config, 4, 6, 5, repeats=3,
                                                      settle_seconds=0.0)}
  seqjax, torch = rows["seqjax"], rows["torch"]
  # The same model: torch.nn.Transformer has one more LayerNorm (scale, bias) per stack.
  assert torch["params"] - seqjax["params"] == 2 * 2 * config.model.d_model
  # tokens/s counts source and target positions; the ratio is PyTorch's seconds over ours.
  for row in rows.values():
    assert row["shape"] == "4x6x5"
    assert row["tokens_per_sec"] == pytest.approx(4 * (6 + 5) / row["seconds"])
  assert seqjax["vs_torch"] == pytest.approx(torch["seconds"] / seqjax["seconds"])
  assert torch["vs_torch"] == 1.0
  # Four steps of Adam on one batch (one compiling, three timed), the parameters donated to
  # seqjax's step and handed back each time: both
  # losses start near ln(50) (label smoothing 0.1 keeps it there) and fall below it.
  for row in rows.values():
    assert row["loss_after"] < math.log(50) - 0.3, row


def test_bad_sizes_are_named():
  config = _tiny_config()
  with pytest.raises(app.UsageError, match="must be >= 1; got 0, 6, 5, 1"):
    bench.benchmark(config, 0, 6, 5, repeats=1, settle_seconds=0.0)
  with pytest.raises(app.UsageError, match="--src_len=41 / --tgt_len=5 exceed the model's "
                     "max_len=40"):
    bench.benchmark(config, 2, 41, 5, repeats=1, settle_seconds=0.0)
  with pytest.raises(app.UsageError, match="unknown peer 'jax'"):
    bench.benchmark(config, 2, 6, 5, repeats=1, settle_seconds=0.0, peers=["jax"])
