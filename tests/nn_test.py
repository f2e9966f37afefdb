"""Flax modules give the same numbers as the pure functions they wrap, on the same params."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import cells
from seqjax import kernels
from seqjax import layers
from seqjax import nn as seqnn
from seqjax import recurrent

B, T, D, H = 3, 6, 4, 5
LENGTHS = np.array([6, 2, 0])


def _assert_trees_close(a, b, atol=1e-6):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=atol, rtol=atol)


@pytest.mark.parametrize("cell,num_layers,bidirectional,opts", [
    ("lstm", 1, False, {"forget_bias": 1.0}),
    ("gru", 2, True, {"reset_after": False}),
    ("rnn", 2, False, {"nonlinearity": "relu"}),
])
def test_rnn_module_equals_pure_stack(cell, num_layers, bidirectional, opts):
  model = seqnn.RNN(hidden_size=H, cell=cell, num_layers=num_layers,
                    bidirectional=bidirectional, **opts)
  xs = jax.random.normal(jax.random.key(0), (B, T, D))
  variables = model.init(jax.random.key(1), xs, lengths=LENGTHS)
  # The module's params are exactly an init_stack list.
  params = seqnn.stack_params(variables["params"])
  expected_tree = recurrent.init_stack(jax.random.key(2), cell, D, H, num_layers, bidirectional)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, expected_tree)
  pure_cell = cells.get_cell(cell, **opts)
  ys, finals = model.apply(variables, xs, lengths=LENGTHS)
  ref_ys, ref_finals = recurrent.stack(pure_cell, params, xs, lengths=LENGTHS)
  _assert_trees_close((ys, finals), (ref_ys, ref_finals))
  # And pure params go back in: the round trip gives the same numbers.
  again = model.apply(seqnn.rnn_variables(params), xs, lengths=LENGTHS)
  _assert_trees_close(again, (ref_ys, ref_finals))


def test_rnn_module_passes_impl_and_kernel_settings_to_the_stack():
  # The same params through the plain scan and through the fused path with a lean forward.
  xs = jax.random.normal(jax.random.key(0), (B, T, D))
  scan = seqnn.RNN(hidden_size=H, cell="gru", num_layers=2, impl="scan")
  fused = seqnn.RNN(hidden_size=H, cell="gru", num_layers=2, impl="fused",
                    kernel_settings=kernels.Settings(forward="lean"))
  variables = scan.init(jax.random.key(1), xs)
  _assert_trees_close(fused.apply(variables, xs, lengths=LENGTHS),
                      scan.apply(variables, xs, lengths=LENGTHS), atol=1e-5)
  jaxpr = lambda model: str(jax.make_jaxpr(lambda v: model.apply(v, xs))(variables))
  assert "custom_vjp_call" in jaxpr(fused) and "custom_vjp_call" not in jaxpr(scan)
  with pytest.raises(ValueError, match="impl must be one of"):
    seqnn.RNN(hidden_size=H, impl="cuda").init(jax.random.key(1), xs)


def test_rnn_module_uses_cell_options_at_init():
  model = seqnn.RNN(hidden_size=H, cell="lstm", forget_bias=1.0)
  plain = seqnn.RNN(hidden_size=H, cell="lstm")
  xs = jnp.zeros((B, T, D))
  biased = model.init(jax.random.key(1), xs)["params"]["layer_0"]["fwd"]["b_hh"]
  base = plain.init(jax.random.key(1), xs)["params"]["layer_0"]["fwd"]["b_hh"]
  forget_slice_ones = np.eye(4)[[1]].T * np.ones((4, H))
  np.testing.assert_allclose((biased - base).reshape(4, H), forget_slice_ones, atol=1e-6)
  # A Cell value keeps its own options rather than taking the module's defaults.
  from_cell = seqnn.RNN(hidden_size=H, cell=cells.Cell("lstm", forget_bias=1.0))
  np.testing.assert_array_equal(
      from_cell.init(jax.random.key(1), xs)["params"]["layer_0"]["fwd"]["b_hh"], biased)


def test_rnn_module_initial_carry_and_param_dtype():
  model = seqnn.RNN(hidden_size=H, cell="gru", param_dtype=jnp.bfloat16)
  xs = jax.random.normal(jax.random.key(0), (B, T, D))
  variables = model.init(jax.random.key(1), xs)
  assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(variables))
  h0 = jax.random.normal(jax.random.key(3), (B, H))
  ys, finals = model.apply(variables, xs, lengths=LENGTHS, initial_carry=[h0])
  ref = recurrent.unroll("gru", variables["params"]["layer_0"]["fwd"], xs, lengths=LENGTHS,
                         initial_carry=h0)
  _assert_trees_close((ys, finals[0]), ref)
  assert finals[0].dtype == jnp.float32
  np.testing.assert_array_equal(finals[0][2], h0[2])  # length 0 keeps the initial carry


def test_rnn_module_dropout_uses_the_dropout_rng():
  model = seqnn.RNN(hidden_size=H, cell="lstm", num_layers=2, dropout_rate=0.5)
  xs = jax.random.normal(jax.random.key(0), (B, T, D))
  variables = model.init(jax.random.key(1), xs)
  params = seqnn.stack_params(variables)
  evaluation, _ = model.apply(variables, xs, lengths=LENGTHS)
  ref_eval, _ = recurrent.stack("lstm", params, xs, lengths=LENGTHS)
  _assert_trees_close(evaluation, ref_eval)
  key = jax.random.key(7)
  train, _ = model.apply(variables, xs, lengths=LENGTHS, deterministic=False,
                         rngs={"dropout": key})
  # Same key, same masks: flax hands the module a key derived from the 'dropout' stream.
  again, _ = model.apply(variables, xs, lengths=LENGTHS, deterministic=False,
                         rngs={"dropout": key})
  np.testing.assert_array_equal(train, again)
  assert float(jnp.abs(train - evaluation).max()) > 1e-2
  with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
    model.apply(variables, xs, deterministic=False)


def test_rnn_apply_under_jit_and_vmap_matches_eager():
  model = seqnn.RNN(hidden_size=H, cell="lstm", num_layers=2)
  xss = jax.random.normal(jax.random.key(0), (2, B, T, D))
  lengths = jnp.asarray([LENGTHS, LENGTHS[::-1]])
  variables = model.init(jax.random.key(1), xss[0], lengths=lengths[0])
  eager = [model.apply(variables, xss[k], lengths=lengths[k]) for k in range(2)]
  jitted = jax.jit(lambda v, x, n: model.apply(v, x, lengths=n))(variables, xss[0], lengths[0])
  _assert_trees_close(jitted, eager[0])
  mapped = jax.vmap(lambda x, n: model.apply(variables, x, lengths=n))(xss, lengths)
  for k in range(2):
    _assert_trees_close(jax.tree.map(lambda a: a[k], mapped), eager[k])


def test_rnn_module_bad_input():
  model = seqnn.RNN(hidden_size=H, cell="lstm")
  xs = jnp.zeros((B, T, D))
  variables = model.init(jax.random.key(1), xs)
  with pytest.raises(ValueError, match=r"xs must be \[batch, time, features\]"):
    model.apply(variables, xs[0])
  with pytest.raises(ValueError, match=r"xs has 3 features but this RNN's params expect 4"):
    model.apply(variables, xs[..., :3])
  with pytest.raises(ValueError, match=r"lengths must lie in \[0, 6\]"):
    model.apply(variables, xs, lengths=np.array([7, 1, 1]))
  with pytest.raises(ValueError, match="unknown cell 'lstmm'"):
    seqnn.RNN(hidden_size=H, cell="lstmm").init(jax.random.key(1), xs)
  with pytest.raises(ValueError, match="hidden_size and num_layers must be positive"):
    seqnn.RNN(hidden_size=0).init(jax.random.key(1), xs)


def test_embed_and_dense_modules_equal_pure_layers():
  tokens = np.array([[1, 2, 0], [6, 6, 3]], np.int32)
  class Tagger(nn.Module):
    """Embed -> RNN -> Dense, the shape of every model in this project."""

    @nn.compact
    def __call__(self, tokens, lengths):
      hidden = seqnn.Embed(vocab_size=7, features=D)(tokens)
      ys, _ = seqnn.RNN(hidden_size=H, cell="gru")(hidden, lengths=lengths)
      return seqnn.Dense(features=7)(ys)

  model = Tagger()
  lengths = np.array([3, 2])
  variables = model.init(jax.random.key(0), tokens, lengths)
  p = variables["params"]
  logits = model.apply(variables, tokens, lengths)
  hidden = layers.embed({"embedding": p["Embed_0"]["embedding"]}, tokens)
  ys, _ = recurrent.unroll("gru", p["RNN_0"]["layer_0"]["fwd"], hidden, lengths=lengths)
  np.testing.assert_allclose(logits, layers.dense(p["Dense_0"]["dense"], ys), atol=1e-6)
  with pytest.raises(ValueError, match=r"tokens must lie in \[0, 7\)"):
    model.apply(variables, tokens + 1, lengths)



def test_transformer_modules_equal_the_pure_functions():
  from seqjax.models import transformer  # pylint: disable=g-import-not-at-top
  spec = transformer.Spec(src_vocab=9, tgt_vocab=8, pad_id=0, bos_id=1, eos_id=2, d_model=8,
                          num_heads=2, ffn_size=8, encoder_layers=1, decoder_layers=1, max_len=6,
                          dropout=0.2, attention_dropout=0.2)
  model = seqnn.Transformer(spec)
  src, src_lengths = jnp.array([[3, 4, 5], [6, 0, 0]]), jnp.array([3, 1])
  tgt_in = jnp.array([[1, 3, 4, 5], [1, 6, 7, 3]])
  variables = jax.jit(model.init)(jax.random.key(0), src, src_lengths, tgt_in)
  # The module's params are exactly a transformer.init tree, and give forward's numbers.
  tree = variables["params"]["transformer"]
  assert jax.tree.structure(tree) == jax.tree.structure(
      jax.eval_shape(lambda key: transformer.init(key, spec), jax.random.key(0)))
  apply = jax.jit(model.apply, static_argnames=("deterministic",))
  logits, weights = apply(variables, src, src_lengths, tgt_in)
  want = jax.jit(transformer.forward, static_argnums=1)(tree, spec, src, src_lengths, tgt_in)
  _assert_trees_close((logits, weights), want)
  # Training asks for the 'dropout' rng (evaluation above needed none).
  with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
    jax.eval_shape(functools.partial(model.apply, deterministic=False), variables, src,
                   src_lengths, tgt_in)
  # The language model's module holds an init_lm tree.
  lm_spec = transformer.LMSpec(vocab=8, d_model=8, num_heads=2, ffn_size=8, num_layers=1,
                               max_len=6)
  lm_variables = jax.eval_shape(seqnn.TransformerLM(lm_spec).init, jax.random.key(1), tgt_in)
  assert jax.tree.structure(lm_variables["params"]["lm"]) == jax.tree.structure(
      jax.eval_shape(lambda key: transformer.init_lm(key, lm_spec), jax.random.key(0)))
