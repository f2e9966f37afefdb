"""How a long text becomes batches: random windows, parallel streams, the evaluation layout.

Shapes: ``B`` the global batch, ``t`` the sequence (chunk) length, ``K`` evaluation streams.
Every batch holds ``inputs`` and ``targets: [B, t]`` int32, ``targets`` one character ahead.
All of it is a pure function of ``(seed, step)``, as the runtime's resume needs; the PyTorch
peer (``torch_peer.py``) draws its batches from these same functions.

* **windows** (nanoGPT): ``B`` windows at uniformly random offsets, each read from a zero state.
* **streams** (truncated backpropagation through time): the training text is cut into ``B``
  equal spans; row ``i`` reads span ``i`` chunk after chunk, ``t`` characters a step, and its
  recurrent state carries over from one chunk to the next. After the last whole chunk of its span
  every row starts its span again from a zero state (``starts`` marks that step).
* **evaluation**: the validation text, every character after the first predicted once, in ``K``
  contiguous streams read in chunks with the state carried (with ``K = 1``, exactly one long
  unroll over the whole text); the last stream's tail is padded and masked out.
"""

from __future__ import annotations

import numpy as np

MODES = ("windows", "stateful")


def _rows(batch: dict, shard_index: int, num_shards: int) -> dict:
  size = len(next(iter(batch.values())))
  rows = size // num_shards
  return {k: v[shard_index * rows:(shard_index + 1) * rows] for k, v in batch.items()}


def windows(data: np.ndarray, seed: int, step: int, batch_size: int, seq_len: int,
            shard_index: int = 0, num_shards: int = 1) -> dict[str, np.ndarray]:
  """The global batch of ``step`` as random windows (this shard's rows): ``[B, t]`` each."""
  if len(data) <= seq_len:
    raise ValueError(f"the text ({len(data)} characters) is not longer than config.seq_len="
                     f"{seq_len}")
  rng = np.random.default_rng((seed, step))
  starts = rng.integers(0, len(data) - seq_len, size=batch_size)
  index = starts[:, None] + np.arange(seq_len)[None, :]
  batch = {"inputs": data[index].astype(np.int32), "targets": data[index + 1].astype(np.int32)}
  return _rows(batch, shard_index, num_shards)


def chunks_per_span(num_chars: int, batch_size: int, seq_len: int) -> int:
  """Whole chunks in each of the ``B`` spans of a text of ``num_chars`` characters."""
  span = (num_chars - 1) // batch_size
  chunks = span // seq_len
  if chunks < 1:
    raise ValueError(f"the text ({num_chars} characters) cut into config.batch_size={batch_size} "
                     f"streams leaves {span} characters each, less than one chunk of "
                     f"config.seq_len={seq_len}")
  return chunks


def streams(data: np.ndarray, step: int, batch_size: int, seq_len: int, shard_index: int = 0,
            num_shards: int = 1) -> dict[str, np.ndarray]:
  """The global batch of ``step`` as chunks of ``B`` parallel streams (this shard's rows).

  Returns ``inputs, targets: [B, t]`` and ``starts: [B]`` bool (True where a row begins its
  span again and its carried state must be reset).
  """
  chunks = chunks_per_span(len(data), batch_size, seq_len)
  span = (len(data) - 1) // batch_size
  chunk = step % chunks
  first = np.arange(batch_size) * span + chunk * seq_len  # [B]
  index = first[:, None] + np.arange(seq_len)[None, :]
  batch = {"inputs": data[index].astype(np.int32), "targets": data[index + 1].astype(np.int32),
           "starts": np.full((batch_size,), chunk == 0)}
  return _rows(batch, shard_index, num_shards)


def evaluation_streams(data: np.ndarray, num_streams: int,
                       chunk_len: int) -> dict[str, np.ndarray]:
  """The whole text as ``K`` contiguous streams padded to whole chunks: ``[K, n_chunks * c]``.

  Stream ``k`` predicts targets ``k * L + 1 .. (k + 1) * L`` of the text (``L`` = ceil of the
  ``len(data) - 1`` predictions over ``K``), so every character after the first is a target
  exactly once; ``mask`` (float32) is 0 on the padding of the last stream.
  """
  if len(data) < 2 or num_streams < 1 or chunk_len < 1:
    raise ValueError(f"need a text of >= 2 characters, >= 1 stream and chunk length >= 1; got "
                     f"{len(data)}, {num_streams}, {chunk_len}")
  predictions = len(data) - 1
  per_stream = -(-predictions // num_streams)
  width = -(-per_stream // chunk_len) * chunk_len

  def padded(x):
    out = np.zeros((num_streams, width), np.int32)
    for k in range(num_streams):
      part = x[k * per_stream:(k + 1) * per_stream]
      out[k, :len(part)] = part
    return out

  return {"inputs": padded(data[:-1]), "targets": padded(data[1:]),
          "mask": padded(np.ones(predictions, np.int32)).astype(np.float32)}
