"""SST-2 and the airline tweets as tfds builders: a local folder or the official download.

* ``sst2``: GLUE's SST-2 (Socher et al. 2013, binary). ``train`` holds 67,349 phrases and
  sub-sentences of the treebank, ``validation`` the 872 sentences of GLUE's dev set (the only
  labelled evaluation: GLUE's test labels are not public). Files ``train.tsv[.gz]`` and
  ``dev.tsv[.gz]``: a header ``sentence<TAB>label`` (``text`` also accepted), then rows
  ``<text><TAB><0|1>``, unquoted. Download: the GLUE SST-2 zip.
* ``airline``: "Twitter US Airline Sentiment" (Figure Eight / Kaggle), 14,640 tweets labelled
  negative / neutral / positive, one CSV file ``Tweets.csv[.gz]`` with quoted fields (some
  tweets span lines). The source has no split; this builder makes one fixed stratified split:
  within each class, a permutation drawn from ``numpy.random.default_rng([SPLIT_SEED, class])``
  gives the first ``round(0.8 n)`` tweets to ``train``, the next ``round(0.1 n)`` to
  ``validation`` and the rest to ``test`` (11,711 / 1,464 / 1,465).

Each example is ``{"index": row number in its file (0-based, header excluded), "text", "label"}``;
a reader gets the rows back in file order. Empty texts are kept here (the experiment skips and
counts them); a label outside the known ones is an error naming the file and line.
"""

from __future__ import annotations

import csv
import gzip
import io
import os

import numpy as np
import tensorflow_datasets as tfds

from seqjax.data import builders

SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
SST2_LABELS = ("negative", "positive")
SST2_FILES = {"train": "train.tsv", "validation": "dev.tsv"}
AIRLINE_URL = ("https://raw.githubusercontent.com/eidehua/Real-Time-SciVi/"
               "cd0faf96aa3e0378310408039298362c87c1d3b2/twitter-airline-sentiment/Tweets.csv")
AIRLINE_LABELS = ("negative", "neutral", "positive")
AIRLINE_FILE = "Tweets.csv"
AIRLINE_SPLITS = ("train", "validation", "test")
# Seed of the airline split; changing it changes every reported airline number.
SPLIT_SEED = 0

DATASETS = ("sst2", "airline")


def _read_text(path) -> str:
  path = os.fspath(path)
  with open(path, "rb") as f:
    data = f.read()
  if data[:2] == b"\x1f\x8b":
    data = gzip.decompress(data)
  return data.decode("utf-8")


def _local(directory: str, name: str) -> str:
  for candidate in (name + ".gz", name):
    path = os.path.join(directory, candidate)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(f"folder {directory!r} has neither {name}.gz nor {name}")


def parse_sst2(text: str, name: str) -> list[tuple[str, int]]:
  """``[(sentence, label)]`` of one SST-2 TSV file's contents; ``name`` for error messages."""
  lines = text.split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  if not lines or lines[0].rstrip("\r").split("\t") not in (["sentence", "label"],
                                                           ["text", "label"]):
    header = lines[0][:60] if lines else "<empty file>"
    raise ValueError(f"{name}:1: expected the header 'sentence<TAB>label', got {header!r}")
  rows = []
  for number, line in enumerate(lines[1:], start=2):
    fields = line.rstrip("\r").split("\t")
    if len(fields) != 2:
      raise ValueError(f"{name}:{number}: expected 2 TAB-separated fields, got {len(fields)}")
    sentence, label = fields
    if label not in ("0", "1"):
      raise ValueError(f"{name}:{number}: unknown label {label!r} (SST-2 labels are 0 and 1)")
    rows.append((sentence.strip(), int(label)))
  return rows


def parse_airline(text: str, name: str) -> list[tuple[str, int]]:
  """``[(tweet, label)]`` of the airline CSV's contents, in file order."""
  reader = csv.reader(io.StringIO(text, newline=""))
  try:
    header = next(reader)
  except StopIteration:
    raise ValueError(f"{name}:1: empty file, expected a CSV header") from None
  missing = [c for c in ("airline_sentiment", "text") if c not in header]
  if missing:
    raise ValueError(f"{name}:1: the header has no column {missing[0]!r}")
  label_col, text_col = header.index("airline_sentiment"), header.index("text")
  rows = []
  while True:
    line = reader.line_num + 1  # a record may span lines: report the one it starts on
    try:
      record = next(reader)
    except StopIteration:
      break
    if len(record) != len(header):
      raise ValueError(f"{name}:{line}: expected {len(header)} columns, got {len(record)}")
    label = record[label_col]
    if label not in AIRLINE_LABELS:
      raise ValueError(f"{name}:{line}: unknown label {label!r} (expected one of "
                       f"{', '.join(AIRLINE_LABELS)})")
    rows.append((record[text_col].strip(), AIRLINE_LABELS.index(label)))
  return rows


def stratified_split(labels: np.ndarray, seed: int = SPLIT_SEED,
                     fractions=(0.8, 0.1)) -> np.ndarray:
  """``[n]`` split ids (0 train, 1 validation, 2 test), the same fractions within each class."""
  labels = np.asarray(labels)
  split = np.full(len(labels), 2, np.int64)
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    order = members[np.random.default_rng([seed, int(c)]).permutation(len(members))]
    n_train = int(round(fractions[0] * len(members)))
    n_val = int(round(fractions[1] * len(members)))
    split[order[:n_train]] = 0
    split[order[n_train:n_train + n_val]] = 1
  return split


class _Sentiment(builders.FolderOrDownload):
  """Shared tfds plumbing: ``{"index", "text", "label"}`` in file order."""

  VERSION = tfds.core.Version("1.0.0")
  LABELS: tuple[str, ...] = ()
  HOMEPAGE = ""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "index": tfds.features.Scalar(np.int64),
            "text": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=list(self.LABELS)),
        }),
        supervised_keys=("text", "label"), homepage=self.HOMEPAGE, disable_shuffling=True)


class Sst2(_Sentiment):
  """GLUE SST-2: binary sentence sentiment (see the module docstring)."""

  RELEASE_NOTES = {"1.0.0": "GLUE SST-2 train and dev."}
  SOURCE_NAME = "SST-2"
  LABELS = SST2_LABELS
  HOMEPAGE = "https://gluebenchmark.com/tasks"

  def _split_generators(self, dl_manager):
    if self._source_dir is not None:
      paths = {split: _local(self._source_dir, name) for split, name in SST2_FILES.items()}
    else:
      root = dl_manager.download_and_extract(SST2_URL) / "SST-2"
      paths = {split: root / name for split, name in SST2_FILES.items()}
    return {split: self._generate_examples(path) for split, path in paths.items()}

  def _generate_examples(self, path):
    for i, (sentence, label) in enumerate(parse_sst2(_read_text(path), os.fspath(path))):
      yield i, {"index": i, "text": sentence, "label": label}


class AirlineTweets(_Sentiment):
  """Twitter US Airline Sentiment, split 80/10/10 by class (see the module docstring)."""

  RELEASE_NOTES = {"1.0.0": "Tweets.csv, stratified split with SPLIT_SEED = 0."}
  SOURCE_NAME = "airline tweets"
  LABELS = AIRLINE_LABELS
  HOMEPAGE = "https://www.kaggle.com/datasets/crowdflower/twitter-airline-sentiment"

  def _split_generators(self, dl_manager):
    if self._source_dir is not None:
      path = _local(self._source_dir, AIRLINE_FILE)
    else:
      path = dl_manager.download(AIRLINE_URL)
    return {split: self._generate_examples(path, k) for k, split in enumerate(AIRLINE_SPLITS)}

  def _generate_examples(self, path, split_id):
    rows = parse_airline(_read_text(path), os.fspath(path))
    split = stratified_split(np.array([label for _, label in rows]))
    for i in np.flatnonzero(split == split_id):
      text, label = rows[i]
      yield int(i), {"index": int(i), "text": text, "label": label}


def load(name: str, data_dir: str, source_dir: str | None = None
         ) -> dict[str, tuple[list[str], np.ndarray]]:
  """Prepares data set ``name`` under ``data_dir`` once; ``{split: (texts, labels [n])}``.

  A local ``source_dir`` is parsed first, so bad input fails with its file and line rather
  than inside tfds.
  """
  if name == "sst2":
    builder_cls, splits = Sst2, tuple(SST2_FILES)
    if source_dir is not None:
      for file in SST2_FILES.values():
        path = _local(source_dir, file)
        parse_sst2(_read_text(path), path)
  elif name == "airline":
    builder_cls, splits = AirlineTweets, AIRLINE_SPLITS
    if source_dir is not None:
      path = _local(source_dir, AIRLINE_FILE)
      parse_airline(_read_text(path), path)
  else:
    raise ValueError(f"unknown data set {name!r}; use one of {DATASETS}")
  builder = builder_cls(source_dir=source_dir, data_dir=data_dir, file_format="array_record")
  records = builders.prepare(builder, splits)
  return {split: ([builders.text(r["text"]) for r in records[split]],
                  np.array([int(r["label"]) for r in records[split]], np.int64))
          for split in splits}
