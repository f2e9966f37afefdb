"""The experiment's figures: confusion matrix, validation accuracy by epoch, attention weights."""

from __future__ import annotations

import re

import numpy as np

from experiments.sentiment import scoring


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def confusion(path: str, gold, pred, labels, title: str) -> None:
  """Counts (row = gold, column = predicted), each cell also as a share of its row."""
  plt = _pyplot()
  m = scoring.confusion_matrix(gold, pred, len(labels))
  share = m / np.maximum(m.sum(1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 1.4 * len(labels) + 1.5))
  ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
  for i in range(len(labels)):
    for j in range(len(labels)):
      ax.text(j, i, f"{m[i, j]}\n{share[i, j]:.0%}", ha="center", va="center",
              color="white" if share[i, j] > 0.5 else "black")
  ax.set_xticks(range(len(labels)), labels)
  ax.set_yticks(range(len(labels)), labels)
  ax.set(xlabel="predicted", ylabel="gold",
         title=f"{title}\naccuracy {np.trace(m) / m.sum():.1%}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def dev_curves(path: str, history: list[dict], batches_per_epoch: int, title: str) -> None:
  """Each seed's ``eval/accuracy_seed<i>`` from metrics.jsonl against the epoch."""
  plt = _pyplot()
  series: dict[int, list[tuple[float, float]]] = {}
  for record in history:
    for key, value in record.items():
      match = re.fullmatch(r"eval/accuracy_seed(\d+)", key)
      if match:
        series.setdefault(int(match.group(1)), []).append(
            (record["step"] / batches_per_epoch, value))
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for seed, points in sorted(series.items()):
    x, y = zip(*points)
    ax.plot(x, 100 * np.asarray(y), marker="o", label=f"seed {seed}")
  ax.set(xlabel="epoch", ylabel="accuracy (%)", title=title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def attention(path: str, tokens: list[list[str]], weights: np.ndarray, gold, pred,
              labels) -> None:
  """One row per sentence: each word shaded by its attention weight (``weights: [n, t]``)."""
  plt = _pyplot()
  width = max(len(" ".join(t)) for t in tokens) * 0.11 + 1.5
  fig, ax = plt.subplots(figsize=(min(max(width, 6), 16), 0.62 * len(tokens) + 0.6))
  ax.set_axis_off()
  ax.set_xlim(0, 1)
  ax.set_ylim(len(tokens), -0.4)
  renderer = fig.canvas.get_renderer()
  fig_width = fig.get_window_extent().width
  for row, words in enumerate(tokens):
    w = weights[row, :len(words)]
    x = 0.0
    head = ax.text(x, row, f"gold {labels[gold[row]]} / pred {labels[pred[row]]}:  ",
                   fontsize=8, va="center", color="dimgray")
    x += head.get_window_extent(renderer).width / fig_width / ax.get_position().width
    for word, weight in zip(words, w):
      item = ax.text(x, row, word, fontsize=10, va="center",
                     bbox={"facecolor": (1.0, 0.35, 0.1, float(weight / max(w.max(), 1e-9))),
                           "edgecolor": "none", "pad": 1.5})
      x += (item.get_window_extent(renderer).width + 6) / fig_width / ax.get_position().width
  ax.set_title("attention weights over the words (darker = more weight; scaled per sentence)",
               fontsize=9)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
