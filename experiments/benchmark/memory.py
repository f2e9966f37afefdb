"""Memory of seqjax's training call: XLA's scratch bytes, and the longest sequence that fits.

``python -m experiments.benchmark --memory_only`` and ``--longest=BxDxH`` print these rows.
"""

from __future__ import annotations

import functools
from typing import Callable

from absl import app
import jax
import jax.numpy as jnp

from experiments.benchmark import timing
from seqjax import cells


def memory_rows(shapes, cell_names, dtypes, seqjax_impl="auto", remat=False, settings=None):
  """XLA's scratch bytes of seqjax's compiled training call per shape, cell and dtype."""
  rows = []
  for shape in shapes:
    for cell_name in cell_names:
      for dtype_name in dtypes:
        stats = _training_memory(cell_name, shape, jnp.dtype(dtype_name),
                                 timing.resolve_impl(seqjax_impl, cell_name), remat, settings)
        temp = None if stats is None else int(stats.temp_size_in_bytes)
        rows.append({"shape": "x".join(map(str, shape)), "cell": cell_name, "dtype": dtype_name,
                     "mode": "train", "impl": "seqjax", "temp_bytes": temp})
        per_token = (f"{temp / (shape[0] * shape[1]) / 1024:,.1f} KiB/token"
                     if temp is not None else "not reported by this backend")
        print(f"{rows[-1]['shape']:>18} {cell_name:>8} {dtype_name:>8} train "
              f"{(temp or 0) / 2**20:>10,.1f} MiB  {per_token}", flush=True)
  return rows


def _training_memory(cell_name, shape, dtype, impl, remat, settings=None):
  """XLA's memory analysis of seqjax's training call, compiled from shapes (nothing allocated)."""
  b, t, d, h = shape
  cell = cells.get_cell(cell_name)
  params = jax.eval_shape(lambda: cell.init(jax.random.PRNGKey(0), d, h, dtype))
  xs = jax.ShapeDtypeStruct((b, t, d), dtype)
  return timing.seqjax_jit(cell, "train", 1, impl, remat, settings).lower(
      params, xs).compile().memory_analysis()


def training_bytes(cell_name, shape, dtype, impl="auto", remat=False,
                   settings=None) -> int | None:
  """Device bytes XLA assigns seqjax's compiled training call: arguments, outputs and scratch.

  None where the backend reports nothing.
  """
  stats = _training_memory(cell_name, shape, dtype, impl, remat, settings)
  if stats is None:
    return None
  return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes)


def longest_sequence(need: Callable[[int], int], limit_bytes: int, max_time: int = 1 << 22,
                     resolution: float = 0.01) -> int:
  """The largest sequence length ``t <= max_time`` with ``need(t) <= limit_bytes`` (0: none).

  ``need`` must grow with ``t``. Doubles from 1, then bisects until the bracket is within
  ``resolution`` of its lower end (or 1 step).
  """
  if need(1) > limit_bytes:
    return 0
  low, high = 1, 2
  while high <= max_time and need(high) <= limit_bytes:
    low, high = high, 2 * high
  if high > max_time:
    if need(max_time) <= limit_bytes:
      return max_time
    high = max_time
  while high - low > max(1, int(low * resolution)):
    mid = (low + high) // 2
    low, high = (mid, high) if need(mid) <= limit_bytes else (low, mid)
  return low


def longest_rows(text, cell_names, dtypes, impl="auto", remat=False, memory_limit_gb=None,
                 settings=None):
  """``--longest``: per cell and dtype, the longest sequence that fits, checked by one step."""
  try:
    b, d, h = (int(p) for p in text.lower().split("x"))
    assert min(b, d, h) > 0
  except (ValueError, AssertionError):
    raise app.UsageError(f"bad --longest {text!r}: expected batch x input x hidden, three "
                         "positive integers, e.g. 64x1024x1024") from None
  if memory_limit_gb is not None:
    limit = int(memory_limit_gb * 2**30)
  else:
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" not in stats:
      raise app.UsageError(f"the {jax.default_backend()} device reports no memory limit; "
                           "pass --memory_limit_gb")
    limit = int(stats["bytes_limit"])
  rows = []
  for cell_name in cell_names:
    for dtype_name in dtypes:
      dtype = jnp.dtype(dtype_name)
      layer_impl = timing.resolve_impl(impl, cell_name)

      @functools.cache  # the search and the row below ask for some lengths twice
      def need(t, cell_name=cell_name, dtype=dtype, layer_impl=layer_impl):
        return training_bytes(cell_name, (b, t, d, h), dtype, layer_impl, remat, settings)

      longest = longest_sequence(need, limit)
      ran = None
      if longest:
        try:  # the proof: one real training step at that length
          timing.seqjax_fn(cell_name, (b, longest, d, h), dtype, "train", 1, layer_impl, remat,
                           settings=settings)()
          ran = True
        except Exception as err:  # pylint: disable=broad-except
          ran = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
      rows.append({"shape": f"{b}x{longest}x{d}x{h}", "cell": cell_name, "dtype": dtype_name,
                   "mode": "train", "impl": "seqjax", "longest_time": longest,
                   "limit_bytes": limit, "need_bytes": need(longest) if longest else None,
                   "one_step_ran": ran})
      print(f"{cell_name:>8} {dtype_name:>8} batch {b} hidden {h}: longest {longest:,} steps "
            f"within {limit / 2**30:.3g} GiB (impl {layer_impl}, remat {remat}); one step "
            f"at that length: {'ran' if ran is True else ran}", flush=True)
  return rows
