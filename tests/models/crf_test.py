"""Linear-chain CRF: log-partition and Viterbi against enumerating every tag sequence, gradients
against central differences in float64, padding that never leaks."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.models import crf

K = 3
# Jitted once per shape: eager dispatch of the scans would cost more than the tests themselves.
_log_partition = jax.jit(crf.log_partition)
_viterbi = jax.jit(crf.viterbi, static_argnames="pad_tag")
_score = jax.jit(crf.sequence_score)
_nll = jax.jit(crf.nll)
LENGTHS = np.array([4, 1, 3, 0], np.int32)  # different lengths, a one-token and an empty row
T = 5


def _params(seed=0, dtype=jnp.float32):
  params = crf.init(jax.random.PRNGKey(seed), K, dtype, scale=1.0)
  return jax.tree.map(lambda a: a.astype(dtype), params)


def _emissions(seed=1, dtype=np.float32):
  rng = np.random.default_rng(seed)
  e = rng.normal(size=(len(LENGTHS), T, K)).astype(dtype)
  # Garbage past each length: a correct CRF never reads it.
  e[np.arange(T)[None, :] >= LENGTHS[:, None]] = 1e6
  return e


def _brute_score(params, e_row, tags):
  p = jax.tree.map(np.asarray, params)
  s = p["start"][tags[0]] + p["end"][tags[-1]] + sum(e_row[i, y] for i, y in enumerate(tags))
  return s + sum(p["transitions"][a, b] for a, b in zip(tags[:-1], tags[1:]))


def _brute(params, emissions):
  """Per row: (log Z, best path, best score) by enumerating all K**n sequences."""
  out = []
  for row, n in enumerate(LENGTHS):
    if n == 0:
      out.append((0.0, [], 0.0))
      continue
    seqs = list(itertools.product(range(K), repeat=int(n)))
    scores = np.array([_brute_score(params, emissions[row], s) for s in seqs], np.float64)
    log_z = np.log(np.sum(np.exp(scores - scores.max()))) + scores.max()
    out.append((log_z, list(seqs[int(np.argmax(scores))]), scores.max()))
  return out


def test_log_partition_matches_enumeration():
  # Given random scores with padding, when the forward algorithm runs, then log Z is the
  # logsumexp over every tag sequence of each row's own length (0 for the empty row).
  params, e = _params(), _emissions()
  got = np.asarray(_log_partition(params, e, LENGTHS))
  want = np.array([r[0] for r in _brute(params, e)])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", [2, 12, 22])
def test_viterbi_matches_enumeration_and_pads(seed):
  params, e = _params(seed), _emissions(seed + 1)
  tags, scores = _viterbi(params, e, LENGTHS, pad_tag=-7)
  tags, scores = np.asarray(tags), np.asarray(scores)
  for row, (_, path, best) in enumerate(_brute(params, e)):
    n = LENGTHS[row]
    assert tags[row, :n].tolist() == path, row
    assert (tags[row, n:] == -7).all(), row
    np.testing.assert_allclose(scores[row], best, rtol=1e-5, atol=1e-5)


def test_viterbi_score_is_the_sequence_score_and_nll_is_a_log_probability():
  params, e = _params(4), _emissions(5)
  tags, scores = _viterbi(params, e, LENGTHS)
  np.testing.assert_allclose(_score(params, e, tags, LENGTHS), scores, rtol=1e-5, atol=1e-5)
  # Row 0's probabilities over all its K**n sequences add up to one: sum exp(-nll) == 1.
  n = int(LENGTHS[0])
  seqs = np.array(list(itertools.product(range(K), repeat=n)), np.int32)  # [K**n, n]
  tags = np.full((len(seqs), T), -1, np.int32)
  tags[:, :n] = seqs
  rows = np.repeat(e[:1], len(seqs), axis=0)
  nll = _nll(params, rows, tags, np.full(len(seqs), n, np.int32))
  np.testing.assert_allclose(float(jnp.sum(jnp.exp(-nll))), 1.0, rtol=1e-4)


def test_padding_rows_do_not_change_other_rows():
  params, e = _params(6), _emissions(7)
  full = _log_partition(params, e, LENGTHS)
  alone = _log_partition(params, e[:1, :LENGTHS[0]], LENGTHS[:1])
  np.testing.assert_allclose(full[0], alone[0], rtol=1e-6)


def test_nll_gradient_matches_central_differences_in_float64():
  with jax.enable_x64(True):
    params = _params(8, jnp.float64)
    e = jnp.asarray(_emissions(9, np.float64))
    e = jnp.where(jnp.abs(e) > 1e5, 0.0, e)  # finite values where the differences step
    tags = jnp.asarray(np.random.default_rng(10).integers(0, K, (len(LENGTHS), T)), jnp.int32)

    @jax.jit
    def loss(p, em):
      return jnp.sum(crf.nll(p, em, tags, LENGTHS))

    g_params, g_e = jax.grad(loss, argnums=(0, 1))(params, e)
    eps = 1e-6
    for name in ("transitions", "start", "end"):
      flat = np.asarray(params[name]).ravel()
      for i in range(flat.size):
        def at(delta, name=name, i=i):
          moved = dict(params)
          moved[name] = params[name].ravel().at[i].add(delta).reshape(params[name].shape)
          return float(loss(moved, e))
        numeric = (at(eps) - at(-eps)) / (2 * eps)
        np.testing.assert_allclose(np.asarray(g_params[name]).ravel()[i], numeric, rtol=1e-6,
                                   atol=1e-8, err_msg=f"{name}[{i}]")
    for idx in [(0, 0, 1), (0, 3, 2), (1, 0, 0), (2, 2, 1), (0, 4, 0), (3, 0, 2)]:
      bump = jnp.zeros_like(e).at[idx].set(eps)
      numeric = (float(loss(params, e + bump)) - float(loss(params, e - bump))) / (2 * eps)
      np.testing.assert_allclose(float(g_e[idx]), numeric, rtol=1e-6, atol=1e-8,
                                 err_msg=str(idx))
    # Past a row's length the gradient is exactly zero: padding takes no part in the loss.
    assert float(g_e[0, 4, 0]) == 0.0 and float(g_e[3, 0, 2]) == 0.0


def test_bad_shapes_are_named():
  params = _params()
  with pytest.raises(ValueError, match="transitions"):
    crf.log_partition(params, np.zeros((2, 3, K + 1), np.float32), np.array([3, 3]))
  with pytest.raises(ValueError, match="lengths"):
    crf.viterbi(params, np.zeros((2, 3, K), np.float32), np.array([4, 1]))
