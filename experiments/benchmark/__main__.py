r"""Recurrent-layer speed: seqjax against PyTorch (cuDNN on a GPU) and flax.linen.RNN.

Times one recurrent layer, forward + backward (``train``: gradients w.r.t. the input and every
weight of ``sum(outputs)``) and forward alone (``infer``), and prints tokens/s (batch * time / s)
with the ratio of seqjax to each peer. Benchmarks are not tests: nothing here asserts a speed.

    python -m experiments.benchmark                       # the reference shapes for this backend
    python -m experiments.benchmark --shapes=32x128x256x256 --cells=lstm --dtypes=float32
    python -m experiments.benchmark --json=bench.json     # also write machine-readable rows
    python -m experiments.benchmark --impl=scan           # seqjax's plain scan, not the fast path
    python -m experiments.benchmark --impl=cudnn --cells=lstm   # cuDNN's LSTM (GPU only)

A shape is ``batch x time x input x hidden``. A peer that is not installed is skipped with a note.
"""

from __future__ import annotations

import collections
import functools
import glob
import gzip
import json
import os
import re
import statistics
import time
from typing import Callable

try:
  import resource  # POSIX only: the page-fault counts
except ImportError:
  resource = None

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from seqjax import cells
from seqjax import fused
from seqjax import native
from seqjax import recurrent

# The shapes of the reference tables in the project's benchmark section.
GPU_SHAPES = ("64x512x256x256", "64x512x1024x1024", "256x128x512x512", "16x1024x128x128")
CPU_SHAPES = ("16x256x128x128", "32x128x256x256", "8x512x512x512")

_SHAPES = flags.DEFINE_list("shapes", None, "batch x time x input x hidden; default: the "
                            "reference shapes for the current backend")
_EXTRA = flags.DEFINE_list("extra_shapes", [], "shapes added to the defaults")
_CELLS = flags.DEFINE_list("cells", ["lstm", "gru"], "lstm, gru, min_gru, min_lstm")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "float32 and/or bfloat16")
_MODES = flags.DEFINE_list("modes", ["train", "infer"], "train (forward+backward), infer")
_PEERS = flags.DEFINE_list("peers", ["torch", "flax"], "peers to time beside seqjax")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed rounds, each calling every implementation "
                                "once (interleaved); the median is reported")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", None, "CPU threads PyTorch may use "
                                      "(torch.set_num_threads); default: PyTorch's own choice, "
                                      "one per core")
_SETTLE_MS = flags.DEFINE_float(
    "settle_ms", None, "idle milliseconds plus one untimed call before every timed call, so "
    "the previous library's spinning worker threads are idle (see interleaved_seconds); "
    "default 50 on CPU, 0 elsewhere")
_NATIVE = flags.DEFINE_bool("native", True, "let the fused LSTM run its loops as the native "
                            "CPU kernels where they are built; --nonative keeps XLA's loops")
_PROJECT = flags.DEFINE_enum("project", "auto", ["auto", "kernel", "xla"],
                             "who does the native LSTM forward's input projection: the kernel at "
                             "every step, one XLA matmul before it, or auto (native.PROJECT)")
_UNROLL = flags.DEFINE_integer("unroll", 1, "lax.scan unroll factor for seqjax")
_REMAT = flags.DEFINE_bool("remat", False, "seqjax stores less for the backward and recomputes "
                           "it (see recurrent.unroll's remat)")
_IMPL = flags.DEFINE_enum("impl", "auto", list(fused.IMPLS),
                          "seqjax recurrence: plain scan, fused (LSTM/GRU custom VJP), pallas "
                          "(LSTM/GRU Pallas kernels; meant for GPUs, interpreted on CPU), cudnn "
                          "(LSTM through jax.experimental.rnn; GPU only) or auto")
_MEMORY_ONLY = flags.DEFINE_bool("memory_only", False, "compile seqjax's training call and report "
                                 "the scratch memory XLA assigns it, without timing anything")
_DATA_PARALLEL = flags.DEFINE_bool(
    "data_parallel", False, "split seqjax's batch over every local device (pmap, weight "
    "gradients summed). On a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N gives N "
    "devices, and so N cores working at once")
_LONGEST = flags.DEFINE_string("longest", None, "batch x input x hidden: find the longest "
                                "sequence whose training call fits the device's memory (compiled "
                                "from shapes, nothing run), then run one step at that length")
_MEMORY_LIMIT = flags.DEFINE_float("memory_limit_gb", None, "memory budget for --longest in GiB; "
                                   "default: the device's bytes_limit (GPUs report it, CPUs do "
                                   "not)")
_PROFILE = flags.DEFINE_string("profile", None, "directory: trace seqjax's calls with "
                                "jax.profiler (traces kept there) and print the XLA operations "
                                "that took the most time per call, instead of comparing peers")
_JSON = flags.DEFINE_string("json", None, "write the rows as JSON to this path")


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
  library's call would otherwise share the cores with them (README, "How the CPU benchmark
  times": ``--settle_ms=0`` against 50 on the 2-core machine).

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


def _seqjax_call(cell, mode, unroll_steps, impl, remat):
  """seqjax's timed call: gradients of ``sum(outputs)`` (``train``) or the outputs (``infer``)."""
  def forward(params, xs):
    return recurrent.unroll(cell, params, xs, unroll=unroll_steps, impl=impl, remat=remat)[0]

  if mode == "train":
    return jax.grad(lambda p, x: jnp.sum(forward(p, x).astype(jnp.float32)), argnums=(0, 1))
  return forward


def _seqjax_jit(cell, mode, unroll_steps, impl, remat):
  return jax.jit(_seqjax_call(cell, mode, unroll_steps, impl, remat))


def _data_parallel_fn(cell, params, xs, mode, unroll_steps, impl, remat):
  """The layer with its batch split over every local device (``pmap``).

  Training returns the weights' gradients summed over the devices (``psum``) and each shard's
  input gradient, the same numbers as one device computes.
  """
  n = jax.local_device_count()
  if xs.shape[0] % n:
    raise ValueError(f"--data_parallel: batch {xs.shape[0]} does not split over {n} devices")
  shards = xs.reshape((n, xs.shape[0] // n) + xs.shape[1:])
  call = _seqjax_call(cell, mode, unroll_steps, impl, remat)

  def train(params, xs):
    dparams, dxs = call(params, xs)
    return jax.lax.psum(dparams, "batch"), dxs

  fn = jax.pmap(train if mode == "train" else call, axis_name="batch", in_axes=(None, 0))
  run = lambda: jax.block_until_ready(fn(params, shards))
  run.temp_bytes = None
  return run


def _seqjax_fn(cell_name, shape, dtype, mode, unroll_steps, impl="auto", remat=False,
               data_parallel=False):
  b, t, d, h = shape
  cell = cells.get_cell(cell_name)
  params = cell.init(jax.random.PRNGKey(0), d, h, dtype)
  xs = jax.random.normal(jax.random.PRNGKey(1), (b, t, d), jnp.float32).astype(dtype)
  if data_parallel:
    return _data_parallel_fn(cell, params, xs, mode, unroll_steps, impl, remat)
  compiled = _seqjax_jit(cell, mode, unroll_steps, impl, remat).lower(params, xs).compile()
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
                   seqjax_impl="auto", remat=False, data_parallel=False, settle_seconds=0.0):
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
  builders = {"seqjax": lambda *a: _seqjax_fn(*a, unroll_steps, _resolve(seqjax_impl, a[0]),
                                              remat, data_parallel),
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


_CONTAINERS = re.compile(r"(?<![\w-])(while|call|conditional)\(")  # not custom-call(


def xla_operations(hlo_text: str) -> dict[str, bool]:
  """``{name: is_matmul}`` for the operations of an optimized HLO module that do work themselves.

  Loops, calls and conditionals are left out: their time is their body's operations' time. An
  operation is a matmul when it is a ``dot`` or a fusion whose computation holds one.
  """
  lines = hlo_text.splitlines()
  computations, current = {}, None
  for line in lines:
    header = re.match(r"(?:ENTRY\s+)?%?([\w.\-]+) .*\{\s*$", line)
    if header:
      current, computations[header.group(1)] = header.group(1), []
    elif current is not None:
      computations[current].append(line)
  has_dot = {name: any(" dot(" in l for l in body) for name, body in computations.items()}
  operations = {}
  for line in lines:
    match = re.match(r"\s*(?:ROOT\s+)?%?([\w.\-]+) = (.*)", line)
    if not match:
      continue
    instruction = match.group(2).split(", metadata=")[0]
    if _CONTAINERS.search(instruction):
      continue
    called = re.search(r"calls=%?([\w.\-]+)", instruction)
    operations[match.group(1)] = " dot(" in instruction or bool(called and
                                                                has_dot.get(called.group(1)))
  return operations


def custom_calls(hlo_text: str) -> set[str]:
  """The names of an HLO module's custom calls (the native kernels of ``seqjax/native.py``)."""
  return set(re.findall(r"%?([\w.\-]+) = [^\n]*\bcustom-call\(", hlo_text))


def _trace_files(trace_dir: str) -> set[str]:
  return set(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))


def operation_times(paths, operations: set[str]) -> dict[str, tuple[int, float]]:
  """``{operation: (count, microseconds)}`` summed over the profiler trace files ``paths``."""
  totals = collections.defaultdict(lambda: [0, 0.0])
  for path in paths:
    with gzip.open(path) as f:
      for event in json.load(f).get("traceEvents", []):
        if event.get("ph") == "X" and event.get("name") in operations:
          totals[event["name"]][0] += 1
          totals[event["name"]][1] += event.get("dur", 0.0)
  return {name: (count, us) for name, (count, us) in totals.items()}


def profile_rows(shapes, cell_names, dtypes, modes, out_dir, calls=5, top=12, unroll_steps=1,
                 seqjax_impl="auto", remat=False):
  """Per shape, cell, dtype and mode: seqjax's XLA operations that took the most time per call.

  On a CPU the per-operation events need ``--xla_cpu_enable_xprof_traceme=true`` in XLA_FLAGS
  before JAX starts (``main`` adds it).
  """
  rows = []
  for shape in shapes:
    for cell_name in cell_names:
      for dtype_name in dtypes:
        for mode in modes:
          fn = _seqjax_fn(cell_name, shape, jnp.dtype(dtype_name), mode, unroll_steps,
                          _resolve(seqjax_impl, cell_name), remat)
          fn()
          name = f"{'x'.join(map(str, shape))}-{cell_name}-{dtype_name}-{mode}"
          trace_dir = os.path.join(out_dir, name)
          earlier = _trace_files(trace_dir)  # a rerun into the same directory adds, keeps these
          start = time.perf_counter()
          with jax.profiler.trace(trace_dir):
            for _ in range(calls):
              fn()
          seconds = (time.perf_counter() - start) / calls
          matmul = xla_operations(fn.hlo_text)
          times = operation_times(_trace_files(trace_dir) - earlier, set(matmul))
          kernels = custom_calls(fn.hlo_text)
          ops = [{"name": op, "matmul": matmul[op], "runs_per_call": count / calls,
                  "ms_per_call": us / calls / 1e3, "native_kernel": op in kernels}
                 for op, (count, us) in sorted(times.items(), key=lambda item: -item[1][1])]
          native_ms = sum(op["ms_per_call"] for op in ops if op["native_kernel"])
          # Operations that run more than once a call sit in the time loops: once per step.
          groups = {(m, per_step): sum(op["ms_per_call"] for op in ops
                                       if op["matmul"] == m and not op["native_kernel"] and
                                       (op["runs_per_call"] > 1) == per_step)
                    for m in (True, False) for per_step in (True, False)}
          rows.append({"shape": "x".join(map(str, shape)), "cell": cell_name,
                       "dtype": dtype_name, "mode": mode, "impl": "seqjax",
                       "seconds_per_call_traced": seconds, "operations": ops,
                       "ms_per_call": {"matmuls_in_loops": groups[True, True],
                                       "matmuls_once": groups[True, False],
                                       "other_in_loops": groups[False, True],
                                       "other_once": groups[False, False],
                                       "native_kernels": native_ms}})
          print(f"{name}: {sum(groups.values()) + native_ms:.1f} ms per call in XLA operations "
                f"({seconds * 1e3:.1f} ms of wall time with the profiler on): native kernels "
                f"{native_ms:.1f}, matmuls {groups[True, True]:.1f} in the time loops + "
                f"{groups[True, False]:.1f} once, other operations {groups[False, True]:.1f} in "
                f"the loops + {groups[False, False]:.1f} once. The {top} largest:")
          for op in ops[:top]:
            per_run = op["ms_per_call"] / op["runs_per_call"] * 1e3
            print(f"  {op['ms_per_call']:8.2f} ms  {op['runs_per_call']:6.0f} x "
                  f"{per_run:8.1f} us  {op['name']}{'  (matmul)' if op['matmul'] else ''}"
                  f"{'  (native kernel)' if op['native_kernel'] else ''}",
                  flush=True)
  return rows


def memory_rows(shapes, cell_names, dtypes, seqjax_impl="auto", remat=False):
  """XLA's scratch bytes of seqjax's compiled training call per shape, cell and dtype."""
  rows = []
  for shape in shapes:
    for cell_name in cell_names:
      for dtype_name in dtypes:
        stats = _training_memory(cell_name, shape, jnp.dtype(dtype_name),
                                 _resolve(seqjax_impl, cell_name), remat)
        temp = None if stats is None else int(stats.temp_size_in_bytes)
        rows.append({"shape": "x".join(map(str, shape)), "cell": cell_name, "dtype": dtype_name,
                     "mode": "train", "impl": "seqjax", "temp_bytes": temp})
        per_token = (f"{temp / (shape[0] * shape[1]) / 1024:,.1f} KiB/token"
                     if temp is not None else "not reported by this backend")
        print(f"{rows[-1]['shape']:>18} {cell_name:>8} {dtype_name:>8} train "
              f"{(temp or 0) / 2**20:>10,.1f} MiB  {per_token}", flush=True)
  return rows


def _training_memory(cell_name, shape, dtype, impl, remat):
  """XLA's memory analysis of seqjax's training call, compiled from shapes (nothing allocated)."""
  b, t, d, h = shape
  cell = cells.get_cell(cell_name)
  params = jax.eval_shape(lambda: cell.init(jax.random.PRNGKey(0), d, h, dtype))
  xs = jax.ShapeDtypeStruct((b, t, d), dtype)
  return _seqjax_jit(cell, "train", 1, impl, remat).lower(params, xs).compile().memory_analysis()


def training_bytes(cell_name, shape, dtype, impl="auto", remat=False) -> int | None:
  """Device bytes XLA assigns seqjax's compiled training call: arguments, outputs and scratch.

  None where the backend reports nothing.
  """
  stats = _training_memory(cell_name, shape, dtype, impl, remat)
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


def _resolve(impl, cell_name):
  """'fused' and 'pallas' only exist for LSTM and GRU; other cells fall back to the scan."""
  return impl if fused.supports(cells.get_cell(cell_name)) else "scan"


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


def _longest_rows(text):
  """``--longest``: per cell and dtype, the longest sequence that fits, checked by one step."""
  try:
    b, d, h = (int(p) for p in text.lower().split("x"))
    assert min(b, d, h) > 0
  except (ValueError, AssertionError):
    raise app.UsageError(f"bad --longest {text!r}: expected batch x input x hidden, three "
                         "positive integers, e.g. 64x1024x1024") from None
  if _MEMORY_LIMIT.value is not None:
    limit = int(_MEMORY_LIMIT.value * 2**30)
  else:
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" not in stats:
      raise app.UsageError(f"the {jax.default_backend()} device reports no memory limit; "
                           "pass --memory_limit_gb")
    limit = int(stats["bytes_limit"])
  rows = []
  for cell_name in _CELLS.value:
    for dtype_name in _DTYPES.value:
      dtype = jnp.dtype(dtype_name)
      impl = _resolve(_IMPL.value, cell_name)

      @functools.cache  # the search and the row below ask for some lengths twice
      def need(t, cell_name=cell_name, dtype=dtype, impl=impl):
        return training_bytes(cell_name, (b, t, d, h), dtype, impl, _REMAT.value)

      longest = longest_sequence(need, limit)
      ran = None
      if longest:
        try:  # the proof: one real training step at that length
          _seqjax_fn(cell_name, (b, longest, d, h), dtype, "train", 1, impl, _REMAT.value)()
          ran = True
        except Exception as err:  # pylint: disable=broad-except
          ran = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
      rows.append({"shape": f"{b}x{longest}x{d}x{h}", "cell": cell_name, "dtype": dtype_name,
                   "mode": "train", "impl": "seqjax", "longest_time": longest,
                   "limit_bytes": limit, "need_bytes": need(longest) if longest else None,
                   "one_step_ran": ran})
      print(f"{cell_name:>8} {dtype_name:>8} batch {b} hidden {h}: longest {longest:,} steps "
            f"within {limit / 2**30:.3g} GiB (impl {impl}, remat {_REMAT.value}); one step "
            f"at that length: {'ran' if ran is True else ran}", flush=True)
  return rows


def _torch_threads(requested: int | None) -> int | None:
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


def _enable_cpu_operation_events():
  """XLA:CPU reports per-operation profiler events only with this flag, read when JAX starts."""
  flag = "--xla_cpu_enable_xprof_traceme=true"
  if flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _PROFILE.value:
    _enable_cpu_operation_events()
  if not _NATIVE.value:
    fused.NATIVE = False
  native.PROJECT = {"auto": None, "kernel": True, "xla": False}[_PROJECT.value]
  for name in _CELLS.value:
    cells.get_cell(name)  # fails early, naming the unknown cell
  for name in _DTYPES.value:
    if name not in ("float32", "bfloat16"):
      raise app.UsageError(f"unknown dtype {name!r}; use float32 or bfloat16")
  for mode in _MODES.value:
    if mode not in ("train", "infer"):
      raise app.UsageError(f"unknown mode {mode!r}; use train or infer")
  torch_threads = _torch_threads(_TORCH_THREADS.value) if "torch" in _PEERS.value else None
  backend = jax.default_backend()
  default = GPU_SHAPES if backend == "gpu" else CPU_SHAPES
  shapes = [parse_shape(s) for s in (_SHAPES.value or list(default)) + _EXTRA.value]
  settle_ms = _SETTLE_MS.value if _SETTLE_MS.value is not None else (50.0 if backend == "cpu"
                                                                      else 0.0)
  if settle_ms < 0:
    raise app.UsageError(f"--settle_ms must be >= 0; got {settle_ms}")
  print(f"backend {backend}: {jax.devices()[0].device_kind}; jax {jax.__version__}; "
        f"seqjax impl {_IMPL.value}, remat {_REMAT.value}, data-parallel over "
        f"{jax.local_device_count() if _DATA_PARALLEL.value else 1} device(s); PyTorch CPU "
        f"threads {torch_threads}; settle {settle_ms:g} ms; native CPU kernels "
        f"{'off' if not _NATIVE.value else 'on' if native.available() else 'not built'}"
        f" (input projection: {_PROJECT.value})")
  if _PROFILE.value:
    if _DATA_PARALLEL.value:
      raise app.UsageError("--profile times seqjax on one device; drop --data_parallel")
    rows, notes = profile_rows(shapes, _CELLS.value, _DTYPES.value, _MODES.value, _PROFILE.value,
                               _REPEATS.value, unroll_steps=_UNROLL.value,
                               seqjax_impl=_IMPL.value, remat=_REMAT.value), []
  elif _LONGEST.value:
    rows, notes = _longest_rows(_LONGEST.value), []
  elif _MEMORY_ONLY.value:
    rows, notes = memory_rows(shapes, _CELLS.value, _DTYPES.value, _IMPL.value, _REMAT.value), []
  else:
    rows, notes = benchmark_rows(shapes, _CELLS.value, _DTYPES.value, _MODES.value,
                                 _PEERS.value, _REPEATS.value, _UNROLL.value, _IMPL.value,
                                 _REMAT.value, _DATA_PARALLEL.value, settle_ms / 1e3)
    peers = [p for p in _PEERS.value if any(r["impl"] == p for r in rows)]
    print()
    print(format_table(rows, peers))
  for note in notes:
    print(f"note: {note}")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"backend": backend, "device": jax.devices()[0].device_kind,
                 "jax": jax.__version__, "impl": _IMPL.value, "remat": _REMAT.value,
                 "data_parallel_devices": (jax.local_device_count() if _DATA_PARALLEL.value
                                           else 1),
                 "torch_threads": torch_threads, "repeats": _REPEATS.value,
                 "settle_ms": settle_ms,
                 "native_kernels": _NATIVE.value and native.available(),
                 "native_projection": _PROJECT.value,
                 "rows": rows, "notes": notes},
                f, indent=1)


if __name__ == "__main__":
  app.run(main)
