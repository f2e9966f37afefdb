"""The benchmark command's plumbing (no timing is asserted: benchmarks are not tests).

``experiments/benchmark``: ``timing.py``, ``memory.py``, ``profiling.py``, the command
(``__main__.py``) and ``native_parts.py``.
"""

import json
import re
import subprocess
import sys
import time

from absl import app
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import forced_devices
from experiments.benchmark import memory
from experiments.benchmark import profiling
from experiments.benchmark import timing
from seqjax import cells
from seqjax import kernels
from seqjax.kernels import native


def test_parse_shape_accepts_four_positive_ints_and_names_bad_input():
  assert timing.parse_shape("16x256x128x64") == (16, 256, 128, 64)
  for bad in ["16x256", "axbxcxd", "0x1x1x1"]:
    with pytest.raises(app.UsageError, match="bad shape"):
      timing.parse_shape(bad)


def test_format_table_reports_ratio_of_seqjax_to_each_peer():
  rows = [
      {"shape": "1x2x3x4", "cell": "lstm", "dtype": "float32", "mode": "train",
       "impl": "seqjax", "tokens_per_sec": 3000.0},
      {"shape": "1x2x3x4", "cell": "lstm", "dtype": "float32", "mode": "train",
       "impl": "torch", "tokens_per_sec": 1500.0},
  ]
  table = timing.format_table(rows, ["torch"])
  assert "| 1x2x3x4 | lstm | float32 | train | 3.0k | 1.5k | 2.00x |" in table


def test_interleaved_seconds_calls_every_implementation_once_per_round():
  calls = []
  fns = {name: (lambda name=name: calls.append(name)) for name in ["seqjax", "torch", "flax"]}
  seconds = timing.interleaved_seconds(fns, repeats=4)
  assert set(seconds) == set(fns) and all(s >= 0 for s in seconds.values())
  rounds = [calls[i:i + 3] for i in range(0, len(calls), 3)]
  # Every round runs all three; who goes first rotates, so no one always runs on a warm cache.
  assert rounds == [["seqjax", "torch", "flax"], ["torch", "flax", "seqjax"],
                    ["flax", "seqjax", "torch"], ["seqjax", "torch", "flax"]]


def test_settling_gives_each_timed_call_an_untimed_call_of_its_own_first():
  calls, slow = [], {"torch"}

  def make(name):
    def fn():
      calls.append(name)
      if name in slow and calls.count(name) % 2 == 1:  # only the untimed call is slow
        time.sleep(0.05)
    return fn

  seconds = timing.interleaved_seconds({n: make(n) for n in ["seqjax", "torch"]}, repeats=2,
                                          settle_seconds=0.001)
  assert calls == ["seqjax", "seqjax", "torch", "torch", "torch", "torch", "seqjax", "seqjax"]
  assert seconds["torch"] < 0.04  # the timed call is the second of each pair


@pytest.mark.skipif(sys.platform != "linux", reason="counts page faults with getrusage")
def test_page_faults_count_the_fresh_memory_a_timed_call_touches():
  # 64 MiB is above glibc's largest mmap threshold (32 MiB): every call maps fresh pages, 16,384
  # of 4 KiB, and touches them all; the idle call touches none.
  # (bytes, not numpy: numpy asks for 2 MiB pages for large arrays.)
  fns = {"touch": lambda: b"\x01" * (64 << 20), "idle": lambda: None}
  faults = {}
  timing.interleaved_seconds(fns, repeats=3, faults=faults)
  assert faults["touch"] >= 8000 and faults["idle"] < 100


def test_torch_threads_is_applied_and_a_bad_count_is_named():
  torch = pytest.importorskip("torch")
  before = torch.get_num_threads()
  try:
    assert timing.torch_threads(1) == 1 == torch.get_num_threads()
  finally:
    torch.set_num_threads(before)
  assert timing.torch_threads(None) == before
  with pytest.raises(app.UsageError, match="--torch_threads must be a positive integer"):
    timing.torch_threads(0)


def test_benchmark_rows_times_every_requested_combination():
  rows, notes = timing.benchmark_rows([(2, 3, 4, 5)], ["gru", "min_lstm"], ["float32"],
                                         ["train", "infer"], [], repeats=1, unroll_steps=1)
  assert notes == []
  assert sorted((r["cell"], r["mode"]) for r in rows) == [
      ("gru", "infer"), ("gru", "train"), ("min_lstm", "infer"), ("min_lstm", "train")]
  for row in rows:
    assert row["tokens_per_sec"] == pytest.approx(2 * 3 / row["seconds"])


@pytest.mark.parametrize("impl", ["scan", "fused"])
def test_benchmark_rows_runs_each_seqjax_implementation(impl, monkeypatch):
  asked = []
  unroll = timing.recurrent.unroll
  monkeypatch.setattr(timing.recurrent, "unroll",
                      lambda *a, **k: asked.append((a[0].name, k["impl"])) or unroll(*a, **k))
  rows, notes = timing.benchmark_rows([(2, 3, 4, 5)], ["lstm", "min_gru"], ["float32"],
                                         ["train"], [], repeats=1, unroll_steps=1,
                                         seqjax_impl=impl)
  assert notes == []
  assert sorted(r["cell"] for r in rows) == ["lstm", "min_gru"]
  # 'fused' exists for LSTM and GRU only; min_gru falls back to the scan instead of failing.
  assert set(asked) == {("lstm", impl), ("min_gru", "scan")}


def test_remat_rows_report_less_scratch_memory_for_the_scan():
  # XLA's buffer count of the compiled training call: rematerialised steps keep only carries.
  def temp_bytes(remat):
    rows, _ = timing.benchmark_rows([(4, 64, 8, 32)], ["lstm"], ["float32"], ["train"], [],
                                       repeats=1, unroll_steps=1, seqjax_impl="scan",
                                       remat=remat)
    return rows[0]["temp_bytes"]

  plain, remat = temp_bytes(False), temp_bytes(True)
  assert 0 < remat < plain


def test_memory_rows_grow_with_the_sequence_and_shrink_with_remat():
  def temp_bytes(time, remat):
    return memory.memory_rows([(4, time, 8, 32)], ["gru"], ["float32"], "scan",
                                 remat)[0]["temp_bytes"]

  assert temp_bytes(64, False) > temp_bytes(32, False)
  assert temp_bytes(64, True) < temp_bytes(64, False)


def test_longest_sequence_brackets_the_limit():
  need = lambda t: 1000 + 37 * t  # grows with t: the search may rely on nothing else
  for limit in [500, 1037, 5000, 123456]:
    t = memory.longest_sequence(need, limit, resolution=0.0)
    assert t == max(0, (limit - 1000) // 37)
  assert memory.longest_sequence(need, 10**9, max_time=1000) == 1000


def test_longest_sequence_of_a_real_compiled_layer_fits_and_twice_does_not():
  need = lambda t: memory.training_bytes("gru", (2, t, 4, 8), jnp.float32, "scan", True)
  limit = 4 * need(100)
  t = memory.longest_sequence(need, limit)
  assert need(t) <= limit < need(int(t * 1.02) + 2)


def test_data_parallel_rows_compute_the_single_device_gradients():
  # On CI's one CPU device the pmap has one shard; the arithmetic path is the one N devices run.
  cell = cells.get_cell("lstm")
  params = cell.init(jax.random.PRNGKey(0), 4, 6)
  xs = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 4))
  run = timing.data_parallel_fn(cell, params, xs, "train", 1, "auto", False)
  dparams, dxs = run()
  want_params, want_xs = timing.seqjax_jit(cell, "train", 1, "auto", False)(params, xs)
  for got, want in zip(jax.tree.leaves(dparams), jax.tree.leaves(want_params)):
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dxs.reshape(xs.shape), want_xs, rtol=1e-5, atol=1e-6)


def test_data_parallel_over_two_host_devices_sums_the_weight_gradients():
  # Two CPU devices need XLA_FLAGS before JAX starts: run the check above in a fresh process.
  env = forced_devices.environment(devices=2)
  test = f"{__file__}::test_data_parallel_rows_compute_the_single_device_gradients"
  probe = ("import jax, sys, pytest; assert jax.local_device_count() == 2; "
           f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {test!r}]))")
  result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_xla_operations_lists_the_working_operations_and_marks_the_matmuls():
  run = timing.seqjax_fn("lstm", (2, 5, 3, 4), jnp.float32, "train", 1)
  operations = profiling.xla_operations(run.hlo_text)
  assert operations and any(operations.values()) and not all(operations.values())
  # Loops are containers: their time is counted through their bodies' operations.
  loops = re.findall(r"%?([\w.\-]+) = [^\n]* while\(", run.hlo_text)
  assert loops and not set(loops) & set(operations)


def test_operation_times_sums_the_complete_events_of_the_named_operations(tmp_path):
  events = [{"ph": "X", "name": "dot.1", "dur": 5.0}, {"ph": "X", "name": "dot.1", "dur": 7.0},
            {"ph": "X", "name": "fusion", "dur": 1.5}, {"ph": "X", "name": "while", "dur": 99.0},
            {"ph": "M", "name": "dot.1"}]
  path = tmp_path / "run" / "host.trace.json.gz"
  path.parent.mkdir()
  import gzip, json  # pylint: disable=import-outside-toplevel,multiple-imports
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": events}, f)
  assert profiling.operation_times([str(path)], {"dot.1", "fusion"}) == {
      "dot.1": (2, 12.0), "fusion": (1, 1.5)}


def test_profile_rows_attribute_a_real_call_to_its_operations(tmp_path):
  rows = profiling.profile_rows([(2, 6, 3, 4)], ["gru"], ["float32"], ["train"], str(tmp_path),
                                calls=2)
  (row,) = rows
  names = {op["name"] for op in row["operations"]}
  assert names and names <= set(profiling.xla_operations(
      timing.seqjax_fn("gru", (2, 6, 3, 4), jnp.float32, "train", 1).hlo_text))
  # Each time-loop operation runs once per step of the forward or backward loop.
  assert any(op["runs_per_call"] in (6, 12) for op in row["operations"])
  assert row["ms_per_call"]["matmuls_in_loops"] > 0


@pytest.mark.skipif(jax.default_backend() != "cpu" or not native.available(),
                    reason="the native kernels run on the CPU backend, when built")
def test_profile_rows_count_the_native_kernels_apart(tmp_path):
  (row,) = profiling.profile_rows([(2, 6, 3, 16)], ["lstm"], ["float32"], ["train"],
                                  str(tmp_path), calls=2)
  native_ops = [op for op in row["operations"] if op["native_kernel"]]
  # The forward loop, the backward loop and the weight gradients, once each.
  assert {op["runs_per_call"] for op in native_ops} == {1}
  assert len(native_ops) == 3
  assert row["ms_per_call"]["native_kernels"] == pytest.approx(
      sum(op["ms_per_call"] for op in native_ops))
  assert row["ms_per_call"]["matmuls_in_loops"] == 0  # no XLA time loop is left


@pytest.mark.skipif(jax.default_backend() != "cpu" or not native.available(),
                    reason="the native kernels run on the CPU backend, when built")
def test_kernel_settings_reach_the_timed_call():
  # --nonative is Settings(native=False): the same layer compiles without the kernels.
  shape = (2, 5, 3, 16)
  default = timing.seqjax_fn("lstm", shape, jnp.float32, "train", 1)
  xla_loops = timing.seqjax_fn("lstm", shape, jnp.float32, "train", 1,
                               settings=kernels.Settings(native=False))
  assert len(profiling.custom_calls(default.hlo_text)) == 3
  assert not profiling.custom_calls(xla_loops.hlo_text)


@pytest.mark.skipif(jax.default_backend() != "cpu" or not native.available(),
                    reason="the native kernels run on the CPU backend, when built")
def test_project_flag_decides_who_projects_the_native_forwards_inputs(tmp_path):
  # Read from XLA, the projection [b, t, 4h] is one more scratch buffer of the training call
  # (XLA packs it with others, so the call grows by less than its 16 KiB).
  temp = {}
  for project in ("kernel", "xla"):
    out = tmp_path / f"{project}.json"
    command = [sys.executable, "-m", "experiments.benchmark", "--shapes=2x16x8x32", "--cells=lstm",
               "--dtypes=float32", "--modes=train", "--peers=", "--repeats=1", "--settle_ms=0",
               f"--project={project}", f"--json={out}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                            env=forced_devices.environment())
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"(input projection: {project})" in result.stdout
    report = json.loads(out.read_text())
    assert report["native_projection"] == project
    temp[project] = report["rows"][0]["temp_bytes"]
  assert temp["xla"] > temp["kernel"]
  bad = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--project=sometimes"],
                       capture_output=True, text=True, timeout=300, check=False,
                       env=forced_devices.environment())
  assert bad.returncode != 0 and "--project" in bad.stderr


@pytest.mark.skipif(jax.default_backend() != "cpu" or not native.available(),
                    reason="the native kernels run on the CPU backend, when built")
def test_native_parts_times_each_part_and_names_an_unknown_one():
  command = [sys.executable, "-m", "experiments.benchmark.native_parts", "--shapes=2x5x3x16",
             "--repeats=1"]
  result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                          env=forced_devices.environment())
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  (line,) = [l for l in result.stdout.splitlines() if l.startswith("2x5x3x16:")]
  for part in ("forward", "backward", "weight_grads", "dxs", "infer"):
    assert re.search(rf"{part} \d+\.\d ms \(\d+ GFLOP/s\)", line), line
  bad = subprocess.run(command + ["--parts=forward,sideways"], capture_output=True, text=True,
                       timeout=300, check=False, env=forced_devices.environment())
  assert bad.returncode != 0 and "unknown parts ['sideways']" in bad.stderr
