"""experiments/char_lm: exact evaluation, truncated gradients, sampling, batches, data, the CLI.

Numbers, not shapes: the chunked evaluation against one long unroll, gradients across a chunk
border against the same model without the cut, top-1 sampling against a brute-force argmax that
re-reads the whole text at every step, the 90/10 split against nanoGPT's counts. The smoke
variant runs end to end once (on a small text folder) and the sampling command reads its workdir.
"""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.char_lm import batches
from experiments.char_lm import config as config_lib
from experiments.char_lm import experiment
from experiments.char_lm import models
from experiments.char_lm import sample
from experiments.char_lm import sampling
from experiments.char_lm import shakespeare
from seqjax.models import rnn_lm
from seqjax.models import transformer_lm

import forced_devices

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data",
                      "tiny_shakespeare")
SPEC = rnn_lm.Spec("lstm", vocab_size=6, embed_size=5, hidden_size=8, num_layers=2)


@pytest.fixture(scope="module")
def params():
  # Larger weights than the default init, so that the state matters from step to step.
  return jax.tree.map(lambda x: 3.0 * x, rnn_lm.init(jax.random.PRNGKey(0), SPEC))


def _nll_sum(params, inputs, targets, carry):
  logits, carry = rnn_lm.apply(params, SPEC, inputs, carry)
  return jnp.sum(rnn_lm.token_nll(logits, targets)), carry


def test_evaluation_in_chunks_equals_one_long_unroll(params):
  # Given a text of 300 characters read as one stream in chunks of 37 with the state carried,
  text = np.random.default_rng(0).integers(0, SPEC.vocab_size, 300).astype(np.int32)
  evaluate = experiment.make_evaluator(SPEC, None)
  layout = batches.evaluation_streams(text, num_streams=1, chunk_len=37)
  nll, count = evaluate(params, layout, 37)
  # then the loss is that of one unroll over all 299 predictions,
  want, _ = _nll_sum(params, text[None, :-1], text[None, 1:], rnn_lm.initial_carry(SPEC, 1))
  assert count == 299
  np.testing.assert_allclose(nll / count, float(want) / 299, rtol=1e-5)
  # and 3 streams score every character once, each stream as its own unroll from zero.
  layout = batches.evaluation_streams(text, num_streams=3, chunk_len=37)
  nll3, count3 = evaluate(params, layout, 37)
  parts = [(0, 100), (100, 200), (200, 299)]  # predictions 1..299 in thirds
  want3 = sum(float(_nll_sum(params, text[None, a:b], text[None, a + 1:b + 1],
                             rnn_lm.initial_carry(SPEC, 1))[0]) for a, b in parts)
  assert count3 == 299
  np.testing.assert_allclose(nll3, want3, rtol=1e-5)


def test_no_gradient_crosses_a_chunk_border(params):
  # Given chunk 1 written in characters {0, 1, 2} and chunk 2 in {3, 4, 5}, so that embedding
  # rows 0-2 reach chunk 2's loss only through the state carried over the border,
  rng = np.random.default_rng(1)
  chunk1 = rng.integers(0, 3, (2, 12)).astype(np.int32)
  chunk2 = rng.integers(3, 6, (2, 13)).astype(np.int32)

  def chunk2_loss(table, first, cut):
    p = dict(params, embed={"embedding": table})
    _, carry = rnn_lm.apply(p, SPEC, first, rnn_lm.initial_carry(SPEC, 2))
    carry = rnn_lm.detach(carry) if cut else carry
    return _nll_sum(p, chunk2[:, :-1], chunk2[:, 1:], carry)[0]

  table = params["embed"]["embedding"]
  loss, grad = (jax.jit(f, static_argnums=2) for f in (chunk2_loss, jax.grad(chunk2_loss)))
  # the forward value of chunk 2's loss depends on chunk 1's characters,
  other = (chunk1 + 1) % 3
  assert abs(float(loss(table, chunk1, True) - loss(table, other, True))) > 1e-3
  # yet with the cut its gradient with respect to chunk 1's inputs is exactly zero,
  cut = grad(table, chunk1, True)
  assert np.all(np.asarray(cut[:3]) == 0.0) and np.abs(cut[3:]).max() > 0
  # where without the cut it is not.
  assert np.abs(grad(table, chunk1, False)[:3]).max() > 1e-4


def test_top_1_sampling_is_greedy_decoding(params):
  prompt = np.array([1, 4, 2], np.int32)
  top1 = sampling.generate(params, SPEC, prompt, 20, temperature=0.7, top_k=1, seed=3)
  greedy = sampling.generate(params, SPEC, prompt, 20, greedy=True)
  # A brute-force argmax that re-reads the whole text from a zero state at every step (padded
  # to one length: the model reads left to right, so padding after position i changes nothing
  # there, and one program serves every step).
  read = jax.jit(lambda text: rnn_lm.apply(params, SPEC, text, rnn_lm.initial_carry(SPEC, 1))[0])
  text = list(prompt)
  for _ in range(20):
    logits = read(jnp.array([text + [0] * (23 - len(text))]))
    text.append(int(jnp.argmax(logits[0, len(text) - 1])))
  np.testing.assert_array_equal(top1, text[3:])
  np.testing.assert_array_equal(greedy, text[3:])


def test_the_same_seed_gives_the_same_sample(params):
  prompt = np.array([0], np.int32)
  a = sampling.generate(params, SPEC, prompt, 30, temperature=1.5, seed=7)
  b = sampling.generate(params, SPEC, prompt, 30, temperature=1.5, seed=7)
  c = sampling.generate(params, SPEC, prompt, 30, temperature=1.5, seed=8)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c) and len(set(a.tolist())) > 2


def test_streams_carry_on_where_the_last_chunk_ended():
  data = np.arange(100, dtype=np.int32)
  # 4 streams of 24 characters (99 // 4), 3 whole chunks of 7 each, then the spans start again.
  steps = [batches.streams(data, s, 4, 7) for s in range(4)]
  np.testing.assert_array_equal(steps[0]["inputs"][:, 0], [0, 24, 48, 72])
  np.testing.assert_array_equal(steps[1]["inputs"][:, 0], steps[0]["inputs"][:, -1] + 1)
  np.testing.assert_array_equal(steps[1]["targets"], steps[1]["inputs"] + 1)
  assert [bool(s["starts"][0]) for s in steps] == [True, False, False, True]
  np.testing.assert_array_equal(steps[3]["inputs"], steps[0]["inputs"])
  # A shard is its rows of the global batch, for windows and streams alike.
  half = batches.streams(data, 1, 4, 7, shard_index=1, num_shards=2)
  np.testing.assert_array_equal(half["inputs"], steps[1]["inputs"][2:])
  w = batches.windows(data, 0, 5, 4, 7)
  np.testing.assert_array_equal(batches.windows(data, 0, 5, 4, 7, 1, 2)["inputs"],
                                w["inputs"][2:])
  np.testing.assert_array_equal(w["targets"], w["inputs"] + 1)
  with pytest.raises(ValueError, match="less than one chunk of config.seq_len=30"):
    batches.streams(data, 0, 4, 30)


def test_split_vocabulary_and_download(tmp_path):
  # nanoGPT's cut: the first 90% of the characters, then the last 10%.
  parts = shakespeare.split_text("abcdefghij" * 3 + "x")
  assert (len(parts["train"]), len(parts["validation"])) == (27, 4)
  vocab = shakespeare.Vocabulary.from_text("ba\nab")
  assert vocab.chars == ["\n", "a", "b"] and vocab.decode(vocab.encode("ab\n")) == "ab\n"
  with pytest.raises(ValueError, match="prompt character 'Z' at position 2 is not in"):
    vocab.encode("abZ", "prompt")
  # A fresh workdir (its tfds files elsewhere) is made, and the vocabulary reads back.
  vocab.save(str(tmp_path / "fresh" / "run"))
  assert shakespeare.Vocabulary.load(str(tmp_path / "fresh" / "run")).chars == ["\n", "a", "b"]
  # Without a folder the builder downloads char-rnn's input.txt.
  source = tmp_path / "raw"
  source.mkdir()
  (source / "input.txt").write_text("to be or not to be\n" * 3)

  class FakeDownloads:
    requested = {}

    def download(self, urls):
      self.requested.update(urls)
      return {key: str(source / "input.txt") for key in urls}

  builder = shakespeare.TinyShakespeare(data_dir=str(tmp_path / "tfds"),
                                        file_format="array_record")
  generators = builder._split_generators(FakeDownloads())  # pylint: disable=protected-access
  assert list(FakeDownloads.requested.values()) == [
      "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"]
  texts = {split: list(gen)[0][1]["text"] for split, gen in generators.items()}
  assert texts["train"] + texts["validation"] == "to be or not to be\n" * 3
  assert len(texts["train"]) == int(57 * 0.9)


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="shared Tiny Shakespeare copy not present")
def test_the_real_split_has_nanogpt_counts():
  parts = shakespeare.split_text(shakespeare.read_text(os.path.join(SHARED, "input.txt")))
  assert (len(parts["train"]), len(parts["validation"])) == (1_003_854, 111_540)
  assert len(shakespeare.Vocabulary.from_text(parts["train"] + parts["validation"])) == 65


def _smoke(root, variant: str):
  """A smoke variant end to end on a small text folder (a synthetic play, ~5,000 characters)."""
  source = root / "text"
  source.mkdir()
  rng = np.random.default_rng(0)
  lines = [f"{rng.choice(['ROMEO', 'JULIET', 'NURSE'])}:\n"
           + " ".join(rng.choice(["love", "night", "thou", "art", "fair", "O"], 8)) + "\n\n"
           for _ in range(120)]
  (source / "input.txt").write_text("".join(lines))
  workdir = root / "run"
  proc = forced_devices.run_experiment("char_lm", workdir, f"--config.data_dir={source}",
                                       "--config.eval_streams=4", "--config.eval_chunk=64",
                                       variant=variant)
  forced_devices.assert_ok(proc)
  return workdir


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  return _smoke(tmp_path_factory.mktemp("char_lm"), "smoke")


def test_smoke_run_end_to_end(smoke_run):
  results = json.loads((smoke_run / "results.json").read_text())
  records = [json.loads(l) for l in (smoke_run / "metrics.jsonl").read_text().splitlines()]
  evals = [r for r in records if r["split"] == "eval"]
  assert [r["step"] for r in evals] == [3, 6] and results["step"] == 6
  # Bits per character are nats over ln 2, and the best is the lowest logged.
  for r in evals:
    assert r["eval/bits_per_char"] == pytest.approx(r["eval/loss"] / math.log(2), rel=1e-12)
  assert results["best_eval_loss"] == min(r["eval/loss"] for r in evals)
  assert experiment.bits_per_char(math.log(2) * 3.0) == pytest.approx(3.0)
  # Every validation character after the first is scored once: the last 10%, minus one.
  n = len((smoke_run.parent / "text" / "input.txt").read_text())
  assert results["validation_predictions"] == n - int(0.9 * n) - 1
  # The first evaluation is near chance over the vocabulary's characters (untrained model).
  vocab = json.loads((smoke_run / "vocab.json").read_text())["chars"]
  assert abs(evals[0]["eval/loss"] - math.log(len(vocab))) < 0.5
  # One sample per evaluation, each starting with the prompt.
  samples = (smoke_run / "samples.txt").read_text()
  assert samples.count("=== step ") == 2 and samples.count("=== step 3 ===\nROMEO:") == 1
  assert (smoke_run / "learning_curve.png").stat().st_size > 1000


def test_a_resumed_run_rewrites_its_later_samples(tmp_path):
  for step in (3, 6, 9, 6):  # a run resumed from step 3 re-evaluates step 6
    experiment.write_sample(str(tmp_path), step, f"text of {step}\n")
  assert (tmp_path / "samples.txt").read_text() == (
      "=== step 3 ===\ntext of 3\n\n=== step 6 ===\ntext of 6\n\n")


def test_a_resumed_run_continues_the_training_clock(tmp_path):
  earlier = None
  for step, seconds in ((3, 10.0), (6, 20.0)):  # the first process, killed after step 7
    earlier = experiment.record_wall_time(str(tmp_path), step, seconds, 2.0, earlier)
  earlier = None  # resumed from step 3's checkpoint: step 6 again, then 9
  for step, seconds in ((6, 5.0), (9, 12.0)):
    earlier = experiment.record_wall_time(str(tmp_path), step, seconds, 1.0, earlier)
  records = [json.loads(l) for l in (tmp_path / "wall_time.jsonl").read_text().splitlines()]
  assert [(r["step"], r["train_seconds"], r["eval/loss"]) for r in records] == [
      (3, 10.0, 2.0), (6, 15.0, 1.0), (9, 22.0, 1.0)]


def test_sample_command(smoke_run, tmp_path, capsys):
  # From the latest checkpoint: the prompt and 25 more characters (what sampling.generate
  # draws from the checkpoint's parameters with that seed).
  args = ["--workdir", str(smoke_run), "--prompt", "ROMEO:", "--length", "25", "--seed", "1"]
  assert sample.main(args) == 0
  params, spec, vocab, step = sample.load_run(str(smoke_run))
  want = vocab.decode(sampling.generate(params, spec, vocab.encode("ROMEO:"), 25, seed=1))
  assert step == 6 and capsys.readouterr().out == "ROMEO:" + want + "\n"
  # A character the model never saw: one line naming it.
  assert sample.main(["--workdir", str(smoke_run), "--prompt", "ROMEO@"]) == 2
  size = len(json.loads((smoke_run / "vocab.json").read_text())["chars"])
  assert capsys.readouterr().err == ("error: prompt character '@' at position 5 is not in the "
                                     f"model's vocabulary of {size} characters\n")
  # A workdir without a checkpoint: one line saying so.
  empty = tmp_path / "empty"
  empty.mkdir()
  for name in ("config.json", "vocab.json"):
    (empty / name).write_text((smoke_run / name).read_text())
  assert sample.main(["--workdir", str(empty)]) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith(f"error: no checkpoint in {empty}/checkpoints")


# The Transformer variant: no carried state, a context of max_len characters.
TF_SPEC = transformer_lm.LMSpec(6, d_model=8, num_heads=2, ffn_size=16, num_layers=2,
                                dropout=0.0, max_len=5)


@pytest.fixture(scope="module")
def tf_params():
  return jax.tree.map(lambda x: 3.0 * x, models.init(jax.random.PRNGKey(1), TF_SPEC))


def test_transformer_sampling_slides_its_window_past_the_context(tf_params):
  # 12 characters from a 3-character prompt with a context of 5: top-1 sampling and greedy
  # decoding equal a brute-force argmax that reads the last 5 characters of the text each step.
  prompt = np.array([1, 4, 2], np.int32)
  top1 = sampling.generate(tf_params, TF_SPEC, prompt, 12, temperature=0.7, top_k=1, seed=3)
  greedy = sampling.generate(tf_params, TF_SPEC, prompt, 12, greedy=True)
  text = list(prompt)
  for _ in range(12):
    context = jnp.array([text[-TF_SPEC.max_len:]])
    logits = transformer_lm.lm_forward(tf_params, TF_SPEC, context)
    text.append(int(jnp.argmax(logits[0, -1])))
  np.testing.assert_array_equal(top1, text[3:])
  np.testing.assert_array_equal(greedy, text[3:])
  assert len(set(text[3:])) > 1
  # A prompt longer than the context keeps its last 5 characters.
  long = np.array([3, 3, 0, 1, 5, 2, 4], np.int32)
  np.testing.assert_array_equal(
      sampling.generate(tf_params, TF_SPEC, long, 4, greedy=True),
      sampling.generate(tf_params, TF_SPEC, long[-6:], 4, greedy=True))
  # The same seed, the same sample; another seed, another.
  a, b, c = (sampling.generate(tf_params, TF_SPEC, prompt, 30, temperature=1.5, seed=s)
             for s in (7, 7, 8))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_transformer_evaluation_reads_windows_of_its_context(tf_params):
  # A text of 40 characters in 2 streams, chunks of 5: every prediction is scored once, from the
  # characters of its own window only (brute force: one forward over exactly those characters).
  text = np.random.default_rng(2).integers(0, TF_SPEC.vocab, 40).astype(np.int32)
  layout = batches.evaluation_streams(text, num_streams=2, chunk_len=5)
  nll, count = experiment.make_evaluator(TF_SPEC, None)(tf_params, layout, 5)
  per_stream = 20  # ceil(39 predictions / 2)
  want = 0.0
  for i in range(39):  # prediction i reads text[i] and predicts text[i + 1]
    stream_start = (i // per_stream) * per_stream
    start = stream_start + (i - stream_start) // 5 * 5
    logits = transformer_lm.lm_forward(tf_params, TF_SPEC, jnp.array([text[start:i + 1]]))
    want -= float(jax.nn.log_softmax(logits[0, -1])[text[i + 1]])
  assert count == 39
  np.testing.assert_allclose(nll, want, rtol=1e-5)


def test_transformer_config_errors():
  config = config_lib.get_config("smoke_transformer")
  config.mode = "stateful"
  with pytest.raises(ValueError, match=r"^config: the Transformer trains on random windows only"):
    models.make_spec(config, 65)
  config = config_lib.get_config("smoke_transformer")
  config.num_heads = 3
  with pytest.raises(ValueError, match=r"^config: .*16.*3"):
    models.make_spec(config, 65)


def test_transformer_smoke_run_and_sample(tmp_path, capsys):
  run = _smoke(tmp_path, "smoke_transformer")
  results = json.loads((run / "results.json").read_text())
  evals = [r["eval/loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
           if r["split"] == "eval"]
  assert results["model"] == "transformer" and results["step"] == 6 and len(evals) == 2
  assert results["best_eval_loss"] == min(evals)
  vocab = json.loads((run / "vocab.json").read_text())["chars"]
  assert abs(evals[0] - math.log(len(vocab))) < 1.0  # near chance: an untrained model
  n = len((tmp_path / "text" / "input.txt").read_text())
  assert results["validation_predictions"] == n - int(0.9 * n) - 1
  # The sample command rebuilds the Transformer from the workdir: 40 characters, past its
  # 16-character context, as sampling.generate draws them from the checkpoint.
  assert sample.main(["--workdir", str(run), "--prompt", "ROMEO:", "--length", "40",
                      "--seed", "2"]) == 0
  params, spec, vocab_, _ = sample.load_run(str(run))
  want = vocab_.decode(sampling.generate(params, spec, vocab_.encode("ROMEO:"), 40, seed=2))
  assert models.is_transformer(spec) and spec.max_len == 16
  assert capsys.readouterr().out == "ROMEO:" + want + "\n"
