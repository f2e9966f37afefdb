"""Timing one recurrent layer: seqjax against PyTorch and flax, in interleaved rounds.

Shape letters: b batch, t time, d input, h hidden; a shape is ``b x t x d x h``.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

try:
  import resource  # POSIX only: the page-fault counts
except ImportError:
  resource = None

from absl import app
import jax
import jax.numpy as jnp

from seqjax import cells
from seqjax import kernels
from seqjax import recurrent

# The shapes of the reference tables (docs/speed.md).
GPU_SHAPES = ("64x512x256x256", "64x512x1024x1024", "256x128x512x512", "16x1024x128x128")
CPU_SHAPES = ("16x256x128x128", "32x128x256x256", "8x512x512x512")


def parse_shape(text: str) -> tuple[int, int, int, int]:
  """``'16x256x128x128'`` -> ``(16, 256, 128, 128)`` with a clear error otherwise."""
  parts = text.lower().split("x")
  try:
    shape = tuple(int(p) for p in parts)
  except ValueError:
    shape = ()
  if len(shape) != 4 or min(shape) < 1:
    raise app.UsageError(f"bad shape {text!r}: expected batch x time x input x hidden, "
                         "four positive integers, e.g. 16x256x128x128")
  return shape


def _minor_faults() -> int | None:
  """This process's minor page faults so far (None where ``resource`` is missing)."""
  if resource is None:
    return None
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def interleaved_seconds(fns: dict[str, Callable[[], object]], repeats: int,
                        settle_seconds: float = 0.0,
                        faults: dict[str, float] | None = None) -> dict[str, float]:
  """Median seconds of each warmed-up call, timed in rounds that call every one in turn.

  Each round times every implementation (the first one to run rotates from round to round), so
  a machine that speeds up or slows down during the run moves all of them alike and their
  ratios stay fair; timing one implementation's repeats and then the next one's does not.

  Within a round, each implementation gets ``settle_seconds`` of idle time, one untimed call and
  then its timed call, as a training loop calls it back to back. On a CPU the libraries' worker
  threads spin for a while after a call (PyTorch's OpenMP threads, for one), and the next
  library's call would otherwise share the cores with them (experiments/benchmark/README.md,
  "How the CPU benchmark times").

  ``faults``, if given, receives each implementation's median count of minor page faults (the
  whole process's) during its timed calls: fresh memory the call touched for the first time.
  """
  names = list(fns)
  times = {name: [] for name in names}
  counts = {name: [] for name in names}
  for round_ in range(repeats):
    shift = round_ % len(names)
    for name in names[shift:] + names[:shift]:
      if settle_seconds > 0:
        time.sleep(settle_seconds)
        fns[name]()
      before = _minor_faults()
      start = time.perf_counter()
      fns[name]()
      times[name].append(time.perf_counter() - start)
      if before is not None:
        counts[name].append(_minor_faults() - before)
  if faults is not None:
    faults.update({name: statistics.median(c) for name, c in counts.items() if c})
  return {name: statistics.median(t) for name, t in times.items()}


def seqjax_call(cell, mode, unroll_steps, impl, remat, settings=None):
  """seqjax's timed call: gradients of ``sum(outputs)`` (``train``) or the outputs (``infer``).

  ``settings``: the ``seqjax.kernels.Settings`` of the fast paths (None: the defaults).
  """
  def forward(params, xs):
    return recurrent.unroll(cell, params, xs, unroll=unroll_steps, impl=impl, remat=remat,
                            kernel_settings=settings)[0]

  if mode == "train":
    return jax.grad(lambda p, x: jnp.sum(forward(p, x).astype(jnp.float32)), argnums=(0, 1))
  return forward


def seqjax_jit(cell, mode, unroll_steps, impl, remat, settings=None):
  return jax.jit(seqjax_call(cell, mode, unroll_steps, impl, remat, settings))


def data_parallel_fn(cell, params, xs, mode, unroll_steps, impl, remat, settings=None):
  """The layer with its batch split over every local device (``pmap``).

  Training returns the weights' gradients summed over the devices (``psum``) and each shard's
  input gradient, the same numbers as one device computes.
  """
  n = jax.local_device_count()
  if xs.shape[0] % n:
    raise ValueError(f"--data_parallel: batch {xs.shape[0]} does not split over {n} devices")
  shards = xs.reshape((n, xs.shape[0] // n) + xs.shape[1:])
  call = seqjax_call(cell, mode, unroll_steps, impl, remat, settings)

  def train(params, xs):
    dparams, dxs = call(params, xs)
    return jax.lax.psum(dparams, "batch"), dxs

  fn = jax.pmap(train if mode == "train" else call, axis_name="batch", in_axes=(None, 0))
  run = lambda: jax.block_until_ready(fn(params, shards))
  run.temp_bytes = None
  return run


def seqjax_fn(cell_name, shape, dtype, mode, unroll_steps, impl="auto", remat=False,
              data_parallel=False, settings=None):
  """seqjax's call at ``shape``, compiled and ready: ``run()``, with ``run.temp_bytes`` and
  ``run.hlo_text``."""
  b, t, d, h = shape
  cell = cells.get_cell(cell_name)
  params = cell.init(jax.random.PRNGKey(0), d, h, dtype)
  xs = jax.random.normal(jax.random.PRNGKey(1), (b, t, d), jnp.float32).astype(dtype)
  if data_parallel:
    return data_parallel_fn(cell, params, xs, mode, unroll_steps, impl, remat, settings)
  compiled = seqjax_jit(cell, mode, unroll_steps, impl, remat, settings).lower(params,
                                                                              xs).compile()
  run = lambda: jax.block_until_ready(compiled(params, xs))
  # XLA's own count of the scratch memory the compiled call needs (activations and
  # residuals kept for the backward included); None where the backend does not report it.
  stats = compiled.memory_analysis()
  run.temp_bytes = None if stats is None else int(stats.temp_size_in_bytes)
  run.hlo_text = compiled.as_text()
  return run


def _flax_fn(cell_name, shape, dtype, mode):
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  if cell_name not in ("lstm", "gru"):
    return None
  b, t, d, h = shape
  cell = nn.OptimizedLSTMCell(h) if cell_name == "lstm" else nn.GRUCell(h)
  model = nn.RNN(cell)
  xs = jax.random.normal(jax.random.PRNGKey(1), (b, t, d), jnp.float32).astype(dtype)
  params = model.init(jax.random.PRNGKey(0), xs.astype(jnp.float32))
  params = jax.tree.map(lambda p: p.astype(dtype), params)
  if mode == "train":
    fn = jax.jit(jax.grad(lambda p, x: jnp.sum(model.apply(p, x).astype(jnp.float32)),
                          argnums=(0, 1)))
  else:
    fn = jax.jit(model.apply)
  return lambda: jax.block_until_ready(fn(params, xs))


def _torch_fn(cell_name, shape, dtype, mode):
  import torch  # pylint: disable=import-outside-toplevel
  if cell_name not in ("lstm", "gru"):
    return None
  b, t, d, h = shape
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch_dtype = torch.bfloat16 if dtype == jnp.bfloat16 else torch.float32
  layer_cls = torch.nn.LSTM if cell_name == "lstm" else torch.nn.GRU
  layer = layer_cls(d, h, batch_first=True).to(device=device, dtype=torch_dtype)
  xs = torch.randn(b, t, d, device=device, dtype=torch_dtype, requires_grad=mode == "train")
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def run():
    if mode == "train":
      layer.zero_grad(set_to_none=True)
      xs.grad = None
      layer(xs)[0].float().sum().backward()
    else:
      with torch.no_grad():
        layer(xs)
    sync()
  return run


def benchmark_rows(shapes, cell_names, dtypes, modes, peers, repeats, unroll_steps,
                   seqjax_impl="auto", remat=False, data_parallel=False, settle_seconds=0.0,
                   settings=None):
  """Times every combination; returns one dict per (shape, cell, dtype, mode, implementation)."""
  rows, notes = [], []
  available = {}
  for peer in peers:
    try:
      __import__({"torch": "torch", "flax": "flax.linen"}[peer])
      available[peer] = True
    except ImportError:
      notes.append(f"{peer} is not installed: skipped")
    except KeyError:
      raise app.UsageError(f"unknown peer {peer!r}; known peers: torch, flax") from None
  builders = {"seqjax": lambda *a: seqjax_fn(*a, unroll_steps, resolve_impl(seqjax_impl, a[0]),
                                             remat, data_parallel, settings),
              "torch": _torch_fn, "flax": _flax_fn}
  for shape in shapes:
    for cell_name in cell_names:
      for dtype_name in dtypes:
        dtype = jnp.dtype(dtype_name)
        for mode in modes:
          fns = {}
          for impl in ["seqjax"] + [p for p in peers if p in available]:
            try:  # building and the first (compiling) call: either can refuse a shape
              fn = builders[impl](cell_name, shape, dtype, mode)
              if fn is not None:
                fn()
                fns[impl] = fn
            except Exception as err:  # pylint: disable=broad-except
              first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
              notes.append(f"{impl} {cell_name} {dtype_name} {shape}: cannot run "
                           f"({type(err).__name__}: {first_line[:200]})")
          faults = {}
          for impl, seconds in interleaved_seconds(fns, repeats, settle_seconds,
                                                   faults).items():
            rows.append({"shape": "x".join(map(str, shape)), "cell": cell_name,
                         "dtype": dtype_name, "mode": mode, "impl": impl,
                         "seconds": seconds, "tokens_per_sec": shape[0] * shape[1] / seconds,
                         "temp_bytes": getattr(fns[impl], "temp_bytes", None),
                         "page_faults": faults.get(impl)})
            faulted = "" if impl not in faults else f" {faults[impl]:>9,.0f} page faults/call"
            print(f"{rows[-1]['shape']:>18} {cell_name:>8} {dtype_name:>8} {mode:>5} "
                  f"{impl:>7} {rows[-1]['tokens_per_sec']:>12,.0f} tok/s{faulted}", flush=True)
  return rows, notes


def resolve_impl(impl, cell_name):
  """'fused' and 'pallas' only exist for LSTM and GRU; other cells fall back to the scan."""
  return impl if kernels.supports(cells.get_cell(cell_name)) else "scan"


def format_table(rows, peers) -> str:
  """Markdown table: tokens/s per implementation and seqjax's ratio to each peer."""
  keyed = {}
  for row in rows:
    keyed.setdefault((row["shape"], row["cell"], row["dtype"], row["mode"]), {})[row["impl"]] = (
        row["tokens_per_sec"])
  header = ["shape", "cell", "dtype", "mode", "seqjax"] + peers + [f"vs {p}" for p in peers]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for key, speeds in keyed.items():
    ours = speeds.get("seqjax")
    cells_ = list(key) + [_fmt(ours)] + [_fmt(speeds.get(p)) for p in peers]
    cells_ += [f"{ours / speeds[p]:.2f}x" if ours and speeds.get(p) else "-" for p in peers]
    lines.append("| " + " | ".join(cells_) + " |")
  return "\n".join(lines)


def _fmt(tokens_per_sec):
  if tokens_per_sec is None:
    return "-"
  if tokens_per_sec >= 1e6:
    return f"{tokens_per_sec / 1e6:.2f}M"
  return f"{tokens_per_sec / 1e3:.1f}k"


def torch_threads(requested: int | None) -> int | None:
  """Applies ``--torch_threads``; returns PyTorch's CPU thread count (None: not installed)."""
  if requested is not None and requested < 1:
    raise app.UsageError(f"--torch_threads must be a positive integer; got {requested}")
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  if requested is not None:
    torch.set_num_threads(requested)
  return torch.get_num_threads()
