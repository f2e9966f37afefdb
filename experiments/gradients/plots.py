"""The gradients experiment's table and figures (matplotlib, Agg)."""

from __future__ import annotations

import numpy as np


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _fmt(x, digits=4):
  return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def markdown(models: dict, cliff_loss: dict) -> str:
  """One row per model: matrix spectrum, fitted rates, adding MSE after training."""
  lines = ["| model | spectral radius / largest singular value of W_hh (init) | rate at init | "
           "tanh RNN: sigma_max x RMS tanh' (init) | rate after training | largest singular "
           "value after training | tanh RNN: sigma_max x RMS tanh' (trained) | adding eval MSE "
           "after training (baseline) |", "|---|---|---|---|---|---|---|---|"]
  for name, m in models.items():
    init, trained = m["init"], m.get("trained")
    radius = init["spectral_radius"]
    spectrum = (f"{_fmt(radius)} / {_fmt(init['sigma_max'])}" if radius is not None
                else f"- / {_fmt(init['sigma_max'])} (all gates)")
    after = trained["rate"] if trained else None
    sigma = trained["sigma_max"] if trained else None
    mse = (f"{m['adding_eval_mse']:.4f} ({m['adding_baseline_mse']:.4f})" if trained
           else "not trained")
    predicted = _fmt(init.get("tanh_predicted_rate")) if init.get("tanh_predicted_rate") else "-"
    predicted_after = (_fmt(trained.get("tanh_predicted_rate"))
                       if trained and trained.get("tanh_predicted_rate") else "-")
    lines.append(f"| {name} | {spectrum} | {_fmt(init['rate'])} | {predicted} | {_fmt(after)} | "
                 f"{_fmt(sigma)} | {predicted_after} | {mse} |")
  lines.append("")
  lines.append(f"Cliff: final loss after plain steps {cliff_loss['plain']:.4f}, after clipped "
               f"steps {cliff_loss['clipped']:.4f}.")
  return "\n".join(lines) + "\n"


def gradient_norms(models: dict, path: str) -> None:
  """``||dL/d state_{T-lag}||`` against the lag, log scale: at init and after training."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
  colours = plt.get_cmap("tab10")
  for ax, phase in zip(axes, ("init", "trained")):
    for i, (name, m) in enumerate(models.items()):
      if phase not in m:
        continue
      norms = np.asarray(m[phase]["norms"])
      style = "--" if name.startswith("linear") else "-"
      ax.plot(np.arange(norms.size), np.maximum(norms, 1e-30), style, color=colours(i % 10),
              label=f"{name} (rate {m[phase]['rate']:.3f})")
    ax.set(yscale="log", xlabel="lag T - t (steps back from the loss)",
           title="at initialisation" if phase == "init" else "after training on adding")
    ax.legend(fontsize=7, ncol=2)
  axes[0].set_ylabel("mean ||dLoss / d state_t||")
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def rates(models: dict, path: str) -> None:
  """Per model: the recurrent matrix's singular values (dots) and the fitted rate (star)."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(12, 4.5))
  names = list(models)
  labelled = set()
  for i, name in enumerate(names):
    for phase, shift, colour in (("init", -0.15, "tab:blue"), ("trained", 0.15, "tab:orange")):
      if phase not in models[name]:
        continue
      m = models[name][phase]
      sv = np.asarray(m["singular_values"])
      ax.scatter(np.full(sv.size, i + shift), sv, s=6, color=colour, alpha=0.4)
      label = None if phase in labelled else f"fitted gradient rate ({phase})"
      labelled.add(phase)
      ax.scatter([i + shift], [m["rate"]], marker="*", s=140, color=colour, edgecolor="k",
                 label=label)
  ax.scatter([], [], s=6, color="gray", label="singular values of W_hh (blue: init, orange: "
             "trained)")
  ax.axhline(1.0, color="gray", linestyle=":")
  ax.set_xticks(range(len(names)), names, rotation=20)
  ax.set(ylabel="per-step factor", yscale="log",
         title="singular values of the recurrent matrix and the measured gradient rate")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def cliff(ws, bs, surface, plain, clipped, config, path: str) -> None:
  """The one-unit RNN's loss surface with the plain and the clipped descent paths."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 5.5))
  mesh = ax.pcolormesh(ws, bs, np.log10(surface + 1e-6), shading="auto", cmap="viridis")
  fig.colorbar(mesh, ax=ax, label="log10 loss")
  # Clipped first: where the two paths coincide the plain one stays visible on top.
  for path_, colour, label, size in (
      (clipped, "white", f"clipped to norm {config.cliff_clip:g}", 5),
      (plain, "red", "plain gradient steps", 2)):
    ax.plot(path_[:, 0], path_[:, 1], "o-", color=colour, ms=size, lw=1, label=label)
  ax.plot(*plain[0], "k*", ms=12, label="start")
  ax.set(xlabel="recurrent weight w", ylabel="bias b", xlim=(ws[0], ws[-1]), ylim=(bs[0], bs[-1]),
         title=f"h_t = tanh(w h_(t-1) + b), loss (h_{config.cliff_steps} - "
               f"{config.cliff_target:g})^2, lr {config.cliff_lr:g}")
  ax.legend(fontsize=8, loc="upper left")
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
