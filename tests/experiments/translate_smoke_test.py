"""``python -m experiments.translate`` end to end on the smoke variant: its results, an exact
resume after SIGKILL, and its one-line errors."""

import json
import math
import os
import signal
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import sacrebleu

from experiments.translate import config as translate_config
from experiments.translate import experiment

import forced_devices
import multi30k_slice

_lines = multi30k_slice.lines
FINAL = 30  # The smoke variant's num_steps; a checkpoint every 5 steps.


@pytest.fixture(scope="module")
def raw_folder(tmp_path_factory):
  return multi30k_slice.write(tmp_path_factory.mktemp("multi30k_small"))


@pytest.fixture(scope="module")
def smoke_run(raw_folder, tmp_path_factory):
  """One uninterrupted smoke run, shared: ``(workdir, finished process)``."""
  workdir = str(tmp_path_factory.mktemp("translate") / "run")
  proc = _run(workdir, f"--config.data_dir={raw_folder}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


def _run(workdir, *overrides, timeout=600):
  return forced_devices.run_experiment("translate", workdir, *overrides, timeout=timeout)


def test_smoke_variant_end_to_end(smoke_run):
  workdir, proc = smoke_run

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


def _checkpoint_steps(workdir) -> list[int]:
  directory = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) \
      if os.path.isdir(directory) else []


def _saved_state(workdir, step: int):
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(os.path.join(workdir, "checkpoints", str(step), "state"))


def test_sigkill_after_a_checkpoint_then_resume_matches_uninterrupted(smoke_run, raw_folder,
                                                                      tmp_path):
  reference, _ = smoke_run
  # Given a smoke run killed with SIGKILL as soon as its first checkpoint is on disk (the
  # next one is usually being written: the kill leaves a half-saved checkpoint behind),
  workdir = str(tmp_path / "run")
  proc = forced_devices.start_experiment("translate", workdir, f"--config.data_dir={raw_folder}")
  deadline = time.monotonic() + 300
  while not _checkpoint_steps(workdir):
    assert proc.poll() is None, f"rc={proc.returncode}\n{proc.stderr.read()[-3000:]}"
    assert time.monotonic() < deadline, "no checkpoint after 300 s"
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  saved = _checkpoint_steps(workdir)
  assert proc.returncode == -signal.SIGKILL
  assert saved and saved[-1] < FINAL, saved
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  # When the same command runs again, then it resumes from that checkpoint,
  proc = _run(workdir, f"--config.data_dir={raw_folder}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"resuming from the checkpoint at step {saved[-1]}" in proc.stderr
  # and ends exactly as the uninterrupted run: parameters and Adam's state bit for bit, the same
  # metrics (apart from timings), results.json and translations.
  got, want = _saved_state(workdir, FINAL), _saved_state(reference, FINAL)
  assert int(got["step"]) == int(want["step"]) == FINAL
  for part in ("params", "opt_state"):
    leaves, tree = jax.tree_util.tree_flatten_with_path(got[part])
    assert tree == jax.tree.structure(want[part]) and len(leaves) > 5, part
    for (path, leaf), expected in zip(leaves, jax.tree.leaves(want[part])):
      np.testing.assert_array_equal(leaf, expected, err_msg=f"{part}{jax.tree_util.keystr(path)}; "
                                    f"killed with checkpoints {saved}")
  assert forced_devices.read_metrics(workdir) == forced_devices.read_metrics(reference)
  for name in ("results.json", "test.hyp.txt"):
    with open(os.path.join(workdir, name), encoding="utf-8") as f, \
        open(os.path.join(reference, name), encoding="utf-8") as g:
      assert f.read() == g.read(), name


def test_bad_config_gets_one_line_errors(tmp_path):
  # Through the entry point: one line, exit status 2, no traceback.
  proc = _run(str(tmp_path / "a"), "--config.data_dir=/no/such/folder")
  assert proc.returncode == 2
  assert "error: config.data_dir='/no/such/folder' is not a folder" in proc.stderr
  assert "Traceback" not in proc.stderr
  # The language check raises the same ValueError, which the entry point turns into such a line
  # (as above); in-process, without a second interpreter.
  config = translate_config.get_config("smoke")
  config.source_lang = "fr"
  with pytest.raises(ValueError, match="must be 'de' and 'en'"):
    experiment.load_data(config, str(tmp_path / "b"))
