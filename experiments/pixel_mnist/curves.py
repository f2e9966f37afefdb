"""Learning curves: held-out accuracy and training loss against epochs, one line per run."""

from __future__ import annotations


def plot(path: str, histories: dict, steps_per_epoch: float | dict, title: str) -> None:
  """``histories``: ``{run name: metrics.jsonl records}``; ``steps_per_epoch`` one number or one
  per run. Writes a two-panel PNG to ``path``."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
  for name, history in histories.items():
    per = steps_per_epoch[name] if isinstance(steps_per_epoch, dict) else steps_per_epoch
    evals = [r for r in history if r["split"] == "eval"]
    trains = [r for r in history if r["split"] == "train"]
    line, = acc_ax.plot([r["step"] / per for r in evals],
                        [100 * r["eval/accuracy"] for r in evals], marker=".", label=name)
    loss_ax.plot([r["step"] / per for r in trains], [r["train/loss"] for r in trains],
                 color=line.get_color(), lw=0.8, label=f"{name} train")
    loss_ax.plot([r["step"] / per for r in evals], [r["eval/loss"] for r in evals],
                 color=line.get_color(), ls="--", label=f"{name} held-out")
  acc_ax.axhline(10, color="gray", ls=":", lw=0.8, label="chance")
  acc_ax.set(xlabel="epoch", ylabel="held-out accuracy (%)", ylim=(0, 100), title=title)
  loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
  acc_ax.legend(fontsize=8)
  loss_ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
