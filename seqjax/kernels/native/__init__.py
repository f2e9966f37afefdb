"""The fused LSTM's time loops as native CPU kernels (XLA FFI custom calls).

XLA:CPU runs the recurrent matmul of one step (``[16, 128] @ [128, 512]`` at the benchmark's
smallest shape) on one core, and every small operation of a step costs it a dispatch. The
kernels in ``rnn_cpu.cc`` run each of the fused LSTM's two loops (``kernels/fused.py``) as one
call that splits the hidden units between threads: every thread multiplies the whole previous
hidden state (and, when it projects, the step's input) by its own columns of the weights, does
the gate arithmetic of its own units, and the threads meet at one barrier per step. The
backward kernel computes each step's coefficients itself. A third kernel computes the weight
gradients from ``xs``, ``hs`` and ``h0`` as they lie, where XLA would first transpose ``xs`` and
the shifted ``hs`` into two more ``[b, t, ...]`` buffers. ``dxs`` and (for large training
layers) the input projection stay large XLA matmuls.

The library is built by ``make install`` (or ``python -m seqjax.kernels.native``) with the
system's C++ compiler against the installed jaxlib's FFI headers, for the building machine's CPU
(``library.py``). Where it is missing, stale or built for a CPU with features this one lacks,
the fused path runs its XLA loops instead: :func:`available` says which, and why. Whether the
kernels run, with how many threads and who projects the inputs, is decided by
``seqjax.kernels.choose`` from ``seqjax.kernels.Settings``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seqjax.kernels.native.library import available
from seqjax.kernels.native.library import build
from seqjax.kernels.native.library import TARGETS
from seqjax.kernels.native.library import unavailable_reason

# Per-thread weights up to which a forward projects inside the kernel (``Settings.project``
# None). Every step streams a thread's panel of [w_ih; w_hh] through the cache; beyond this the
# one large XLA matmul and a step over w_hh alone won, and below it projecting also saves XLA's
# [b, t, 4h] projection buffer (measurements: docs/speed.md, "Input projection").
PROJECT_MAX_BYTES = 4 << 20


def projects(project: bool | None, in_dim: int, hid: int, threads: int) -> bool:
  """Whether a forward kernel call projects its inputs itself (``project`` None: the rule)."""
  if project is not None:
    return project
  # The kernel runs min(threads, hid // 16) threads (at least one), as Threads() in rnn_cpu.cc.
  panel_bytes = (in_dim + hid) * 4 * hid * 4 // max(1, min(threads, hid // 16))
  return panel_bytes <= PROJECT_MAX_BYTES


def _call(name, results, *args, threads, aliases=None, **attributes):
  if not available():
    raise RuntimeError(unavailable_reason())
  call = jax.ffi.ffi_call(TARGETS[name], results, input_output_aliases=aliases,
                          vmap_method="sequential")
  return call(*args, threads=int(threads), **attributes)


def _keep(keep):
  """``keep [b, t, 1]`` as the kernels' ``[b, t]`` (a one-element dummy when unmasked)."""
  return jnp.zeros((1,), jnp.float32) if keep is None else keep[..., 0]


def lstm_forward(inputs, w_ih, w_hh, bias, h0, c0, keep, train: bool, threads: int,
                 project: bool):
  """The fused LSTM's forward loop.

  With ``project``, ``inputs`` are the layer's inputs ``xs [b, t, d]`` and every step multiplies
  ``[x_t, h_prev]`` by ``[w_ih; w_hh]``; otherwise ``inputs`` is the input projection
  ``gx = xs @ w_ih`` (``w_ih`` is ignored, may be None) and a step multiplies ``h_prev`` by
  ``w_hh``.
  ``bias = (b_ih + b_hh) * scale``. Returns ``(acts, hs, cs)`` if ``train`` (the gate
  activations i, f, g, o, ``[b, t, 4h]``, and the carries after every step), else
  ``(hs, c_last)``.
  """
  batch, time = inputs.shape[:2]
  hid = w_hh.shape[0]
  seq = jax.ShapeDtypeStruct((batch, time, hid), jnp.float32)
  if train:
    results = (jax.ShapeDtypeStruct((batch, time, 4 * hid), jnp.float32), seq, seq)
  else:
    results = (seq, jax.ShapeDtypeStruct((batch, hid), jnp.float32))
  if not project:
    w_ih = jnp.zeros((1,), jnp.float32)  # a placeholder the kernel does not read
  return _call("forward_train" if train else "forward_infer", results, inputs, w_ih, w_hh, bias,
               h0, c0, _keep(keep), masked=int(keep is not None), threads=threads,
               project=int(project))


def lstm_backward(dhs, acts, cs, c0, keep, w_hh, dc_last, threads: int):
  """The fused LSTM's backward loop: ``(dgates, dh0, dc0, dbias)``.

  ``dgates`` are the gradients of the gates' pre-activations, written over ``acts`` (XLA copies
  ``acts`` first where it cannot give its buffer away); ``dbias`` is their sum over batch and
  time, the gradient of either bias.
  """
  batch, _, hid = dhs.shape
  carry = jax.ShapeDtypeStruct((batch, hid), jnp.float32)
  results = (jax.ShapeDtypeStruct(acts.shape, jnp.float32), carry, carry,
             jax.ShapeDtypeStruct((4 * hid,), jnp.float32))
  return _call("backward", results, dhs, acts, cs, c0, _keep(keep), w_hh, dc_last,
               masked=int(keep is not None), threads=threads, aliases={1: 0})


def lstm_weight_grads(xs, hs, h0, dgates, threads: int):
  """``(dw_ih, dw_hh)``: ``x_t^T dgates_t`` and ``h_{t-1}^T dgates_t`` summed over batch and time.

  ``h_{t-1}`` is ``h0`` at the first step and ``hs[:, t - 1]`` after it. The kernel reads
  ``xs [b, t, d]`` and ``hs [b, t, h]`` as they lie, where XLA's matmuls would first transpose
  both (two more ``[b, t, ...]`` buffers).
  """
  d, g = xs.shape[-1], dgates.shape[-1]
  results = (jax.ShapeDtypeStruct((d, g), jnp.float32),
             jax.ShapeDtypeStruct((g // 4, g), jnp.float32))
  return _call("weight_grads", results, xs, hs, h0, dgates, threads=threads)
