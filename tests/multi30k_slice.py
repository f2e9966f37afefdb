"""A small Multi30k folder for the translation tests: the first lines of the shared raw files.

300 training pairs, 40 validation and 40 test pairs, in the raw task-1 layout
(``train.de.gz``, ``val.en.gz``, ``test_2016_flickr.de.gz``, ...) that
``--config.data_dir`` reads. Training line 7 is emptied on both sides (bad input the pipeline
skips and counts). Without the shared copy the lines are a synthetic corpus of the same shape.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared", "data", "multi30k")
SIZES = {"train": 300, "val": 40, "test_2016_flickr": 40}
EMPTY_TRAIN_LINE = 7


def lines(stem: str, lang: str, n: int) -> list[str]:
  """The first ``n`` lines of ``<stem>.<lang>.gz`` (one caption each)."""
  path = os.path.join(SHARED, f"{stem}.{lang}.gz")
  if os.path.exists(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
      return [next(f).rstrip("\n") for _ in range(n)]
  rng = np.random.default_rng(len(stem))
  words = {"de": ["ein", "mann", "frau", "hund", "läuft", "sitzt", "im", "park", "auf"],
           "en": ["a", "man", "woman", "dog", "runs", "sits", "in", "park", "on"]}[lang]
  return [" ".join(rng.choice(words, size=rng.integers(3, 12))) for _ in range(n)]


def write(folder) -> str:
  """Writes the small corpus into ``folder`` (a path); returns it as a string."""
  for stem, n in SIZES.items():
    for lang in ("de", "en"):
      text = lines(stem, lang, n)
      if stem == "train":
        text[EMPTY_TRAIN_LINE] = ""
      with gzip.open(os.path.join(str(folder), f"{stem}.{lang}.gz"), "wt",
                     encoding="utf-8") as f:
        f.writelines(line + "\n" for line in text)
  return str(folder)
