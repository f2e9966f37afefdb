"""Learning curves of a run: training loss and each seed's validation and test F1 by epoch."""

from __future__ import annotations


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def learning_curves(path: str, history: list[dict], seeds: int, steps_per_epoch: int,
                    title: str) -> None:
  """Two panels from metrics.jsonl records: train loss per token; valid / test F1 per seed."""
  plt = _pyplot()
  fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(10, 3.8))
  train = [r for r in history if r.get("split") == "train" and "train/loss_per_token" in r]
  evals = [r for r in history if r.get("split") == "eval" and "eval/valid_f1" in r]
  ax_loss.plot([r["step"] / steps_per_epoch for r in train],
               [r["train/loss_per_token"] for r in train], lw=1)
  ax_loss.set_xlabel("epoch")
  ax_loss.set_ylabel("training loss per token (nats)")
  ax_loss.set_yscale("log")
  for s in range(seeds):
    x = [r["step"] / steps_per_epoch for r in evals]
    ax_f1.plot(x, [r[f"eval/valid_f1_seed{s}"] for r in evals], color=f"C{s}", lw=1,
               label=f"seed {s} valid (testa)")
    ax_f1.plot(x, [r[f"eval/test_f1_seed{s}"] for r in evals], color=f"C{s}", lw=1, ls="--",
               label=f"seed {s} test (testb)")
  ax_f1.set_xlabel("epoch")
  ax_f1.set_ylabel("entity F1 (%)")
  if evals:
    low = min(min(r[f"eval/test_f1_seed{s}"] for s in range(seeds)) for r in evals[-3:])
    ax_f1.set_ylim(max(0.0, low - 10.0), 100.0)
  ax_f1.legend(fontsize=7, loc="lower right")
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
