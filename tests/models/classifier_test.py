"""seqjax.models.classifier: every pooling reads valid steps only, against unpadded rows and
numpy formulas; 'last' against the recurrent layer's own final states."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import recurrent
from seqjax.models import classifier

LENGTHS = np.array([5, 2, 7, 1])


def _spec(pooling, bidirectional=True, cell="lstm"):
  return classifier.Spec(vocab_size=20, num_classes=3, embed_dim=6, hidden_size=5, cell=cell,
                         bidirectional=bidirectional, pooling=pooling, attention_size=4)


def _tokens(time, seed=0):
  """Random ids on valid steps, other random ids (not PAD) on padding: garbage must not leak."""
  rng = np.random.default_rng(seed)
  valid = np.arange(time)[None, :] < LENGTHS[:, None]
  return np.where(valid, rng.integers(4, 20, (len(LENGTHS), time)),
                  rng.integers(1, 20, (len(LENGTHS), time))).astype(np.int32)


@pytest.mark.parametrize("pooling", classifier.POOLINGS)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padding_changes_no_prediction(pooling, bidirectional):
  # Given one batch padded to 7 steps and the same texts padded to 12 with other garbage,
  spec = _spec(pooling, bidirectional)
  params = classifier.init(jax.random.PRNGKey(1), spec)
  short = _tokens(7, seed=0)
  long = _tokens(12, seed=1)
  long[:, :7] = np.where(np.arange(7)[None] < LENGTHS[:, None], short, long[:, :7])
  # when both are classified, and each row alone at its exact length,
  logits_short, w_short = classifier.apply(spec, params, short, LENGTHS)
  logits_long, w_long = classifier.apply(spec, params, long, LENGTHS)
  # then the logits agree, with each other and with the unpadded rows.
  np.testing.assert_allclose(logits_short, logits_long, rtol=1e-5, atol=1e-6)
  for row, n in enumerate(LENGTHS):
    alone, _ = classifier.apply(spec, params, short[row:row + 1, :n], LENGTHS[row:row + 1])
    np.testing.assert_allclose(logits_short[row], alone[0], rtol=1e-5, atol=1e-6)
  if pooling == "attention":
    w_long = np.asarray(w_long)
    np.testing.assert_allclose(w_long.sum(1), 1.0, rtol=1e-6)
    assert np.all(w_long[np.arange(12)[None] >= LENGTHS[:, None]] == 0.0)
    np.testing.assert_allclose(w_short, w_long[:, :7], rtol=1e-5, atol=1e-7)
  else:
    assert w_long is None


def test_pooled_vectors_match_formulas():
  rng = np.random.default_rng(3)
  ys = rng.normal(size=(4, 7, 6)).astype(np.float32) - 2.0  # mostly negative: max must mask
  ys[np.arange(7)[None] >= LENGTHS[:, None]] = 0.0  # what the recurrent layer emits there
  params = classifier.init_pooling(jax.random.PRNGKey(0), "attention", 6, 3)
  mean, _ = classifier.pool("mean", {}, ys, LENGTHS)
  biggest, _ = classifier.pool("max", {}, ys, LENGTHS)
  last, _ = classifier.pool("last", {}, ys, LENGTHS, bidirectional=True)
  attended, weights = classifier.pool("attention", params, ys, LENGTHS)
  for row, n in enumerate(LENGTHS):
    valid = ys[row, :n]
    np.testing.assert_allclose(mean[row], valid.mean(0), rtol=1e-6)
    np.testing.assert_allclose(biggest[row], valid.max(0), rtol=1e-6)
    np.testing.assert_allclose(last[row], np.concatenate([valid[-1, :3], valid[0, 3:]]))
    scores = np.tanh(valid @ params["proj"]["w"] + params["proj"]["b"]) @ params["score"]["w"]
    expected = np.exp(scores[:, 0] - scores.max())
    expected /= expected.sum()
    np.testing.assert_allclose(weights[row, :n], expected, rtol=1e-5)
    np.testing.assert_allclose(attended[row], expected @ valid, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_last_pooling_is_each_directions_final_state(cell):
  spec = _spec("last", cell=cell)
  params = classifier.init(jax.random.PRNGKey(2), spec)
  tokens = _tokens(7)
  ys = classifier.encode(spec, params, tokens, LENGTHS)
  pooled, _ = classifier.pool("last", {}, ys, LENGTHS, bidirectional=True)
  for row, n in enumerate(LENGTHS):
    xs = params["embed"]["embedding"][tokens[row:row + 1, :n]]
    _, fwd = recurrent.unroll(cell, params["rnn"][0]["fwd"], xs)
    _, bwd = recurrent.unroll(cell, params["rnn"][0]["bwd"], xs[:, ::-1])
    h = lambda carry: carry[0] if isinstance(carry, tuple) else carry
    np.testing.assert_allclose(pooled[row], jnp.concatenate([h(fwd)[0], h(bwd)[0]]),
                               rtol=1e-5, atol=1e-6)


def test_dropout_only_with_a_key_and_bad_settings_named():
  spec = classifier.Spec(vocab_size=20, num_classes=2, embed_dim=6, hidden_size=5,
                         word_dropout=0.3, embed_dropout=0.5, output_dropout=0.5)
  params = classifier.init(jax.random.PRNGKey(0), spec)
  tokens = _tokens(7)
  a, _ = classifier.apply(spec, params, tokens, LENGTHS)
  b, _ = classifier.apply(spec, params, tokens, LENGTHS)
  c, _ = classifier.apply(spec, params, tokens, LENGTHS, key=jax.random.PRNGKey(5))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  with pytest.raises(ValueError, match="pooling must be one of"):
    classifier.pool("median", {}, np.zeros((1, 2, 3)), np.array([2]))
  with pytest.raises(ValueError, match=r"embedding table is \(3, 6\)"):
    classifier.init(jax.random.PRNGKey(0), spec, embedding=np.zeros((3, 6)))
