"""Input checks: values are range-checked when known, shapes and dtypes always."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import checks


def test_concrete_is_the_value_outside_jit_and_none_inside():
  np.testing.assert_array_equal(checks.concrete(jnp.arange(3)), [0, 1, 2])
  seen = []
  jax.jit(lambda x: seen.append(checks.concrete(x)) or x)(jnp.arange(3))
  assert seen == [None]


def test_check_lengths_names_the_bad_values_and_shapes():
  checks.check_lengths(np.array([0, 4, 2]), 3, 4)
  checks.check_lengths(None, 3, 4)
  with pytest.raises(ValueError, match=r"lengths must lie in \[0, 4\] \(the time dimension\); "
                     r"got \[5, -1\]"):
    checks.check_lengths(np.array([5, 4, -1]), 3, 4)
  with pytest.raises(ValueError, match=r"lengths must have shape \[batch\] = \[3\]; got \(2,\)"):
    checks.check_lengths(np.array([1, 2]), 3, 4)
  with pytest.raises(ValueError, match="lengths must be integers; got dtype float32"):
    checks.check_lengths(np.ones(3, np.float32), 3, 4)
  # Traced lengths: shape and dtype are still checked, the range cannot be.
  jax.jit(lambda n: checks.check_lengths(n, 3, 4) or n)(jnp.array([9, 9, 9]))


def test_check_token_ids_only_on_valid_positions():
  ids = np.array([[1, 2, 7], [0, -100, -100]])
  valid = np.array([[1, 1, 0], [1, 0, 0]])
  checks.check_token_ids(ids, 3, "targets", valid=valid)
  with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\).*\[-100, 7\]"):
    checks.check_token_ids(ids, 3, "targets")
  with pytest.raises(TypeError, match="tokens must be integer ids; got dtype float64"):
    checks.check_token_ids(np.ones(2), 3, "tokens")
