"""``seqjax.kernels.choose``: the one place that picks a layer's implementation, and its Settings.

The rule itself is in ``choose``'s docstring; these tests pin it down case by case and check that
``recurrent.unroll`` really runs what was chosen.
"""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import cells
from seqjax import kernels
from seqjax import recurrent

import fastpath_checks

B, T, D, H = 4, 7, 3, 5


def _setup(name="lstm", **kwargs):
  return fastpath_checks.random_layer(name, batch=B, time=T, d=D, h=H, **kwargs)


def _choose(cell, request, carry, **kwargs):
  params = cell.init(jax.random.key(0), D, H) if not cell.parallel else None
  return kernels.choose(cell, request, params, carry, **kwargs).name


# ----------------------------------------------------------------------------- the rule
@pytest.mark.skipif(jax.default_backend() not in ("cpu", "gpu"),
                    reason="'auto' picks the fused path on CPU and GPU")
def test_auto_takes_the_fused_path_for_float32_lstm_and_gru_only():
  carry32 = jnp.zeros((B, H), jnp.float32)
  assert _choose(cells.get_cell("lstm"), "auto", (carry32, carry32)) == "fused"
  assert _choose(cells.get_cell("gru"), "auto", carry32) == "fused"
  for cell in [cells.get_cell("gru", reset_after=False), cells.get_cell("peephole_lstm"),
               cells.get_cell("rnn")]:
    assert _choose(cell, "auto", carry32) == "scan"
  # A bf16 carry keeps the scan, which rounds the carry to bf16 every step as the cells do;
  # float64 (numerical checks, maybe forward mode) keeps it too.
  for dtype in (jnp.bfloat16, jnp.float16):
    assert _choose(cells.get_cell("gru"), "auto", carry32.astype(dtype)) == "scan"
  with jax.enable_x64(True):
    carry64 = jnp.zeros((B, H), jnp.float64)
    assert _choose(cells.get_cell("lstm"), "auto", (carry64, carry64)) == "scan"
  assert _choose(cells.get_cell("lstm"), "scan", (carry32, carry32)) == "scan"


def test_the_backend_and_remat_are_inputs_of_the_rule():
  cell, params, _ = _setup("gru")
  carry = cell.initial_carry(B, H)
  choose = lambda request, **kw: kernels.choose(cell, request, params, carry, **kw)
  assert choose("auto", backend="tpu").name == "scan"  # unmeasured there
  assert choose("auto", backend="gpu").name == "fused"
  # remat asks for memory: 'auto' takes the rematerialised scan; an explicit 'scan' keeps remat.
  assert choose("auto", backend="cpu", remat=True) == kernels.Impl("scan", remat=True)
  assert choose("scan", remat=True) == kernels.Impl("scan", remat=True)
  # The fused path's inference loop and in-place backward follow the backend ...
  assert choose("fused", backend="cpu")[2:4] == (False, True)   # (lean, in_place)
  assert choose("fused", backend="gpu")[2:4] == (True, False)
  # ... unless the settings say otherwise.
  assert choose("fused", backend="gpu", settings=kernels.Settings(forward="fused")).lean is False
  assert choose("fused", backend="cpu", settings=kernels.Settings(forward="lean")).lean is True
  # Pallas is interpreted on the CPU only, unless told.
  assert choose("pallas", backend="cpu").interpret and not choose("pallas", backend="gpu").interpret
  assert not choose("pallas", backend="cpu",
                    settings=kernels.Settings(interpret=False)).interpret


def test_settings_are_immutable_hashable_values_and_name_bad_fields():
  settings = kernels.Settings(native=False, threads=2)
  assert settings == kernels.Settings(native=False, threads=2)
  assert hash(settings) == hash(kernels.Settings(native=False, threads=2))
  with pytest.raises(Exception):  # frozen
    settings.threads = 3  # pylint: disable=attribute-defined-outside-init
  for kwargs, message in [({"forward": "fast"}, "Settings.forward must be"),
                          ({"native": "yes"}, "Settings.native must be None, True or False"),
                          ({"project": 1.5}, "Settings.project must be None, True or False"),
                          ({"interpret": "no"}, "Settings.interpret must be"),
                          ({"threads": 0}, "Settings.threads must be a positive int"),
                          ({"cudnn_kernel": 3}, "Settings.cudnn_kernel must be callable")]:
    with pytest.raises(ValueError, match=message):
      kernels.Settings(**kwargs)
  cell, params, xs = _setup()
  with pytest.raises(ValueError, match="kernel settings must be a seqjax.kernels.Settings"):
    recurrent.unroll(cell, params, xs, kernel_settings={"native": False})


# ----------------------------------------------------------------------------- what runs
@pytest.mark.parametrize("impl, uses_custom_vjp", [
    ("auto", jax.default_backend() in ("cpu", "gpu")), ("fused", True), ("scan", False)])
def test_unroll_really_dispatches_on_impl(impl, uses_custom_vjp):
  cell, params, xs = _setup("lstm")
  jaxpr = str(jax.make_jaxpr(lambda p, x: recurrent.unroll(cell, p, x, impl=impl))(params, xs))
  assert ("custom_vjp_call" in jaxpr) == uses_custom_vjp


def test_remat_makes_auto_take_the_rematerialised_scan():
  cell, params, xs = _setup("lstm")
  jaxpr = str(jax.make_jaxpr(lambda p, x: recurrent.unroll(cell, p, x, remat=True))(params, xs))
  assert "custom_vjp_call" not in jaxpr and "remat" in jaxpr


def test_bad_impl_names_the_problem():
  cell, params, xs = _setup("lstm")
  with pytest.raises(ValueError, match="impl must be one of"):
    recurrent.unroll(cell, params, xs, impl="cuda")
  rnn = cells.get_cell("rnn")
  with pytest.raises(ValueError, match="impl='fused' supports cells 'lstm' and 'gru'"):
    recurrent.unroll(rnn, rnn.init(jax.random.key(0), D, H), xs, impl="fused")


def test_settings_pass_through_bidirectional_and_stack():
  # A stack given Settings(forward='lean') computes what the default settings compute.
  sizes = dict(batch=B, time=T, d=D, h=H)
  lengths = np.array([7, 4, 1, 0])
  fastpath_checks.assert_trees_close(
      fastpath_checks.stack_loss_and_grads("gru", "fused", lengths, **sizes,
                                           kernel_settings=kernels.Settings(forward="lean")),
      fastpath_checks.stack_loss_and_grads("gru", "scan", lengths, **sizes))


# ----------------------------------------------------------------------------- imports
def test_import_seqjax_loads_no_gpu_only_module_and_builds_nothing(tmp_path):
  # A fresh process: this one has imported Pallas already through other tests.
  native_dir = pathlib.Path(kernels.__file__).parent / "native"
  files = lambda: {(p.name, p.stat().st_mtime_ns) for p in native_dir.iterdir()}
  before = files()
  probe = ("import sys, seqjax, seqjax.kernels; "
           "bad = [m for m in sys.modules if m.startswith('jax.experimental.pallas') "
           "or m == 'jax.experimental.rnn']; "
           "assert not bad, bad; print('clean')")
  result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300, check=False, cwd=tmp_path)
  assert result.returncode == 0 and "clean" in result.stdout, result.stderr[-2000:]
  assert files() == before  # nothing built, nothing written
  # ... and the Pallas path still loads Pallas when it runs.
  probe = ("import sys, jax, seqjax; from seqjax import cells, recurrent; "
           "c = cells.get_cell('gru'); p = c.init(jax.random.key(0), 3, 4); "
           "recurrent.unroll(c, p, jax.numpy.ones((2, 3, 3)), impl='pallas'); "
           "assert 'jax.experimental.pallas' in sys.modules")
  result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300, check=False, cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
