"""What the repository's tfds builders share: raw files from a local folder or a download.

A builder subclasses :class:`FolderOrDownload` (``source_dir``: a local folder with the raw files,
checked to exist; None downloads them) and numbers its examples with an ``"index"`` feature;
:func:`prepare` writes the array_record files once and reads every split back in that order
through ``as_data_source()`` (random access, no TensorFlow needed).
"""

from __future__ import annotations

import inspect

from etils import epath
import tensorflow_datasets as tfds


class FolderOrDownload(tfds.core.GeneratorBasedBuilder):
  """A builder whose raw files come from ``source_dir`` or, when it is None, a download.

  Subclasses set ``SOURCE_NAME``, the data set's name in error messages.
  """

  SOURCE_NAME = "data set"

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds finds a builder's file through the importlib_resources backport, which it does not
    # install on Python >= 3.9; the answer is simply the file that defines the builder.
    return epath.Path(inspect.getfile(cls))

  def __init__(self, *, source_dir: str | None = None, **kwargs):
    """``source_dir``: local folder with the raw files (None downloads them)."""
    if source_dir is not None and not epath.Path(source_dir).is_dir():
      raise FileNotFoundError(f"{self.SOURCE_NAME} source_dir {source_dir!r} is not a folder")
    self._source_dir = source_dir
    super().__init__(**kwargs)


def prepare(builder: tfds.core.GeneratorBasedBuilder, splits) -> dict[str, list[dict]]:
  """Prepares ``builder`` (once) and returns ``{split: records in "index" order}``."""
  builder.download_and_prepare()
  sources = builder.as_data_source()
  out = {}
  for split in splits:
    source = sources[split]
    records = source.__getitems__(list(range(len(source)))) if len(source) else []
    out[split] = sorted(records, key=lambda r: int(r["index"]))
  return out


def text(value) -> str:
  """A Text feature as read back (bytes or str) as str."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
