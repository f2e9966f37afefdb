"""CoNLL-2003 English named entities (Tjong Kim Sang & De Meulder 2003) as a tfds builder.

Splits: ``train`` (14,041 sentences), ``validation`` (testa, 3,250) and ``test`` (testb, 3,453),
with the NER tags in IOB2 (every entity starts with ``B-``). Each example is
``{"index": sentence number, "tokens": [words], "tags": [NER tags]}`` in file order.

Given ``source_dir``, the builder reads ``train.txt``, ``valid.txt`` and ``test.txt`` (or their
``.gz``) from that local folder; otherwise it downloads the same three files of the widely used
IOB2 redistribution. Each line holds four space-separated columns ``WORD POS CHUNK NER``; a blank
line ends a sentence; ``-DOCSTART-`` lines are dropped. A line with another number of columns,
or an unknown NER tag, stops the build with an error naming the file and the line. Empty
sentences (a blank line that ends no tokens, other than the one after ``-DOCSTART-``) are skipped
and counted: :func:`load` returns the counts.
"""

from __future__ import annotations

import dataclasses
import gzip
import os

import numpy as np
import tensorflow_datasets as tfds

from seqjax.data import builders

URL = "https://raw.githubusercontent.com/kamalkraj/BERT-NER/master/data/"
# tfds split name -> file stem.
SPLITS = {"train": "train", "validation": "valid", "test": "test"}
TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
COLUMNS = 4

_CITATION = """@inproceedings{tjong2003conll,
  title={Introduction to the {CoNLL}-2003 Shared Task: Language-Independent Named Entity Recognition},
  author={Tjong Kim Sang, Erik F. and De Meulder, Fien},
  booktitle={Proceedings of CoNLL-2003}, pages={142--147}, year={2003}}
"""


@dataclasses.dataclass
class FileStats:
  """What reading one file found besides its sentences."""
  sentences: int = 0
  tokens: int = 0
  documents: int = 0
  empty_sentences: int = 0


def _open(path):
  path = os.fspath(path)
  with open(path, "rb") as f:
    gzipped = f.read(2) == b"\x1f\x8b"  # downloads may be stored without their .gz suffix
  return (gzip.open if gzipped else open)(path, "rt", encoding="utf-8", newline="")


def read_conll(path) -> tuple[list[tuple[list[str], list[str]]], FileStats]:
  """Sentences ``[(tokens, tags)]`` of one CoNLL file and its :class:`FileStats`.

  Raises:
    ValueError: naming the file and line of a line without exactly four columns, or with an NER
      tag outside :data:`TAGS`.
  """
  sentences, stats = [], FileStats()
  tokens, tags = [], []
  after_docstart = False

  def close():
    nonlocal tokens, tags
    if tokens:
      sentences.append((tokens, tags))
      stats.tokens += len(tokens)
    elif not after_docstart:
      stats.empty_sentences += 1
    tokens, tags = [], []

  with _open(path) as f:
    for number, line in enumerate(f, start=1):
      line = line.rstrip("\r\n")
      if not line.strip():
        close()
        after_docstart = False
        continue
      columns = line.split(" ")
      if columns[0] == "-DOCSTART-":
        # A document marker between sentences; the blank line after it ends no sentence.
        if tokens:
          close()
        stats.documents += 1
        after_docstart = True
        continue
      if len(columns) != COLUMNS:
        raise ValueError(f"{os.fspath(path)}:{number}: expected {COLUMNS} space-separated "
                         f"columns (WORD POS CHUNK NER), got {len(columns)}: {line!r}")
      if columns[3] not in TAGS:
        raise ValueError(f"{os.fspath(path)}:{number}: unknown NER tag {columns[3]!r} (expected "
                         f"one of {', '.join(TAGS)})")
      after_docstart = False
      tokens.append(columns[0])
      tags.append(columns[3])
  if tokens:
    close()
  stats.sentences = len(sentences)
  return sentences, stats


def _local_file(directory: str, stem: str) -> str:
  for name in (f"{stem}.txt.gz", f"{stem}.txt"):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(f"CoNLL-2003 folder {directory!r} has neither {stem}.txt.gz nor "
                          f"{stem}.txt")


class Conll2003(builders.FolderOrDownload):
  """CoNLL-2003 English NER in IOB2; see the module docstring."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "train / valid (testa) / test (testb), IOB2 NER tags."}
  SOURCE_NAME = "CoNLL-2003"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="CoNLL-2003 English named entities (PER, LOC, ORG, MISC) in IOB2.",
        features=tfds.features.FeaturesDict({
            "index": tfds.features.Scalar(np.int64),
            "tokens": tfds.features.Sequence(tfds.features.Text()),
            "tags": tfds.features.Sequence(tfds.features.ClassLabel(names=TAGS)),
        }),
        homepage="https://www.clips.uantwerpen.be/conll2003/ner/",
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    if self._source_dir is not None:
      paths = {split: _local_file(self._source_dir, stem) for split, stem in SPLITS.items()}
    else:
      paths = dl_manager.download({split: f"{URL}{stem}.txt" for split, stem in SPLITS.items()})
    read = {split: read_conll(paths[split]) for split in SPLITS}
    # The counts travel with the prepared data (dataset_info.json), read back by load().
    self.info.metadata["stats"] = {split: dataclasses.asdict(stats)
                                   for split, (_, stats) in read.items()}
    return {split: self._generate_examples(sentences) for split, (sentences, _) in read.items()}

  def _generate_examples(self, sentences):
    for i, (tokens, tags) in enumerate(sentences):
      yield i, {"index": i, "tokens": tokens, "tags": tags}


def load(data_dir: str, source_dir: str | None = None):
  """Prepares the data set under ``data_dir`` (once).

  Args:
    data_dir: where tfds keeps the prepared array_record files.
    source_dir: local folder with the raw files; None downloads them.

  Returns:
    ``(splits, stats)``: ``splits[split]`` is a list of ``(tokens, tags)`` string lists in file
    order; ``stats[split]`` the counts of :class:`FileStats` as a dict.
  """
  builder = Conll2003(source_dir=source_dir, data_dir=data_dir, file_format="array_record")
  records = builders.prepare(builder, SPLITS)
  splits = {split: [([builders.text(w) for w in r["tokens"]],
                     [TAGS[int(i)] for i in r["tags"]]) for r in records[split]]
            for split in SPLITS}
  return splits, dict(builder.info.metadata.get("stats", {}))
