"""Suite-wide settings.

Compilation, not execution, is what most tests here spend their time on: their shapes are tiny
and each traces a new program. XLA's backend optimisation level 0 skips LLVM's optimisation of the
generated CPU code, which halves compile time (a fused-vs-scan gradient test: 15.4 s -> 7.7 s of
CPU time) while the HLO the library produces, and so what the tests check, is unchanged; only the
last bits of float rounding may move, which the tolerances and same-setting comparisons absorb.
``forced_devices.environment`` gives subprocesses the same flag, so every program in the suite is
compiled the same way. Set ``SEQJAX_TEST_XLA_OPT=default`` to run the suite at XLA's default.

On GPUs XLA multiplies float32 matrices in TF32 by default (about 1e-3 relative error), which
would hide real differences between the fast paths and the scan reference behind rounding.
Every test therefore asks for exact float32 products; on the CPU this changes nothing.
"""

import os

import forced_devices

# Before JAX creates its backend (first use below), which is when it reads XLA_FLAGS.
os.environ["XLA_FLAGS"] = forced_devices.xla_flags(os.environ.get("XLA_FLAGS", ""))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

if jax.default_backend() != "cpu":
  jax.config.update("jax_default_matmul_precision", "highest")
