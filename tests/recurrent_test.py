"""The scan engine: lengths, reverse, bidirectional layers, stacks, transforms and bad input.

Numbers are checked against uninterrupted / unpadded runs and against layers composed by hand;
the cell arithmetic itself is checked against NumPy in ``cells_test.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import cells
from seqjax import layers
from seqjax import recurrent

B, T, D, H = 4, 7, 3, 5
LENGTHS = np.array([7, 4, 1, 0])
ATOL = 1e-6


def _setup(name="lstm", seed=0, d=D, **opts):
  cell = cells.get_cell(name, **opts)
  params = cell.init(jax.random.key(seed), d, H)
  xs = jax.random.normal(jax.random.key(seed + 1), (B, T, d))
  return cell, params, xs


def _random_carry(cell, seed, batch=B):
  keys = jax.random.split(jax.random.key(seed), 2)
  h = jax.random.normal(keys[0], (batch, H))
  return (h, jax.random.normal(keys[1], (batch, H))) if cell.has_cell_state else h


def _row(tree, n):
  """Example ``n`` of a batched pytree, keeping a batch axis of 1."""
  return jax.tree.map(lambda a: a[n:n + 1], tree)


def _assert_trees_close(a, b, atol=ATOL):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=atol, rtol=atol)


# ----------------------------------------------------------------------------- lengths
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_padded_batch_equals_each_row_run_alone(name):
  # Given a padded batch with ragged lengths (including 0) and a nonzero initial carry.
  cell, params, xs = _setup(name)
  init = _random_carry(cell, 10)
  # When the batch runs with lengths.
  ys, final = recurrent.unroll(cell, params, xs, lengths=LENGTHS, initial_carry=init)
  for n, length in enumerate(LENGTHS):
    # Then each row equals that row's unpadded prefix run on its own.
    row_ys, row_final = recurrent.unroll(cell, params, xs[n:n + 1, :length],
                                         initial_carry=_row(init, n))
    np.testing.assert_allclose(ys[n, :length], row_ys[0], atol=ATOL, rtol=ATOL)
    _assert_trees_close(_row(final, n), row_final)
    # ... outputs past the length are exactly zero.
    np.testing.assert_array_equal(ys[n, length:], 0.0)


def test_length_zero_returns_initial_carry_and_zero_outputs():
  cell, params, xs = _setup("lstm")
  init = _random_carry(cell, 11)
  ys, final = recurrent.unroll(cell, params, xs, lengths=np.zeros(B, np.int32),
                               initial_carry=init)
  np.testing.assert_array_equal(ys, 0.0)
  for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(init)):
    np.testing.assert_array_equal(a, b)


def test_full_lengths_equal_no_lengths():
  cell, params, xs = _setup("gru")
  ys_a, final_a = recurrent.unroll(cell, params, xs, lengths=np.full(B, T))
  ys_b, final_b = recurrent.unroll(cell, params, xs)
  _assert_trees_close((ys_a, final_a), (ys_b, final_b))


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_reverse_with_lengths_equals_flipped_valid_prefix(name):
  cell, params, xs = _setup(name)
  init = _random_carry(cell, 12)
  ys, final = recurrent.unroll(cell, params, xs, lengths=LENGTHS, reverse=True,
                               initial_carry=init)
  for n, length in enumerate(LENGTHS):
    flipped = xs[n:n + 1, :length][:, ::-1]
    row_ys, row_final = recurrent.unroll(cell, params, flipped, initial_carry=_row(init, n))
    # Outputs stay aligned with their inputs: flip the prefix back.
    np.testing.assert_allclose(ys[n, :length], row_ys[0, ::-1], atol=ATOL, rtol=ATOL)
    np.testing.assert_array_equal(ys[n, length:], 0.0)
    _assert_trees_close(_row(final, n), row_final)


def test_reverse_without_lengths_reverses_the_whole_sequence():
  cell, params, xs = _setup("rnn")
  ys, final = recurrent.unroll(cell, params, xs, reverse=True)
  ref_ys, ref_final = recurrent.unroll(cell, params, xs[:, ::-1])
  _assert_trees_close((ys, final), (ref_ys[:, ::-1], ref_final))


# ----------------------------------------------------------------------------- layers of cells
def _bidirectional_by_hand(cell, params, xs, lengths):
  ys_f, fin_f = recurrent.unroll(cell, params["fwd"], xs, lengths=lengths)
  ys_b, fin_b = recurrent.unroll(cell, params["bwd"], xs, lengths=lengths, reverse=True)
  return jnp.concatenate([ys_f, ys_b], -1), (fin_f, fin_b)


def test_bidirectional_equals_two_unrolls():
  cell = cells.get_cell("lstm")
  params = recurrent.init_bidirectional(jax.random.key(0), cell, D, H)
  xs = jax.random.normal(jax.random.key(1), (B, T, D))
  ys, finals = recurrent.bidirectional(cell, params, xs, lengths=LENGTHS)
  assert ys.shape == (B, T, 2 * H)
  _assert_trees_close((ys, finals), _bidirectional_by_hand(cell, params, xs, LENGTHS))
  # The two directions really are different cells with different params.
  assert float(jnp.abs(ys[..., :H] - ys[..., H:]).max()) > 1e-3


@pytest.mark.parametrize("num_layers,bidirectional", [(2, False), (3, True)])
def test_stack_equals_unrolls_composed_by_hand(num_layers, bidirectional):
  cell = cells.get_cell("gru")
  params = recurrent.init_stack(jax.random.key(0), cell, D, H, num_layers, bidirectional)
  xs = jax.random.normal(jax.random.key(1), (B, T, D))
  ys, finals = recurrent.stack(cell, params, xs, lengths=LENGTHS)
  # By hand: each layer's output is the next layer's input.
  hidden, ref_finals = xs, []
  for layer in params:
    if bidirectional:
      hidden, fin = _bidirectional_by_hand(cell, layer, hidden, LENGTHS)
    else:
      hidden, fin = recurrent.unroll(cell, layer["fwd"], hidden, lengths=LENGTHS)
    ref_finals.append(fin)
  assert ys.shape == (B, T, (2 if bidirectional else 1) * H)
  assert len(finals) == num_layers
  _assert_trees_close((ys, finals), (hidden, ref_finals))


def test_stack_passes_initial_carries_per_layer():
  cell = cells.get_cell("lstm")
  params = recurrent.init_stack(jax.random.key(0), cell, D, H, 2)
  xs = jax.random.normal(jax.random.key(1), (B, T, D))
  inits = [_random_carry(cell, 20), _random_carry(cell, 21)]
  ys, finals = recurrent.stack(cell, params, xs, lengths=LENGTHS, initial_carry=inits)
  mid, fin0 = recurrent.unroll(cell, params[0]["fwd"], xs, lengths=LENGTHS,
                               initial_carry=inits[0])
  ref, fin1 = recurrent.unroll(cell, params[1]["fwd"], mid, lengths=LENGTHS,
                               initial_carry=inits[1])
  _assert_trees_close((ys, finals), (ref, [fin0, fin1]))


def test_dropout_between_layers_needs_a_key_and_a_rate():
  cell = cells.get_cell("lstm")
  params = recurrent.init_stack(jax.random.key(0), cell, D, H, 2)
  xs = jax.random.normal(jax.random.key(1), (B, T, D))
  key = jax.random.key(5)
  plain, _ = recurrent.stack(cell, params, xs, lengths=LENGTHS)
  no_key, _ = recurrent.stack(cell, params, xs, lengths=LENGTHS, dropout_rate=0.5)
  rate_zero, _ = recurrent.stack(cell, params, xs, lengths=LENGTHS, dropout_key=key)
  dropped, _ = recurrent.stack(cell, params, xs, lengths=LENGTHS, dropout_rate=0.5,
                               dropout_key=key)
  again, _ = recurrent.stack(cell, params, xs, lengths=LENGTHS, dropout_rate=0.5,
                             dropout_key=key)
  other, _ = recurrent.stack(cell, params, xs, lengths=LENGTHS, dropout_rate=0.5,
                             dropout_key=jax.random.key(6))
  np.testing.assert_array_equal(no_key, plain)
  np.testing.assert_array_equal(rate_zero, plain)
  np.testing.assert_array_equal(dropped, again)
  assert float(jnp.abs(dropped - plain).max()) > 1e-2
  assert float(jnp.abs(dropped - other).max()) > 1e-2
  # Padding still never leaks through the dropped-out layer.
  for n, length in enumerate(LENGTHS):
    np.testing.assert_array_equal(dropped[n, length:], 0.0)


def test_dropout_between_layers_is_layers_dropout_with_folded_keys():
  # Given a 3-layer bidirectional stack and one dropout key.
  cell = cells.get_cell("gru")
  params = recurrent.init_stack(jax.random.key(0), cell, D, H, 3, bidirectional=True)
  xs = jax.random.normal(jax.random.key(1), (B, T, D))
  key = jax.random.key(5)
  # When the stack runs with dropout.
  ys, finals = recurrent.stack(cell, params, xs, lengths=LENGTHS, dropout_rate=0.3,
                               dropout_key=key)
  # Then it equals the layers composed by hand, layer l's output dropped with fold_keys(key, l).
  ref, ref_finals = xs, []
  for layer, layer_params in enumerate(params):
    ref, final = recurrent.bidirectional(cell, layer_params, ref, lengths=LENGTHS)
    ref_finals.append(final)
    if layer < 2:
      ref = layers.dropout(layers.fold_keys(key, layer), ref, 0.3)
  _assert_trees_close((ys, finals), (ref, ref_finals))


def test_dropout_with_per_example_keys_does_not_depend_on_the_batch_split():
  # Given one dropout key per example.
  cell = cells.get_cell("lstm")
  params = recurrent.init_stack(jax.random.key(0), cell, D, H, 3)
  xs = jax.random.normal(jax.random.key(1), (B, T, D))
  keys = jax.random.split(jax.random.key(5), B)
  # When the whole batch runs, and each row runs alone with its own key.
  ys, _ = recurrent.stack(cell, params, xs, lengths=LENGTHS, dropout_rate=0.5, dropout_key=keys)
  plain, _ = recurrent.stack(cell, params, xs, lengths=LENGTHS)
  for n in range(B):
    row, _ = recurrent.stack(cell, params, xs[n:n + 1], lengths=LENGTHS[n:n + 1],
                             dropout_rate=0.5, dropout_key=keys[n:n + 1])
    # Then every row is what it is alone: its masks depend on its own key only.
    np.testing.assert_allclose(ys[n], row[0], atol=ATOL, rtol=ATOL)
  # ... and dropout did act.
  assert float(jnp.abs(ys - plain).max()) > 1e-2


def test_no_dropout_after_the_last_layer():
  cell = cells.get_cell("gru")
  params = recurrent.init_stack(jax.random.key(0), cell, D, H, 1)
  xs = jax.random.normal(jax.random.key(1), (B, T, D))
  plain, _ = recurrent.stack(cell, params, xs)
  dropped, _ = recurrent.stack(cell, params, xs, dropout_rate=0.5, dropout_key=jax.random.key(2))
  np.testing.assert_array_equal(dropped, plain)


# ----------------------------------------------------------------------------- transforms
def _loss(cell, **kwargs):
  def loss(params, xs):
    ys, final = recurrent.unroll(cell, params, xs, lengths=LENGTHS, **kwargs)
    return jnp.sum(ys ** 2) + sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(final))
  return loss


@pytest.mark.parametrize("kwargs", [{"unroll": 3}, {"remat": True}, {"unroll": 2, "remat": True}],
                         ids=["unroll3", "remat", "unroll2-remat"])
def test_unroll_factor_and_remat_change_nothing(kwargs):
  cell, params, xs = _setup("lstm")
  base = recurrent.unroll(cell, params, xs, lengths=LENGTHS)
  varied = recurrent.unroll(cell, params, xs, lengths=LENGTHS, **kwargs)
  _assert_trees_close(varied, base, atol=1e-6)
  grads = jax.grad(_loss(cell), argnums=(0, 1))(params, xs)
  varied_grads = jax.grad(_loss(cell, **kwargs), argnums=(0, 1))(params, xs)
  _assert_trees_close(varied_grads, grads, atol=1e-5)


def test_jit_matches_eager():
  cell, params, xs = _setup("lstm")
  eager = recurrent.unroll(cell, params, xs, lengths=LENGTHS, reverse=True)
  jitted = jax.jit(lambda p, x, n: recurrent.unroll(cell, p, x, lengths=n, reverse=True))(
      params, xs, jnp.asarray(LENGTHS))
  _assert_trees_close(jitted, eager)
  stack_params = recurrent.init_stack(jax.random.key(3), cell, D, H, 2, bidirectional=True)
  eager = recurrent.stack(cell, stack_params, xs, lengths=LENGTHS)
  jitted = jax.jit(lambda p, x, n: recurrent.stack(cell, p, x, lengths=n))(
      stack_params, xs, jnp.asarray(LENGTHS))
  _assert_trees_close(jitted, eager)


def test_vmap_matches_a_loop_of_calls():
  # Given 3 independent batches, each with its own lengths.
  cell, params, _ = _setup("gru")
  xss = jax.random.normal(jax.random.key(4), (3, B, T, D))
  lengths = jnp.asarray([LENGTHS, LENGTHS[::-1], np.full(B, 2)])
  stack_params = recurrent.init_stack(jax.random.key(3), cell, D, H, 2, bidirectional=True)
  # When mapped with vmap.
  unrolled = jax.vmap(lambda x, n: recurrent.unroll(cell, params, x, lengths=n))(xss, lengths)
  stacked = jax.vmap(lambda x, n: recurrent.stack(cell, stack_params, x, lengths=n))(xss, lengths)
  # Then each slice equals the call on that batch alone.
  for k in range(3):
    _assert_trees_close(jax.tree.map(lambda a: a[k], unrolled),
                        recurrent.unroll(cell, params, xss[k], lengths=lengths[k]))
    _assert_trees_close(jax.tree.map(lambda a: a[k], stacked),
                        recurrent.stack(cell, stack_params, xss[k], lengths=lengths[k]))


def test_lengths_may_be_a_python_list():
  cell, params, xs = _setup("gru")
  _assert_trees_close(recurrent.unroll(cell, params, xs, lengths=LENGTHS.tolist()),
                      recurrent.unroll(cell, params, xs, lengths=LENGTHS))


# ----------------------------------------------------------------------------- bad input
def _bad_calls():
  cell, params, xs = _setup("lstm")
  return cell, params, xs


@pytest.mark.parametrize("make_call,error,message", [
    (lambda c, p, x: recurrent.unroll(c, p, x[0]), ValueError, r"xs must be \[batch, time"),
    (lambda c, p, x: recurrent.unroll(c, p, x[..., None]), ValueError,
     r"xs must be \[batch, time"),
    (lambda c, p, x: recurrent.unroll(c, p, x[..., :2]), ValueError,
     r"xs has 2 features but the 'lstm' params expect 3"),
    (lambda c, p, x: recurrent.unroll(c, p, x, lengths=np.array([7, 4, -1, 0])), ValueError,
     r"lengths must lie in \[0, 7\].*\[-1\]"),
    (lambda c, p, x: recurrent.unroll(c, p, x, lengths=np.array([8, 4, 1, 0])), ValueError,
     r"lengths must lie in \[0, 7\].*\[8\]"),
    (lambda c, p, x: recurrent.unroll(c, p, x, lengths=np.array([7, 4])), ValueError,
     r"lengths must have shape \[batch\] = \[4\]; got \(2,\)"),
    (lambda c, p, x: recurrent.unroll(c, p, x, lengths=np.ones((4, 1), np.int32)), ValueError,
     r"lengths must have shape \[batch\]"),
    (lambda c, p, x: recurrent.unroll(c, p, x, lengths=np.array([7.0, 4.0, 1.0, 0.0])),
     ValueError, r"lengths must be integers; got dtype float"),
    (lambda c, p, x: recurrent.unroll("lstmm", p, x), ValueError, r"unknown cell 'lstmm'"),
    (lambda c, p, x: recurrent.unroll("gru", p, x), ValueError, r"params do not fit cell 'gru'"),
    (lambda c, p, x: recurrent.unroll(c, p, x, initial_carry=jnp.zeros((4, 5))), ValueError,
     r"initial_carry for cell 'lstm' must be \(h, c\).*\[4, 5\]"),
    (lambda c, p, x: recurrent.unroll(c, p, x, initial_carry=(jnp.zeros((4, 6)),) * 2),
     ValueError, r"initial_carry for cell 'lstm'.*got \(\(4, 6\), \(4, 6\)\)"),
    (lambda c, p, x: recurrent.unroll(c, p, x, unroll=0), ValueError,
     r"unroll must be a positive int"),
    (lambda c, p, x: recurrent.stack(c, [{"fwd": p}], x, dropout_rate=1.0), ValueError,
     r"dropout_rate must be in \[0, 1\)"),
    (lambda c, p, x: recurrent.stack(c, [{"fwd": p}], x, initial_carry=[None, None]),
     ValueError, r"initial_carry has 2 entries for 1 layers"),
    (lambda c, p, x: recurrent.init_stack(jax.random.key(0), c, 3, 5, num_layers=0), ValueError,
     r"num_layers must be >= 1"),
], ids=["rank2", "rank4", "features", "negative-length", "length-past-time", "lengths-shape",
        "lengths-rank", "float-lengths", "unknown-cell", "params-for-other-cell", "carry-structure",
        "carry-shape", "unroll-0", "dropout-1", "carries-per-layer", "zero-layers"])
def test_bad_input_raises_a_message_naming_the_problem(make_call, error, message):
  cell, params, xs = _bad_calls()
  with pytest.raises(error, match=message):
    make_call(cell, params, xs)
