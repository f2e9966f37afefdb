"""The native CPU kernels of the fused LSTM (``seqjax/kernels/native``) against the plain scan.

``make test`` builds the kernels first (``python -m seqjax.kernels.native``); the scan (autodiff
through ``cells.py``, itself checked against NumPy) is the reference for every number here.
Every test that needs the kernels asks for them with ``Settings(native=True)`` (:data:`ON`).
"""

import json
import os
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import cells
from seqjax import kernels
from seqjax import recurrent
from seqjax.kernels import native
from seqjax.kernels.native import library

import fastpath_checks

pytestmark = [
    pytest.mark.skipif(jax.default_backend() != "cpu",
                       reason="the native kernels are CPU custom calls"),
    # Without a C++ compiler `make` cannot build them; with one, a missing library is a failure.
    pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                       reason="no C++ compiler to build the native kernels"),
]

B, T, D = 4, 9, 3
LENGTHS = np.array([9, 4, 1, 0])  # max, middle, 1 and 0
ON = kernels.Settings(native=True)  # the kernels, or an error naming why they cannot run


@pytest.fixture(autouse=True)
def _native_built():
  assert native.available(), native.unavailable_reason()


def _setup(h, seed=0, batch=B, time=T):
  return fastpath_checks.random_layer("lstm", seed, batch=batch, time=time, d=D, h=h)


def _carry(cell, h, seed=10, batch=B):
  return fastpath_checks.random_carry(cell, seed, batch=batch, h=h)


def _kernels_in(fn, *args):
  """The native kernel targets the compiled program of ``fn(*args)`` calls."""
  text = jax.jit(fn).lower(*args).compile().as_text()
  return {target for target in library.TARGETS.values() if f'"{target}"' in text}


# Hidden sizes: 5 (scalar tails only), 40 (two threads: one vector slice and a ragged one) and
# 64 (whole vectors).
@pytest.mark.parametrize("h", [5, 40, 64])
@pytest.mark.parametrize("lengths, reverse", [(None, False), (LENGTHS, False), (LENGTHS, True)],
                         ids=["full", "ragged", "ragged-reverse"])
def test_native_matches_scan_outputs_carries_and_all_gradients(h, lengths, reverse):
  cell, params, xs = _setup(h)
  carry = _carry(cell, h)
  fastpath_checks.check_against_scan("fused", cell, params, xs, carry, lengths=lengths,
                                     reverse=reverse, kernel_settings=ON)
  # ... and the fused path did run the kernels, forward and backward.
  loss = lambda p, x, c: fastpath_checks.loss_and_grads(cell, p, x, c, "fused",
                                                        lengths=lengths, reverse=reverse,
                                                        kernel_settings=ON)
  assert _kernels_in(loss, params, xs, carry) == {
      "SeqjaxLstmForwardTrain", "SeqjaxLstmBackward", "SeqjaxLstmWeightGrads"}


@pytest.mark.parametrize("project", [True, False], ids=["projects", "reads-gx"])
@pytest.mark.parametrize("lengths, reverse", [(None, False), (LENGTHS, True)],
                         ids=["full", "ragged"])
def test_either_forward_kernel_input_matches_scan(project, lengths, reverse):
  # The forward kernel multiplies [x_t, h_prev] by [w_ih; w_hh] itself, or reads xs @ w_ih.
  settings = kernels.Settings(native=True, project=project)
  cell, params, xs = _setup(40, seed=21)
  carry = _carry(cell, 40, seed=22)
  assert kernels.choose(cell, "fused", params, carry, settings=settings).project == project
  fastpath_checks.check_against_scan("fused", cell, params, xs, carry, lengths=lengths,
                                     reverse=reverse, kernel_settings=settings)


def test_the_kernel_projects_unless_a_threads_weights_outgrow_4_mib():
  assert native.projects(None, 512, 512, 2)       # 4 MiB per thread
  assert not native.projects(None, 1024, 512, 2)  # 6 MiB per thread
  assert native.projects(None, 1024, 512, 4)      # 3 MiB per thread
  assert native.projects(None, 256, 256, 1)       # 2 MiB, one thread
  assert native.projects(True, 1024, 1024, 2) and not native.projects(False, 128, 128, 2)
  with pytest.raises(ValueError, match="Settings.project must be None, True or False"):
    kernels.Settings(project="sometimes")


@pytest.mark.parametrize("lengths, reverse", [(None, False), (LENGTHS, True)],
                         ids=["full", "ragged-reverse"])
def test_native_forward_without_gradient_matches_scan(lengths, reverse):
  cell, params, xs = _setup(48, seed=3)
  carry = _carry(cell, 48, seed=4)

  def run(impl):
    return lambda p, x, c: recurrent.unroll(cell, p, x, lengths=lengths, initial_carry=c,
                                            reverse=reverse, impl=impl, kernel_settings=ON)

  fastpath_checks.assert_trees_close(jax.jit(run("fused"))(params, xs, carry),
                                     jax.jit(run("scan"))(params, xs, carry))
  assert _kernels_in(run("fused"), params, xs, carry) == {"SeqjaxLstmForwardInfer"}


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_count_does_not_change_a_bit(threads):
  # Each unit's arithmetic is the same whichever thread owns it, so any split of the hidden
  # units (48 = three vectors: one, two or three threads) gives identical bits.
  cell, params, xs = _setup(48, seed=5, batch=6, time=12)
  carry = _carry(cell, 48, seed=6, batch=6)
  lengths = np.array([12, 7, 1, 0, 12, 3])

  def run(threads):
    return fastpath_checks.loss_and_grads(cell, params, xs, carry, "fused", lengths=lengths,
                                          kernel_settings=kernels.Settings(native=True,
                                                                           threads=threads))

  want = run(1)
  for a, b in zip(jax.tree.leaves(run(threads)), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_more_threads_than_vectors_of_units_still_match_scan():
  settings = kernels.Settings(native=True, threads=8)  # 20 units: one full vector, a tail of 4
  cell, params, xs = _setup(20, seed=11)
  fastpath_checks.check_against_scan("fused", cell, params, xs, _carry(cell, 20),
                                     lengths=LENGTHS, kernel_settings=settings)


def test_bidirectional_stack_with_lengths_matches_scan():
  sizes = dict(batch=B, time=T, d=D, h=32)
  fastpath_checks.assert_trees_close(
      fastpath_checks.stack_loss_and_grads("lstm", "fused", LENGTHS, **sizes,
                                           kernel_settings=ON),
      fastpath_checks.stack_loss_and_grads("lstm", "scan", LENGTHS, **sizes))


def test_vmap_over_networks_runs_the_kernels_once_per_network_and_matches_scan():
  cell, params, xs = _setup(32, seed=12)
  batched = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a, -a]), params)

  def per_network(impl):
    def loss(p):
      ys, final = recurrent.unroll(cell, p, xs, lengths=LENGTHS, impl=impl, kernel_settings=ON)
      return jnp.sum(jnp.tanh(ys)) + jnp.sum(cells.output_of(final))
    return jax.jit(jax.vmap(jax.value_and_grad(loss)))(batched)

  fastpath_checks.assert_trees_close(per_network("fused"), per_network("scan"))


def test_large_batch_and_long_sequence_match_scan():
  # More rows than one matmul tile (8) and h = 144, a long reduction: every tiling path.
  cell, params, xs = fastpath_checks.random_layer("lstm", 13, batch=19, time=40, d=7, h=144)
  carry = fastpath_checks.random_carry(cell, 14, batch=19, h=144)
  want = fastpath_checks.loss_and_grads(cell, params, xs, carry, "scan")
  got = fastpath_checks.loss_and_grads(cell, params, xs, carry, "fused", kernel_settings=ON)
  fastpath_checks.assert_trees_close(got, want, tol=2e-5)


# ----------------------------------------------------------------------------- dispatch, errors
def test_auto_takes_the_kernels_for_float32_lstm_from_16_units():
  # The default settings (native=None): the kernels where they fit.
  for h, expected in [(kernels.NATIVE_MIN_HIDDEN, True), (kernels.NATIVE_MIN_HIDDEN - 1, False)]:
    cell, params, xs = _setup(h)
    run = lambda p, x: recurrent.unroll(cell, p, x)[0]
    assert bool(_kernels_in(run, params, xs)) == expected, h
  gru = cells.get_cell("gru")
  gru_params = gru.init(jax.random.key(0), D, 32)
  assert not _kernels_in(lambda p, x: recurrent.unroll(gru, p, x)[0], gru_params, xs)


def test_changing_the_setting_retraces_instead_of_reusing_the_compiled_layer():
  # The layer's own jit (recurrent._unroll) takes the chosen Impl as a static argument: a call
  # with other settings gets its own program, not the layer compiled under the old ones.
  cell, params, xs = _setup(32)
  run = lambda settings: lambda p, x: recurrent.unroll(cell, p, x, impl="fused",
                                                       kernel_settings=settings)[0]
  assert _kernels_in(run(None), params, xs)
  assert not _kernels_in(run(kernels.Settings(native=False)), params, xs)
  assert _kernels_in(run(ON), params, xs)


def test_native_true_refuses_what_the_kernels_do_not_run():
  cell, params, xs = _setup(32)
  bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  with pytest.raises(ValueError, match="float32 carry and float32 w_hh"):
    recurrent.unroll(cell, bf16, xs.astype(jnp.bfloat16), impl="fused", kernel_settings=ON)
  with pytest.raises(ValueError, match="Settings.native must be None, True or False"):
    recurrent.unroll(cell, params, xs, impl="fused", kernel_settings=kernels.Settings(
        native="yes"))


def test_bad_thread_count_is_named():
  with pytest.raises(ValueError, match="Settings.threads must be a positive int"):
    kernels.Settings(threads=0)


def test_missing_or_stale_library_is_reported_and_auto_falls_back(monkeypatch, tmp_path):
  # A shape no other test traces.
  cell, params, xs = _setup(24, time=5)
  want = jax.jit(lambda p, x: recurrent.unroll(cell, p, x, impl="scan")[0])(params, xs)
  monkeypatch.setattr(library, "LIBRARY", tmp_path / "librnn_cpu.so")
  assert not native.available()
  assert "is not built" in native.unavailable_reason()
  with pytest.raises(RuntimeError, match="is not built"):
    recurrent.unroll(cell, params, xs, impl="fused", kernel_settings=ON)
  # A library older than its source is not used either.
  source = tmp_path / "rnn_cpu.cc"
  source.write_text("// newer\n")
  (tmp_path / "librnn_cpu.so").write_text("")
  os.utime(tmp_path / "librnn_cpu.so", (1, 1))
  monkeypatch.setattr(library, "SOURCE", source)
  with pytest.warns(RuntimeWarning, match="older than rnn_cpu.cc"):
    assert "older than rnn_cpu.cc" in native.unavailable_reason()
  # ... or than the header the source includes.
  os.utime(source, (1, 1))
  header = tmp_path / "blocks.h"
  header.write_text("// newer\n")
  monkeypatch.setattr(library, "HEADERS", (header,))
  with pytest.warns(RuntimeWarning, match="older than blocks.h"):
    assert "older than blocks.h" in native.unavailable_reason()
  # The default settings (native None) then run the XLA loops, with the same results.
  run = lambda p, x: recurrent.unroll(cell, p, x, impl="fused")[0]
  assert not _kernels_in(run, params, xs)
  np.testing.assert_allclose(jax.jit(run)(params, xs), want, atol=1e-5, rtol=1e-5)


def _copy_library(tmp_path, features):
  """The built library, copied into ``tmp_path`` with a record of ``features`` beside it."""
  copy = tmp_path / "librnn_cpu.so"
  shutil.copy(library.LIBRARY, copy)
  record = library.record_path(copy)
  record.write_text(json.dumps({"cpu_features": sorted(features)}))
  return copy


def test_a_library_built_for_cpu_features_this_machine_lacks_is_refused_with_a_note(
    monkeypatch, tmp_path):
  # Given a library whose record says it was built on a CPU with a feature this one lacks
  # (as on a cluster node with a newer CPU), sitting where seqjax looks for it.
  here = library.cpu_features()
  monkeypatch.setattr(library, "LIBRARY", _copy_library(tmp_path, here | {"avx1024_imaginary"}))
  # When seqjax looks at it, Then it is refused with a one-line note naming the feature and the
  # command that rebuilds it, and never loaded.
  with pytest.warns(RuntimeWarning) as notes:
    assert not native.available()
  (note,) = [str(n.message) for n in notes]
  assert "\n" not in note
  assert "features this one lacks (avx1024_imaginary)" in note
  assert "python -m seqjax.kernels.native" in note
  cell, params, xs = _setup(32, seed=7)
  carry = _carry(cell, 32, seed=8)
  with pytest.raises(RuntimeError, match="avx1024_imaginary"):
    recurrent.unroll(cell, params, xs, impl="fused", kernel_settings=ON)
  # ... and the fused LSTM runs its XLA loops: outputs and every gradient equal the XLA loops'
  # bit for bit, and the scan's within float32 rounding.
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # the note was given once; it is not repeated
    got = fastpath_checks.loss_and_grads(cell, params, xs, carry, "fused", lengths=LENGTHS)
    loss = lambda p, x, c: fastpath_checks.loss_and_grads(cell, p, x, c, "fused",
                                                          lengths=LENGTHS)
    assert not _kernels_in(loss, params, xs, carry)
  xla_loops = fastpath_checks.loss_and_grads(cell, params, xs, carry, "fused", lengths=LENGTHS,
                                             kernel_settings=kernels.Settings(native=False))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(xla_loops)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  fastpath_checks.assert_trees_close(
      got, fastpath_checks.loss_and_grads(cell, params, xs, carry, "scan", lengths=LENGTHS))


def test_a_library_built_for_this_cpu_or_a_lesser_one_is_loaded(monkeypatch, tmp_path):
  # A record of a subset of this CPU's features (an older CPU of the same family) is fine.
  fewer = {f for f in library.cpu_features() if not f.startswith("avx512")}
  copy = _copy_library(tmp_path, fewer)
  assert library.refusal(copy) == ""
  # A library without a record, as built before records existed, is refused.
  library.record_path(copy).unlink()
  monkeypatch.setattr(library, "LIBRARY", copy)
  with pytest.warns(RuntimeWarning, match="no readable record of the CPU it was built for"):
    assert not native.available()


def test_cpu_features_read_x86_flags_and_arm_features(tmp_path):
  x86 = tmp_path / "x86"
  x86.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\nbugs\t\t: spectre\n"
                 "processor\t: 1\nflags\t\t: fpu sse2 avx2 fma\n")
  arm = tmp_path / "arm"
  arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve\n")
  arch = {f for f in library.cpu_features(tmp_path / "missing") if f.startswith("arch:")}
  assert len(arch) == 1 and library.cpu_features(tmp_path / "missing") == arch
  assert library.cpu_features(x86) == arch | {"fpu", "sse2", "avx2", "fma"}
  assert library.cpu_features(arm) == arch | {"fp", "asimd", "sve"}


def test_kernel_names_a_wrong_shape():
  h = 16
  xs, carry = jnp.zeros((2, 3, 5)), jnp.zeros((2, h))
  w_ih = jnp.zeros((6, 4 * h))  # one input row too many
  with pytest.raises(Exception, match=r"w_ih has shape \[6,64,\], expected \[5,64,\]"):
    jax.block_until_ready(native.lstm_forward(xs, w_ih, jnp.zeros((h, 4 * h)), jnp.zeros(4 * h),
                                              carry, carry, None, train=False, threads=2,
                                              project=True))
  gx = jnp.zeros((2, 3, 4 * h + 4))  # not 4 * h wide
  with pytest.raises(Exception, match=r"gx has shape \[2,3,68,\], expected \[2,3,64,\]"):
    jax.block_until_ready(native.lstm_forward(gx, None, jnp.zeros((h, 4 * h)), jnp.zeros(4 * h),
                                              carry, carry, None, train=True, threads=2,
                                              project=False))


# (batch, time, d, h): 150 rows cross a 128-row pass and batch rows; g = 20 and 148 end in a
# partial vector of 4 columns; d = 0 has no input part; 9 rows split into tiles of 5 and 4.
@pytest.mark.parametrize("batch, time, d, h", [(3, 50, 7, 5), (2, 3, 33, 37), (1, 4, 0, 16),
                                               (5, 1, 9, 24)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_weight_gradient_kernel_matches_a_float64_sum_over_rows(batch, time, d, h, threads):
  rng = np.random.default_rng(batch * 1000 + time)
  xs, hs = rng.normal(size=(batch, time, d)), rng.normal(size=(batch, time, h))
  h0, dgates = rng.normal(size=(batch, h)), rng.normal(size=(batch, time, 4 * h))
  h_prev = np.concatenate([h0[:, None], hs[:, :-1]], axis=1)
  want_ih = np.einsum("btd,btg->dg", xs, dgates)
  want_hh = np.einsum("bth,btg->hg", h_prev, dgates)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  dw_ih, dw_hh = native.lstm_weight_grads(f32(xs), f32(hs), f32(h0), f32(dgates), threads)
  np.testing.assert_allclose(np.asarray(dw_ih), want_ih, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(np.asarray(dw_hh), want_hh, rtol=1e-5, atol=1e-4)


def test_weight_gradient_kernel_names_a_wrong_shape():
  xs, hs, h0 = jnp.zeros((2, 3, 5)), jnp.zeros((2, 3, 16)), jnp.zeros((2, 17))
  with pytest.raises(Exception, match=r"h0 has shape \[2,17,\], expected \[2,16,\]"):
    jax.block_until_ready(native.lstm_weight_grads(xs, hs, h0, jnp.zeros((2, 3, 64)), 2))
  with pytest.raises(Exception, match=r"xs has shape \[2,4,5,\], expected \[2,3,5,\]"):
    jax.block_until_ready(native.lstm_weight_grads(jnp.zeros((2, 4, 5)), hs, h0[:, :16],
                                                   jnp.zeros((2, 3, 64)), 2))


def test_build_reports_a_compiler_failure(tmp_path):
  with pytest.raises(RuntimeError, match="building the native kernels failed"):
    native.build(compiler="false", output=tmp_path / "lib.so")
  assert not (tmp_path / "lib.so").exists()
  assert not library.record_path(tmp_path / "lib.so").exists()


def test_build_compiles_a_working_library_and_records_this_cpu(tmp_path):
  path = native.build(output=tmp_path / "librnn_cpu.so")
  assert path.exists() and path.stat().st_size > 0
  record = json.loads(library.record_path(path).read_text())
  assert record["cpu_features"] == sorted(library.cpu_features())
  assert library.refusal(path) == ""

