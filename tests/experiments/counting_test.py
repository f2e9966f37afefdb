"""The counting experiment's parts: acceptance rules, limit search, the model, its training."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.counting import config as counting_config
from experiments.counting import evaluation
from experiments.counting import experiment
from experiments.counting import languages
from experiments.counting import model
from seqjax import cells
from seqjax import train

ANBN = languages.get_language("anbn")


# ----------------------------------------------------------------------------- limit search
def test_generalisation_limit_on_known_patterns():
  ok = np.array([[1, 1, 1, 0, 1, 1],   # fails at n = 4
                 [0, 1, 1, 1, 1, 1],   # fails at n = 1
                 [1, 1, 1, 1, 1, 1],   # never fails: limit = everything tested
                 [1, 0, 0, 0, 0, 0]], bool)
  np.testing.assert_array_equal(evaluation.generalisation_limit(ok), [3, 0, 6, 1])
  assert evaluation.generalisation_limit(np.ones(5, bool)) == 5
  with pytest.raises(ValueError, match="last axis"):
    evaluation.generalisation_limit(np.zeros((2, 0), bool))


# ----------------------------------------------------------------------------- rules on fixed logits
def test_threshold_rule_on_known_probabilities():
  # Given "aabb" (inputs BOS a a b b; reads a a b b EOS) and chosen probabilities per position.
  inputs, targets, lengths = languages.encode(ANBN, ["aabb"])
  sets = languages.encode_sets(ANBN, ["aabb"]).astype(bool)
  probs = np.array([[[0.990, 0.005, 0.005],    # reads a with p 0.99
                     [0.992, 0.007, 0.001],    # reads a with p 0.992 (several allowed)
                     [0.700, 0.008, 0.292],    # reads b with p 0.008 (several allowed)
                     [0.001, 0.998, 0.001],    # reads b with p 0.998
                     [0.001, 0.001, 0.998]]])  # reads EOS with p 0.998
  flags = evaluation.string_flags(jnp.log(probs), targets, lengths, sets, "softmax",
                                thresholds=(0.005, 0.01))
  # When: the threshold is 0.005, every read symbol is above it; at 0.01 the b read with 0.008
  # fails, unless only the deterministic positions (one allowed symbol) are judged.
  assert bool(flags["p>0.005"][0]) and not bool(flags["p>0.01"][0])
  assert bool(flags["p>0.01/deterministic"][0])
  # An impossible symbol is judged even where several symbols may follow: "ac" reads c after a.
  abc = languages.get_language("anbncn")
  _, abc_targets, abc_lengths = languages.encode(abc, ["ac"])
  abc_sets = languages.encode_sets(abc, ["ac"]).astype(bool)
  abc_probs = np.full((1, 3, 4), 0.25)
  abc_probs[0, 1] = [0.49, 0.49, 0.011, 0.009]   # after "a": c gets 0.011
  flags = evaluation.string_flags(jnp.log(abc_probs), abc_targets, abc_lengths, abc_sets,
                                "softmax", thresholds=(0.01, 0.05))
  assert bool(flags["p>0.01/deterministic"][0])       # every read symbol above 0.01
  assert not bool(flags["p>0.05/deterministic"][0])   # c after a is judged, and fails 0.05
  # A low EOS probability at the end is judged in both modes.
  probs[0, 4] = [0.5, 0.492, 0.008]
  flags = evaluation.string_flags(jnp.log(probs), targets, lengths, sets, "softmax",
                                thresholds=(0.01,))
  assert not bool(flags["p>0.01"][0]) and not bool(flags["p>0.01/deterministic"][0])


def test_set_rule_exact_versus_accepting():
  inputs, targets, lengths = languages.encode(ANBN, ["ab", "abb"])
  sets = languages.encode_sets(ANBN, ["ab", "abb"], inputs.shape[1]).astype(bool)
  logits = np.where(sets, 5.0, -5.0)
  flags = evaluation.string_flags(jnp.asarray(logits), targets, lengths, sets, "sets")
  # Exact sets: the positive is exact and accepted; the negative "abb" reads a b where only EOS
  # is predicted, so it is rejected.
  assert bool(flags["exact"][0])
  np.testing.assert_array_equal(flags["accept"], [True, False])
  # Predicting b also after "ab" (a superset) still accepts "ab" but no longer exactly.
  logits[0, 2, 1] = 5.0
  flags = evaluation.string_flags(jnp.asarray(logits), targets, lengths, sets, "sets")
  assert bool(flags["accept"][0]) and not bool(flags["exact"][0])


# ----------------------------------------------------------------------------- a hand-built counter
def _counter_params(forget_bias_count=100.0, scale=20.0):
  """A 2-unit LSTM that counts a^n b^n: c0 = #a - #b (leaky when forget_bias_count is small),
  c1 = #b; embeddings one-hot (a, b, BOS); readout: a iff no b yet, b iff c0 > 0, EOS iff b seen
  and c0 = 0."""
  big = 100.0
  h = 2
  w_ih = np.zeros((3, 4 * h))
  w_ih[0, 2 * h + 0] = big    # g0 = +1 on a
  w_ih[1, 2 * h + 0] = -big   # g0 = -1 on b
  w_ih[1, 2 * h + 1] = big    # g1 = +1 on b
  b_hh = np.zeros(4 * h)
  b_hh[0:h] = big                                # input gates open
  b_hh[h:2 * h] = [forget_bias_count, big]       # forget gates: unit 0 maybe leaky
  b_hh[3 * h:4 * h] = big                        # output gates open
  out_w = np.zeros((h, 3))
  out_b = np.zeros(3)
  out_w[1, 0], out_b[0] = -scale, 0.38 * scale                      # a
  out_w[0, 1], out_b[1] = scale, -0.38 * scale                      # b
  out_w[1, 2], out_w[0, 2], out_b[2] = scale, -2 * scale, -0.38 * scale  # EOS
  params = {"embed": np.eye(3), "out_w": out_w, "out_b": out_b,
            "cell": {"w_ih": w_ih, "w_hh": np.zeros((h, 4 * h)), "b_ih": np.zeros(4 * h),
                     "b_hh": b_hh}}
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)


def _reference_verdicts(params, lang, n_max, head, threshold):
  """Python-loop float64 LSTM + rule, straight from the definitions: pass flags for n = 1..n_max."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  sig = lambda x: 1.0 / (1.0 + np.exp(-x))

  def logits_of(s):
    ids = [lang.eos] + [lang.alphabet.index(ch) for ch in s]
    hid = p["cell"]["w_hh"].shape[0]
    h, c, out = np.zeros(hid), np.zeros(hid), []
    for i in ids:
      z = p["embed"][i] @ p["cell"]["w_ih"] + p["cell"]["b_ih"] + h @ p["cell"]["w_hh"] + \
          p["cell"]["b_hh"]
      ig, fg, gg, og = np.split(z, 4)
      c = sig(fg) * c + sig(ig) * np.tanh(gg)
      h = sig(og) * np.tanh(c)
      out.append(h @ p["out_w"] + p["out_b"])
    return np.array(out)

  def accepted(s, exact):
    logits = logits_of(s)
    reads = [lang.alphabet.index(ch) for ch in s] + [lang.eos]
    if head == "sets":
      if exact:
        return np.array_equal(logits > 0, lang.next_sets(s))
      return all(logits[t, r] > 0 for t, r in enumerate(reads))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return all(probs[t, r] > threshold for t, r in enumerate(reads))

  return np.array([accepted(lang.positive(n), True)
                   and not any(accepted(neg, False) for neg in lang.negatives(n))
                   for n in range(1, n_max + 1)])


def _stack(params, copies=1):
  return jax.tree.map(lambda a: jnp.stack([a] * copies), params)


def test_hand_built_counter_is_accepted_at_every_size():
  # Given an LSTM that counts exactly, When every n up to 150 is tested,
  # Then every positive is recognised and every off-by-one negative rejected, under both rules.
  cell = cells.get_cell("lstm")
  params = _stack(_counter_params(), 2)
  for head in ("sets", "softmax"):
    passed = evaluation.evaluate(cell, params, ANBN, 150, head, thresholds=(0.005,),
                               budget=200_000)
    for rule, ok in passed.items():
      if rule == "p>0.005" or rule == "sets" or rule.endswith("deterministic"):
        np.testing.assert_array_equal(evaluation.generalisation_limit(ok), [150, 150], err_msg=rule)


@pytest.mark.parametrize("forget_bias,head,threshold", [
    (2.2, "sets", 0.0),        # a leaky counter: exact for small n only
    (100.0, "softmax", 0.01),  # P(a | a^k) ~ 0.009 for k >= 3: between the two thresholds
    (100.0, "softmax", 0.005)])
def test_verdicts_match_a_float64_python_loop(forget_bias, head, threshold):
  cell = cells.get_cell("lstm")
  params = _counter_params(forget_bias)
  expected = _reference_verdicts(params, ANBN, 30, head, threshold)
  rule = "sets" if head == "sets" else f"p>{threshold:g}"
  got = evaluation.evaluate(cell, _stack(params), ANBN, 30, head, thresholds=(0.005, 0.01))[rule]
  np.testing.assert_array_equal(got[0], expected)
  # The patterns are not trivial: some sizes pass and some fail (or, at 0.005, all pass).
  assert expected[0] and (not expected.all() or threshold == 0.005)


def test_evaluate_stops_once_every_seed_failed():
  cell = cells.get_cell("lstm")
  params = _stack(_counter_params(2.2))   # fails from a small n on
  passed = evaluation.evaluate(cell, params, ANBN, 500, "sets", budget=100_000, min_n=40)
  ok = passed["sets"]
  assert 40 <= ok.shape[1] < 500
  with pytest.raises(ValueError, match="unknown head"):
    evaluation.evaluate(cell, params, ANBN, 10, "argmax")


# ----------------------------------------------------------------------------- model and training
def test_states_along_is_the_unrolled_state():
  cell = cells.get_cell("lstm")
  params = model.init_params(jax.random.PRNGKey(0), cell, 3)
  inputs, _, lengths = languages.encode(ANBN, ["aaabbb"])
  h, c = model.states_along(cell, params, jnp.asarray(inputs[0]))
  from seqjax import recurrent  # pylint: disable=import-outside-toplevel
  ys, (h_last, c_last) = recurrent.unroll(cell, params["cell"], params["embed"][inputs])
  np.testing.assert_allclose(h, ys[0], atol=1e-6)
  np.testing.assert_allclose(c[-1], c_last[0], atol=1e-6)


def _init_seeds(seeds, cell, vocab_size):
  """One network per seed (``PRNGKey(seed)``), stacked on a leading seed axis."""
  keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
  return jax.vmap(lambda k: model.init_params(k, cell, vocab_size))(keys)


def test_runtime_step_trains_every_network_as_if_alone(tmp_path):
  # Given the experiment's own trainer (the runtime's train step with the study's summed loss and
  # per-network clipping) and 3 GRU seeds reading their own minibatches,
  # When trained 6 steps together and, seed by seed, alone on that seed's minibatches,
  # Then every seed ends with the same parameters and the same per-step losses.
  overrides = dict(languages="anbn", cells="gru", heads="softmax", minibatch_order="per_seed",
                   batch_size=4, num_steps=6, warmup_steps=2, grad_clip_norm=1.0)
  together = experiment.make_experiment(_config(num_seeds=3, **overrides), str(tmp_path))
  alone = experiment.make_experiment(_config(num_seeds=1, **overrides), str(tmp_path))
  key = "anbn/gru/softmax"
  rng = jax.random.PRNGKey(0)

  def train_6(exp, params, batch_of):
    step = jax.jit(train.make_train_step(exp.loss_fn, exp.optimizer, rng,
                                         loss_reduction=exp.loss_reduction))
    state = train.TrainState(jnp.zeros((), jnp.int32), params, exp.optimizer.init(params))
    losses = []
    for i in range(6):
      state, metrics = step(state, jax.tree.map(jnp.asarray, batch_of(i)))
      losses.append(float(metrics["train/anbn_gru_softmax_loss"]))
    return state.params, losses

  params = together.init(rng)
  trained, losses = train_6(together, params, lambda i: together.get_batch(i, 0, 1))
  each = []
  for s in range(3):
    mine = {key: jax.tree.map(lambda a, s=s: a[s:s + 1], params[key])}
    own_batch = lambda i, s=s: jax.tree.map(lambda a: a[:, s:s + 1], together.get_batch(i, 0, 1))
    trained_alone, losses_alone = train_6(alone, mine, own_batch)
    for a, b in zip(jax.tree.leaves(trained_alone[key]), jax.tree.leaves(trained[key])):
      np.testing.assert_allclose(a[0], b[s], rtol=1e-5, atol=1e-6)
    each.append(losses_alone)
  # Together the logged loss is the mean over the seeds of each one's own loss, at every step.
  np.testing.assert_allclose(np.mean(each, axis=0), losses, rtol=1e-5)
  assert losses[-1] < losses[0]


def test_apply_together_equals_each_group_alone():
  # Given two groups of networks on languages with different vocabularies and string lengths,
  # When run in one time loop, Then each group's logits (and gradients) are its own.
  anbncn = languages.get_language("anbncn")
  cell = cells.get_cell("lstm", forget_bias=1.0)
  groups = []
  for lang, strings, n in ((ANBN, ["ab", "aaabbb", "aabb"], 2), (anbncn, ["abc", "aaabbbccc", "aabbcc"], 3)):
    inputs, _, lengths = languages.encode(lang, strings)
    params = _init_seeds(range(n), cell, lang.vocab_size)
    groups.append((params, jnp.broadcast_to(inputs, (n,) + inputs.shape),
                   jnp.broadcast_to(lengths, (n,) + lengths.shape)))
  together = model.apply_together(cell, groups)
  alone = [jax.vmap(functools.partial(model.apply, cell))(*g) for g in groups]
  assert groups[0][1].shape[-1] != groups[1][1].shape[-1]
  for a, b in zip(together, alone):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  def total(params_list, run):
    return sum((out ** 2).sum() for out in run(
        [(p,) + g[1:] for p, g in zip(params_list, groups)]))

  grads_together = jax.grad(total)([g[0] for g in groups],
                                   lambda gs: model.apply_together(cell, gs))
  grads_alone = jax.grad(total)([g[0] for g in groups], lambda gs: [
      jax.vmap(functools.partial(model.apply, cell))(*g) for g in gs])
  for a, b in zip(jax.tree.leaves(grads_together), jax.tree.leaves(grads_alone)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="at least one group"):
    model.apply_together(cell, [])
  with pytest.raises(ValueError, match="one shared batch size"):
    model.apply_together(cell, [groups[0], (groups[1][0], groups[1][1][:, :2],
                                               groups[1][2][:, :2])])


def test_orthogonal_embedding_keeps_symbols_apart():
  cell = cells.get_cell("gru")
  for seed in range(5):
    embed = np.asarray(model.init_params(jax.random.PRNGKey(seed), cell, 3,
                                            embed_init="orthogonal")["embed"])
    # Three symbols in three dimensions: orthogonal rows of norm sqrt(3), like N(0, 1) rows on
    # average.
    np.testing.assert_allclose(embed @ embed.T, 3.0 * np.eye(3), atol=1e-5)
  with pytest.raises(ValueError, match="unknown embed_init 'xavier'"):
    model.init_params(jax.random.PRNGKey(0), cell, 3, embed_init="xavier")


def test_loss_weighting_numbers():
  cell = cells.get_cell("lstm")
  params = model.init_params(jax.random.PRNGKey(1), cell, 3)
  batch = model.training_batch(ANBN, ["ab", "aaabbb"], "sets")
  logits = model.apply(cell, params, batch["inputs"], batch["lengths"])
  bce = np.asarray(optax.sigmoid_binary_cross_entropy(logits, batch["goal"]).sum(-1))
  per_string = [bce[0, :3].mean(), bce[1, :7].mean()]
  by_string = model.make_seed_loss(cell, "sets", "string")(params, batch)
  by_token = model.make_seed_loss(cell, "sets", "token")(params, batch)
  np.testing.assert_allclose(by_string, np.mean(per_string), rtol=1e-5)
  np.testing.assert_allclose(by_token, (bce[0, :3].sum() + bce[1, :7].sum()) / 10, rtol=1e-5)
  mixed = model.make_seed_loss(cell, "sets", "mixed")(params, batch)
  np.testing.assert_allclose(mixed, 0.5 * (np.mean(per_string) + float(by_token)), rtol=1e-5)
  with pytest.raises(ValueError, match="unknown weighting 'tokens'"):
    model.make_seed_loss(cell, "sets", "tokens")


def _config(**overrides):
  config = counting_config.get_config("smoke")
  config.update(overrides)
  return config


def _study(**overrides):
  return experiment.CountingStudy(_config(**overrides))


def test_loss_weighting_per_cell_and_its_bad_values():
  study = _study()
  assert study.weighting == {("lstm", "sets"): "token", ("lstm", "softmax"): "string",
                             ("gru", "sets"): "string", ("gru", "softmax"): "string"}
  mixed = _study(loss_weighting={"gru_softmax": "mixed", "lstm_sets": "string"}).weighting
  assert mixed == {("lstm", "sets"): "string", ("lstm", "softmax"): "string",
                   ("gru", "sets"): "string", ("gru", "softmax"): "mixed"}
  assert _study(cells="lstm,min_gru").weighting["min_gru", "sets"] == "string"
  config = _study().config
  del config.loss_weighting["gru_sets"]
  with pytest.raises(ValueError, match="no entry 'gru_sets'"):
    experiment.CountingStudy(config)
  with pytest.raises(ValueError, match="unknown weighting 'tokens'"):
    _study(loss_weighting={"lstm_sets": "tokens"})


def test_per_seed_minibatches_are_each_seeds_own_and_give_each_networks_loss():
  # Given per-seed minibatch order, Then seed s's strings do not depend on how many seeds train,
  # seeds read different strings, and the summed loss is the sum of every network's own loss on
  # its own strings.
  study = _study(minibatch_order="per_seed", num_seeds=3, languages="anbn", batch_size=8)
  fewer = _study(minibatch_order="per_seed", num_seeds=2, languages="anbn", batch_size=8)
  batch, batch2 = study.get_batch(7, 0, 1)["anbn"], fewer.get_batch(7, 0, 1)["anbn"]
  assert batch["inputs"].shape[:2] == (8, 3)
  np.testing.assert_array_equal(batch["inputs"][:, :2], batch2["inputs"])
  assert not np.array_equal(batch["inputs"][:, 0], batch["inputs"][:, 1])
  params = study.init(jax.random.PRNGKey(0))
  total, _ = study.loss_fn(params, jax.tree.map(jnp.asarray, study.get_batch(7, 0, 1)), None)
  expected = 0.0
  for (lang, cell, head) in study.models:
    for seed in range(3):
      mine = {k: batch[k][:, seed] for k in ("inputs", "lengths", "mask")}
      mine["goal"] = batch[f"goal/{head}"][:, seed]
      one = jax.tree.map(lambda a, s=seed: a[s], params[study.key(lang, cell, head)])
      expected += float(study.losses[head][cell](one, mine))
  np.testing.assert_allclose(float(total), expected, rtol=1e-5)


def test_unknown_minibatch_order_is_a_clear_error():
  with pytest.raises(ValueError, match="minibatch_order"):
    _study(minibatch_order="random")
  with pytest.raises(ValueError, match="minibatch_sampling"):
    _study(minibatch_sampling="sorted")
  with pytest.raises(ValueError, match="curriculum_steps"):
    _study(curriculum_steps=-1)


def test_stratified_minibatches_take_one_string_from_each_slice_of_sizes():
  study = _study(minibatch_sampling="stratified", languages="anbn", num_seeds=4, batch_size=8,
                 train_max={"anbn": 32})
  for step in (0, 5, 99):
    sizes = study.get_batch(step, 0, 1)["anbn"]["lengths"]  # [batch, seeds]: 2n + 1 symbols
    n = (sizes - 1) // 2
    # Slice i holds n = 4i + 1 .. 4i + 4 (the training set is ordered by n).
    assert ((n - 1) // 4 == np.arange(8)[:, None]).all(), n


def test_curriculum_draws_the_shortest_strings_first():
  study = _study(curriculum_steps=100, languages="anbn", num_seeds=3, batch_size=64,
                 train_max={"anbn": 50})
  def sizes(step):
    return (study.get_batch(step, 0, 1)["anbn"]["lengths"] - 1) // 2
  assert sizes(0).max() <= 5          # 10% of n = 1..50
  assert sizes(50).max() <= 28        # 10% + 90% * 50/100 = 55%
  assert sizes(100).max() > 28        # curriculum over: all 50 sizes again
