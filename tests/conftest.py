"""Suite-wide settings.

On GPUs XLA multiplies float32 matrices in TF32 by default (about 1e-3 relative error), which
would hide real differences between the fast paths and the scan reference behind rounding.
Every test therefore asks for exact float32 products; on the CPU this changes nothing.
"""

import jax

if jax.default_backend() != "cpu":
  jax.config.update("jax_default_matmul_precision", "highest")
