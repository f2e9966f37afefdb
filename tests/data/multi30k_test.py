"""Multi30k tfds builder on local files (the text pipeline: tests/data/text_test.py)."""

import gzip
import os

import pytest

from seqjax.data import multi30k

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "multi30k")


def _write(folder, name, lines, compress=True):
  data = "".join(line + "\n" for line in lines).encode("utf-8")
  if compress:
    with gzip.open(os.path.join(folder, name + ".gz"), "wb") as f:
      f.write(data)
  else:
    with open(os.path.join(folder, name), "wb") as f:
      f.write(data)


def _small_folder(folder, sizes=(5, 3, 2)):
  os.makedirs(folder)
  for (stem, n) in zip(("train", "val", "test_2016_flickr"), sizes):
    for lang in ("de", "en"):
      # The test split is stored uncompressed: both forms are accepted.
      _write(folder, f"{stem}.{lang}", [f"{stem} {lang} satz {i} äöü" for i in range(n)],
             compress=stem != "test_2016_flickr")
  return folder


def test_builder_reads_a_local_folder_in_file_order(tmp_path):
  source = _small_folder(str(tmp_path / "raw"))
  splits = multi30k.load(str(tmp_path / "tfds"), source)
  assert {k: len(v) for k, v in splits.items()} == {"train": 5, "validation": 3, "test": 2}
  assert splits["train"] == [(f"train de satz {i} äöü", f"train en satz {i} äöü")
                             for i in range(5)]
  assert splits["test"][1] == ("test_2016_flickr de satz 1 äöü", "test_2016_flickr en satz 1 äöü")
  # The prepared array_record files are reused: a second load does not need the source.
  again = multi30k.load(str(tmp_path / "tfds"), source)
  assert again == splits


def test_builder_names_files_that_do_not_pair_up(tmp_path):
  source = _small_folder(str(tmp_path / "raw"))
  _write(source, "val.en", ["one", "two"])  # val.de has 3 lines
  with pytest.raises(ValueError, match=r"val\.de\.gz' has 3 lines but .*val\.en\.gz' has 2"):
    multi30k.load(str(tmp_path / "tfds"), source)


def test_builder_names_a_missing_file(tmp_path):
  source = _small_folder(str(tmp_path / "raw"))
  os.remove(os.path.join(source, "train.en.gz"))
  with pytest.raises(FileNotFoundError, match="neither train.en.gz nor train.en"):
    multi30k.load(str(tmp_path / "tfds"), source)
  with pytest.raises(FileNotFoundError, match="is not a folder"):
    multi30k.load(str(tmp_path / "tfds"), str(tmp_path / "nowhere"))


def test_without_a_folder_the_builder_downloads_the_official_files(tmp_path):
  # Given: a download manager that records the URLs and serves local copies instead.
  source = _small_folder(str(tmp_path / "raw"))

  class FakeDownloads:
    requested = {}

    def download(self, urls):
      self.requested.update(urls)
      return {key: os.path.join(source, os.path.basename(url).replace(
          "test_2016_flickr.en.gz", "test_2016_flickr.en").replace(
              "test_2016_flickr.de.gz", "test_2016_flickr.de")) for key, url in urls.items()}

  builder = multi30k.Multi30k(data_dir=str(tmp_path / "tfds"), file_format="array_record")
  generators = builder._split_generators(FakeDownloads())  # pylint: disable=protected-access
  base = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
  assert sorted(FakeDownloads.requested.values()) == sorted(
      base + f"{stem}.{lang}.gz" for stem in ("train", "val", "test_2016_flickr")
      for lang in ("de", "en"))
  assert [len(list(generators[split])) for split in ("train", "validation", "test")] == [5, 3, 2]


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="shared Multi30k copy not present")
def test_builder_on_the_real_data_gives_the_published_counts(tmp_path):
  splits = multi30k.load(str(tmp_path / "tfds"), SHARED)
  assert {k: len(v) for k, v in splits.items()} == {"train": 29000, "validation": 1014,
                                                    "test": 1000}
  with gzip.open(os.path.join(SHARED, "test_2016_flickr.en.gz"), "rt", encoding="utf-8") as f:
    first_lines = [f.readline().rstrip("\n") for _ in range(3)]
  assert [en for _, en in splits["test"][:3]] == first_lines
