"""``python -m experiments.translate`` end to end on the smoke variant, and its one-line errors."""

import json
import math
import os

import pytest
import sacrebleu

import forced_devices
import multi30k_slice

_lines = multi30k_slice.lines


@pytest.fixture(scope="module")
def raw_folder(tmp_path_factory):
  return multi30k_slice.write(tmp_path_factory.mktemp("multi30k_small"))


def _run(workdir, *overrides, timeout=600):
  return forced_devices.run_experiment("translate", workdir, *overrides, timeout=timeout)


def test_smoke_variant_end_to_end(raw_folder, tmp_path):
  workdir = str(tmp_path / "run")
  proc = _run(workdir, f"--config.data_dir={raw_folder}")
  assert proc.returncode == 0, proc.stderr[-3000:]

  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  # Bad input is counted: the empty training line is skipped, long sentences are truncated.
  assert results["data"]["train"]["pairs"] == 300
  assert results["data"]["train"]["empty_skipped"] == 1
  assert results["data"]["train"]["kept"] == 299
  assert "train: skipped 1 empty line(s)" in proc.stderr

  # test.hyp.txt is the test set in order, and results.json's BLEU is sacrebleu's on it.
  with open(os.path.join(workdir, "test.hyp.txt"), encoding="utf-8") as f:
    hypotheses = [line.rstrip("\n") for line in f]
  references = _lines("test_2016_flickr", "en", 40)
  assert len(hypotheses) == 40
  assert results["test/bleu"] == pytest.approx(
      sacrebleu.corpus_bleu(hypotheses, [references]).score)
  assert results["test/bleu_lowercase"] == pytest.approx(
      sacrebleu.corpus_bleu(hypotheses, [references], lowercase=True).score)
  assert results["test/decoding"] == {"beam_size": 3, "alpha": 0.6}
  assert set(results["validation/bleu_beam_x_alpha"]) == {"beam=1", "beam=3"}
  assert set(results["validation/bleu_beam_x_alpha"]["beam=3"]) == {"alpha=0.0", "alpha=1.0"}

  # Training learnt something: below the loss of a uniform guess over the target vocabulary.
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  evals = [r["eval/loss"] for r in records if r["split"] == "eval"]
  assert len(evals) == 2 and evals[-1] < evals[0] < math.log(results["vocab_sizes"][1])
  assert results["params"] > 0 and results["step"] == 30

  # The tokenisers were saved in the workdir; attention heatmaps were drawn.
  assert os.path.exists(os.path.join(workdir, "tokenizers", "sentencepiece_de.model"))
  assert len([f for f in os.listdir(workdir) if f.startswith("attention_")]) == 2
  with open(os.path.join(workdir, "timing.json")) as f:
    assert json.load(f)["train_seconds"] > 0


def test_bad_config_gets_one_line_errors(raw_folder, tmp_path):
  proc = _run(str(tmp_path / "a"), "--config.data_dir=/no/such/folder")
  assert proc.returncode == 2
  assert "error: config.data_dir='/no/such/folder' is not a folder" in proc.stderr
  assert "Traceback" not in proc.stderr
  proc = _run(str(tmp_path / "b"), f"--config.data_dir={raw_folder}", "--config.source_lang=fr")
  assert proc.returncode == 2 and "must be 'de' and 'en'" in proc.stderr
