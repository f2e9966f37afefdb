"""The translation experiment with ``config.model.family = "transformer"``: the
``transformer_smoke`` variant end to end (in-process), its heatmaps, and beam width 1 = greedy."""

import json
import math
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import sacrebleu

from experiments.translate import config as translate_config
from experiments.translate import experiment
from experiments.translate import heatmaps
from experiments.translate import models
from seqjax import decoding
from seqjax import train
from seqjax.data import text

import multi30k_slice


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  """One ``transformer_smoke`` run: ``(config, workdir, results)``."""
  config = translate_config.get_config("transformer_smoke")
  config.data_dir = multi30k_slice.write(tmp_path_factory.mktemp("multi30k_small"))
  workdir = str(tmp_path_factory.mktemp("translate_transformer") / "run")
  results = train.run(experiment.make_experiment(config, workdir), config, workdir)
  return config, workdir, results


@pytest.fixture(scope="module")
def trained(smoke_run):
  """The run's final parameters, data and model: ``(lib, spec, params, data)``."""
  config, workdir, _ = smoke_run
  data = experiment.load_data(config, workdir)  # reloads the run's tokenisers
  lib = models.module(config)
  spec = models.make_spec(config, data["src_tok"].vocab_size, data["tgt_tok"].vocab_size)
  with ocp.StandardCheckpointer() as checkpointer:
    state = checkpointer.restore(os.path.join(workdir, "checkpoints", str(config.num_steps),
                                              "state"))
  return lib, spec, state["params"], data


def test_transformer_smoke_end_to_end(smoke_run):
  config, workdir, results = smoke_run
  assert results["model"]["family"] == "transformer" and results["step"] == config.num_steps
  # results.json's BLEU is sacrebleu's on test.hyp.txt, the test set in order.
  with open(os.path.join(workdir, "test.hyp.txt"), encoding="utf-8") as f:
    hypotheses = [line.rstrip("\n") for line in f]
  references = multi30k_slice.lines("test_2016_flickr", "en", 40)
  assert len(hypotheses) == 40
  assert results["test/bleu_lowercase"] == pytest.approx(
      sacrebleu.corpus_bleu(hypotheses, [references], lowercase=True).score)
  for name in ("test/bleu", "test/greedy_bleu", "test/loss"):
    assert math.isfinite(results[name]), name
  assert results["test/decoding"] == {"beam_size": 2, "alpha": 0.6}
  assert results["validation/bleu_beam_x_alpha"].keys() == {"beam=1", "beam=2"}

  # It learnt: the training loss fell, the validation loss fell below a uniform guess's.
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  train_losses = [r["train/loss"] for r in records if "train/loss" in r]
  evals = [r["eval/loss"] for r in records if r["split"] == "eval"]
  assert len(train_losses) == 3 and train_losses[-1] < train_losses[0] - 0.2, train_losses
  assert len(evals) == 2 and evals[-1] < evals[0] < math.log(results["vocab_sizes"][1]), evals

  # One decoder heatmap and one grid per kind for each of the first num_heatmaps test lines.
  pngs = sorted(f for f in os.listdir(workdir) if f.endswith(".png"))
  assert pngs == sorted([f"attention_{i}.png" for i in range(config.num_heatmaps)]
                        + [f"heads_{kind}_{i}.png" for kind in heatmaps.KINDS
                           for i in range(config.num_heatmaps)])


def test_head_maps_of_a_padded_batch_equal_each_sentence_alone(trained):
  lib, spec, params, data = trained
  test = data["test"]
  # Given two sentences, the second much shorter on both sides (padded in the batch),
  sentences = [(test.src[0], test.tgt[1]), (test.src[1][:4], test.tgt[0][:3])]
  # when head_maps pads them into one batch,
  maps = experiment.head_maps(lib, spec, params, sentences)
  heads = spec.num_heads
  for (src, out), got in zip(sentences, maps):
    # then each sentence gets its own maps, cut to its tokens, for each stack's depth,
    assert got["encoder_self"].shape == (spec.encoder_layers, heads, len(src), len(src))
    assert got["decoder_self"].shape == (spec.decoder_layers, heads, len(out), len(out))
    assert got["cross"].shape == (spec.decoder_layers, heads, len(out), len(src))
    for kind in heatmaps.KINDS:
      # every row a distribution over the sentence's own tokens (padding got no weight),
      np.testing.assert_allclose(got[kind].sum(-1), 1.0, atol=1e-5, err_msg=kind)
    # and the decoder never looks ahead.
    assert np.all(np.triu(got["decoder_self"], k=1) == 0.0)
  # The padded sentence's maps are those of the sentence alone, unpadded, with BOS + its
  # output (less the last token) as the decoder's input.
  src, out = sentences[1]
  alone = jax.jit(lib.attention_maps, static_argnums=1)(
      params, spec, np.asarray(src)[None], np.asarray([len(src)]),
      np.concatenate([[text.BOS], out[:-1]])[None])
  for kind in heatmaps.KINDS:
    np.testing.assert_allclose(maps[1][kind], np.asarray(alone[kind])[:, 0], atol=1e-5,
                               err_msg=kind)


def test_beam_width_one_translates_as_greedy(trained):
  lib, spec, params, data = trained
  batch = next(text.eval_batches(data["test"], 40, 40))
  kwargs = dict(max_len=20, bos_id=text.BOS, eos_id=text.EOS, pad_id=text.PAD)

  @jax.jit
  def both(params, src, src_lengths):
    state = lib.encode(params, spec, src, src_lengths)
    step_fn = lib.log_prob_step(params, spec)
    greedy = decoding.greedy(step_fn, state, **kwargs).tokens
    beam = decoding.beam_search(step_fn, state, beam_size=1, alpha=0.6, return_attention=False,
                                **kwargs).tokens[:, 0]
    return greedy, beam

  greedy, beam = both(params, batch["src"], batch["src_lengths"])
  assert np.sum(np.asarray(greedy) > text.EOS) > 40  # real translations, not all empty
  np.testing.assert_array_equal(beam, greedy)


def test_family_dispatch_and_its_errors():
  rnn, transformer = (translate_config.get_config(v) for v in ("smoke", "transformer"))
  assert models.module(rnn).__name__ == "seqjax.models.encdec"
  assert models.module(transformer).__name__ == "seqjax.models.transformer"
  # The model's max_len covers the padded sentences and the longest decoded output.
  assert models.make_spec(transformer, 50, 60).max_len == 64
  transformer.max_decode_len, transformer.pad_multiple, transformer.max_len = 30, 24, 70
  assert models.make_spec(transformer, 50, 60).max_len == 72
  transformer.model.cell = "gru"  # an RNN field left in a Transformer config
  with pytest.raises(ValueError, match=r"config.model has field\(s\) \['cell'\] that the "
                     "'transformer' family's Spec does not take"):
    models.make_spec(transformer, 50, 60)
  rnn.model.family = "cnn"
  with pytest.raises(ValueError, match="unknown config.model.family 'cnn'"):
    models.make_spec(rnn, 50, 60)
