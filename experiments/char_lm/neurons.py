"""Inside the network: the LSTM cell that best tracks a simple feature of the text, shown on it.

  python -m experiments.char_lm.neurons --workdir runs/char-small [--chars 5000]

After Karpathy, Johnson & Fei-Fei 2015 ("Visualizing and understanding recurrent networks"):
the trained LSTM reads the first ``--chars`` characters of the validation text from a zero state;
for every cell of every layer, the Pearson correlation of its activation ``tanh(c_t)`` with a
feature of the text is computed, and the cell with the largest ``|r|`` is drawn over a passage,
each character on the colour of that cell's activation after reading it. Features:

* ``position_in_line``: characters since the last newline (0 on the newline itself);
* ``in_speaker_line``: 1 inside a line that names a speaker (``ROMEO:``), else 0. Tiny
  Shakespeare has no quotation marks, so this stands in for the "inside quotes" cell.

Writes ``cells.png`` and ``cells.json`` (the correlations and the chosen cells) to the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import re

import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.char_lm import experiment
from experiments.char_lm import sample
from seqjax.models import rnn_lm

_SPEAKER = re.compile(r"^[A-Z][A-Za-z' ]*:$")


def features(text: str) -> dict[str, np.ndarray]:
  """Per character of ``text``: ``position_in_line`` and ``in_speaker_line`` (float64)."""
  position = np.zeros(len(text))
  speaker = np.zeros(len(text))
  i = 0
  for line in text.split("\n"):
    end = i + len(line)
    position[i:end] = np.arange(1, len(line) + 1)  # the newline before the line is 0
    if _SPEAKER.match(line):
      speaker[i:end + 1] = 1.0
    i = end + 1
  return {"position_in_line": position, "in_speaker_line": speaker}


def correlations(activations: np.ndarray, feature: np.ndarray) -> np.ndarray:
  """Pearson ``r`` of each column of ``activations: [t, k]`` with ``feature: [t]`` (0 if flat)."""
  a = activations - activations.mean(axis=0)
  f = feature - feature.mean()
  denom = np.sqrt((a ** 2).sum(axis=0) * (f ** 2).sum())
  return np.where(denom > 0, (a * f[:, None]).sum(axis=0) / np.where(denom > 0, denom, 1), 0.0)


def _draw(ax, text: str, values: np.ndarray, title: str, width: int = 80) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  cmap = matplotlib.colormaps["coolwarm"]
  row, col = 0, 0
  for char, value in zip(text, values):
    colour = cmap(0.5 + 0.5 * float(value))
    ax.add_patch(matplotlib.patches.Rectangle((col, -row - 1), 1, 1, color=colour, lw=0))
    if char not in "\n ":
      ax.text(col + 0.5, -row - 0.5, char, ha="center", va="center", family="monospace",
              fontsize=7)
    col += 1
    if char == "\n" or col >= width:
      row, col = row + 1, 0
  ax.set_xlim(0, width)
  ax.set_ylim(-row - 1, 0)
  ax.set_axis_off()
  ax.set_title(title, fontsize=9, loc="left")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--chars", type=int, default=5000, help="validation characters read")
  parser.add_argument("--passage", type=int, default=700, help="characters drawn")
  args = parser.parse_args(argv)
  params, spec, vocab, step = sample.load_run(args.workdir)
  if spec.cell != "lstm":
    raise SystemExit(f"error: the cell picture needs an LSTM's cell state; this run is {spec.cell}")
  with open(os.path.join(args.workdir, "config.json"), encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  text = experiment.load_text(config, args.workdir)["validation"][:args.chars]
  states = rnn_lm.layer_states(params, spec, jnp.asarray(vocab.encode(text))[None])
  # tanh(c) of every cell of every layer: [t, L * h]; column j is layer j // h, cell j % h.
  cells = np.concatenate([np.tanh(np.asarray(c[0])) for _, c in states], axis=1)
  report = {"step": step, "characters": len(text), "features": {}}
  chosen = []
  for name, feature in features(text).items():
    r = correlations(cells, feature)
    best = int(np.argmax(np.abs(r)))
    layer, unit = divmod(best, spec.hidden_size)
    report["features"][name] = {"layer": layer, "cell": unit, "r": float(r[best]),
                                "next_best_abs_r": float(np.sort(np.abs(r))[-2])}
    chosen.append((name, best, float(r[best]), layer, unit))
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  # A passage that starts on a line of its own, so the picture begins with a speaker's name.
  begin = text.find("\n\n") + 2
  passage = text[begin:begin + args.passage]
  fig, axes = plt.subplots(len(chosen), 1, figsize=(10, 4.2 * len(chosen)))
  for ax, (name, best, r, layer, unit) in zip(np.atleast_1d(axes), chosen):
    _draw(ax, passage, cells[begin:begin + len(passage), best],
          f"{name}: layer {layer} cell {unit}, r = {r:+.3f} over {len(text)} validation "
          f"characters (tanh(c): blue -1, red +1)")
  fig.tight_layout()
  fig.savefig(os.path.join(args.workdir, "cells.png"), dpi=110)
  plt.close(fig)
  with open(os.path.join(args.workdir, "cells.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  print(json.dumps(report, indent=2))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
