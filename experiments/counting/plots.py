"""The counting study's plots: acceptance against n, and the counting states along a^n b^n."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # pylint: disable=wrong-import-position

from experiments.counting import languages  # pylint: disable=wrong-import-position
from experiments.counting import model  # pylint: disable=wrong-import-position


def plot_acceptance(workdir, lang, config, cells, heads, verdicts):
  """One PNG per language: pass (dark) / fail (light) against n for every rule, cell and seed."""
  rules = [(head, rule) for head in heads
           for rule in verdicts[f"{lang.name}/{next(iter(cells))}/{head}"] if ":" not in rule]
  fig, axes = plt.subplots(len(rules), 1, figsize=(10, 1.0 + 1.2 * len(rules) * len(cells)),
                           squeeze=False)
  for ax, (head, rule) in zip(axes[:, 0], rules):
    rows, labels = [], []
    width = max(verdicts[f"{lang.name}/{c}/{head}"][rule].shape[1] for c in cells)
    for cell in cells:
      ok = verdicts[f"{lang.name}/{cell}/{head}"][rule]
      padded = np.full((ok.shape[0], width), np.nan)
      padded[:, :ok.shape[1]] = ok
      rows.append(padded)
      labels += [f"{cell} s{s}" for s in range(ok.shape[0])]
    image = np.concatenate(rows)
    ax.imshow(image, aspect="auto", interpolation="nearest", cmap="Greys", vmin=-0.3, vmax=1,
              extent=(0.5, width + 0.5, len(labels) - 0.5, -0.5))
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    train_max = config.train_max.get(lang.name, lang.train_max)
    ax.axvline(train_max + 0.5, color="tab:red", lw=1)
    ax.set_title(f"{lang.name}: {rule} rule (dark = n passes; red line = largest training n)",
                 fontsize=9)
  axes[-1, 0].set_xlabel("n")
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, f"acceptance_{lang.name}.png"), dpi=90)
  plt.close(fig)


def plot_states(workdir, lang, cells, head, params, n):
  """The paper's counting picture: LSTM cell state and GRU hidden state along a^n b^n (seed 0)."""
  inputs, _, _ = languages.encode(lang, [lang.positive(n)])
  fig, axes = plt.subplots(1, len(cells), figsize=(6 * len(cells), 3.5), squeeze=False)
  for ax, (name, cell) in zip(axes[0], cells.items()):
    seed0 = jax.tree.map(lambda a: jnp.asarray(a[0]), params[f"{lang.name}/{name}/{head}"])
    h, c = model.states_along(cell, seed0, jnp.asarray(inputs[0]))
    values, what = (c, "cell state c") if c is not None else (h, "hidden state h")
    ax.plot(np.arange(1, len(values) + 1) - 1, np.asarray(values), lw=1)
    ax.axvline(n, color="grey", ls=":")
    ax.set_title(f"{name} {what} along a^{n} b^{n} ({head} head, seed 0)", fontsize=9)
    ax.set_xlabel("prefix length (BOS + symbols read)")
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "states_anbn.png"), dpi=90)
  plt.close(fig)
