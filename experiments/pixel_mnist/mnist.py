"""MNIST from the official IDX files as a tfds builder, with a checking IDX reader.

The four files (LeCun, Cortes & Burges), gzipped or not::

  train-images-idx3-ubyte  train-labels-idx1-ubyte   60,000 training images and labels
  t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte    10,000 test images and labels

Given ``source_dir``, the builder reads them from that folder (``NAME`` or ``NAME.gz``); a folder
with only the two ``t10k`` files gives a ``test`` split alone. Without ``source_dir`` it downloads
all four from the mirror tensorflow-datasets uses. Examples are
``{"index": i, "image": [28, 28] uint8, "label": 0..9}`` in file order.

An IDX file is a big-endian header (``0x00 0x00``, the type byte ``0x08`` for unsigned bytes, the
number of dimensions ``k``, then ``k`` uint32 sizes) followed by the data. The reader checks the
magic number, the dimensions and the size against the data and stops at the first mismatch with
one line naming the file (``t10k-images-idx3-ubyte.gz: magic 0x00000802, expected 0x00000803 ...``).
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import tensorflow_datasets as tfds

from seqjax.data import builders

URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
# Split -> (images file, labels file), without the ".gz".
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801
ROWS = COLS = 28


def parse_idx(data: bytes, name: str, magic: int, tail: tuple[int, ...] = ()) -> np.ndarray:
  """The uint8 array ``[n, *tail]`` of one IDX file's bytes (``name`` is for the errors).

  ``magic``: the expected magic number (its low byte is the number of dimensions); ``tail``: the
  expected sizes of every dimension after the first.

  Raises:
    ValueError: one line naming ``name`` and what is wrong: a short header, another magic
      number, other sizes, or more or fewer data bytes than the sizes say.
  """
  ndim = magic & 0xFF
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f"{name}: {len(data)} bytes, shorter than the {header}-byte IDX header")
  found = int.from_bytes(data[:4], "big")
  if found != magic:
    raise ValueError(f"{name}: magic 0x{found:08x}, expected 0x{magic:08x} (unsigned bytes, "
                     f"{ndim} dimensions); not this IDX file or corrupt")
  dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  if dims[1:] != tuple(tail):
    raise ValueError(f"{name}: dimensions {list(dims)}, expected [n, {', '.join(map(str, tail))}]"
                     if tail else f"{name}: dimensions {list(dims)}")
  expected = int(np.prod(dims, dtype=np.int64))
  if len(data) - header != expected:
    raise ValueError(f"{name}: {len(data) - header} data bytes after the header, but the "
                     f"dimensions {list(dims)} need {expected}")
  return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def read_idx(path, magic: int, tail: tuple[int, ...] = ()) -> np.ndarray:
  """Reads one IDX file, gzipped (``.gz``) or not; see :func:`parse_idx`."""
  path = os.fspath(path)
  name = os.path.basename(path)
  try:
    with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
      data = f.read()
  except (OSError, EOFError) as err:  # a truncated or non-gzip ".gz" file
    raise ValueError(f"{name}: cannot be read as {'gzip' if path.endswith('.gz') else 'a file'}"
                     f" ({err})") from None
  return parse_idx(data, name, magic, tail)


def read_split(images_path, labels_path) -> tuple[np.ndarray, np.ndarray]:
  """``(images: [n, 28, 28] uint8, labels: [n] uint8)`` from one images and one labels file."""
  images = read_idx(images_path, IMAGE_MAGIC, (ROWS, COLS))
  labels = read_idx(labels_path, LABEL_MAGIC)
  if len(images) != len(labels):
    raise ValueError(f"{os.path.basename(os.fspath(images_path))} has {len(images)} images but "
                     f"{os.path.basename(os.fspath(labels_path))} has {len(labels)} labels")
  if len(labels) and labels.max() > 9:
    raise ValueError(f"{os.path.basename(os.fspath(labels_path))}: label {int(labels.max())} at "
                     f"index {int(labels.argmax())} is not a digit 0-9")
  return images, labels


def find(folder: str, name: str) -> str | None:
  """The path of ``name`` or ``name.gz`` in ``folder``, or None when neither exists."""
  for candidate in (name, name + ".gz"):
    path = os.path.join(folder, candidate)
    if os.path.exists(path):
      return path
  return None


def local_files(folder: str) -> dict[str, tuple[str, str]]:
  """``{split: (images path, labels path)}`` of the splits whose two files are in ``folder``.

  Raises:
    FileNotFoundError: when the test files are missing, or one file of a split is there without
      the other.
  """
  found = {}
  for split, names in FILES.items():
    paths = [find(folder, name) for name in names]
    if all(paths):
      found[split] = tuple(paths)
    elif any(paths) or split == "test":
      missing = [n for n, p in zip(names, paths) if p is None]
      raise FileNotFoundError(f"MNIST folder {folder!r} has no {' or '.join(missing)}"
                              " (.gz or not)")
  return found


class MnistIdx(builders.FolderOrDownload):
  """MNIST's official files; see the module docstring."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "the official IDX files, train (when present) and test."}
  SOURCE_NAME = "MNIST"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Handwritten digits 0-9 (LeCun, Cortes & Burges), 28x28 grey levels.",
        features=tfds.features.FeaturesDict({
            "index": tfds.features.Scalar(np.int64),
            "image": tfds.features.Tensor(shape=(ROWS, COLS), dtype=np.uint8),
            "label": tfds.features.Scalar(np.int64),
        }),
        homepage="http://yann.lecun.com/exdb/mnist/",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    if self._source_dir is not None:
      paths = local_files(self._source_dir)
    else:
      urls = {f"{split}/{i}": URL + name + ".gz"
              for split, names in FILES.items() for i, name in enumerate(names)}
      got = {key: os.fspath(path) for key, path in dl_manager.download(urls).items()}
      paths = {split: (got[f"{split}/0"], got[f"{split}/1"]) for split in FILES}
    return {split: self._generate_examples(*pair) for split, pair in paths.items()}

  def _generate_examples(self, images_path, labels_path):
    images, labels = read_split(images_path, labels_path)
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"index": i, "image": image, "label": int(label)}


def load(data_dir: str, source_dir: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Prepares the builder under ``data_dir`` (once); ``{split: (images [n, 28, 28], labels [n])}``.

  A local ``source_dir`` is read and checked first, so a corrupt file fails with its name before
  tfds writes anything. The splits are those the files give: ``test``, and ``train`` when its
  files are there (always after a download).
  """
  if source_dir is not None:
    if not os.path.isdir(source_dir):
      raise FileNotFoundError(f"MNIST source_dir {source_dir!r} is not a folder")
    splits = local_files(source_dir)
    for pair in splits.values():
      read_split(*pair)
  else:
    splits = FILES
  builder = MnistIdx(source_dir=source_dir, data_dir=data_dir, file_format="array_record")
  records = builders.prepare(builder, list(splits))
  return {split: (np.stack([np.asarray(r["image"], np.uint8) for r in rows]).reshape(-1, ROWS, COLS)
                  if rows else np.zeros((0, ROWS, COLS), np.uint8),
                  np.asarray([int(r["label"]) for r in rows], np.int64))
          for split, rows in records.items()}
