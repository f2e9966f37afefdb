"""The three forecasting series as a tfds builder: airline passengers, sunspots, temperatures.

Each series is one split of the builder, named as in :data:`SERIES`; its examples are the rows of
the CSV in file order (``{"index": row number from 0, "time": "1949-01", "value": 112.0}``;
``disable_shuffling`` keeps the order, ``index`` restores it regardless).

Given ``source_dir``, the builder reads ``airline-passengers.csv``, ``monthly-sunspots.csv`` and
``daily-min-temperatures.csv`` from that folder; otherwise it downloads the same files from the
jbrownlee/Datasets GitHub repository. A row with a missing or non-numeric value stops preparation
with an error naming the file and line (``airline-passengers.csv:7: value '' is not a number``).
"""

from __future__ import annotations

import csv
import io
import math
import os

import numpy as np
import tensorflow_datasets as tfds

from seqjax.data import builders

URL = "https://raw.githubusercontent.com/jbrownlee/Datasets/master/"
# Split name -> CSV file name (the same in a local folder and at URL).
SERIES = {"airline": "airline-passengers.csv",
          "sunspots": "monthly-sunspots.csv",
          "temperatures": "daily-min-temperatures.csv"}


def parse_csv(text: str, name: str) -> tuple[list[str], np.ndarray]:
  """``(times, values: [n] float64)`` of a two-column CSV with a header line.

  Raises:
    ValueError: naming ``name`` and the 1-based line of the first row with a missing, non-numeric
      or non-finite value, or without exactly two fields.
  """
  rows = list(csv.reader(io.StringIO(text.replace("\r\n", "\n"))))
  if not rows:
    raise ValueError(f"{name}: the file is empty (expected a header and one row per time step)")
  times, values = [], []
  for line, row in enumerate(rows[1:], start=2):
    if not row:
      raise ValueError(f"{name}:{line}: empty row (expected time,value)")
    if len(row) != 2:
      raise ValueError(f"{name}:{line}: expected 2 fields (time,value), got {len(row)}: {row!r}")
    raw = row[1].strip()
    try:
      value = float(raw)
    except ValueError:
      value = math.nan
    if not math.isfinite(value):
      raise ValueError(f"{name}:{line}: value {raw!r} is not a number (time {row[0]!r})")
    times.append(row[0])
    values.append(value)
  if not values:
    raise ValueError(f"{name}: no rows after the header")
  return times, np.asarray(values, np.float64)


def read_series(path) -> tuple[list[str], np.ndarray]:
  """Reads and checks one CSV file; see :func:`parse_csv`."""
  path = os.fspath(path)
  with open(path, encoding="utf-8", newline="") as f:
    return parse_csv(f.read(), os.path.basename(path))


class Timeseries(builders.FolderOrDownload):
  """The three series; see the module docstring."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "airline passengers, monthly sunspots, daily minimum temperatures."}
  SOURCE_NAME = "time-series"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Monthly airline passengers (Box & Jenkins series G), Zurich monthly "
                    "sunspot numbers, Melbourne daily minimum temperatures.",
        features=tfds.features.FeaturesDict({
            "index": tfds.features.Scalar(np.int64),
            "time": tfds.features.Text(),
            "value": tfds.features.Scalar(np.float64),
        }),
        homepage="https://github.com/jbrownlee/Datasets",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    if self._source_dir is not None:
      paths = {}
      for split, name in SERIES.items():
        paths[split] = os.path.join(self._source_dir, name)
        if not os.path.exists(paths[split]):
          raise FileNotFoundError(f"time-series folder {self._source_dir!r} has no {name}")
    else:
      paths = dl_manager.download({split: URL + name for split, name in SERIES.items()})
    return {split: self._generate_examples(paths[split]) for split in SERIES}

  def _generate_examples(self, path):
    times, values = read_series(path)
    for i, (time, value) in enumerate(zip(times, values)):
      yield i, {"index": i, "time": time, "value": value}


def load(data_dir: str, source_dir: str | None = None) -> dict[str, tuple[list[str], np.ndarray]]:
  """Prepares the builder under ``data_dir`` (once); returns ``{series: (times, values: [n])}``.

  A local ``source_dir`` is checked row by row first, so bad input fails with its file and line
  before tfds writes anything.
  """
  if source_dir is not None:
    for name in SERIES.values():
      path = os.path.join(source_dir, name)
      if os.path.exists(path):
        read_series(path)
  builder = Timeseries(source_dir=source_dir, data_dir=data_dir, file_format="array_record")
  records = builders.prepare(builder, SERIES)
  return {split: ([builders.text(r["time"]) for r in rows],
                  np.asarray([float(r["value"]) for r in rows], np.float64))
          for split, rows in records.items()}
