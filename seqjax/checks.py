"""Input checks shared by the library's public functions (lengths, token ids).

Every public function validates at its boundary so that a shape or range mistake meets a one-line
``ValueError`` / ``TypeError`` naming the value, not an XLA stack trace. Values are range-checked
only when they are known now (outside ``jit``); shapes and dtypes always. This module imports
nothing else from seqjax, so every other module may import it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def concrete(x) -> np.ndarray | None:
  """``x`` as numpy when its value is known now (not traced under jit/vmap), else None."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def check_lengths(lengths, batch: int, time: int) -> None:
  """Validates ``lengths: [b]`` integers in ``[0, time]`` (range checked when not traced)."""
  if lengths is None:
    return
  if np.ndim(lengths) != 1 or np.shape(lengths)[0] != batch:
    raise ValueError(f"lengths must have shape [batch] = [{batch}]; got {np.shape(lengths)}")
  # Plain lists have no dtype; jnp.result_type would reject them with an unhelpful message.
  dtype = lengths.dtype if hasattr(lengths, "dtype") else np.asarray(lengths).dtype
  if not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f"lengths must be integers; got dtype {dtype}")
  values = concrete(lengths)
  if values is not None and values.size and (values.min() < 0 or values.max() > time):
    bad = values[(values < 0) | (values > time)]
    raise ValueError(f"lengths must lie in [0, {time}] (the time dimension); got {bad.tolist()}")


def check_token_ids(tokens, size: int, what: str, valid=None) -> None:
  """Integer dtype always; ``0 <= id < size`` (where ``valid``) when the values are concrete."""
  dtype = tokens.dtype if hasattr(tokens, "dtype") else np.asarray(tokens).dtype
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"{what} must be integer ids; got dtype {dtype}")
  values = concrete(tokens)
  if values is None or not values.size:
    return
  bad = (values < 0) | (values >= size)
  if valid is not None:
    valid = concrete(valid)
    if valid is None:
      return
    bad &= np.broadcast_to(valid != 0, bad.shape)
  if bad.any():
    raise ValueError(f"{what} must lie in [0, {size}) (the vocabulary); got out-of-range ids "
                     f"{sorted(set(values[bad].tolist()))[:10]}")
