r"""Recurrent-layer speed: seqjax against PyTorch (cuDNN on a GPU) and flax.linen.RNN.

Times one recurrent layer, forward + backward (``train``: gradients w.r.t. the input and every
weight of ``sum(outputs)``) and forward alone (``infer``), and prints tokens/s (batch * time / s)
with the ratio of seqjax to each peer. Benchmarks are not tests: nothing here asserts a speed.

    python -m experiments.benchmark                       # the reference shapes for this backend
    python -m experiments.benchmark --shapes=32x128x256x256 --cells=lstm --dtypes=float32
    python -m experiments.benchmark --json=bench.json     # also write machine-readable rows
    python -m experiments.benchmark --impl=scan           # seqjax's plain scan, not the fast path
    python -m experiments.benchmark --impl=cudnn --cells=lstm   # cuDNN's LSTM (GPU only)
    python -m experiments.benchmark.native_parts          # the native CPU LSTM's parts alone

A shape is ``batch x time x input x hidden``. A peer that is not installed is skipped with a note.
The code: ``timing.py`` (the timed calls, rounds, table), ``memory.py`` (``--memory_only``,
``--longest``), ``profiling.py`` (``--profile``). Results and their history: README.md here.
"""

from __future__ import annotations

import json

from absl import app
from absl import flags
import jax

from experiments.benchmark import memory
from experiments.benchmark import profiling
from experiments.benchmark import timing
from seqjax import cells
from seqjax import kernels
from seqjax.kernels import native

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
                             "every step, one XLA matmul before it, or auto (the rule of "
                             "seqjax.kernels.native.projects)")
_UNROLL = flags.DEFINE_integer("unroll", 1, "lax.scan unroll factor for seqjax")
_REMAT = flags.DEFINE_bool("remat", False, "seqjax stores less for the backward and recomputes "
                           "it (see recurrent.unroll's remat)")
_IMPL = flags.DEFINE_enum("impl", "auto", list(kernels.IMPLS),
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _PROFILE.value:
    profiling.enable_cpu_operation_events()
  settings = kernels.Settings(native=None if _NATIVE.value else False,
                              project={"auto": None, "kernel": True, "xla": False}[_PROJECT.value])
  for name in _CELLS.value:
    cells.get_cell(name)  # fails early, naming the unknown cell
  for name in _DTYPES.value:
    if name not in ("float32", "bfloat16"):
      raise app.UsageError(f"unknown dtype {name!r}; use float32 or bfloat16")
  for mode in _MODES.value:
    if mode not in ("train", "infer"):
      raise app.UsageError(f"unknown mode {mode!r}; use train or infer")
  torch_threads = (timing.torch_threads(_TORCH_THREADS.value) if "torch" in _PEERS.value
                   else None)
  backend = jax.default_backend()
  default = timing.GPU_SHAPES if backend == "gpu" else timing.CPU_SHAPES
  shapes = [timing.parse_shape(s) for s in (_SHAPES.value or list(default)) + _EXTRA.value]
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
    rows, notes = profiling.profile_rows(shapes, _CELLS.value, _DTYPES.value, _MODES.value,
                                         _PROFILE.value, _REPEATS.value,
                                         unroll_steps=_UNROLL.value, seqjax_impl=_IMPL.value,
                                         remat=_REMAT.value, settings=settings), []
  elif _LONGEST.value:
    rows, notes = memory.longest_rows(_LONGEST.value, _CELLS.value, _DTYPES.value, _IMPL.value,
                                      _REMAT.value, _MEMORY_LIMIT.value, settings), []
  elif _MEMORY_ONLY.value:
    rows, notes = memory.memory_rows(shapes, _CELLS.value, _DTYPES.value, _IMPL.value,
                                     _REMAT.value, settings), []
  else:
    rows, notes = timing.benchmark_rows(shapes, _CELLS.value, _DTYPES.value, _MODES.value,
                                        _PEERS.value, _REPEATS.value, _UNROLL.value, _IMPL.value,
                                        _REMAT.value, _DATA_PARALLEL.value, settle_ms / 1e3,
                                        settings)
    peers = [p for p in _PEERS.value if any(r["impl"] == p for r in rows)]
    print()
    print(timing.format_table(rows, peers))
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
