"""Greedy, beam search and sampling on hand-built models whose answers are known."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import decoding

PAD, BOS, EOS = 0, 1, 2
IMPOSSIBLE = -1e9


def _table_model(table):
  """A model that reads its next-token log-probs from ``table[row, t, prev_token]``.

  Returns ``(step_fn, init_state(batch_rows))``; ``table: [rows, t, v, v]``.
  """
  table = jnp.asarray(table, jnp.float32)

  def step_fn(state, tokens):
    log_probs = table[state["row"], jnp.minimum(state["t"], table.shape[1] - 1), tokens]
    return {"row": state["row"], "t": state["t"] + 1}, log_probs

  def init_state(rows):
    rows = jnp.asarray(rows, jnp.int32)
    return {"row": rows, "t": jnp.zeros_like(rows)}

  return step_fn, init_state


def _probs_table(steps, transitions, vocab=6):
  """``[1, steps, v, v]`` log-prob table from ``{(t, prev): {token: prob}}``; the rest impossible."""
  table = np.full((1, steps, vocab, vocab), IMPOSSIBLE, np.float32)
  for (t, prev), row in transitions.items():
    for token, p in row.items():
      table[0, t, prev, token] = math.log(p)
  return table


A, B, C = 3, 4, 5


def test_beam_search_finds_the_sequence_greedy_misses():
  # Given: greedy takes A (0.5) and then can only end with 0.35; B (0.4) then ends with 0.6.
  transitions = {}
  for t in range(4):
    transitions[t, BOS] = {A: 0.5, B: 0.4, C: 0.1}
    transitions[t, A] = {EOS: 0.35, A: 0.05, B: 0.3, C: 0.3}
    transitions[t, B] = {EOS: 0.6, A: 0.2, B: 0.1, C: 0.1}
    transitions[t, C] = {EOS: 1.0}
  step_fn, init_state = _table_model(_probs_table(4, transitions))
  state = init_state([0])

  greedy = decoding.greedy(step_fn, state, max_len=4, bos_id=BOS, eos_id=EOS)
  beam = decoding.beam_search(step_fn, state, beam_size=2, max_len=4, bos_id=BOS, eos_id=EOS)

  # Then: greedy returns A EOS with p = 0.5 * 0.35; beam returns B EOS with p = 0.4 * 0.6.
  np.testing.assert_array_equal(greedy.tokens[0], [A, EOS, PAD, PAD])
  np.testing.assert_allclose(greedy.log_probs[0], math.log(0.5 * 0.35), rtol=1e-6)
  np.testing.assert_array_equal(beam.tokens[0, 0], [B, EOS, PAD, PAD])
  np.testing.assert_allclose(beam.log_probs[0, 0], math.log(0.4 * 0.6), rtol=1e-6)
  np.testing.assert_array_equal(beam.lengths[0, 0], 2)
  # The runner-up is greedy's answer (the two best finished hypotheses end the search).
  np.testing.assert_array_equal(beam.tokens[0, 1], [A, EOS, PAD, PAD])


def test_length_penalty_changes_the_choice_as_computed_by_hand():
  # Given: X EOS has p = 0.51 (2 tokens), Y Z EOS has p = 0.49 (3 tokens).
  transitions = {(0, BOS): {A: 0.51, B: 0.49}, (1, A): {EOS: 1.0}, (1, B): {C: 1.0},
                 (2, C): {EOS: 1.0}}
  step_fn, init_state = _table_model(_probs_table(4, transitions))
  state = init_state([0])
  short, long = math.log(0.51), math.log(0.49)
  # By hand: alpha=0 scores are the log-probs, short wins; alpha=1 divides by (5+2)/6 and
  # (5+3)/6: -0.5772 for the short one against -0.5350 for the long one, which now wins.
  for alpha, best, best_score, other_score in [
      (0.0, [A, EOS, PAD], short, long),
      (1.0, [B, C, EOS], long / (8 / 6), short / (7 / 6))]:
    out = decoding.beam_search(step_fn, state, beam_size=2, max_len=3, bos_id=BOS, eos_id=EOS,
                               alpha=alpha)
    np.testing.assert_array_equal(out.tokens[0, 0], best)
    np.testing.assert_allclose(out.scores[0], [best_score, other_score], rtol=1e-6)


def _random_tables(rows, steps, vocab, seed, eos_bias=0.0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(rows, steps, vocab, vocab)) * 2.0
  logits[..., EOS] += eos_bias
  logits[..., [PAD, BOS]] = -np.inf
  table = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
  return np.where(np.isfinite(table), table, IMPOSSIBLE).astype(np.float32)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_width_one_is_greedy(alpha):
  step_fn, init_state = _table_model(_random_tables(16, 12, 7, seed=0, eos_bias=-1.0))
  state = init_state(np.arange(16))

  greedy = decoding.greedy(step_fn, state, max_len=12, bos_id=BOS, eos_id=EOS)
  beam = decoding.beam_search(step_fn, state, beam_size=1, max_len=12, bos_id=BOS, eos_id=EOS,
                              alpha=alpha)

  assert 0 < int(jnp.sum(greedy.lengths < 12)) < 16  # some sentences end, some run to max_len
  np.testing.assert_array_equal(beam.tokens[:, 0], greedy.tokens)
  np.testing.assert_array_equal(beam.lengths[:, 0], greedy.lengths)
  np.testing.assert_allclose(beam.log_probs[:, 0], greedy.log_probs, rtol=1e-5)


def _sequence_score(log_prob, seq, alpha):
  """``log p(seq)`` over the length penalty; ``log_prob(prefix, token)`` with ``prefix`` a tuple."""
  lp = sum(float(log_prob(tuple(seq[:t]), token)) for t, token in enumerate(seq))
  return lp / ((5 + len(seq)) / 6) ** alpha


def _all_sequences(vocab, max_len):
  """Every output of at most max_len tokens: ended by ``eos``, or cut off at max_len."""
  words = [w for w in range(vocab) if w not in (PAD, BOS, EOS)]
  for n in range(1, max_len + 1):
    for body in itertools.product(words, repeat=n - 1):
      yield list(body) + [EOS]
  yield from (list(body) for body in itertools.product(words, repeat=max_len))


def _brute_force_best(log_prob, vocab, max_len, alpha):
  """Best (score, tokens) over every sequence of at most max_len tokens, by enumeration."""
  return max((_sequence_score(log_prob, seq, alpha), seq)
             for seq in _all_sequences(vocab, max_len))


def _history_code(prefix, vocab):
  """The tokens fed for ``prefix`` (``bos`` first) written as one number in base ``vocab``."""
  code = 0
  for fed in (BOS,) + tuple(prefix):
    code = code * vocab + fed
  return code


def _history_model(table, vocab):
  """A model whose state is the whole history: it reads ``table[row, code, token]`` with ``code``
  the :func:`_history_code` of the tokens fed so far.

  Two beams that end in the same token see different distributions, so a beam search that
  reorders its beams without reordering their states scores the wrong prefixes.
  """
  table = jnp.asarray(table, jnp.float32)

  def step_fn(state, tokens):
    code = state["code"] * vocab + tokens
    return {"row": state["row"], "code": code}, table[state["row"], code]

  def init_state(rows):
    rows = jnp.asarray(rows, jnp.int32)
    return {"row": rows, "code": jnp.zeros_like(rows)}

  def log_prob(row, prefix, token):
    return table[row, _history_code(prefix, vocab), token]

  return step_fn, init_state, log_prob


def _random_history_tables(rows, max_len, vocab, seed, eos_bias=0.0):
  """``[rows, vocab ** max_len, vocab]`` random next-token log-probs, one per history code."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(rows, vocab ** max_len, vocab)) * 2.0
  logits[..., EOS] += eos_bias
  logits[..., [PAD, BOS]] = -np.inf
  table = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
  return np.where(np.isfinite(table), table, IMPOSSIBLE).astype(np.float32)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_wide_beam_finds_the_brute_force_optimum(alpha):
  # Given: a model whose every history has its own distribution. Two words and three steps:
  # 16 beams hold every prefix, so the search is exhaustive, and it reorders its beams often.
  tables = _random_history_tables(4, 3, 5, seed=1, eos_bias=0.5)
  step_fn, init_state, log_prob = _history_model(tables, 5)
  out = decoding.beam_search(step_fn, init_state(np.arange(4)), beam_size=16, max_len=3,
                             bos_id=BOS, eos_id=EOS, alpha=alpha)
  for row in range(4):
    row_log_prob = functools.partial(log_prob, row)
    score, seq = _brute_force_best(row_log_prob, 5, 3, alpha)
    np.testing.assert_allclose(out.scores[row, 0], score, rtol=1e-5)
    np.testing.assert_array_equal(out.tokens[row, 0, :len(seq)], seq)
    assert out.lengths[row, 0] == len(seq)
    assert np.all(np.diff(np.asarray(out.scores[row])) <= 1e-6)  # sorted best first
    # All 15 outputs come back (the 16th holds impossible tokens), each scored as its tokens are.
    found = [np.asarray(out.tokens[row, k, :out.lengths[row, k]]).tolist() for k in range(15)]
    assert sorted(found) == sorted(_all_sequences(5, 3)) and out.scores[row, 15] < -1e8
    np.testing.assert_allclose(out.scores[row, :15],
                               [_sequence_score(row_log_prob, seq, alpha) for seq in found],
                               rtol=1e-5)


def test_best_sequence_needs_the_beams_reordered_with_their_states():
  # Given: a history model, beam width 2, where
  #   step 1: A 0.6, B 0.4                         -> beams [A, B]
  #   step 2: A A 0.6*0.55, B A 0.4*0.9 (B B 0.04)  -> beams [B A, A A]: the two swap places
  #   step 3: after B A only EOS (1.0); after A A: A 0.45, B 0.35, EOS 0.2.
  # Both beams fed A at step 3, so only their states tell B A from A A.
  vocab = 5
  transitions = {(): {A: 0.6, B: 0.4}, (A,): {A: 0.55, B: 0.45}, (B,): {A: 0.9, B: 0.1},
                 (B, A): {EOS: 1.0}, (A, A): {A: 0.45, B: 0.35, EOS: 0.2}}
  table = np.full((1, vocab ** 3, vocab), IMPOSSIBLE, np.float32)
  for prefix, row in transitions.items():
    for token, p in row.items():
      table[0, _history_code(prefix, vocab), token] = math.log(p)
  step_fn, init_state, log_prob = _history_model(table, vocab)
  state = init_state([0])

  # When: beam search (and greedy) decode it.
  beam = decoding.beam_search(step_fn, state, beam_size=2, max_len=3, bos_id=BOS, eos_id=EOS)
  greedy = decoding.greedy(step_fn, state, max_len=3, bos_id=BOS, eos_id=EOS)

  # Then: beam search returns B A EOS with p = 0.4 * 0.9 * 1.0 exactly, the optimum over all
  # sequences; greedy keeps to A and misses it; the runner-up is A A A (0.6 * 0.55 * 0.45).
  best = math.log(0.4 * 0.9)
  optimum, optimal_seq = _brute_force_best(functools.partial(log_prob, 0), vocab, 3, 0.0)
  assert optimal_seq == [B, A, EOS] and optimum == pytest.approx(best, rel=1e-6)
  np.testing.assert_array_equal(beam.tokens[0], [[B, A, EOS], [A, A, A]])
  np.testing.assert_allclose(beam.scores[0], [best, math.log(0.6 * 0.55 * 0.45)], rtol=1e-6)
  np.testing.assert_array_equal(beam.lengths[0], [3, 3])
  np.testing.assert_array_equal(greedy.tokens[0], [A, A, A])


def test_sampling_follows_tempered_top_k_distribution():
  # One step: p over [A, B, C, EOS] is [0.4, 0.3, 0.2, 0.1]; temperature 2, top 3 of 4.
  probs = {A: 0.4, B: 0.3, C: 0.2, EOS: 0.1}
  step_fn, init_state = _table_model(_probs_table(1, {(0, BOS): probs}))
  n = 20000
  out = decoding.sample(step_fn, init_state(np.zeros(n)), jax.random.PRNGKey(0), max_len=1,
                        bos_id=BOS, eos_id=EOS, temperature=2.0, top_k=3)
  tempered = np.sqrt(np.array([0.4, 0.3, 0.2]))
  expected = tempered / tempered.sum()
  counts = np.bincount(np.asarray(out.tokens[:, 0]), minlength=6)
  assert counts[EOS] == 0  # outside the top 3
  np.testing.assert_allclose(counts[[A, B, C]] / n, expected, atol=0.015)
  # The reported log-probs are the model's, not the tempered ones.
  np.testing.assert_allclose(out.log_probs[:5],
                             np.log([probs[int(t)] for t in out.tokens[:5, 0]]), rtol=1e-5)


def test_sampling_with_top_k_one_is_greedy():
  step_fn, init_state = _table_model(_random_tables(8, 10, 7, seed=2))
  state = init_state(np.arange(8))
  greedy = decoding.greedy(step_fn, state, max_len=10, bos_id=BOS, eos_id=EOS)
  sampled = decoding.sample(step_fn, state, jax.random.PRNGKey(3), max_len=10, bos_id=BOS,
                            eos_id=EOS, temperature=0.7, top_k=1)
  np.testing.assert_array_equal(sampled.tokens, greedy.tokens)


def test_attention_is_recorded_per_step_and_zero_after_the_end():
  # Step t attends only to source position t; EOS comes at step 2 for row 0, never for row 1.
  def step_fn(state, tokens):
    t = state["t"]
    log_probs = jnp.where(jnp.arange(6)[None, :] == jnp.where(
        (state["row"] == 0) & (t == 2), EOS, A)[:, None], 0.0, IMPOSSIBLE)
    return {"row": state["row"], "t": t + 1}, log_probs, jax.nn.one_hot(t, 5)

  state = {"row": jnp.arange(2), "t": jnp.zeros(2, jnp.int32)}
  for out in (decoding.greedy(step_fn, state, max_len=4, bos_id=BOS, eos_id=EOS),
              jax.tree.map(lambda x: x[:, 0], decoding.beam_search(
                  step_fn, state, beam_size=2, max_len=4, bos_id=BOS, eos_id=EOS))):
    np.testing.assert_array_equal(out.tokens, [[A, A, EOS, PAD], [A, A, A, A]])
    np.testing.assert_array_equal(out.lengths, [3, 4])
    expected = np.zeros((2, 4, 5))
    expected[0, :3] = np.eye(5)[:3]
    expected[1] = np.eye(5)[:4]
    np.testing.assert_array_equal(out.attention, expected)


def test_bad_arguments_get_clear_errors():
  step_fn, init_state = _table_model(_random_tables(2, 3, 5, seed=0))
  state = init_state([0, 1])
  with pytest.raises(ValueError, match="beam_size"):
    decoding.beam_search(step_fn, state, beam_size=0, max_len=3, bos_id=BOS, eos_id=EOS)
  with pytest.raises(ValueError, match="alpha must be >= 0"):
    decoding.beam_search(step_fn, state, beam_size=2, max_len=3, bos_id=BOS, eos_id=EOS,
                         alpha=-0.5)
  with pytest.raises(ValueError, match="temperature"):
    decoding.sample(step_fn, state, jax.random.PRNGKey(0), max_len=3, bos_id=BOS, eos_id=EOS,
                    temperature=0.0)
  with pytest.raises(ValueError, match="leading batch axis"):
    decoding.greedy(step_fn, {"row": jnp.zeros(2, jnp.int32), "t": jnp.zeros(3, jnp.int32)},
                    max_len=3, bos_id=BOS, eos_id=EOS)
