"""Accuracy, macro-F1, the confusion matrix, each seed's best epoch, and prediction files.

Epoch selection: after every epoch each seed is scored on the ``validation`` split; the epoch of
its highest validation accuracy (the first, on ties) is that seed's result, on every split.
For SST-2 the validation split is GLUE dev, the only labelled evaluation there is, so its
selected accuracy is optimistic by the selection; the tweets report their separate test split.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from experiments.sentiment import encoding

SELECT_SPLIT = "validation"


def confusion_matrix(gold, pred, num_classes: int) -> np.ndarray:
  """``[c, c]`` counts: row = gold class, column = predicted class."""
  out = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(out, (np.asarray(gold, np.int64), np.asarray(pred, np.int64)), 1)
  return out


def accuracy(gold, pred) -> float:
  return float(np.mean(np.asarray(gold) == np.asarray(pred)))


def macro_f1(gold, pred, num_classes: int) -> float:
  """Unweighted mean over classes of F1 = 2PR / (P + R) (0 for a class never hit)."""
  m = confusion_matrix(gold, pred, num_classes)
  tp = np.diag(m).astype(np.float64)
  predicted, actual = m.sum(0), m.sum(1)
  f1 = np.where(predicted + actual > 0, 2 * tp / np.maximum(predicted + actual, 1), 0.0)
  return float(np.mean(f1))


class BestEpochs:
  """Each seed's best epoch so far: its step, score, predictions and parameters.

  Kept in ``path`` (``.npz``) after every improvement, so a resumed run keeps the epochs it
  evaluated before it stopped.
  """

  def __init__(self, path: str, num_seeds: int, evals: dict, num_classes: int):
    self.path, self.num_seeds, self.evals = path, num_seeds, evals
    # Macro-F1 beside accuracy when there are more than two classes (the tweets).
    self.num_classes, self.use_f1 = num_classes, num_classes > 2
    self.step = np.zeros(num_seeds, np.int64)
    self.score = np.full(num_seeds, -1.0)
    self.preds = {s: np.zeros((num_seeds, len(d)), np.int64) for s, d in evals.items()}
    self.leaves: list[np.ndarray] | None = None
    if os.path.exists(path):
      with np.load(path) as f:
        self.step, self.score = f["step"], f["score"]
        self.preds = {s: f[f"pred_{s}"] for s in evals}
        self.leaves = [f[f"leaf_{i}"] for i in range(int(f["num_leaves"]))]

  def _scores(self, split: str, pred: np.ndarray) -> dict:
    gold = self.evals[split].labels
    out = {"accuracy": accuracy(gold, pred)}
    if self.use_f1:
      out["macro_f1"] = macro_f1(gold, pred, self.num_classes)
    return out

  def update(self, step: int, preds: dict, params) -> dict:
    """Records the epoch ending at ``step`` (``preds: {split: [S, n]}``); its eval metrics."""
    leaves = jax.tree.leaves(params["model"])
    metrics = {}
    for split, pred in preds.items():
      prefix = "" if split == SELECT_SPLIT else f"{split}_"
      for seed in range(self.num_seeds):
        for name, value in self._scores(split, pred[seed]).items():
          metrics[f"eval/{prefix}{name}_seed{seed}"] = value
    current = np.array([metrics[f"eval/accuracy_seed{i}"] for i in range(self.num_seeds)])
    metrics["eval/accuracy_mean"] = float(current.mean())
    better = current > self.score
    if better.any():
      if self.leaves is None:
        self.leaves = [np.array(leaf) for leaf in leaves]
      for seed in np.flatnonzero(better):
        self.step[seed], self.score[seed] = step, current[seed]
        for split, pred in preds.items():
          self.preds[split][seed] = pred[seed]
        for kept, leaf in zip(self.leaves, leaves):
          kept[seed] = np.asarray(leaf[seed])
      self._save()
    metrics["eval/best_accuracy_mean"] = float(self.score.mean())
    return metrics

  def _save(self):
    arrays = {"step": self.step, "score": self.score, "num_leaves": len(self.leaves),
              **{f"pred_{s}": p for s, p in self.preds.items()},
              **{f"leaf_{i}": leaf for i, leaf in enumerate(self.leaves)}}
    tmp = self.path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, self.path)

  def params(self, seed: int, like):
    """The parameters of ``seed`` at its best epoch, in the tree of ``like`` (``[S, ...]``
    leaves, e.g. the final ``params["model"]``); None before any epoch was scored."""
    if self.leaves is None:
      return None
    treedef = jax.tree.structure(like)
    return jax.tree.unflatten(treedef, [leaf[seed] for leaf in self.leaves])

  def predictions(self, seed: int, split: str) -> np.ndarray:
    return self.preds[split][seed]

  def summary(self, batches_per_epoch: int) -> dict:
    """Per seed at its best epoch, and the mean / sample std / min / max over seeds."""
    seeds = []
    for seed in range(self.num_seeds):
      entry = {"seed": seed, "best_step": int(self.step[seed]),
               "best_epoch": round(int(self.step[seed]) / batches_per_epoch, 3)}
      for split in self.evals:
        entry[split] = self._scores(split, self.preds[split][seed])
      seeds.append(entry)
    over = {}
    for split in self.evals:
      for name in seeds[0][split]:
        v = np.array([s[split][name] for s in seeds])
        over[f"{split}/{name}"] = {
            "mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}
    return {"selection": f"each seed's epoch of best {SELECT_SPLIT} accuracy",
            "per_seed": seeds, "over_seeds": over}


def write_predictions(path: str, data: encoding.EncodedTexts, pred: np.ndarray,
                      labels) -> None:
  """``text<TAB>gold<TAB>predicted`` per kept text, in file order, under a header line."""
  with open(path, "w", encoding="utf-8") as f:
    f.write("text\tgold\tpredicted\n")
    for text, gold, p in zip(data.texts, data.labels, pred):
      f.write(f"{' '.join(text.split())}\t{labels[gold]}\t{labels[p]}\n")


def pick_examples(data: encoding.EncodedTexts, count: int, max_tokens: int = 14) -> np.ndarray:
  """Indices of ``count`` short texts, alternating classes, for the attention figure."""
  short = [i for i in range(len(data)) if 4 <= len(data.ids[i]) <= max_tokens]
  picks, classes = [], sorted(set(int(c) for c in data.labels))
  for i in short:
    if len(picks) == count:
      break
    if int(data.labels[i]) == classes[len(picks) % len(classes)]:
      picks.append(i)
  return np.asarray(picks or list(range(min(count, len(data)))), np.int64)
