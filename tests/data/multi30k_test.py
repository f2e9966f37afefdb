"""Multi30k tfds builder on local files, and the text pipeline: tokenisers, bad input, batches."""

import gzip
import logging
import os

import numpy as np
import pytest

from seqjax.data import multi30k
from seqjax.data import text

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


# ----------------------------------------------------------------------------- text pipeline
CORPUS = ["Ein Mann fährt Fahrrad.", "Eine Frau liest ein Buch.", "Zwei Hunde spielen im Park.",
          "Ein Kind isst einen Apfel.", "Der Mann liest.", "Die Frau fährt ein Auto."] * 5


def test_word_tokenizer_cutoff_unknowns_and_detokenisation():
  tok = text.WordTokenizer.train(CORPUS + ["selten"], min_freq=2)
  assert "selten" not in tok.words and "Mann" in tok.words
  ids = tok.encode("Der Mann liest 漢字 selten.")
  assert ids[:3] == [tok.words.index("Der"), tok.words.index("Mann"), tok.words.index("liest")]
  assert ids[3] == text.UNK and ids[4] == text.UNK  # unseen characters, rare word
  assert tok.decode(tok.encode("Ein Mann liest ein Buch.") + [text.EOS, 7, 8]) == \
      "Ein Mann liest ein Buch."


def test_sentencepiece_is_trained_saved_reloaded_and_maps_unseen_characters_to_unk(tmp_path):
  tok = text.build_tokenizer("sentencepiece", CORPUS, str(tmp_path), "spm_de", vocab_size=60)
  assert os.path.exists(tmp_path / "spm_de.model")
  ids = tok.encode("Ein Mann liest 漢")
  assert text.UNK in ids and tok.decode(ids).startswith("Ein Mann liest")
  assert tok.decode(tok.encode("Die Frau liest ein Buch.")) == "Die Frau liest ein Buch."
  # A resumed run reloads the same model instead of training a new one.
  again = text.build_tokenizer("sentencepiece", ["anderes"], str(tmp_path), "spm_de")
  assert again.encode("Zwei Hunde spielen") == tok.encode("Zwei Hunde spielen")


def test_encode_pairs_skips_empty_lines_and_truncates_long_ones_with_a_warning(caplog):
  tok = text.WordTokenizer.train(CORPUS, min_freq=1)
  pairs = [("Ein Mann .", "Der Mann ."), ("", "Ein Kind"), ("Ein Kind", "   "),
           (" ".join(["Mann"] * 9), "Ein Kind isst"), ("Ein Kind", "Buch " * 4)]
  with caplog.at_level(logging.WARNING):
    out = text.encode_pairs(pairs, tok, tok, max_len=4, name="train")
  assert (out.total, out.empty, out.truncated, len(out)) == (5, 2, 2, 3)
  np.testing.assert_array_equal(out.index, [0, 3, 4])
  mann = tok.words.index("Mann")
  np.testing.assert_array_equal(out.src[1], [mann, mann, mann, text.EOS])  # cut to max_len
  np.testing.assert_array_equal(out.tgt[2], [tok.words.index("Buch")] * 3 + [text.EOS])
  assert "train: skipped 2 empty line(s) and truncated 2 sentence pair(s)" in caplog.text


def test_batches_are_length_bucketed_deterministic_and_shifted():
  rng = np.random.default_rng(0)
  src = [np.append(rng.integers(4, 50, size=n), text.EOS).astype(np.int32)
         for n in rng.integers(1, 30, size=103)]
  tgt = [np.append(rng.integers(4, 50, size=n), text.EOS).astype(np.int32)
         for n in rng.integers(1, 30, size=103)]
  data = text.EncodedPairs(src, tgt, np.arange(103), 103, 0, 0)
  batches = text.BucketedBatches(data, batch_size=10, seed=3)
  assert batches.batches_per_epoch == 10

  seen = np.concatenate([b for b in batches.epoch(0)])
  assert len(set(seen.tolist())) == 100  # 3 pairs sit out this epoch, none twice
  # Sorting by length: a batch spans a narrow band of lengths, so padding is small.
  lengths = np.array([max(len(s), len(t)) for s, t in zip(src, tgt)])
  spans = [np.ptp(lengths[b]) for b in batches.epoch(0)]
  assert np.mean(spans) < 0.5 * np.ptp(lengths)
  # Batch `step` is a pure function of (seed, step): a fresh object gives the same batch.
  first = batches(13)
  fresh = text.BucketedBatches(data, batch_size=10, seed=3)(13)
  for key in first:
    np.testing.assert_array_equal(first[key], fresh[key])
  assert not np.array_equal(batches(3)["index"], batches(13)["index"])  # epochs differ

  b = first
  assert b["src"].shape[1] % 8 == 0 and b["src"].shape == b["tgt_in"].shape
  for row, i in enumerate(b["index"]):
    n = len(tgt[i])
    np.testing.assert_array_equal(b["tgt_out"][row, :n], tgt[i])
    np.testing.assert_array_equal(b["tgt_in"][row, :n], np.concatenate([[text.BOS], tgt[i][:-1]]))
    np.testing.assert_array_equal(b["tgt_mask"][row], np.arange(b["src"].shape[1]) < n)
    np.testing.assert_array_equal(b["src"][row, :b["src_lengths"][row]], src[i])
    assert np.all(b["src"][row, b["src_lengths"][row]:] == text.PAD)


def test_eval_batches_cover_every_pair_once_with_padding_rows():
  data = text.EncodedPairs([np.array([5, 2])] * 7, [np.array([6, 6, 2])] * 7, np.arange(7), 7,
                           0, 0)
  batches = list(text.eval_batches(data, 3, length=16))
  assert [b["src"].shape for b in batches] == [(3, 16)] * 3
  index = np.concatenate([b["index"] for b in batches])
  assert sorted(index[index >= 0].tolist()) == list(range(7)) and np.sum(index < 0) == 2
  assert np.all(batches[-1]["src_lengths"][1:] == 0)
