"""Encoder-decoder: step-by-step decoding vs teacher forcing, padding, PyTorch on the same weights."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from seqjax import decoding
from seqjax.models import encdec

BOS, EOS = 1, 2
SPECS = {
    "lstm_no_context": dict(cell="lstm", encoder_layers=2, decoder_layers=2, attention="none",
                            feed_context=False, reverse_source=True),
    "gru_context": dict(cell="gru", attention="none", feed_context=True),
    "bigru_additive": dict(cell="gru", bidirectional=True, attention="additive"),
    "lstm_dot": dict(cell="lstm", attention="dot", decoder_layers=2),
    "bilstm_general": dict(cell="lstm", bidirectional=True, encoder_layers=2, attention="general"),
}


def _spec(name, **overrides):
  return encdec.Spec(src_vocab=13, tgt_vocab=11, embed_size=6, hidden_size=8, attention_size=7,
                     **dict(SPECS[name], **overrides))


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  src = rng.integers(4, 13, size=(3, 7)).astype(np.int32)
  src_lengths = np.array([7, 4, 1], np.int32)
  src[np.arange(7)[None, :] >= src_lengths[:, None]] = 0
  return jnp.asarray(src), jnp.asarray(src_lengths)


@functools.partial(jax.jit, static_argnames=("spec", "beam_size", "sample"))
def _decode(params, spec, src, src_lengths, beam_size=0, sample=False, alpha=0.0):
  state = encdec.encode(params, spec, src, src_lengths)
  step_fn = encdec.log_prob_step(params, spec)
  if sample:
    return decoding.sample(step_fn, state, jax.random.PRNGKey(0), max_len=6, bos_id=BOS,
                           eos_id=EOS)
  if beam_size:
    return decoding.beam_search(step_fn, state, beam_size=beam_size, max_len=6, bos_id=BOS,
                                eos_id=EOS, alpha=alpha)
  return decoding.greedy(step_fn, state, max_len=6, bos_id=BOS, eos_id=EOS)


@pytest.mark.parametrize("name", list(SPECS))
def test_step_by_step_decoding_scores_like_teacher_forcing(name):
  # Given: a random model and outputs sampled from it step by step, their log-probs summed.
  spec = _spec(name)
  params = encdec.init(jax.random.PRNGKey(0), spec)
  params["output"]["b"] = params["output"]["b"].at[EOS].add(1.0)
  src, src_lengths = _batch()
  out = _decode(params, spec, src, src_lengths, sample=True)
  assert len(set(np.asarray(out.lengths).tolist())) > 1  # padding is part of the check

  # When: the same outputs are scored by teacher forcing (one scan over the gold prefix).
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  tgt_in = np.concatenate([np.full((3, 1), BOS), tokens[:, :-1]], axis=1)
  mask = (np.arange(tokens.shape[1])[None, :] < lengths[:, None]).astype(np.float32)
  scored = encdec.score(params, spec, src, src_lengths, tgt_in, tokens, mask)

  # Then: both give the same log-probability, and the same attention weights.
  np.testing.assert_allclose(scored, out.log_probs, rtol=1e-5, atol=1e-5)
  _, weights = encdec.forward(params, spec, src, src_lengths, jnp.asarray(tgt_in))
  if spec.attention == "none":
    assert weights is None and out.attention is None
  else:
    np.testing.assert_allclose(weights * mask[:, :, None], out.attention, atol=1e-6)
    np.testing.assert_allclose(np.sum(out.attention, -1), mask, rtol=1e-5)
    assert np.all(np.asarray(out.attention)[2, :, 1:] == 0.0)  # source of length 1


@pytest.mark.parametrize("name", ["bigru_additive", "lstm_no_context"])
def test_beam_width_one_equals_greedy_on_a_model(name):
  spec = _spec(name)
  params = encdec.init(jax.random.PRNGKey(1), spec)
  src, src_lengths = _batch(1)
  greedy = _decode(params, spec, src, src_lengths)
  beam = _decode(params, spec, src, src_lengths, beam_size=1)
  np.testing.assert_array_equal(beam.tokens[:, 0], greedy.tokens)
  np.testing.assert_allclose(beam.log_probs[:, 0], greedy.log_probs, rtol=1e-5)


@pytest.fixture(scope="module")
def beam_and_rescored():
  """Beam search (4 beams, alpha 0.6) on a random bi-GRU + additive attention model, and every
  returned hypothesis rescored by teacher forcing; compiled once for the tests below."""
  spec = _spec("bigru_additive")
  params = encdec.init(jax.random.PRNGKey(3), spec)
  # Sharper, source-dependent distributions than the init's near-uniform ones, so beams differ
  # and get reordered; an EOS handicap leaves some hypotheses ended and some cut at max_len.
  params = dict(params, src_embed=params["src_embed"] * 10, tgt_embed=params["tgt_embed"] * 10,
                output=dict(w=params["output"]["w"] * 6,
                            b=params["output"]["b"].at[EOS].add(-1.0)))
  src, src_lengths = _batch(3)
  beam = jax.tree.map(np.asarray, _decode(params, spec, src, src_lengths, beam_size=4,
                                          alpha=0.6))
  b, n, t = beam.tokens.shape
  tokens = beam.tokens.reshape(b * n, t)
  tgt_in = np.concatenate([np.full((b * n, 1), BOS), tokens[:, :-1]], axis=1)
  mask = (np.arange(t)[None, :] < beam.lengths.reshape(-1, 1)).astype(np.float32)
  logits, weights = jax.jit(encdec.forward, static_argnums=1)(
      params, spec, jnp.repeat(src, n, axis=0), jnp.repeat(src_lengths, n), jnp.asarray(tgt_in))
  rescored = np.sum(np.asarray(encdec.token_log_probs(logits, tokens)) * mask, axis=1)
  return beam, rescored.reshape(b, n), (np.asarray(weights) * mask[:, :, None]).reshape(
      beam.attention.shape)


def test_beam_hypotheses_rescore_to_their_beam_log_probs(beam_and_rescored):
  # Given: the hypotheses of a 4-wide beam over a real decoder, whose carries and attention
  # queries the search must move with every beam it reorders.
  beam, rescored, _ = beam_and_rescored
  assert 1 < len(set(beam.lengths.ravel().tolist()))  # ended and cut-off hypotheses alike
  # Then: teacher forcing over each hypothesis's tokens gives exactly the log-prob the search
  # accumulated, and the score is that log-prob over the GNMT length penalty.
  np.testing.assert_allclose(beam.log_probs, rescored, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(beam.scores,
                             beam.log_probs / ((5.0 + beam.lengths) / 6.0) ** 0.6, rtol=1e-6)


def test_beam_attention_equals_teacher_forced_attention(beam_and_rescored):
  beam, _, teacher_forced = beam_and_rescored
  np.testing.assert_allclose(beam.attention, teacher_forced, atol=1e-6)


def test_beam_hypotheses_are_distinct_and_best_first(beam_and_rescored):
  beam, _, _ = beam_and_rescored
  for tokens, lengths, scores in zip(beam.tokens, beam.lengths, beam.scores):
    assert np.all(np.isfinite(scores)) and np.all(np.diff(scores) <= 0.0)
    assert len({tuple(seq[:n]) for seq, n in zip(tokens.tolist(), lengths)}) == len(tokens)


@pytest.mark.parametrize("name", ["bigru_additive", "lstm_no_context", "bilstm_general"])
def test_padded_batch_equals_unpadded_rows(name):
  spec = _spec(name)
  params = encdec.init(jax.random.PRNGKey(2), spec)
  src, src_lengths = _batch(2)
  tgt_in = jnp.asarray(np.random.default_rng(3).integers(3, 11, size=(3, 4)), jnp.int32)
  batched, _ = encdec.forward(params, spec, src, src_lengths, tgt_in)
  for row, n in enumerate(np.asarray(src_lengths)):
    alone, _ = encdec.forward(params, spec, src[row:row + 1, :n], src_lengths[row:row + 1],
                              tgt_in[row:row + 1])
    np.testing.assert_allclose(batched[row], alone[0], rtol=1e-5, atol=1e-5)


def test_out_of_range_padding_ids_give_the_gradients_of_valid_ones():
  # Given a source padded with -100 and targets ignored with -100, as PyTorch pipelines do:
  # under jit an out-of-range id embeds as NaN (layers.embed), so the encoder sees NaN padding.
  spec = _spec("bilstm_general", reverse_source=True)
  params = encdec.init(jax.random.PRNGKey(12), spec)
  src, src_lengths = _batch(12)
  pad = np.arange(src.shape[1])[None, :] >= np.asarray(src_lengths)[:, None]
  tgt = jnp.asarray(np.random.default_rng(13).integers(3, 11, size=(3, 5)), jnp.int32)
  tgt_mask = jnp.asarray(np.arange(5)[None, :] < np.array([[5], [2], [3]]))

  @jax.jit
  def loss_and_grads(src, tgt_out):
    def loss(params):
      logits, _ = encdec.forward(params, spec, src, src_lengths, tgt)
      return encdec.loss(logits, tgt_out, tgt_mask, label_smoothing=0.1)[0]
    return jax.value_and_grad(loss)(params)
  # When the loss and its gradients are taken with those ids and with valid ones (0) there.
  dirty = loss_and_grads(jnp.where(pad, -100, src), jnp.where(tgt_mask, tgt, -100))
  clean = loss_and_grads(src, tgt)
  # Then they agree, and every gradient is finite.
  for a, b in zip(jax.tree.leaves(dirty), jax.tree.leaves(clean)):
    assert np.isfinite(a).all(), "a NaN or inf from padding reached the loss or a gradient"
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_reverse_source_reads_the_source_backwards():
  spec = _spec("lstm_no_context")
  params = encdec.init(jax.random.PRNGKey(4), spec)
  src, src_lengths = _batch(4)
  backwards = np.asarray(src).copy()
  for row, n in enumerate(np.asarray(src_lengths)):
    backwards[row, :n] = backwards[row, :n][::-1]
  reversed_state = encdec.encode(params, spec, src, src_lengths)
  plain_state = encdec.encode(params, _spec("lstm_no_context", reverse_source=False),
                              jnp.asarray(backwards), src_lengths)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6), reversed_state,
               plain_state)


def _torch_bahdanau_logits(params, spec, src, src_lengths, tgt_in):
  """bentrevett/pytorch-seq2seq tutorial 3 (bi-GRU + additive attention) with our weights."""
  t = lambda x: torch.tensor(np.asarray(x), dtype=torch.float64)
  h = spec.hidden_size
  gru = torch.nn.GRU(spec.embed_size, h, batch_first=True, bidirectional=True).double()
  enc = params["encoder"][0]
  with torch.no_grad():
    for suffix, direction in (("", "fwd"), ("_reverse", "bwd")):
      for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        torch_name = name.replace("w_", "weight_").replace("b_", "bias_") + "_l0" + suffix
        value = enc[direction][name]
        getattr(gru, torch_name).copy_(t(value.T if name.startswith("w") else value))
  embedded = t(params["src_embed"])[torch.tensor(np.asarray(src), dtype=torch.long)]
  packed = torch.nn.utils.rnn.pack_padded_sequence(
      embedded, torch.tensor(np.asarray(src_lengths)), batch_first=True, enforce_sorted=False)
  outputs, final = gru(packed)
  outputs, _ = torch.nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True,
                                                      total_length=src.shape[1])
  hidden = torch.tanh(torch.cat([final[0], final[1]], -1) @ t(params["bridge"]["w"])
                      + t(params["bridge"]["b"]))
  att = {k: t(v) for k, v in params["attention"].items()}
  dec = {k: t(v) for k, v in params["decoder"][0].items()}
  cell = torch.nn.GRUCell(spec.embed_size + 2 * h, h).double()
  with torch.no_grad():
    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
      target = getattr(cell, name.replace("w_", "weight_").replace("b_", "bias_"))
      target.copy_(dec[name].T if name.startswith("w") else dec[name])
  mask = torch.arange(src.shape[1])[None, :] < torch.tensor(np.asarray(src_lengths))[:, None]
  logits = []
  for step in range(tgt_in.shape[1]):
    emb = t(params["tgt_embed"])[torch.tensor(np.asarray(tgt_in[:, step]), dtype=torch.long)]
    energy = torch.tanh((hidden @ att["w_query"])[:, None] + outputs @ att["w_key"] + att["bias"])
    weights = torch.softmax((energy @ att["v"]).masked_fill(~mask, -1e10), dim=1)
    context = torch.einsum("bs,bsk->bk", weights, outputs)
    hidden = cell(torch.cat([emb, context], -1), hidden)
    logits.append(torch.cat([hidden, context, emb], -1) @ t(params["output"]["w"])
                  + t(params["output"]["b"]))
  return torch.stack(logits, 1).detach().numpy()


def test_bigru_additive_matches_pytorch_on_the_same_weights():
  spec = _spec("bigru_additive")
  params = encdec.init(jax.random.PRNGKey(5), spec)
  src, src_lengths = _batch(5)
  tgt_in = jnp.asarray(np.random.default_rng(6).integers(3, 11, size=(3, 5)), jnp.int32)
  ours, _ = encdec.forward(params, spec, src, src_lengths, tgt_in)
  theirs = _torch_bahdanau_logits(params, spec, src, src_lengths, tgt_in)
  # pad and bos are pinned to a very negative logit in seqjax (never a correct next token).
  np.testing.assert_allclose(np.asarray(ours)[..., 2:], theirs[..., 2:], rtol=1e-4, atol=1e-5)
  assert np.all(np.asarray(ours)[..., :2] < -1e8)


def test_loss_ignores_padding_and_smooths_over_emittable_tokens():
  logits = jnp.asarray(np.random.default_rng(7).normal(size=(2, 3, 5)), jnp.float32)
  logits = logits.at[..., :2].set(-1e9)  # pad and bos, as the model pins them
  targets = jnp.array([[2, 3, 0], [4, 0, 0]])
  mask = jnp.array([[1, 1, 0], [1, 0, 0]], jnp.float32)
  log_probs = np.asarray(jax.nn.log_softmax(logits, -1))
  nll = -np.array([log_probs[0, 0, 2], log_probs[0, 1, 3], log_probs[1, 0, 4]])
  smooth = -np.array([log_probs[0, 0, 2:].mean(), log_probs[0, 1, 2:].mean(),
                      log_probs[1, 0, 2:].mean()])
  loss, tokens = encdec.loss(logits, targets, mask, label_smoothing=0.1)
  assert tokens == 3
  np.testing.assert_allclose(loss, np.mean(0.9 * nll + 0.1 * smooth), rtol=1e-5)
  # The sum over valid tokens, for a count summed over devices before dividing.
  total, tokens = encdec.loss(logits, targets, mask, label_smoothing=0.1, reduction="sum")
  assert tokens == 3
  np.testing.assert_allclose(total, np.sum(0.9 * nll + 0.1 * smooth), rtol=1e-5)
  with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
    encdec.loss(logits, targets, mask, reduction="none")


def test_bad_specs_get_clear_errors():
  with pytest.raises(ValueError, match="unknown attention 'luong'"):
    _spec("gru_context", attention="luong")
  with pytest.raises(ValueError, match="dot attention needs decoder size"):
    _spec("lstm_dot", bidirectional=True)
  with pytest.raises(ValueError, match="unknown cell"):
    _spec("gru_context", cell="transformer")
  spec = _spec("gru_context")
  params = encdec.init(jax.random.PRNGKey(0), spec)
  with pytest.raises(ValueError, match=r"src must be \[b, s\] ids"):
    encdec.encode(params, spec, jnp.zeros((3,), jnp.int32), jnp.ones((3,), jnp.int32))


@pytest.mark.parametrize("name", ["bigru_additive", "lstm_no_context"])
def test_dropout_with_per_example_keys_does_not_depend_on_the_batch_split(name):
  # Given: a model with dropout at every site and one key per example.
  spec = _spec(name, encoder_layers=2, decoder_layers=2, dropout=0.3)
  params = encdec.init(jax.random.PRNGKey(8), spec)
  src, src_lengths = _batch(8)
  tgt_in = jnp.asarray(np.random.default_rng(9).integers(3, 11, size=(3, 5)), jnp.int32)
  keys = jax.random.split(jax.random.key(10), 3)
  forward = jax.jit(encdec.forward, static_argnums=1)
  # When: the whole batch and its parts run with their own rows' keys.
  whole, _ = forward(params, spec, src, src_lengths, tgt_in, keys)
  parts = [forward(params, spec, src[rows], src_lengths[rows], tgt_in[rows], keys[rows])[0]
           for rows in (slice(0, 2), slice(2, 3))]
  # Then: the same logits row by row, and dropout did act (unlike evaluation).
  np.testing.assert_allclose(whole, jnp.concatenate(parts), rtol=1e-5, atol=1e-5)
  plain, _ = forward(params, spec, src, src_lengths, tgt_in)
  assert np.abs(np.asarray(whole - plain)[..., 2:]).max() > 1e-2
  # One key for the whole batch still works, and is deterministic.
  single, _ = forward(params, spec, src, src_lengths, tgt_in, jax.random.PRNGKey(11))
  again, _ = forward(params, spec, src, src_lengths, tgt_in, jax.random.PRNGKey(11))
  np.testing.assert_array_equal(single, again)
  assert np.abs(np.asarray(single - plain)[..., 2:]).max() > 1e-2
