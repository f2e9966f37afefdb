"""Tiny Shakespeare as a tfds builder, split as nanoGPT splits it, and its character vocabulary.

The builder reads ``input.txt`` (karpathy/char-rnn's ``data/tinyshakespeare/input.txt``, 1,115,394
characters) from a local folder, or downloads that file when no folder is given. Its two splits
hold one example each, ``{"index": 0, "text": ...}``: ``train`` the first 90% of the characters,
``validation`` the last 10% (nanoGPT's ``shakespeare_char``: 1,003,854 / 111,540), so figures
compare with nanoGPT's and with the peers in ``shared/REFERENCES.md``.

The vocabulary is every distinct character of the whole file, sorted (nanoGPT's, 65 characters);
:class:`Vocabulary` saves it as ``vocab.json`` in the workdir, where sampling finds it.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow_datasets as tfds

from seqjax.data import builders

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
FILE = "input.txt"
TRAIN_FRACTION = 0.9
SPLITS = ("train", "validation")
VOCAB_FILE = "vocab.json"


def split_text(text: str) -> dict[str, str]:
  """``{"train": first 90%, "validation": last 10%}`` of the characters (nanoGPT's cut)."""
  cut = int(len(text) * TRAIN_FRACTION)
  return {"train": text[:cut], "validation": text[cut:]}


def read_text(path) -> str:
  """The file as text; one line naming it when it is empty or not UTF-8."""
  path = os.fspath(path)
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: byte {e.start} is not UTF-8 ({raw[e.start:e.start + 1]!r})") \
        from None
  if len(text) < 2:
    raise ValueError(f"{path}: {len(text)} characters; a language model needs at least 2")
  return text


class TinyShakespeare(builders.FolderOrDownload):
  """Tiny Shakespeare, one example per split; see the module docstring."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "input.txt split 90/10 by characters, as nanoGPT."}
  SOURCE_NAME = "Tiny Shakespeare"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="A 1.1M-character subset of Shakespeare's plays (karpathy/char-rnn).",
        features=tfds.features.FeaturesDict({
            "index": tfds.features.Scalar(np.int64),
            "text": tfds.features.Text(),
        }),
        homepage="https://github.com/karpathy/char-rnn",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    if self._source_dir is not None:
      path = os.path.join(self._source_dir, FILE)
      if not os.path.exists(path):
        raise FileNotFoundError(f"Tiny Shakespeare folder {self._source_dir!r} has no {FILE}")
    else:
      path = dl_manager.download({"text": URL})["text"]
    parts = split_text(read_text(path))
    return {split: self._generate_examples(parts[split]) for split in SPLITS}

  def _generate_examples(self, text):
    yield 0, {"index": 0, "text": text}


def load(data_dir: str, source_dir: str | None = None) -> dict[str, str]:
  """Prepares the builder under ``data_dir`` (once); returns ``{"train": str, "validation": str}``.

  Args:
    data_dir: where tfds keeps the prepared array_record files.
    source_dir: a local folder holding ``input.txt``; None downloads it.
  """
  builder = TinyShakespeare(source_dir=source_dir, data_dir=data_dir, file_format="array_record")
  records = builders.prepare(builder, SPLITS)
  return {split: builders.text(records[split][0]["text"]) for split in SPLITS}


class Vocabulary:
  """Characters <-> ids: id ``i`` is the ``i``-th character in sorted order."""

  def __init__(self, chars: list[str]):
    if not chars or len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
      raise ValueError(f"a vocabulary is a list of distinct single characters; got {chars!r:.80}")
    self.chars = list(chars)
    self._ids = {c: i for i, c in enumerate(self.chars)}

  @classmethod
  def from_text(cls, text: str) -> Vocabulary:
    return cls(sorted(set(text)))

  def __len__(self) -> int:
    return len(self.chars)

  def encode(self, text: str, what: str = "text") -> np.ndarray:
    """``[len(text)]`` int32 ids; a ValueError naming the first character not in the vocabulary."""
    unknown = next((i for i, c in enumerate(text) if c not in self._ids), None)
    if unknown is not None:
      raise ValueError(f"{what} character {text[unknown]!r} at position {unknown} is not in the "
                       f"model's vocabulary of {len(self)} characters")
    return np.fromiter((self._ids[c] for c in text), np.int32, len(text))

  def decode(self, ids) -> str:
    return "".join(self.chars[int(i)] for i in ids)

  def save(self, workdir: str) -> None:
    os.makedirs(workdir, exist_ok=True)  # A fresh workdir whose tfds files live elsewhere.
    with open(os.path.join(workdir, VOCAB_FILE), "w", encoding="utf-8") as f:
      json.dump({"chars": self.chars}, f, ensure_ascii=False)

  @classmethod
  def load(cls, workdir: str) -> Vocabulary:
    path = os.path.join(workdir, VOCAB_FILE)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} does not exist; is {workdir!r} a char_lm workdir?")
    with open(path, encoding="utf-8") as f:
      return cls(json.load(f)["chars"])
