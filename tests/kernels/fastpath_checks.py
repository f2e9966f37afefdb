"""Shared checks of the recurrent fast paths (``seqjax/kernels``) against the scan.

Shapes use the glossary in ``seqjax/__init__.py``. Each test module binds its own sizes, e.g.
``_setup = functools.partial(fastpath_checks.random_layer, batch=B, time=T, d=D, h=H)``.
"""

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import cells
from seqjax import recurrent


def random_layer(name, seed=0, dtype=jnp.float32, *, batch, time, d, h):
  """A cell, its params ``[d -> h]`` and inputs ``xs: [b, t, d]``, all random from ``seed``."""
  cell = cells.get_cell(name)
  params = cell.init(jax.random.key(seed), d, h, dtype)
  xs = jax.random.normal(jax.random.key(seed + 1), (batch, time, d)).astype(dtype)
  return cell, params, xs


def random_carry(cell, seed, *, batch, h):
  """A nonzero initial carry ``[b, h]`` (``(h, c)`` for LSTMs)."""
  keys = jax.random.split(jax.random.key(seed), 2)
  hidden = jax.random.normal(keys[0], (batch, h))
  return (hidden, jax.random.normal(keys[1], (batch, h))) if cell.has_cell_state else hidden


def weighted_loss(ys, final):
  """Weights every output and every final carry entry differently, so no gradient is hidden."""
  out_weights = jax.random.normal(jax.random.key(99), ys.shape)
  carry_weights = jax.random.normal(jax.random.key(98), (ys.shape[0], ys.shape[-1]))
  total = jnp.sum(ys.astype(jnp.float32) * out_weights)
  for n, leaf in enumerate(jax.tree.leaves(final)):
    total += jnp.sum(jnp.sin(leaf.astype(jnp.float32) + n) * carry_weights)
  return total


def loss_and_grads(cell, params, xs, carry, impl, **kwargs):
  """``((ys, final_carry), (d params, d xs, d carry))`` of :func:`weighted_loss` under ``impl``."""
  def loss(params, xs, carry):
    ys, final = recurrent.unroll(cell, params, xs, initial_carry=carry, impl=impl, **kwargs)
    return weighted_loss(ys, final), (ys, final)

  # One jit around forward and backward: far fewer compilations than op-by-op gradients.
  (_, outputs), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
      params, xs, carry)
  return outputs, grads


def stack_loss_and_grads(name, impl, lengths, *, batch, time, d, h, **kwargs):
  """Loss, outputs and gradients of a 2-layer bidirectional stack with dropout under ``impl``.

  ``kwargs`` go to ``recurrent.stack`` (e.g. ``kernel_settings``)."""
  cell = cells.get_cell(name)
  params = recurrent.init_stack(jax.random.key(0), cell, d, h, num_layers=2, bidirectional=True)
  xs = jax.random.normal(jax.random.key(1), (batch, time, d))
  weights = jax.random.normal(jax.random.key(2), (batch, time, 2 * h))

  def run(params, xs):
    ys, finals = recurrent.stack(cell, params, xs, lengths=lengths, dropout_rate=0.25,
                                 dropout_key=jax.random.key(3), impl=impl, **kwargs)
    finals_loss = sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(finals))
    return jnp.sum(ys * weights) + finals_loss, (ys, finals)

  return jax.jit(jax.value_and_grad(run, argnums=(0, 1), has_aux=True))(params, xs)


def check_against_scan(impl, cell, params, xs, carry, **kwargs):
  """Outputs, final carries and gradients w.r.t. params, inputs and carry agree with the scan."""
  want = loss_and_grads(cell, params, xs, carry, "scan", **kwargs)
  assert_trees_close(loss_and_grads(cell, params, xs, carry, impl, **kwargs), want)
  # ... and the gradients are not trivially zero (the comparison has teeth).
  assert float(jnp.abs(want[1][0]["w_hh"]).max()) > 1e-2


def check_bf16_against_scan(impl, cell, params, xs, carry, lengths):
  """bf16 params and inputs with a float32 carry: dtypes kept, results near the scan's."""
  want = loss_and_grads(cell, params, xs, carry, "scan", lengths=lengths)
  got = loss_and_grads(cell, params, xs, carry, impl, lengths=lengths)
  # Gradients keep the params' and inputs' dtype; the carry stays float32.
  for g, p in zip(jax.tree.leaves(got[1][0]), jax.tree.leaves(params)):
    assert g.dtype == p.dtype == jnp.bfloat16
  assert got[1][1].dtype == jnp.bfloat16
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(got[0][1]))
  # bf16 rounding of h before each recurrent matmul differs in the backward: loose tolerance.
  assert_trees_close(got, want, tol=3e-2)


def assert_trees_close(a, b, tol=1e-5):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32),
                               atol=tol, rtol=tol)
