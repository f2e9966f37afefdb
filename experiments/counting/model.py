"""Counting with recurrent networks (Weiss, Goldberg & Yahav 2018): model, acceptance, limits.

Shape letters: S seeds, b batch, t time, v vocabulary (letters + EOS), h hidden units.

The model is the paper's: an embedding of size 3, one LSTM or GRU layer (``seqjax.recurrent``) and a
linear layer over the letters plus EOS. It is read two ways:

* **next-symbol sets** (``head='sets'``): one sigmoid per symbol, trained with binary cross-entropy
  against the set of symbols that may come next. A string is *accepted* when every symbol it
  reads, and EOS at its end, is in the predicted set (logit > 0). A positive counts as
  *recognised* only when every predicted set is exactly the true set.
* **probability threshold** (``head='softmax'``): next-symbol cross-entropy; a string is accepted
  when every symbol it reads, and EOS at its end, gets probability above a threshold.

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

Seeds are trained in parallel: parameters carry a leading seed axis and the whole update is
``jax.vmap``-ed over it (Adam and clipping stay per seed, exactly as in a loop over seeds).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from seqjax import cells as cells_lib
from seqjax import recurrent
from seqjax.data import languages

HEADS = ("sets", "softmax")
TARGETS = ("sampled", "hazard")
POSITIONS = ("all", "deterministic")
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
  _check_choice("embed_init", embed_init, EMBED_INITS)
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


def init_seeds(seeds, cell: cells_lib.Cell, vocab_size: int, **sizes) -> dict:
  """Parameters of one network per seed, stacked on a leading ``[S]`` axis."""
  keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
  return jax.vmap(lambda k: init_params(k, cell, vocab_size, **sizes))(keys)


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
def sets_loss(logits, sets, mask):
  """Binary cross-entropy against next-symbol sets, averaged per string then over strings.

  Args:
    logits: ``[b, t, v]``.
    sets: ``[b, t, v]`` 0/1 targets.
    mask: ``[b, t]`` 1.0 on valid positions.
  """
  return _average(_sets_bce(logits, sets), mask)


def softmax_loss(logits, target_probs, mask):
  """Cross-entropy against next-symbol distributions ``[b, t, v]`` (one-hot or soft)."""
  return _average(_softmax_xent(logits, target_probs), mask)


def _average(per_position, mask):
  # Per string, then over strings: short and long strings weigh the same, as each size n does.
  per_string = (per_position * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
  return per_string.mean()


def training_batch(language: languages.Language, strings: list[str], head: str,
                   targets: str = "sampled", stop_prob: float = 0.1) -> dict:
  """Full-batch training arrays: ``inputs, lengths, mask`` and ``goal: [b, t, v]``.

  ``goal`` is the next-symbol sets for ``head='sets'``; for ``'softmax'`` the one-hot next symbol
  (``targets='sampled'``) or the constant-hazard distribution (``'hazard'``).
  """
  _check_choice("head", head, HEADS)
  _check_choice("targets", targets, TARGETS)
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
  mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)
  return {"inputs": inputs, "lengths": lengths, "mask": mask, "goal": goal}


# ----------------------------------------------------------------------------- training
def make_optimizer(learning_rate: float, num_steps: int, schedule: str = "constant",
                   clip_norm: float = 0.0, warmup_steps: int = 0) -> optax.GradientTransformation:
  """Adam with an optional warmup + cosine decay and per-network gradient clipping."""
  if schedule == "constant":
    lr = learning_rate
  elif schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(warmup_steps, 1),
                                            max(num_steps, warmup_steps + 1),
                                            end_value=learning_rate * 0.01)
  else:
    raise ValueError(f"unknown schedule {schedule!r}; use 'constant' or 'cosine'")
  parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm > 0 else []
  return optax.chain(*parts, optax.adam(lr))


def make_logits_loss(head: str, weighting: str = "string") -> Callable:
  """``(logits [b, t, v], goal [b, t, v], mask [b, t]) -> loss`` of one network.

  Args:
    head: ``'sets'`` (binary cross-entropy against next-symbol sets) or ``'softmax'``
      (cross-entropy against next-symbol distributions).
    weighting: ``'string'`` averages the loss per string, then over strings (every size ``n``
      weighs the same); ``'token'`` over all valid positions, so long strings weigh more;
      ``'mixed'`` is the mean of the two, so long strings weigh more but no string weighs less
      than half its per-string share.
  """
  _check_choice("head", head, HEADS)
  _check_choice("weighting", weighting, WEIGHTINGS)
  per_position = _sets_bce if head == "sets" else _softmax_xent

  def loss_fn(logits, goal, mask):
    values = per_position(logits, goal)
    by_token = (values * mask).sum() / mask.sum()
    if weighting == "token":
      return by_token
    if weighting == "mixed":
      return 0.5 * (by_token + _average(values, mask))
    return _average(values, mask)

  return loss_fn


def make_seed_loss(cell: cells_lib.Cell, head: str, weighting: str = "string") -> Callable:
  """``(params, batch) -> loss`` of one network on a batch from :func:`training_batch`."""
  logits_loss = make_logits_loss(head, weighting)

  def loss_fn(params, batch):
    logits = apply(cell, params, batch["inputs"], batch["lengths"])
    return logits_loss(logits, batch["goal"], batch["mask"])

  return loss_fn


def make_seed_step(loss_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
  """``(params, opt_state, batch) -> (params, opt_state, loss)``: one Adam step of one network."""
  def one_step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return one_step


def make_train_chunk(cell: cells_lib.Cell, head: str, optimizer: optax.GradientTransformation,
                     batch_size: int = 0, weighting: str = "string") -> Callable:
  """A jitted ``(params, opt_state, keys, batch, start, num_steps) -> (params, opt_state, losses)``.

  A self-contained trainer (the experiment uses ``seqjax.train`` instead): ``num_steps`` Adam
  steps for every seed at once (``lax.scan`` over steps of a ``vmap`` over seeds). Each step draws
  ``batch_size`` training strings uniformly with replacement from the seed's key folded with the
  step number; ``batch_size=0`` uses the full batch. ``params``, ``opt_state`` and ``keys: [S, 2]``
  carry the seed axis; ``losses: [num_steps, S]`` are the minibatch losses before each step.
  """
  one_step = make_seed_step(make_seed_loss(cell, head, weighting), optimizer)

  def sampled_step(params, opt_state, key, batch, step):
    if batch_size:
      rows = batch["inputs"].shape[0]
      pick = jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, rows)
      batch = jax.tree.map(lambda a: a[pick], batch)
    return one_step(params, opt_state, batch)

  seeds_step = jax.vmap(sampled_step, in_axes=(0, 0, 0, None, None))

  @functools.partial(jax.jit, static_argnames="num_steps")
  def train_chunk(params, opt_state, keys, batch, start, num_steps):
    def body(carry, step):
      params, opt_state, loss = seeds_step(*carry, keys, batch, step)
      return (params, opt_state), loss
    steps = start + jnp.arange(num_steps)
    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), steps)
    return params, opt_state, losses

  return train_chunk


def time_seed_vmap(cell: cells_lib.Cell, head: str, params: dict, batch: dict,
                   repeats: int = 20, weighting: str = "string") -> dict:
  """Seconds per training step for all seeds: one ``vmap``-ed step vs a loop of per-seed steps.

  ``params`` carry the seed axis; ``batch`` is one minibatch from :func:`training_batch`. Both
  variants are compiled first; the time is the fastest of ``repeats`` (on a shared machine the
  fastest is the least disturbed by other jobs).
  """
  import time  # pylint: disable=import-outside-toplevel

  optimizer = optax.adam(1e-3)
  one_step = make_seed_step(make_seed_loss(cell, head, weighting), optimizer)
  opt_state = jax.vmap(optimizer.init)(params)
  num_seeds = jax.tree.leaves(params)[0].shape[0]
  vmapped = jax.jit(jax.vmap(one_step, in_axes=(0, 0, None)))
  single = jax.jit(one_step)
  seeds = [jax.tree.map(lambda a, i=i: a[i], (params, opt_state)) for i in range(num_seeds)]

  def run_vmapped():
    return vmapped(params, opt_state, batch)

  def run_loop():
    return [single(p, o, batch) for p, o in seeds]

  timings = {}
  for name, fn in (("vmap", run_vmapped), ("loop", run_loop)):
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times.append(time.perf_counter() - start)
    timings[f"{name}_s_per_step"] = float(np.min(times))
  timings["speedup"] = timings["loop_s_per_step"] / timings["vmap_s_per_step"]
  timings["num_seeds"] = num_seeds
  return timings


def _sets_bce(logits, sets):
  return optax.sigmoid_binary_cross_entropy(logits, sets).sum(-1)


def _softmax_xent(logits, target_probs):
  return optax.softmax_cross_entropy(logits, target_probs)


def init_opt_state(optimizer: optax.GradientTransformation, params: dict):
  """Per-seed optimizer states stacked like ``params``."""
  return jax.vmap(optimizer.init)(params)


# ----------------------------------------------------------------------------- acceptance
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
  valid = jnp.arange(t)[None, :] < lengths[:, None]
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
  _check_choice("head", head, HEADS)
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
    logits = apply(cell, params, inputs, lengths)
    return string_flags(logits, targets, lengths, sets, head, thresholds)
  return jax.jit(jax.vmap(one_seed, in_axes=(0, None, None, None, None)))


def _check_choice(what, value, allowed):
  if value not in allowed:
    raise ValueError(f"unknown {what} {value!r}; use one of {', '.join(allowed)}")
