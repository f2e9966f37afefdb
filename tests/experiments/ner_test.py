"""experiments/ner: conlleval scoring against seqeval, the CoNLL reader's errors and counts,
features, and the smoke variant end to end on a small synthetic corpus."""

import json
import os
import random

import numpy as np
import pytest
from seqeval import metrics as seqeval_metrics

from experiments.ner import config as ner_config
from experiments.ner import conll
from experiments.ner import experiment
from experiments.ner import features
from experiments.ner import scoring
from seqjax import train

TAGS = list(conll.TAGS)


def _random_tags(rng, sentences):
  # Any tag anywhere: ill-formed I- after O or after another type included.
  return [[rng.choice(TAGS) for _ in range(n)] for n in sentences]


def test_f1_matches_seqeval_on_random_tag_sequences():
  rng = random.Random(0)
  for trial in range(60):
    lengths = [rng.randint(1, 15) for _ in range(rng.randint(1, 8))]
    gold = _random_tags(rng, lengths)
    # Half the trials predict a noisy copy of gold, so many chunks are right.
    pred = ([[t if rng.random() < 0.7 else rng.choice(TAGS) for t in s] for s in gold]
            if trial % 2 else _random_tags(rng, lengths))
    got = scoring.evaluate(gold, pred)
    assert got["precision"] == pytest.approx(100 * seqeval_metrics.precision_score(gold, pred))
    assert got["recall"] == pytest.approx(100 * seqeval_metrics.recall_score(gold, pred))
    assert got["f1"] == pytest.approx(100 * seqeval_metrics.f1_score(gold, pred))
    report = seqeval_metrics.classification_report(gold, pred, output_dict=True,
                                                   zero_division=0)
    for kind, scores in got["per_type"].items():
      if scores["gold"]:
        assert scores["f1"] == pytest.approx(100 * report[kind]["f1-score"]), kind
        assert scores["recall"] == pytest.approx(100 * report[kind]["recall"]), kind


def test_chunks_follow_conlleval_rules():
  # I-PER after O starts a chunk; a type change splits; B- after I- splits.
  tags = ["I-PER", "I-PER", "I-LOC", "B-LOC", "I-LOC", "O", "B-ORG"]
  assert scoring.chunks(tags) == {(0, 1, "PER"), (2, 2, "LOC"), (3, 4, "LOC"), (6, 6, "ORG")}
  # One wrong boundary makes the whole entity wrong: 1 of 2 right.
  got = scoring.evaluate([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "O", "O", "B-LOC"]])
  assert (got["correct"], got["predicted"], got["gold"]) == (1, 2, 2)
  assert got["f1"] == pytest.approx(50.0)


def _write(path, text):
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


def test_bad_column_count_names_file_and_line(tmp_path):
  path = str(tmp_path / "train.txt")
  _write(path, "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ O\n")
  with pytest.raises(ValueError, match=r"train\.txt:4: expected 4 .* got 3") as err:
    conll.read_conll(path)
  assert "\n" not in str(err.value)
  _write(path, "EU NNP B-NP B-ORG\n\nPeter NNP B-NP B-PERSON\n")
  with pytest.raises(ValueError, match=r"train\.txt:3: unknown NER tag 'B-PERSON'"):
    conll.read_conll(path)


def test_empty_sentences_are_skipped_and_counted(tmp_path):
  path = str(tmp_path / "valid.txt")
  # After -DOCSTART- one blank line is expected; the two extra blank lines are empty sentences.
  _write(path, "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\n\n\n\nPeter NNP B-NP B-PER\n"
               "-DOCSTART- -X- -X- O\n\nBRUSSELS NNP B-NP B-LOC")
  sentences, stats = conll.read_conll(path)
  assert sentences == [(["EU"], ["B-ORG"]), (["Peter"], ["B-PER"]), (["BRUSSELS"], ["B-LOC"])]
  assert (stats.empty_sentences, stats.documents, stats.tokens) == (2, 2, 3)


def test_features_normalise_words_but_keep_case_in_characters():
  vocab = features.Vocab.build([(["Paris", "1996", "paris", "Bonn"], ["B-LOC", "O", "B-LOC",
                                                                      "B-LOC"])])
  enc = features.encode([(["PARIS", "2001", "Oslo"], ["B-LOC", "O", "B-LOC"])], vocab)
  assert enc.words[0][0] == vocab.words["paris"] and enc.words[0][1] == vocab.words["0000"]
  assert enc.words[0][2] == features.UNK
  assert [features.CASINGS[c] for c in enc.casings[0]] == ["upper", "numeric", "initial_upper"]
  assert enc.chars[0][0, 0] != vocab.chars["p"]  # "P" and "p" are different characters
  assert enc.singleton[0].tolist() == [False, True, False]  # "paris" twice, "0000" once


def test_bucketed_batches_cover_every_sentence_once_per_epoch():
  rng = np.random.default_rng(0)
  sentences = [(["w"] * int(n), ["O"] * int(n)) for n in rng.integers(1, 40, 103)]
  enc = features.encode(sentences, features.Vocab.build(sentences))
  batches = features.BucketedBatches(enc, 10, seed=3)
  seen = np.concatenate([batches(i)["index"] for i in range(batches.batches_per_epoch)])
  assert len(seen) == len(set(seen.tolist())) == 100  # 3 left over, none twice
  batch = batches(0)
  assert batch["words"].shape[1] in features.BUCKETS
  assert batch["words"].shape[1] >= batch["lengths"].max()


_NAMES = {"PER": ["John Smith", "Mary", "Peter Blackburn"], "LOC": ["Paris", "New York", "Bonn"],
          "ORG": ["Reuters", "European Union", "Ajax"], "MISC": ["German", "Olympic"]}
_FILLER = ["said", "in", "the", "on", "visited", "met", "of", "1996", "."]


def _synthetic_file(path, sentences, rng, empty_every=0):
  lines = ["-DOCSTART- -X- -X- O", ""]
  for i in range(sentences):
    for _ in range(rng.randint(2, 5)):
      if rng.random() < 0.5:
        kind = rng.choice(sorted(_NAMES))
        for j, word in enumerate(rng.choice(_NAMES[kind]).split()):
          lines.append(f"{word} NNP I-NP {'B' if j == 0 else 'I'}-{kind}")
      else:
        lines.append(f"{rng.choice(_FILLER)} XX O O")
    lines.append("")
    if empty_every and i % empty_every == 0:
      lines.append("")  # an empty sentence
  _write(path, "\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("ner")
  rng = random.Random(0)
  data = root / "data"
  data.mkdir()
  _synthetic_file(str(data / "train.txt"), 240, rng, empty_every=60)  # 4 empty sentences
  _synthetic_file(str(data / "valid.txt"), 40, rng)
  _synthetic_file(str(data / "test.txt"), 40, rng)
  config = ner_config.get_config("smoke")
  config.data_dir = str(data)
  workdir = str(root / "run")
  return config, workdir, train.run(experiment.make_experiment(config, workdir), config, workdir)


def test_smoke_variant_end_to_end(smoke_run):
  config, workdir, result = smoke_run
  assert result["step"] == config.num_steps
  assert result["data_stats"]["train"]["empty_sentences"] == 4
  assert result["data_stats"]["train"]["sentences"] == 240
  records = train.read_metrics(workdir)
  losses = [r["train/loss_per_token"] for r in records if "train/loss_per_token" in r]
  assert losses[-1] < 0.75 * losses[0], losses  # it learns
  assert os.path.exists(os.path.join(workdir, "learning_curves.png"))
  with open(os.path.join(workdir, "best.json")) as f:
    best = json.load(f)
  for seed in range(config.num_seeds):
    # The committed predictions rescore to the reported test F1, by conlleval's rules and seqeval.
    path = os.path.join(workdir, f"seed{seed}", "test.pred.conll")
    gold, pred = scoring.read_conll(path)
    assert len(gold) == 40
    rescored = scoring.evaluate(gold, pred)
    per_seed = result["per_seed"][seed]
    assert per_seed["test"]["f1"] == pytest.approx(rescored["f1"])
    assert per_seed["test_seqeval"]["f1"] == pytest.approx(rescored["f1"])
    assert per_seed["step"] == best[str(seed)]["step"]
    # Selected on validation: no evaluation of this seed had a higher validation F1.
    valid = [r[f"eval/valid_f1_seed{seed}"] for r in records if f"eval/valid_f1_seed{seed}" in r]
    assert per_seed["valid"]["f1"] == pytest.approx(max(valid))
  assert result["test_f1"]["mean"] == pytest.approx(
      np.mean([r["test"]["f1"] for r in result["per_seed"]]))
