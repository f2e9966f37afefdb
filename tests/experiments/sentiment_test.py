"""experiments/sentiment: the builders on the shared files, bad input by file and line, empty
texts skipped and counted, scores against scikit-learn, seeds trained side by side independent
of each other, pretrained vectors, and the smoke variant end to end."""

import csv
import gzip
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from experiments.sentiment import config as sentiment_config
from experiments.sentiment import datasets
from experiments.sentiment import encoding
from experiments.sentiment import experiment
from experiments.sentiment import scoring
from seqjax import kernels
from seqjax import train
from seqjax.data import text as text_lib
from seqjax.models import classifier
from seqjax.train import global_batch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(REPO, "..", "shared", "data")
SST2 = os.path.join(SHARED, "sst2")
AIRLINE = os.path.join(SHARED, "twitter_airline_sentiment")
EMPTY_TRAIN_ROW = 5


def _sst2_rows(split, n):
  path = os.path.join(SST2, f"{split}.tsv.gz")
  if os.path.exists(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
      return [next(f).rstrip("\n") for _ in range(n + 1)][1:]
  rng = np.random.default_rng(len(split))
  words = ["good", "bad", "film", "a", "the", "boring", "great", "plot", "acting", "not"]
  return [f"{' '.join(rng.choice(words, rng.integers(2, 15)))} \t{rng.integers(0, 2)}"
          for _ in range(n)]


@pytest.fixture(scope="module")
def sst2_slice(tmp_path_factory):
  """A small SST-2 folder: the shared files' first rows, one training text emptied."""
  folder = tmp_path_factory.mktemp("sst2_slice")
  for split, n in (("train", 256), ("dev", 64)):
    rows = _sst2_rows(split, n)
    if split == "train":
      rows[EMPTY_TRAIN_ROW] = " \t" + rows[EMPTY_TRAIN_ROW].split("\t")[1]
    with gzip.open(folder / f"{split}.tsv.gz", "wt", encoding="utf-8") as f:
      f.write("sentence\tlabel\n" + "\n".join(rows) + "\n")
  return str(folder)


def test_sst2_unknown_label_is_reported_by_file_and_line(tmp_path):
  (tmp_path / "train.tsv").write_text("sentence\tlabel\na fine film \t1\nawful \t2\n")
  (tmp_path / "dev.tsv").write_text("sentence\tlabel\nok \t0\n")
  path = str(tmp_path / "train.tsv")
  with pytest.raises(ValueError, match=rf"^{path}:3: unknown label '2'"):
    datasets.load("sst2", str(tmp_path / "tfds"), str(tmp_path))
  with pytest.raises(ValueError, match=r"x.tsv:2: expected 2 TAB-separated fields, got 3"):
    datasets.parse_sst2("sentence\tlabel\na\tb\t1\n", "x.tsv")


def test_airline_unknown_label_names_the_line_a_record_starts_on():
  text = ('tweet_id,airline_sentiment,text\n1,negative,"late again"\n'
          '2,positive,"two\nline tweet"\n3,angry,"bad"\n')
  with pytest.raises(ValueError, match=r"^t.csv:5: unknown label 'angry'"):
    datasets.parse_airline(text, "t.csv")
  rows = datasets.parse_airline(text.replace("angry", "neutral"), "t.csv")
  assert rows == [("late again", 0), ("two\nline tweet", 2), ("bad", 1)]


def test_empty_texts_are_skipped_and_counted():
  tokenizer = encoding.WhitespaceTokenizer.train(["a b", "b c n't"], min_freq=1, lowercase=True)
  data = encoding.encode_texts(["a b", "", "   ", "c n't c b a", "b"], [0, 1, 1, 0, 1],
                               tokenizer, max_len=3, name="t")
  assert (data.total, data.empty, data.truncated, len(data)) == (5, 2, 1, 3)
  np.testing.assert_array_equal(data.index, [0, 3, 4])
  np.testing.assert_array_equal(data.labels, [0, 0, 1])
  assert [tokenizer.piece(i) for i in data.ids[1]] == ["c", "n't", "c"]


@pytest.mark.skipif(not os.path.isdir(SST2) or not os.path.isdir(AIRLINE),
                    reason="needs the shared data folder")
def test_builders_read_the_shared_files(tmp_path_factory):
  tfds_dir = str(tmp_path_factory.mktemp("tfds"))
  # SST-2 through the builder's own split generators (writing its 67,349 rows into array_record
  # files would cost the suite seconds; the smoke test runs that path on a slice).
  builder = datasets.Sst2(source_dir=SST2, data_dir=tfds_dir)
  sst2 = {split: [example for _, example in generator]
          for split, generator in builder._split_generators(None).items()}  # pylint: disable=protected-access
  assert {s: len(e) for s, e in sst2.items()} == {"train": 67349, "validation": 872}
  assert np.bincount([e["label"] for e in sst2["train"]]).tolist() == [29780, 37569]
  assert sst2["validation"][0]["text"] == "it 's a charming and often affecting journey ."
  assert [e["index"] for e in sst2["validation"]] == list(range(872))
  airline = datasets.load("airline", tfds_dir, AIRLINE)
  sizes = {s: np.bincount(labels, minlength=3).tolist() for s, (_, labels) in airline.items()}
  assert sizes == {"train": [7342, 2479, 1890], "validation": [918, 310, 236],
                   "test": [918, 310, 237]}
  # The same split from the file itself: stratified_split of its labels, by row.
  with gzip.open(os.path.join(AIRLINE, "Tweets.csv.gz"), "rt", encoding="utf-8",
                 newline="") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 14640
  split = datasets.stratified_split(
      np.array([datasets.AIRLINE_LABELS.index(r["airline_sentiment"]) for r in rows]))
  for k, name in enumerate(datasets.AIRLINE_SPLITS):
    assert airline[name][0] == [rows[i]["text"].strip() for i in np.flatnonzero(split == k)]


def test_scores_match_scikit_learn():
  rng = np.random.default_rng(0)
  gold, pred = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
  pred[:5] = 2  # class 1 may vanish from the predictions without breaking anything
  np.testing.assert_array_equal(scoring.confusion_matrix(gold, pred, 3),
                                sk_metrics.confusion_matrix(gold, pred, labels=[0, 1, 2]))
  assert scoring.macro_f1(gold, pred, 3) == pytest.approx(
      sk_metrics.f1_score(gold, pred, average="macro"), abs=1e-12)
  assert scoring.macro_f1([0, 0, 1], [0, 0, 0], 3) == pytest.approx(
      sk_metrics.f1_score([0, 0, 1], [0, 0, 0], average="macro", labels=[0, 1, 2],
                          zero_division=0))


class _Labelled:
  """The part of an encoded split that ``scoring.BestEpochs`` reads: its gold labels."""

  def __init__(self, labels):
    self.labels = np.asarray(labels)

  def __len__(self):
    return len(self.labels)


def test_best_evaluations_between_epochs_keep_step_fraction_and_predictions(tmp_path):
  gold = [0, 1, 1, 0]
  path = str(tmp_path / "best.npz")
  best = scoring.BestEpochs(path, 2, {"validation": _Labelled(gold)}, 2)
  params = {"model": {"w": np.arange(2.0)[:, None] * np.ones((2, 3))}}
  # A quarter epoch in, seed 0 scores 3/4 and seed 1 2/4; at half an epoch seed 1 reaches 4/4
  # and seed 0 falls to 1/4, so seed 0 keeps its first evaluation and seed 1 takes its second.
  got = best.update(263, {"validation": np.array([[0, 1, 1, 1], [0, 0, 1, 1]])}, params)
  assert got["eval/accuracy_mean"] == pytest.approx((0.75 + 0.5) / 2)
  params = {"model": {"w": params["model"]["w"] + 10.0}}
  got = best.update(526, {"validation": np.array([[0, 0, 0, 1], [0, 1, 1, 0]])}, params)
  assert got["eval/accuracy_mean"] == pytest.approx((0.25 + 1.0) / 2)
  assert got["eval/best_accuracy_mean"] == pytest.approx((0.75 + 1.0) / 2)
  summary = best.summary(batches_per_epoch=1052)
  assert [(s["best_step"], s["best_epoch"]) for s in summary["per_seed"]] == [(263, 0.25),
                                                                            (526, 0.5)]
  assert [s["validation"]["accuracy"] for s in summary["per_seed"]] == [0.75, 1.0]
  # A resumed run reads the same bests, predictions and parameters back from best.npz.
  again = scoring.BestEpochs(path, 2, {"validation": _Labelled(gold)}, 2)
  np.testing.assert_array_equal(again.predictions(1, "validation"), [0, 1, 1, 0])
  np.testing.assert_array_equal(again.params(0, params["model"])["w"], np.zeros(3))
  np.testing.assert_array_equal(again.params(1, params["model"])["w"], np.full(3, 11.0))


def test_seeds_side_by_side_train_as_separate_runs():
  spec = classifier.Spec(vocab_size=12, num_classes=2, embed_dim=4, hidden_size=3,
                         embed_dropout=0.5)
  settings = kernels.Settings()
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  params = {"model": jax.vmap(lambda k: classifier.init(k, spec))(keys)}
  batch = {"tokens": np.array([[4, 5, 6], [7, 8, 0]], np.int32),
           "lengths": np.array([3, 2], np.int32), "labels": np.array([1, 0], np.int32),
           "weights": np.array([1.0, 1.0], np.float32)}
  with global_batch.tracing_reduction("global"):
    grads = jax.jit(jax.grad(lambda p: experiment.make_loss(spec, 2, settings)(
        p, batch, jax.random.PRNGKey(7))[0]))(params)

  # Seed 1 in a batch of two equals seed 1 run alone (its key is fold_in(rng, 1) either way).
  def seed1_alone(p):
    key = jax.random.fold_in(jax.random.PRNGKey(7), 1)
    logits, _ = classifier.apply(spec, p, batch["tokens"], batch["lengths"], key)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), batch["labels"]])
  expected = jax.jit(jax.grad(seed1_alone))(jax.tree.map(lambda x: x[1], params["model"]))
  jax.tree.map(lambda g, e: np.testing.assert_allclose(g[1], e, rtol=1e-5, atol=1e-7),
               grads["model"], expected)


def test_pretrained_vectors_fill_known_words(tmp_path):
  path = tmp_path / "vectors.txt"
  path.write_text("3 2\ngood 0.5 -1\nFilm 2 3\nzebra 9 9\n")
  words = list(text_lib.SPECIALS) + ["good", "film", "bad"]
  table, found = encoding.load_vectors(str(path), words, 2, seed=0)
  assert found == 2
  np.testing.assert_array_equal(table[4], [0.5, -1])
  np.testing.assert_array_equal(table[5], [2, 3])  # matched without case
  np.testing.assert_array_equal(table[text_lib.PAD], [0, 0])
  path.write_text("good 0.5 -1\nbad 1 2 3\n")
  with pytest.raises(ValueError, match=rf"{path}:2: expected a word and 2 values"):
    encoding.load_vectors(str(path), words, 2)


def test_smoke_end_to_end(sst2_slice, tmp_path):
  config = sentiment_config.get_config("smoke")
  config.data_dir = sst2_slice
  workdir = str(tmp_path / "run")
  result = train.run(experiment.make_experiment(config, workdir), config, workdir)
  assert result["counts"]["train"]["empty_skipped"] == 1
  assert result["counts"]["train"]["kept"] == 255
  assert result["step"] == config.num_epochs * result["batches_per_epoch"] == 16
  with open(os.path.join(workdir, "dev.pred.tsv"), encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f][1:]
  assert len(rows) == 64
  rescored = np.mean([gold == pred for _, gold, pred in rows])
  assert result["per_seed"][0]["validation"]["accuracy"] == pytest.approx(rescored)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    evals = [r for r in map(json.loads, f) if r["split"] == "eval"]
  best = max(evals, key=lambda r: r["eval/accuracy_seed0"])  # first maximum, as selected
  assert result["per_seed"][0]["best_step"] == best["step"]
  assert rescored == pytest.approx(best["eval/accuracy_seed0"])
  cost = result["padding_per_epoch"]
  # The smoke pads every batch to max_len (one shape), so both batchings pad alike here.
  assert cost["bucketed"]["tokens"] == cost["plain"]["tokens"] == result["counts"]["train"]["tokens"]
  assert cost["bucketed"]["slots"] == cost["plain"]["slots"] == 16 // 2 * 32 * 64
  for name in ("confusion.png", "attention.png", "dev_curve.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 1000
  # The same command again resumes the finished run: no step, the same selected epochs and
  # scores (best.npz holds them), the files written again.
  os.remove(os.path.join(workdir, "dev.pred.tsv"))
  again = train.run(experiment.make_experiment(config, workdir), config, workdir)
  assert again["per_seed"] == result["per_seed"]
  assert os.path.exists(os.path.join(workdir, "dev.pred.tsv"))
