"""The text pipeline: tokenisers, bad input, length-bucketed batches and their masks."""

import logging
import os

import numpy as np

from seqjax.data import text

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
  assert isinstance(b["tgt_mask"], np.ndarray) and b["tgt_mask"].dtype == np.float32


def test_eval_batches_cover_every_pair_once_with_padding_rows():
  data = text.EncodedPairs([np.array([5, 2])] * 7, [np.array([6, 6, 2])] * 7, np.arange(7), 7,
                           0, 0)
  batches = list(text.eval_batches(data, 3, length=16))
  assert [b["src"].shape for b in batches] == [(3, 16)] * 3
  index = np.concatenate([b["index"] for b in batches])
  assert sorted(index[index >= 0].tolist()) == list(range(7)) and np.sum(index < 0) == 2
  assert np.all(batches[-1]["src_lengths"][1:] == 0)
