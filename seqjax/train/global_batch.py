"""A loss over the global batch, computed a device's slice at a time: shares, counts and keys.

The runtime pmaps ``loss_fn`` over every device of every process; each call sees one slice of
the global batch. Two things make the result independent of how many slices there are:

* **Shares of a global average.** With ``Experiment(loss_reduction="global")`` the loss (and
  every metric) a device returns is its share of the global value: a local sum divided by a
  global count, ``jnp.sum(nll * mask) / global_sum(jnp.sum(mask))``. The runtime adds the
  shares of all devices (``lax.psum``) into the global average, so tokens weigh the same
  whichever device holds them. A mean per string, then over strings, is
  ``jnp.sum(per_string) / global_sum(n_strings)``; any weighted mix of such shares is a share too.
* **Keys per example.** :func:`example_keys` gives each example its key from its index in the
  global batch, not from the device that holds it, so dropout masks do not depend on the
  device count.

A model that takes its loss as shares and draws its dropout from ``example_keys`` trains the same
on 1 and N devices and processes (up to float rounding: sums in another order).

The global index of row ``r`` on the device at position ``i`` of the pmap axis is
``i * b_device + r``. That matches how :func:`seqjax.train.run` lays out a batch: process ``p``
asks ``get_batch`` for shard ``p`` of ``num_processes``, splits it contiguously over its ``n``
devices, and ``distributed.select_devices`` lists the devices process by process, so local
device ``j`` of process ``p`` sits at position ``p * n + j`` of the axis.

Outside the runtime's pmap (a plain ``jit``, an evaluation, a test) there is one slice:
``global_sum`` is the identity and ``example_keys`` numbers rows from 0.
"""

from __future__ import annotations

import contextlib
import contextvars
import operator

import jax
import jax.numpy as jnp

AXIS = "batch"  # The runtime's pmap axis: one position per device of every process.

REDUCTIONS = ("global", "device_mean")

# The loss_reduction of the train step being traced, so that a helper used under the legacy
# reduction fails at once instead of dividing the loss by the device count. Only checked, never
# used to compute anything.
_TRACING_REDUCTION: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "seqjax_train_loss_reduction", default=None)


@contextlib.contextmanager
def tracing_reduction(loss_reduction: str):
  """Marks the train step's trace of ``loss_fn`` with its ``loss_reduction`` (for the checks)."""
  token = _TRACING_REDUCTION.set(loss_reduction)
  try:
    yield
  finally:
    _TRACING_REDUCTION.reset(token)


def check_reduction(loss_reduction: str) -> None:
  """Raises ValueError unless ``loss_reduction`` is one of :data:`REDUCTIONS`."""
  if loss_reduction not in REDUCTIONS:
    raise ValueError(f"loss_reduction must be one of {REDUCTIONS}, got {loss_reduction!r}")


def _require_global(helper: str) -> None:
  if _TRACING_REDUCTION.get() == "device_mean":
    raise ValueError(f"train.{helper} is for Experiment(loss_reduction='global'); this "
                     "experiment uses 'device_mean', where the runtime averages each device's "
                     "own mean")


def global_sum(x: jax.Array) -> jax.Array:
  """``x`` summed over every device of every process: the global count behind a local sum.

  ``x`` is a count or a weight (``jnp.sum(mask)``, a number of strings), any shape; the sum is
  taken elementwise over the devices. Gradients do not flow through it (it is a normaliser, so
  the share's gradient is the local sum's divided by the global count). On one device, and
  outside the runtime's pmap, it returns ``x`` unchanged, bit for bit.
  """
  _require_global("global_sum")
  x = jax.lax.stop_gradient(x)
  try:
    return jax.lax.psum(x, AXIS)
  except NameError:  # Not under the runtime's pmap: this slice is the whole batch.
    return x


def device_position() -> jax.Array:
  """This device's position on the runtime's pmap axis (int32 scalar); 0 outside it."""
  try:
    return jax.lax.axis_index(AXIS)
  except NameError:
    return jnp.zeros((), jnp.int32)


def example_keys(rng: jax.Array, b_device: int) -> jax.Array:
  """One key per example of this device's slice, from the example's global index.

  Args:
    rng: the step key ``loss_fn`` received (already folded with the step).
    b_device: the number of examples on this device (the leading axis of the batch ``loss_fn``
      sees; a Python int).
  Returns:
    ``[b_device]`` keys (``[b_device, 2]`` uint32 for raw keys): row ``r`` gets
    ``fold_in(rng, device_position() * b_device + r)``, the same key on any number of devices.
  """
  _require_global("example_keys")
  try:
    size = operator.index(b_device)
  except TypeError:
    size = 0
  if size <= 0:
    raise ValueError("example_keys needs the per-device batch size (a batch leaf's shape[0]) "
                     f"as a positive int, got {b_device!r}")
  first = device_position() * size
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(first + jnp.arange(size))
