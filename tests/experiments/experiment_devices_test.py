"""The counting and translation smoke runs train the same on 1 and 8 devices.

Both experiments return their losses as shares of the global batch's averages
(``loss_reduction="global"``): counting's token-averaged LSTM set heads and per-string heads,
and translation's token mean over ragged sentences, whose slices hold different token counts on
different devices; translation also draws its dropout (on in the smoke variant) from
``train.example_keys``. So the same global batch gives the same step on any device count: the
first step agrees within 1e-5 and every logged step within 1e-4, for every train/* and eval/*
metric in metrics.jsonl. Measured on the 2-core CPU (6 Adam steps, logged at every step): the
largest relative gap was 2.3e-7 for counting and 6.4e-7 for translation, so Adam does not
amplify the summation-order rounding anywhere near the bound and no bound is loosened. The
earlier per-device averaging missed by far more on the same counting run: 0.4% on the a^n b^n
LSTM set head's loss and 3.5% on the gradient norm at step 1.

Device counts are fixed when JAX starts, so each run is a subprocess of the real entry point
with 8 forced CPU devices; ``--config.num_devices`` picks 1 or 8 (the global batch stays the
same: 8 strings for counting, 32 sentence pairs for translation).
"""

from __future__ import annotations

import json
import os

import pytest

import forced_devices
import multi30k_slice

FIRST_STEP_RTOL = 1e-5
LATER_STEPS_RTOL = 1e-4
STEPS = 6
# Short runs logged at every step; no checkpoints in between, a cheap final evaluation.
COMMON = (f"--config.num_steps={STEPS}", "--config.log_every=1", "--config.checkpoint_every=1000")
OVERRIDES = {
    # The example: batch 8, so each of 8 devices holds one string per language.
    "counting": ("--config.batch_size=8", "--config.eval_n_max=4",
                 "--config.time_seed_vmap=False"),
    # Batch 32 (4 pairs per device), evaluated at steps 3 and 6, greedy decoding only.
    "translate": ("--config.eval_every=3", "--config.beam_size=1", "--config.sweep_beams=(1,)",
                  "--config.sweep_alphas=(0.0,)", "--config.num_heatmaps=0"),
}


def _train(experiment: str, workdir, devices: int, *extra: str):
  proc = forced_devices.run_experiment(
      experiment, workdir, f"--config.num_devices={devices}", *COMMON, *OVERRIDES[experiment],
      *extra, devices=8, timeout=900)
  forced_devices.assert_ok(proc)
  with open(os.path.join(str(workdir), "config.json")) as f:
    assert json.load(f)["num_devices"] == devices
  return forced_devices.read_metrics(workdir)


def _assert_runs_agree(one: list[dict], eight: list[dict], splits: set[str]) -> float:
  """Every metric of every logged step within the bounds; returns the largest relative gap."""
  assert [(r["step"], r["split"]) for r in one] == [(r["step"], r["split"]) for r in eight]
  assert {r["split"] for r in one} == splits
  assert [r["step"] for r in one if r["split"] == "train"] == list(range(1, STEPS + 1))
  largest = 0.0
  for want, got in zip(one, eight):
    assert sorted(want) == sorted(got)
    rtol = FIRST_STEP_RTOL if want["step"] == 1 else LATER_STEPS_RTOL
    for name in sorted(set(want) - {"step", "split"}):
      assert name.startswith(f"{want['split']}/"), name
      assert got[name] == pytest.approx(want[name], rel=rtol, abs=0.0), (
          f"{name} at step {want['step']}: 1 device {want[name]!r}, 8 devices {got[name]!r}")
      if want[name]:
        largest = max(largest, abs(got[name] - want[name]) / abs(want[name]))
  return largest


def test_counting_smoke_on_1_and_8_devices_agree(tmp_path):
  one = _train("counting", tmp_path / "one", 1)
  eight = _train("counting", tmp_path / "eight", 8)
  # Per-token (LSTM set heads) and per-string heads of every language, cell and head.
  assert "train/anbn_lstm_sets_loss" in one[0] and "train/dyck1_gru_softmax_loss" in one[0]
  largest = _assert_runs_agree(one, eight, {"train"})
  print(f"counting: largest relative gap, 1 vs 8 devices: {largest:.2g}")


def test_translate_smoke_on_1_and_8_devices_agree(tmp_path):
  data = multi30k_slice.write(tmp_path)
  one = _train("translate", tmp_path / "one", 1, f"--config.data_dir={data}")
  eight = _train("translate", tmp_path / "eight", 8, f"--config.data_dir={data}")
  # Dropout is on, and "tokens" is the global batch's count on both (a count, not a share).
  with open(tmp_path / "one" / "config.json") as f:
    assert json.load(f)["model"]["dropout"] > 0
  assert [r["train/tokens"] for r in one if r["split"] == "train"] == [
      r["train/tokens"] for r in eight if r["split"] == "train"]
  assert [r["step"] for r in one if r["split"] == "eval"] == [3, 6]
  largest = _assert_runs_agree(one, eight, {"train", "eval"})
  print(f"translate: largest relative gap, 1 vs 8 devices: {largest:.2g}")
