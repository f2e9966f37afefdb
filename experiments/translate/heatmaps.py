"""Attention heatmaps of the translation experiment (PNG, matplotlib's Agg backend).

* :func:`plot_attention`: one ``[t, s]`` map, output tokens down and source tokens across (what a
  decoder step attended to while it produced each output token);
* :func:`plot_heads`: a grid of maps, one row per layer and one column per head, from
  ``transformer.attention_maps``: encoder self-attention ``[L, h, s, s]``, decoder
  self-attention ``[L, h, t, t]`` or cross-attention ``[L, h, t, s]`` of one sentence.

Every map is scaled to its own maximum, so a head that spreads its weight thinly stays visible.
"""

from __future__ import annotations

import numpy as np

# What a plot_heads figure shows: rows (queries) and columns (keys) of each kind of map.
KINDS = {"encoder_self": ("source", "source"), "decoder_self": ("output", "output prefix"),
         "cross": ("output", "source")}


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_attention(path: str, src_pieces, out_pieces, weights) -> None:
  """Heatmap of ``weights [t, s]``: output tokens down, source tokens across."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(1.0 + 0.4 * len(src_pieces), 1.0 + 0.4 * len(out_pieces)))
  ax.imshow(weights, cmap="viridis", vmin=0.0, aspect="auto")  # scaled to its own maximum
  ax.set_xticks(range(len(src_pieces)), src_pieces, rotation=90)
  ax.set_yticks(range(len(out_pieces)), out_pieces)
  ax.set_xlabel("source")
  ax.set_ylabel("output")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_heads(path: str, kind: str, row_pieces, col_pieces, weights) -> None:
  """Grid of heatmaps ``weights [L, h, rows, cols]``: layers down, heads across.

  Args:
    path: the PNG to write.
    kind: a key of :data:`KINDS` (names the axes and the title).
    row_pieces, col_pieces: token strings of the queries (``rows``) and keys (``cols``).
    weights: ``[L, h, rows, cols]`` attention weights of one sentence, padding cut off.
  """
  if kind not in KINDS:
    raise ValueError(f"unknown heatmap kind {kind!r}; use one of {sorted(KINDS)}")
  weights = np.asarray(weights)
  num_layers, num_heads, rows, cols = weights.shape
  if (rows, cols) != (len(row_pieces), len(col_pieces)):
    raise ValueError(f"{kind} weights of {rows} x {cols} for {len(row_pieces)} x "
                     f"{len(col_pieces)} tokens")
  plt = _pyplot()
  cell = 0.16  # inches per token: labels stay readable up to ~40 tokens per axis
  width, height = max(1.5, cell * cols + 0.6), max(1.5, cell * rows + 0.6)
  fig, axes = plt.subplots(num_layers, num_heads, squeeze=False,
                           figsize=(width * num_heads + 0.8, height * num_layers + 0.8))
  row_name, col_name = KINDS[kind]
  for layer in range(num_layers):
    for head in range(num_heads):
      ax = axes[layer, head]
      ax.imshow(weights[layer, head], cmap="viridis", vmin=0.0, aspect="auto")
      # Token labels on the outer edge of the grid only; titles name layer and head.
      ax.set_xticks(range(cols), col_pieces if layer == num_layers - 1 else [""] * cols,
                    rotation=90, fontsize=6)
      ax.set_yticks(range(rows), row_pieces if head == 0 else [""] * rows, fontsize=6)
      ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=7)
  fig.suptitle(f"{kind.replace('_', ' ')} attention ({row_name} down, {col_name} across)",
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
