"""Acceptance rules and generalisation limits of trained counting networks.

Shape letters: S seeds, b batch, t time, v vocabulary (letters + EOS).

A network (``model.py``) is read two ways:

* **next-symbol sets** (``head='sets'``): one sigmoid per symbol. A string is *accepted* when every
  symbol it reads, and EOS at its end, is in the predicted set (logit > 0). A positive counts as
  *recognised* only when every predicted set is exactly the true set.
* **probability threshold** (``head='softmax'``): a string is accepted when every symbol it reads,
  and EOS at its end, gets probability above a threshold.

Why the threshold rule needs care. Under the paper's training distribution (``n`` uniform on
``1..100``) the true chance of ``b`` after ``a^k`` is ``1/(101-k)``: 0.01 at ``k = 1`` and below
0.05 up to ``k = 81``, so a threshold that accepts positives must sit below 0.01 (a perfect model
of that distribution would even reject every ``n > 100``, as ``a`` after ``a^100`` has
probability 0; trained networks do not learn that hard stop). A negative, in turn, is rejected
only if the softmax gives some impossible symbol (``b`` after ``a^n b^n``, EOS after
``a^(n+1) b^n``) less than the threshold, and cross-entropy on positives shrinks that leftover
mass only slowly: at 0.005 and 0.01 the rule mostly measures how sharp training made the softmax.
Two config options make it measure counting: ``targets='hazard'`` trains the softmax on the
next-symbol distribution of a process that stops with the same probability ``stop_prob`` at
every size (``Language.next_distribution``), so every allowed symbol keeps probability
``>= stop_prob`` and a threshold between that and the leftover mass (0.05 for ``stop_prob = 0.1``)
separates the two; and the ``/deterministic`` rules skip the positions where several symbols may
follow and the one read is one of them (they still judge an impossible symbol anywhere).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments.counting import languages
from experiments.counting import model
from seqjax import cells as cells_lib
from seqjax import layers


def string_flags(logits, targets, lengths, sets, head: str, thresholds=(0.005, 0.01)) -> dict:
  """Per-string verdicts of both rules.

  Args:
    logits: ``[b, t, v]``.
    targets: ``[b, t]`` the symbol read after each prefix (EOS at position ``length - 1``).
    lengths: ``[b]`` string length + 1.
    sets: ``[b, t, v]`` bool true next-symbol sets (empty past the language's prefixes).
    head: ``'sets'`` or ``'softmax'``.
    thresholds: probability thresholds for the softmax head.

  Returns:
    for ``'sets'``: ``{'accept': [b], 'exact': [b]}``; for ``'softmax'``: ``{'p><thr>': [b],
    'p><thr>/deterministic': [b]}`` for every threshold.
  """
  t = logits.shape[1]
  valid = layers.mask_from_lengths(lengths, t)
  if head == "sets":
    predicted = logits > 0.0
    reads = jnp.take_along_axis(predicted, targets[..., None], axis=-1)[..., 0]
    exact = jnp.all(predicted == sets, axis=-1)
    return {"accept": jnp.all(reads | ~valid, axis=-1),
            "exact": jnp.all(exact | ~valid, axis=-1)}
  probs = jax.nn.softmax(logits, axis=-1)
  read_prob = jnp.take_along_axis(probs, targets[..., None], axis=-1)[..., 0]
  # Where the language allows several next symbols, the right probability of the one read is a
  # property of the training distribution, not of counting: 'deterministic' skips those
  # positions, unless the symbol read there is not allowed at all.
  allowed = jnp.take_along_axis(sets, targets[..., None], axis=-1)[..., 0]
  judged = valid & ((sets.sum(-1) <= 1) | ~allowed)
  out = {}
  for thr in thresholds:
    above = read_prob > thr
    out[f"p>{thr:g}"] = jnp.all(above | ~valid, axis=-1)
    out[f"p>{thr:g}/deterministic"] = jnp.all(above | ~judged, axis=-1)
  return out


def generalisation_limit(ok) -> np.ndarray:
  """Largest ``N`` with ``ok[..., n-1]`` true for every ``n <= N``; ``ok: [..., n_max] bool``."""
  ok = np.asarray(ok, bool)
  if ok.ndim == 0 or ok.shape[-1] == 0:
    raise ValueError(f"ok must have a last axis over n = 1..n_max; got shape {ok.shape}")
  return np.logical_and.accumulate(ok, axis=-1).sum(-1)


def _blocks(n_max: int, longest, num_seeds: int, per_n: int, budget: int, quantum: int = 512):
  """Splits ``1..n_max`` into blocks of sizes that share one padded shape ``(rows, t)``.

  ``t`` is rounded up to a multiple of ``quantum`` and ``rows`` filled up to what ``budget``
  allows, so only a few shapes ever get compiled. Yields ``(sizes, rows, t)``.
  """
  n = 1
  while n <= n_max:
    t = -(-(longest(n) + 1) // quantum) * quantum
    per_block = max(1, budget // (num_seeds * t * per_n))
    sizes = []
    while n <= n_max and len(sizes) < per_block and longest(n) + 1 <= t:
      sizes.append(n)
      n += 1
    yield sizes, per_block * per_n, t


def evaluate(cell: cells_lib.Cell, params: dict, language: languages.Language, n_max: int,
             head: str, thresholds=(0.005, 0.01), budget: int = 1_500_000,
             min_n: int = 0, parts: bool = False) -> dict:
  """Verdicts for sizes ``n = 1..n_max`` and every seed.

  The sizes are evaluated in padded blocks of many strings at once (``budget`` bounds seeds x
  strings x time per block, i.e. memory), vmapped over the seeds of ``params``. With
  ``min_n > 0`` testing stops after the first block past ``min_n`` by which every seed has failed
  every rule: larger sizes cannot change a limit any more.

  Returns:
    ``{rule: [S, n_tested] bool}``: ``n`` passes when its positive is accepted (for the set rule
    ``'sets'``: every predicted set exact) and all its off-by-one negatives are rejected. Rules of
    the softmax head are ``'p>0.01'``, ``'p>0.01/deterministic'``, ... for every threshold.
    With ``parts``, also ``'<rule>:positive'`` (the positive passes) and ``'<rule>:negatives'``
    (every negative is rejected) for every rule, to see which half fails.
  """
  model.check_choice("head", head, model.HEADS)
  if n_max < 1:
    raise ValueError(f"n_max must be >= 1; got {n_max}")
  num_seeds = jax.tree.leaves(params)[0].shape[0]
  per_n = 1 + len(language.negatives(1))

  def longest(n):
    return max(len(s) for s in language.negatives(n) + [language.positive(n)])

  flags_fn = _flags_fn(cell, head, tuple(thresholds))
  passed: dict[str, list[np.ndarray]] = {}
  for sizes, rows, t in _blocks(n_max, longest, num_seeds, per_n, budget):
    strings = [s for n in sizes for s in [language.positive(n)] + language.negatives(n)]
    strings += [strings[-1]] * (rows - len(strings))  # filler rows keep the shape; dropped below
    inputs, targets, lengths = languages.encode(language, strings, t)
    sets = languages.encode_sets(language, strings, t).astype(bool)
    flags = jax.device_get(flags_fn(params, inputs, targets, lengths, sets))
    flags = {k: v[:, :len(sizes) * per_n].reshape(num_seeds, len(sizes), per_n)
             for k, v in flags.items()}
    # Column 0 is the positive, the others its negatives, which must all be rejected.
    for rule, value in flags.items():
      if rule == "exact":
        continue
      positive = flags["exact"][..., 0] if rule == "accept" else value[..., 0]
      name = "sets" if rule == "accept" else rule
      rejected = ~value[..., 1:].any(-1)
      passed.setdefault(name, []).append(positive & rejected)
      if parts:
        passed.setdefault(f"{name}:positive", []).append(positive)
        passed.setdefault(f"{name}:negatives", []).append(rejected)
    if min_n and sizes[-1] >= min_n and all(
        (~np.concatenate(v, axis=1)).any(axis=1).all() for k, v in passed.items() if ":" not in k):
      break
  return {rule: np.concatenate(v, axis=1) for rule, v in passed.items()}


@functools.lru_cache(maxsize=None)
def _flags_fn(cell, head, thresholds):
  def one_seed(params, inputs, targets, lengths, sets):
    logits = model.apply(cell, params, inputs, lengths)
    return string_flags(logits, targets, lengths, sets, head, thresholds)
  return jax.jit(jax.vmap(one_seed, in_axes=(0, None, None, None, None)))
