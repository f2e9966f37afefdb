"""The LSTM through cuDNN's RNN kernels, by way of ``jax.experimental.rnn`` (GPU only).

``recurrent.unroll(..., impl='cudnn')`` runs a plain ``lstm`` layer as one cuDNN call, forward
and backward (cuDNN's own persistent or standard RNN algorithms, as PyTorch's ``nn.LSTM`` uses
them). seqjax's parameters already use PyTorch's layout and gate order (i, f, g, o), which is
cuDNN's: :func:`pack_lstm_weights` lays them out as the one flat vector cuDNN takes, and
gradients flow back through it to the usual ``w_ih``, ``b_ih``, ``w_hh``, ``b_hh``.

What this module adds to ``jax.experimental.rnn.lstm``: batch-major ``[b, t, d]`` inputs and
carries as everywhere in seqjax, ``lengths`` of 0 (cuDNN needs at least one step: such a row
keeps its initial carry and emits zeros), and ``reverse`` (``recurrent.unroll`` flips each
sequence within its length around the call).

Not yet measured on a GPU: ``'auto'`` never takes it. The CPU test suite checks all of this
glue against the plain scan with ``jax.experimental.rnn.lstm_ref`` standing in for the cuDNN
kernel (``kernels.Settings(cudnn_kernel=...)``); ``tests/kernels/cudnn_test.py`` runs the real
kernel where a GPU is present.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seqjax import layers


def pack_lstm_weights(params) -> jax.Array:
  """seqjax's LSTM params as cuDNN's flat weight vector (one layer, one direction).

  cuDNN's order is ``W_ih [4h, d]``, ``W_hh [4h, h]``, ``b_ih``, ``b_hh``, each flattened;
  seqjax stores the matrices ``[in, out]``, so they are transposed.
  """
  return jnp.concatenate([params["w_ih"].T.reshape(-1), params["w_hh"].T.reshape(-1),
                          params["b_ih"].reshape(-1), params["b_hh"].reshape(-1)])


def cudnn_lstm(xs, h0, c0, weights, lengths, input_size, hidden_size):
  """cuDNN's LSTM kernel: ``(xs, h0 [1, b, h], c0, weights, lengths, input_size, hidden_size) ->
  (ys, h_n [1, b, h], c_n)``, the signature a stand-in kernel must have."""
  # Imported here: jax.experimental.rnn loads only when this path runs.
  from jax.experimental import rnn as jax_rnn  # pylint: disable=import-outside-toplevel
  return jax_rnn.lstm(xs, h0, c0, weights, lengths, input_size=input_size,
                      hidden_size=hidden_size, num_layers=1, dropout=0.0, bidirectional=False)


def unroll_batch_major(params, xs, lengths, carry, kernel=None):
  """One LSTM layer over ``xs [b, t, d]``: ``(ys [b, t, h], (h, c))``.

  ``lengths [b]`` (or None: all ``t`` steps); ``ys`` is zero past each row's length and the carry
  is the state after its last valid step (the initial carry where the length is 0). ``kernel``:
  a stand-in for :func:`cudnn_lstm` with its signature (None: cuDNN).
  """
  kernel = cudnn_lstm if kernel is None else kernel
  h0, c0 = carry  # float32: kernels.choose refuses any other carry for impl='cudnn'
  batch, time, in_dim = xs.shape
  hid = h0.shape[-1]
  if lengths is None:
    lengths = jnp.full((batch,), time, jnp.int32)
  lengths = lengths.astype(jnp.int32)
  weights = pack_lstm_weights(params).astype(jnp.float32)
  ys, h_n, c_n = kernel(xs.astype(jnp.float32), h0[None], c0[None], weights,
                      jnp.maximum(lengths, 1), in_dim, hid)
  empty = (lengths == 0)[:, None]
  carry = (jnp.where(empty, h0, h_n[0]), jnp.where(empty, c0, c_n[0]))
  mask = layers.mask_from_lengths(lengths, time)
  ys = jnp.where(mask[..., None], ys, jnp.zeros_like(ys))
  return ys, carry
