"""The counting networks of Weiss, Goldberg & Yahav (2018): init, forward pass, losses.

Shape letters: S seeds, n networks, b batch, t time, v vocabulary (letters + EOS), h hidden units.

The model is the paper's: an embedding of size 3, one LSTM or GRU layer (``seqjax.recurrent``) and a
linear layer over the letters plus EOS. Its two heads (``evaluation.py`` says how each is judged):

* **next-symbol sets** (``head='sets'``): one sigmoid per symbol, trained with binary cross-entropy
  against the set of symbols that may come next;
* **probability threshold** (``head='softmax'``): next-symbol cross-entropy, against the symbol
  read (``targets='sampled'``) or the constant-hazard distribution (``targets='hazard'``).

Seeds are trained in parallel: parameters carry a leading seed axis and the whole update is
``jax.vmap``-ed over it (Adam and clipping stay per seed, exactly as in a loop over seeds).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.counting import languages
from seqjax import cells as cells_lib
from seqjax import layers
from seqjax import recurrent

HEADS = ("sets", "softmax")
TARGETS = ("sampled", "hazard")
WEIGHTINGS = ("string", "token", "mixed")

# ----------------------------------------------------------------------------- model
EMBED_INITS = ("normal", "orthogonal")


def init_params(key, cell: cells_lib.Cell, vocab_size: int, embed_size: int = 3,
                hidden_size: int = 10, embed_init: str = "normal") -> dict:
  """``{'embed': [v, 3], 'cell': cell params, 'out_w': [h, v], 'out_b': [v]}``.

  ``embed_init='normal'`` draws every embedding entry from N(0, 1), as ``torch.nn.Embedding``
  does; ``'orthogonal'`` draws a random orthogonal matrix scaled by ``sqrt(embed_size)`` (the
  same expected row norm), so the symbols start as far apart as the embedding size allows. With
  three symbols in three dimensions, N(0, 1) rows are nearly parallel often enough to matter:
  cosine 0.98 between ``b`` and BOS in one of five seeds of the default run.
  """
  check_choice("embed_init", embed_init, EMBED_INITS)
  k_embed, k_cell, k_out = jax.random.split(key, 3)
  bound = hidden_size ** -0.5
  if embed_init == "normal":
    embed = jax.random.normal(k_embed, (vocab_size, embed_size), jnp.float32)
  else:
    embed = jax.nn.initializers.orthogonal(embed_size ** 0.5)(
        k_embed, (vocab_size, embed_size), jnp.float32)
  return {
      "embed": embed,
      "cell": cell.init(k_cell, embed_size, hidden_size),
      "out_w": jax.random.uniform(k_out, (hidden_size, vocab_size), jnp.float32, -bound, bound),
      "out_b": jnp.zeros((vocab_size,), jnp.float32),
  }


def apply(cell: cells_lib.Cell, params: dict, inputs: jax.Array, lengths: jax.Array) -> jax.Array:
  """Logits for every position: ``inputs: [b, t] int``, ``lengths: [b]`` -> ``[b, t, v]``."""
  xs = params["embed"][inputs]
  ys, _ = recurrent.unroll(cell, params["cell"], xs, lengths=lengths)
  return ys @ params["out_w"] + params["out_b"]


def apply_together(cell: cells_lib.Cell, groups) -> list[jax.Array]:
  """Logits of several groups of networks of one cell, in one time loop.

  One ``vmap`` over every network of a cell, however many languages they read. The groups'
  inputs are padded to the longest time axis; past ``lengths`` nothing changes, so each group's
  logits equal :func:`apply` vmapped over its networks (up to float rounding). On the 2-core CPU
  it was measured no faster than one loop per group (0.12 s per step of the default counting
  run either way): there the vmapped work grows with the number of networks, not of loops.

  Args:
    cell: the cell shared by every network.
    groups: a sequence of ``(params, inputs, lengths)``, one per group (e.g. per language):
      ``params`` from :func:`init_params` with a leading ``[n_i]`` network axis, ``inputs:
      [n_i, b, t_i] int`` and ``lengths: [n_i, b]``. Vocabularies and ``t_i`` may differ;
      ``b`` and the cell's sizes are shared.

  Returns:
    one ``[n_i, b, t_i, v_i]`` logits array per group.
  """
  groups = list(groups)
  if not groups:
    raise ValueError("apply_together needs at least one group of networks")
  batches = {inputs.shape[1] for _, inputs, _ in groups}
  if len(batches) != 1 or any(inputs.ndim != 3 for _, inputs, _ in groups):
    raise ValueError("every group's inputs must be [networks, batch, time] with one shared "
                     f"batch size; got shapes {[tuple(i.shape) for _, i, _ in groups]}")
  t = max(inputs.shape[-1] for _, inputs, _ in groups)
  xs = [jnp.pad(jax.vmap(lambda e, i: e[i])(p["embed"], inputs),
                ((0, 0), (0, 0), (0, t - inputs.shape[-1]), (0, 0)))
        for p, inputs, _ in groups]
  cell_params = jax.tree.map(lambda *a: jnp.concatenate(a), *[p["cell"] for p, _, _ in groups])
  lengths = jnp.concatenate([lengths for _, _, lengths in groups])
  ys = jax.vmap(lambda p, x, n: recurrent.unroll(cell, p, x, lengths=n)[0])(
      cell_params, jnp.concatenate(xs), lengths)
  out, start = [], 0
  for p, inputs, _ in groups:
    n, t_i = inputs.shape[0], inputs.shape[-1]
    mine = ys[start:start + n, :, :t_i]
    out.append(jnp.einsum("nbth,nhv->nbtv", mine, p["out_w"]) + p["out_b"][:, None, None])
    start += n
  return out


def states_along(cell: cells_lib.Cell, params: dict, inputs: jax.Array):
  """The carry after every prefix of one sequence: ``inputs: [t]`` -> ``h: [t, h]`` (and ``c``).

  Runs ``t`` copies of the sequence with lengths ``1..t`` and keeps each final carry, so the time
  loop stays in ``seqjax.recurrent``. Returns ``(h, c)`` for an LSTM, ``(h, None)`` for a GRU.
  """
  t = inputs.shape[0]
  xs = jnp.broadcast_to(params["embed"][inputs], (t, t, params["embed"].shape[1]))
  _, carry = recurrent.unroll(cell, params["cell"], xs, lengths=jnp.arange(1, t + 1))
  return carry if isinstance(carry, tuple) else (carry, None)


# ----------------------------------------------------------------------------- losses
def _identity(x):
  return x


def training_batch(language: languages.Language, strings: list[str], head: str,
                   targets: str = "sampled", stop_prob: float = 0.1) -> dict:
  """Full-batch training arrays: ``inputs, lengths, mask`` and ``goal: [b, t, v]``.

  ``goal`` is the next-symbol sets for ``head='sets'``; for ``'softmax'`` the one-hot next symbol
  (``targets='sampled'``) or the constant-hazard distribution (``'hazard'``).
  """
  check_choice("head", head, HEADS)
  check_choice("targets", targets, TARGETS)
  inputs, next_ids, lengths = languages.encode(language, strings)
  t, v = inputs.shape[1], language.vocab_size
  goal = np.zeros((len(strings), t, v), np.float32)
  for row, s in enumerate(strings):
    if head == "sets":
      goal[row, :len(s) + 1] = language.next_sets(s)
    elif targets == "hazard":
      goal[row, :len(s) + 1] = language.next_distribution(s, stop_prob)
    else:
      goal[row, np.arange(len(s) + 1), next_ids[row, :len(s) + 1]] = 1.0
  mask = np.asarray(layers.mask_from_lengths(lengths, t), np.float32)
  return {"inputs": inputs, "lengths": lengths, "mask": mask, "goal": goal}


def make_logits_loss(head: str, weighting: str = "string",
                     global_sum: Callable = _identity) -> Callable:
  """``(logits [b, t, v], goal [b, t, v], mask [b, t]) -> loss`` of one network.

  Args:
    head: ``'sets'`` (binary cross-entropy against next-symbol sets) or ``'softmax'``
      (cross-entropy against next-symbol distributions).
    weighting: ``'string'`` averages the loss per string, then over strings (every size ``n``
      weighs the same); ``'token'`` over all valid positions, so long strings weigh more;
      ``'mixed'`` is the mean of the two, so long strings weigh more but no string weighs less
      than half its per-string share.
    global_sum: sums a count over every slice of the global batch (``seqjax.train.global_sum``
      under the runtime). The loss is then this slice's share of the global batch's average:
      local sums over global counts, which add up over slices. The identity (the default) makes
      the batch given the whole batch.
  """
  check_choice("head", head, HEADS)
  check_choice("weighting", weighting, WEIGHTINGS)
  per_position = _sets_bce if head == "sets" else layers.cross_entropy

  def loss_fn(logits, goal, mask):
    values = per_position(logits, goal)  # [b, t]
    # Per token: every valid position of the global batch weighs the same.
    by_token = (values * mask).sum() / global_sum(mask.sum())
    if weighting == "token":
      return by_token
    # Per string, then over strings: short and long strings weigh the same, as each size n does.
    # Written as sum / count rather than .mean(), which jnp lowers to the same division.
    per_string = (values * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
    by_string = per_string.sum() / global_sum(jnp.float32(per_string.shape[0]))
    if weighting == "mixed":
      return 0.5 * (by_token + by_string)
    return by_string

  return loss_fn


def make_seed_loss(cell: cells_lib.Cell, head: str, weighting: str = "string") -> Callable:
  """``(params, batch) -> loss`` of one network on a batch from :func:`training_batch`."""
  logits_loss = make_logits_loss(head, weighting)

  def loss_fn(params, batch):
    logits = apply(cell, params, batch["inputs"], batch["lengths"])
    return logits_loss(logits, batch["goal"], batch["mask"])

  return loss_fn


def _sets_bce(logits, sets):
  return optax.sigmoid_binary_cross_entropy(logits, sets).sum(-1)


def check_choice(what, value, allowed):
  """Raises a one-line ValueError unless ``value`` is one of ``allowed``."""
  if value not in allowed:
    raise ValueError(f"unknown {what} {value!r}; use one of {', '.join(allowed)}")
