"""Transformer: PyTorch layers on copied weights, cached decoding vs teacher forcing, masks,
beam search vs greedy, bad input."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from seqjax import attention
from seqjax import decoding
from seqjax.models import transformer
from seqjax.models import transformer_blocks as blocks

PAD, BOS, EOS = 0, 1, 2
B, S, T, D, HEADS, FFN = 3, 7, 6, 16, 4, 24


def _spec(**overrides):
  options = dict(src_vocab=13, tgt_vocab=11, pad_id=PAD, bos_id=BOS, eos_id=EOS, d_model=D,
                 num_heads=HEADS, ffn_size=FFN, encoder_layers=1, decoder_layers=2, max_len=9)
  return transformer.Spec(**dict(options, **overrides))


_init = jax.jit(transformer.init, static_argnums=1)
_forward = jax.jit(transformer.forward, static_argnums=1)


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  src = rng.integers(3, 13, size=(B, S)).astype(np.int32)
  src_lengths = np.array([S, 4, 1], np.int32)
  src[np.arange(S)[None, :] >= src_lengths[:, None]] = PAD
  tgt_in = rng.integers(3, 11, size=(B, T)).astype(np.int32)
  tgt_in[:, 0] = BOS
  return src, src_lengths, tgt_in


# ----------------------------------------------------------------------------- PyTorch layers
def _params_from_torch(arrays: dict, cross: bool) -> dict:
  """A torch layer's named arrays (weights or their gradients) in seqjax's layer layout."""
  def linear(name):
    return {"w": arrays[f"{name}.weight"].T, "b": arrays[f"{name}.bias"]}

  def norm(name):
    return {"scale": arrays[f"{name}.weight"], "bias": arrays[f"{name}.bias"]}
  params = {
      "self_attn": {"qkv": {"w": arrays["self_attn.in_proj_weight"].T,
                            "b": arrays["self_attn.in_proj_bias"]},
                    "out": linear("self_attn.out_proj")},
      "ffn": {"in": linear("linear1"), "out": linear("linear2")},
      "self_norm": norm("norm1"),
      "ffn_norm": norm("norm3" if cross else "norm2"),
  }
  if cross:
    w, b = arrays["multihead_attn.in_proj_weight"], arrays["multihead_attn.in_proj_bias"]
    params["cross_attn"] = {"q": {"w": w[:D].T, "b": b[:D]}, "kv": {"w": w[D:].T, "b": b[D:]},
                            "out": linear("multihead_attn.out_proj")}
    params["cross_norm"] = norm("norm2")
  return params


@functools.partial(jax.jit, static_argnames=("spec", "cross"))
def _layer_value_and_grads(params, spec, x, memory, src_mask, probe, cross):
  """Output and gradients of ``sum(layer(x) * probe)`` w.r.t. the weights, x and the memory."""
  def loss(params, x, memory):
    if cross:
      out, _, _ = blocks.layer(params, spec, x, attention.causal_mask(x.shape[1]),
                               memory_kv=blocks.memory_keys_values(params, spec, memory),
                               cross_mask=src_mask[:, None, None, :])
    else:
      out, _, _ = blocks.layer(params, spec, x, src_mask[:, None, None, :])
    return jnp.sum(out * probe), out
  return jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(params, x, memory)


@pytest.mark.parametrize("cross", [False, True], ids=["encoder", "decoder"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post", "pre"])
def test_layer_matches_torch_outputs_and_gradients(cross, norm_first):
  # Given: a torch layer (train mode with dropout 0: no fast path, so padded queries are
  # computed, not zeroed, and every position is compared) with random biases and norms.
  torch.manual_seed(0)
  activation = "gelu" if norm_first else "relu"
  kind = torch.nn.TransformerDecoderLayer if cross else torch.nn.TransformerEncoderLayer
  layer = kind(D, HEADS, FFN, dropout=0.0, activation=activation, batch_first=True,
               norm_first=norm_first).train()
  with torch.no_grad():
    for name, value in layer.named_parameters():
      if name.endswith("bias") or name.startswith("norm"):
        value.copy_(torch.randn_like(value) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
  rng = np.random.default_rng(1)
  x = rng.normal(size=(B, T if cross else S, D)).astype(np.float32)
  memory = rng.normal(size=(B, S, D)).astype(np.float32)
  src_lengths = np.array([S, 4, 1])
  pad = np.arange(S)[None, :] >= src_lengths[:, None]
  probe = rng.normal(size=x.shape).astype(np.float32)
  x_t, memory_t = torch.tensor(x, requires_grad=True), torch.tensor(memory, requires_grad=True)
  if cross:
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    out_t = layer(x_t, memory_t, tgt_mask=causal, memory_key_padding_mask=torch.tensor(pad))
  else:
    out_t = layer(x_t, src_key_padding_mask=torch.tensor(pad))
  (out_t * torch.tensor(probe)).sum().backward()
  weights = {n: p.detach().numpy() for n, p in layer.named_parameters()}
  grads = {n: p.grad.numpy() for n, p in layer.named_parameters()}
  spec = _spec(dropout=0.0, attention_dropout=0.0, norm="pre" if norm_first else "post",
               activation=activation)
  # When: the seqjax layer runs on the same weights.
  (grad_params, grad_x, grad_memory), out = _layer_value_and_grads(
      _params_from_torch(weights, cross), spec, x, memory, ~pad, probe, cross)
  # Then: outputs and the gradients w.r.t. the input, the memory and every weight agree.
  np.testing.assert_allclose(out, out_t.detach().numpy(), atol=1e-5, rtol=0)
  np.testing.assert_allclose(grad_x, x_t.grad.numpy(), atol=1e-5, rtol=0)
  if cross:
    np.testing.assert_allclose(grad_memory, memory_t.grad.numpy(), atol=1e-5, rtol=0)
  want = _params_from_torch(grads, cross)
  assert jax.tree.structure(grad_params) == jax.tree.structure(want)
  for path, got in jax.tree_util.tree_leaves_with_path(grad_params):
    np.testing.assert_allclose(got, functools.reduce(lambda t, k: t[k.key], path, want),
                               atol=1e-5, rtol=0, err_msg=jax.tree_util.keystr(path))


# ----------------------------------------------------------------------------- decoding
@functools.partial(jax.jit, static_argnames=("spec", "cache_len"))
def _step_by_step(params, spec, src, src_lengths, tgt_in, cache_len=None):
  state = transformer.encode(params, spec, src, src_lengths, cache_len=cache_len)

  def body(state, tokens):
    state, logits, weights = transformer.decode_step(params, spec, state, tokens)
    return state, (logits, weights)
  _, (logits, weights) = jax.lax.scan(body, state, tgt_in.T)
  return jnp.swapaxes(logits, 0, 1), jnp.swapaxes(weights, 0, 1)


VARIANTS = {
    "post_learned": dict(),
    "pre_sinusoidal_shared": dict(norm="pre", activation="gelu", positions="sinusoidal",
                                  share_embeddings=True, tgt_vocab=13, tie_output=True,
                                  decoder_layers=1),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def model(request):
  spec = _spec(**VARIANTS[request.param])
  return spec, _init(jax.random.key(0), spec)


def test_cached_decoding_gives_the_teacher_forced_logits_at_every_step(model):
  # Given: a random model and a padded batch.
  spec, params = model
  src, src_lengths, tgt_in = _batch()
  # When: decoding one token at a time through the cache (as long as max_len, or one slot
  # shorter than the target), and all at once.
  cache_len = spec.max_len if spec.norm == "post" else T - 1
  logits, weights = _step_by_step(params, spec, src, src_lengths, tgt_in, cache_len)
  full_logits, full_weights = _forward(params, spec, src, src_lengths, tgt_in)
  # Then: the same logits and cross-attention at every step the cache holds (finite: NaN would
  # compare equal), and NaN logits past it, where jit cannot raise.
  assert np.isfinite(full_logits).all()
  np.testing.assert_allclose(logits[:, :cache_len], full_logits[:, :cache_len], atol=1e-5, rtol=0)
  np.testing.assert_allclose(weights[:, :cache_len], full_weights[:, :cache_len], atol=1e-6,
                             rtol=0)
  assert np.isnan(logits[:, cache_len:]).all()


def test_padded_source_and_future_target_tokens_change_no_output(model):
  spec, params = model
  src, src_lengths, tgt_in = _batch()
  logits, weights = _forward(params, spec, src, src_lengths, tgt_in)
  # Padded source ids changed: every logit and attention weight stays the same.
  other_src = np.where(src == PAD, np.arange(S)[None, :] + 4, src).astype(np.int32)
  assert (other_src != src).any()
  other_logits, other_weights = _forward(params, spec, other_src, src_lengths, tgt_in)
  np.testing.assert_allclose(other_logits, logits, atol=1e-6, rtol=0)
  np.testing.assert_allclose(other_weights, weights, atol=1e-7, rtol=0)
  padded = np.broadcast_to((np.arange(S)[None, :] >= src_lengths[:, None])[:, None], weights.shape)
  assert np.all(np.asarray(weights)[padded] == 0)
  # Target ids from position 3 on changed: positions 0..2 stay the same, 3 does not.
  later_tgt = tgt_in.copy()
  later_tgt[:, 3:] = (later_tgt[:, 3:] + 1 - 3) % 8 + 3
  later_logits, _ = _forward(params, spec, src, src_lengths, later_tgt)
  np.testing.assert_allclose(later_logits[:, :3], logits[:, :3], atol=1e-6, rtol=0)
  assert np.abs(later_logits[:, 3] - logits[:, 3]).max() > 1e-3


@functools.partial(jax.jit, static_argnames=("spec", "beam_size"))
def _decode(params, spec, src, src_lengths, beam_size):
  state = transformer.encode(params, spec, src, src_lengths)
  step_fn = transformer.log_prob_step(params, spec)
  options = dict(max_len=spec.max_len, bos_id=BOS, eos_id=EOS, pad_id=PAD)
  if beam_size:
    return decoding.beam_search(step_fn, state, beam_size=beam_size, alpha=0.6, **options)
  return decoding.greedy(step_fn, state, **options)


def test_beam_width_one_equals_greedy():
  # Given: a random model whose outputs vary in length (eos made neither certain nor rare).
  spec = _spec(**VARIANTS["pre_sinusoidal_shared"])  # one decoder layer: a quicker compile
  params = _init(jax.random.key(0), spec)
  params = dict(params, output=dict(params["output"], b=params["output"]["b"].at[EOS].set(4.0)))
  src, src_lengths, _ = _batch(3)
  greedy = _decode(params, spec, src, src_lengths, 0)
  beam = _decode(params, spec, src, src_lengths, 1)
  assert len(set(np.asarray(greedy.lengths).tolist())) > 1
  np.testing.assert_array_equal(beam.tokens[:, 0], greedy.tokens)
  np.testing.assert_allclose(beam.log_probs[:, 0], greedy.log_probs, atol=1e-5)


def test_attention_maps_are_the_weights_forward_averages():
  spec = _spec()
  params = _init(jax.random.key(0), spec)
  src, src_lengths, tgt_in = _batch()
  maps = jax.jit(transformer.attention_maps, static_argnums=1)(params, spec, src, src_lengths,
                                                               tgt_in)
  _, weights = _forward(params, spec, src, src_lengths, tgt_in)
  assert maps["encoder_self"].shape == (1, B, HEADS, S, S)
  assert maps["decoder_self"].shape == (2, B, HEADS, T, T)
  np.testing.assert_allclose(maps["cross"][-1].mean(axis=1), weights, atol=1e-6)
  for name in maps:
    np.testing.assert_allclose(maps[name].sum(-1), 1.0, atol=1e-5)
  assert np.all(np.triu(np.asarray(maps["decoder_self"]), k=1) == 0)  # no peeking ahead
  assert np.all(np.asarray(maps["encoder_self"])[:, 1, :, :, 4:] == 0)  # row 1 has 4 tokens


def test_per_example_dropout_keys_make_each_row_independent_of_its_batch():
  # Given: per-example keys, as the runtime's global loss reduction makes them.
  # (The one-decoder-layer variant: a quicker compile; its init and plain forward are cached.)
  base = _spec(**VARIANTS["pre_sinusoidal_shared"])
  spec = dataclasses.replace(base, dropout=0.3, attention_dropout=0.3)
  params = _init(jax.random.key(0), base)
  src, src_lengths, tgt_in = _batch()
  keys = jax.random.split(jax.random.key(1), B)
  order = np.array([2, 0, 1])
  # When: the batch runs once as it is and once reordered, each row with its own key.
  logits, _ = _forward(params, spec, src, src_lengths, tgt_in, keys)
  reordered, _ = _forward(params, spec, src[order], src_lengths[order], tgt_in[order], keys[order])
  plain, _ = _forward(params, base, src, src_lengths, tgt_in)
  # Then: each row's logits follow it (its masks depend on its key alone), and dropout acted.
  np.testing.assert_allclose(reordered, logits[order], atol=1e-5, rtol=0)
  assert np.abs(logits - plain).max() > 1e-2


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("overrides,message", [
    (dict(d_model=250, num_heads=8), "d_model=250 is not divisible by num_heads=8"),
    (dict(positions="rotary"), "unknown positions 'rotary'"),
    (dict(norm="sandwich"), "unknown norm 'sandwich'"),
    (dict(activation="tanh"), "unknown activation 'tanh'"),
    (dict(share_embeddings=True), "share_embeddings needs src_vocab == tgt_vocab; got 13 and 11"),
    (dict(eos_id=11), "eos_id=11 is outside the target vocabulary"),
    (dict(dropout=1.0), "dropout must be in [0, 1); got 1.0"),
])
def test_bad_spec_is_a_one_line_error_naming_the_values(overrides, message):
  with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")
                     .replace(")", r"\)")) as error:
    _spec(**overrides)
  assert "\n" not in str(error.value)


def test_positions_beyond_max_len_are_a_one_line_error(model):
  spec, params = model
  src, src_lengths, tgt_in = _batch()
  long = np.ones((B, spec.max_len + 1), np.int32)
  with pytest.raises(ValueError, match="target length 10 exceeds max_len=9"):
    transformer.forward(params, spec, src, src_lengths, long)
  with pytest.raises(ValueError, match="source length 10 exceeds max_len=9"):
    transformer.encode(params, spec, long, np.full((B,), 10, np.int32))
  with pytest.raises(ValueError, match="decoding length 12 exceeds max_len=9"):
    transformer.check_decode_length(spec, 12)
  # Only the steps and the cache's length are read before the check.
  cache = [{"k": jax.ShapeDtypeStruct((B, spec.max_len, HEADS, D // HEADS), jnp.float32)}]
  with pytest.raises(ValueError, match="decoding position 9 is beyond max_len=9"):
    transformer.decode_step(params, spec, {"step": np.full((B,), 9), "cache": cache},
                            tgt_in[:, 0])
  cache = [{"k": jax.ShapeDtypeStruct((B, 6, HEADS, D // HEADS), jnp.float32)}]
  with pytest.raises(ValueError, match=r"decoding position 6 is beyond the cache's 6 slots \(max"):
    transformer.decode_step(params, spec, {"step": np.full((B,), 6), "cache": cache},
                            tgt_in[:, 0])
  with pytest.raises(ValueError, match=r"cache_len=10 must be in \[1, max_len=9\]"):
    transformer.encode(params, spec, src, src_lengths, cache_len=10)
