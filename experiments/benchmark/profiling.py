"""Where seqjax's time goes: its XLA operations (and native kernels) per call, from profiler traces.

``python -m experiments.benchmark --profile=DIR`` prints these rows.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import time

import jax
import jax.numpy as jnp

from experiments.benchmark import timing


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
  """The names of an HLO module's custom calls (the native kernels, ``seqjax/kernels/native``)."""
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
                 seqjax_impl="auto", remat=False, settings=None):
  """Per shape, cell, dtype and mode: seqjax's XLA operations that took the most time per call.

  On a CPU the per-operation events need ``--xla_cpu_enable_xprof_traceme=true`` in XLA_FLAGS
  before JAX starts (``main`` adds it).
  """
  rows = []
  for shape in shapes:
    for cell_name in cell_names:
      for dtype_name in dtypes:
        for mode in modes:
          fn = timing.seqjax_fn(cell_name, shape, jnp.dtype(dtype_name), mode, unroll_steps,
                                timing.resolve_impl(seqjax_impl, cell_name), remat,
                                settings=settings)
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


def enable_cpu_operation_events():
  """XLA:CPU reports per-operation profiler events only with this flag, read when JAX starts."""
  flag = "--xla_cpu_enable_xprof_traceme=true"
  if flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
