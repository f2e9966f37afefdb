"""Counting languages (experiments/counting/languages.py): members, negatives, sets, encoding."""

import itertools

import numpy as np
import pytest

from experiments.counting import languages

NAMES = languages.LANGUAGE_NAMES


def _member_reference(name, s):
  """Membership straight from the definitions, by counting."""
  if name == "dyck1":
    depth = 0
    for ch in s:
      if ch not in "()":
        return False
      depth += 1 if ch == "(" else -1
      if depth < 0:
        return False
    return bool(s) and depth == 0
  letters = "ab" if name == "anbn" else "abc"
  n = len(s) // len(letters)
  return n >= 1 and s == "".join(ch * n for ch in letters)


def _next_sets_reference(lang, s):
  """Next-symbol sets by brute force: a symbol may follow a prefix if some word continues it.

  Words long enough to continue any prefix of ``s`` are enumerated from the definition: a prefix
  of length t continues with any allowed symbol within 3 (t + 1) symbols (Dyck-1: 2 t + 2).
  """
  v = lang.vocab_size
  out = np.zeros((len(s) + 1, v), bool)
  t = len(s)
  words = _words(lang.name, 2 * t + 2 if lang.name == "dyck1" else 3 * (t + 1))
  for t in range(len(s) + 1):
    prefix = s[:t]
    for w in words:
      if w.startswith(prefix):
        out[t, lang.eos if len(w) == t else lang.alphabet.index(w[t])] = True
  return out


def _words(name, max_len):
  if name == "dyck1":
    out = []

    def grow(word, depth):  # every Dyck word up to max_len, by depth-first search
      if depth == 0 and word:
        out.append(word)
      if len(word) + depth + 2 <= max_len:
        grow(word + "(", depth + 1)
      if depth > 0:
        grow(word + ")", depth - 1)
    grow("", 0)
    return out
  letters = "ab" if name == "anbn" else "abc"
  return ["".join(ch * n for ch in letters) for n in range(1, max_len // len(letters) + 1)]


@pytest.mark.parametrize("name", NAMES)
def test_positives_are_members_and_negatives_are_not(name):
  lang = languages.get_language(name)
  for n in range(1, 40):
    word = lang.positive(n)
    assert _member_reference(name, word) and lang.is_member(word)
    assert lang.depth(word) == n
    negatives = lang.negatives(n)
    assert len(negatives) == {"anbn": 2, "anbncn": 6, "dyck1": 2}[name]
    for neg in negatives:
      assert not _member_reference(name, neg) and not lang.is_member(neg), (n, neg)
      # Off by one: one symbol more or fewer than the positive.
      assert abs(len(neg) - len(word)) == 1


def test_off_by_one_negatives_are_the_documented_strings():
  anbn, abc = languages.get_language("anbn"), languages.get_language("anbncn")
  assert anbn.negatives(3) == ["aaabbbb", "aaaabbb"]
  assert sorted(abc.negatives(2)) == sorted(
      ["aaabbcc", "abbcc", "aabbbcc", "aabcc", "aabbccc", "aabbc"])
  dyck = languages.get_language("dyck1")
  word = dyck.positive(7)
  assert dyck.negatives(7) == [word[:-1], word + ")"]


@pytest.mark.parametrize("name", NAMES)
def test_membership_agrees_with_definition_on_all_short_strings(name):
  lang = languages.get_language(name)
  for k in range(0, 9):
    for chars in itertools.product(lang.alphabet, repeat=k):
      s = "".join(chars)
      assert lang.is_member(s) == _member_reference(name, s), s


def test_dyck_words_have_the_promised_depth_and_length():
  dyck = languages.get_language("dyck1")
  for n in (1, 2, 5, 33, 200):
    word = dyck.positive(n)
    assert dyck.depth(word) == n
    assert len(word) == 2 * n + 2 * (n // 2)
    assert word == dyck.positive(n)  # deterministic
  assert dyck.positive(40) != "(" * 40 + ")" * 40


@pytest.mark.parametrize("name", NAMES)
def test_next_sets_match_brute_force(name):
  lang = languages.get_language(name)
  rng = np.random.default_rng(0)
  strings = [lang.positive(n) for n in (1, 2, 3)]
  strings += [neg for n in (1, 2) for neg in lang.negatives(n)]
  strings += ["".join(rng.choice(list(lang.alphabet), size=int(rng.integers(1, 7))))
              for _ in range(20)]
  for s in strings:
    np.testing.assert_array_equal(lang.next_sets(s), _next_sets_reference(lang, s), err_msg=s)


def test_next_sets_of_anbn_by_hand():
  lang = languages.get_language("anbn")
  #                 a  b  EOS
  expected = [[1, 0, 0],   # ""
              [1, 1, 0],   # a
              [1, 1, 0],   # aa
              [0, 1, 0],   # aab
              [0, 0, 1]]   # aabb
  np.testing.assert_array_equal(lang.next_sets("aabb"), np.array(expected, bool))


@pytest.mark.parametrize("name", NAMES)
def test_hazard_distribution_sums_to_one_on_the_sets(name):
  lang = languages.get_language(name)
  word = lang.positive(6)
  dist = lang.next_distribution(word, 0.1)
  sets = lang.next_sets(word)
  np.testing.assert_allclose(dist.sum(-1), 1.0)
  assert np.all((dist > 0) == sets)
  if name != "dyck1":
    # After a^k (k >= 1) the run stops with probability 0.1, whatever k is.
    np.testing.assert_allclose(dist[1:7, :2], [[0.9, 0.1]] * 6)
  else:
    np.testing.assert_allclose(dist[-1], [0.9, 0.0, 0.1])
  with pytest.raises(ValueError, match="stop_prob"):
    lang.next_distribution(word, 1.0)


@pytest.mark.parametrize("name", NAMES)
def test_training_strings_cover_every_size(name):
  lang = languages.get_language(name)
  strings = lang.train_strings(12, per_size=2)
  assert all(lang.is_member(s) for s in strings)
  sizes = sorted({lang.depth(s) for s in strings})
  assert sizes == list(range(1, 13))
  assert len(strings) == (24 if name == "dyck1" else 12)


def test_encode_numbers():
  lang = languages.get_language("anbn")
  inputs, targets, lengths = languages.encode(lang, ["ab", "aabb"])
  np.testing.assert_array_equal(inputs, [[2, 0, 1, 0, 0], [2, 0, 0, 1, 1]])
  np.testing.assert_array_equal(targets, [[0, 1, 2, 0, 0], [0, 0, 1, 1, 2]])
  np.testing.assert_array_equal(lengths, [3, 5])
  sets = languages.encode_sets(lang, ["ab"], 4)
  np.testing.assert_array_equal(sets[0], [[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]])


def test_bad_input_gets_clear_errors():
  lang = languages.get_language("anbn")
  with pytest.raises(ValueError, match="outside the alphabet"):
    languages.encode(lang, ["abc"])
  with pytest.raises(ValueError, match="shorter than the longest"):
    languages.encode(lang, ["aabb"], 3)
  with pytest.raises(ValueError, match="size n must be an integer >= 1"):
    lang.positive(0)
  with pytest.raises(ValueError, match="unknown language"):
    languages.get_language("anbm")
  with pytest.raises(ValueError, match="not in anbn"):
    lang.depth("aab")
