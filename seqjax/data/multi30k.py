"""Multi30k task 1 (Elliott et al. 2016): German-English image-caption pairs, as a tfds builder.

Splits: ``train`` (29,000 pairs), ``validation`` (1,014) and ``test`` (test2016, 1,000).
Each example is ``{"index": line number, "de": text, "en": text}``; the builder keeps the file
order (``disable_shuffling``), and ``index`` lets a reader restore it regardless.

Given ``source_dir``, the builder reads the six files from that local folder (``train.de.gz``,
``val.en.gz``, ``test_2016_flickr.de.gz``, ...; uncompressed copies without ``.gz`` also work);
otherwise it downloads the official files from the multi30k/dataset GitHub repository. Either way
it writes array_record files under ``data_dir`` once and reads them back with
``as_data_source()`` (random access, no TensorFlow needed).
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import tensorflow_datasets as tfds

from seqjax.data import builders

URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
# tfds split name -> file stem in the multi30k repository.
SPLITS = {"train": "train", "validation": "val", "test": "test_2016_flickr"}
LANGUAGES = ("de", "en")

_CITATION = """@inproceedings{elliott2016multi30k,
  title={Multi30K: Multilingual English-German Image Descriptions},
  author={Elliott, Desmond and Frank, Stella and Sima'an, Khalil and Specia, Lucia},
  booktitle={Proceedings of the 5th Workshop on Vision and Language}, pages={70--74}, year={2016}}
"""


def _local_file(directory: str, stem: str, language: str) -> str:
  for name in (f"{stem}.{language}.gz", f"{stem}.{language}"):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(f"Multi30k folder {directory!r} has neither {stem}.{language}.gz nor "
                          f"{stem}.{language}")


def _read_lines(path) -> list[str]:
  path = os.fspath(path)
  with open(path, "rb") as f:
    gzipped = f.read(2) == b"\x1f\x8b"  # downloads may be stored without their .gz suffix
  opener = gzip.open if gzipped else open
  with opener(path, "rt", encoding="utf-8", newline="") as f:
    text = f.read()
  # Only "\n" ends a line (str.splitlines would also split on Unicode separators inside captions).
  lines = text.split("\n")
  if text.endswith("\n") or not text:
    lines.pop()
  return [line.rstrip("\r") for line in lines]


class Multi30k(builders.FolderOrDownload):
  """Multi30k task 1 De-En; see the module docstring."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Task 1 raw files: train, val, test_2016_flickr."}
  SOURCE_NAME = "Multi30k"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Multi30k task 1: German-English Flickr30k image captions.",
        features=tfds.features.FeaturesDict({
            "index": tfds.features.Scalar(np.int64),
            "de": tfds.features.Text(),
            "en": tfds.features.Text(),
        }),
        supervised_keys=("de", "en"),
        homepage="https://github.com/multi30k/dataset",
        citation=_CITATION,
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    if self._source_dir is not None:
      paths = {(split, lang): _local_file(self._source_dir, stem, lang)
               for split, stem in SPLITS.items() for lang in LANGUAGES}
    else:
      urls = {f"{split}.{lang}": f"{URL}{stem}.{lang}.gz"
              for split, stem in SPLITS.items() for lang in LANGUAGES}
      downloaded = dl_manager.download(urls)
      paths = {(split, lang): downloaded[f"{split}.{lang}"]
               for split in SPLITS for lang in LANGUAGES}
    return {split: self._generate_examples(paths[split, "de"], paths[split, "en"])
            for split in SPLITS}

  def _generate_examples(self, de_path, en_path):
    de, en = _read_lines(de_path), _read_lines(en_path)
    if len(de) != len(en):
      raise ValueError(f"Multi30k files do not pair up: {os.fspath(de_path)!r} has {len(de)} "
                       f"lines but {os.fspath(en_path)!r} has {len(en)}")
    for i, (de_line, en_line) in enumerate(zip(de, en)):
      yield i, {"index": i, "de": de_line, "en": en_line}


def load(data_dir: str, source_dir: str | None = None) -> dict[str, list[tuple[str, str]]]:
  """Prepares the dataset under ``data_dir`` (once) and returns ``{split: [(de, en), ...]}``.

  Args:
    data_dir: where tfds keeps the prepared array_record files.
    source_dir: local folder with the raw files; None downloads them.

  Returns:
    Each split's pairs in file order.
  """
  builder = Multi30k(source_dir=source_dir, data_dir=data_dir, file_format="array_record")
  records = builders.prepare(builder, SPLITS)
  return {split: [(builders.text(r["de"]), builders.text(r["en"])) for r in records[split]]
          for split in SPLITS}
