"""train.global_sum and train.example_keys: their numbers on one and several slices, and the
"global" reduction equal bit for bit to the legacy one on one device.

A vmap with the runtime's axis name stands in for several devices here (it binds the same
collectives); the runtime's whole step on 1 to 8 slices is in slices_match_test.py, the real
1 vs 8 devices and 1 vs 2 processes runs in devices_match_test.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import train
from seqjax.train import global_batch

AXIS = global_batch.AXIS
KEY = jax.random.PRNGKey(7)


def test_global_sum_adds_over_the_axis_and_is_the_identity_outside_it():
  counts = jnp.array([[3.0, 1.0], [0.5, 2.0], [7.0, 0.25]], jnp.float32)  # 3 slices.
  got = jax.vmap(train.global_sum, axis_name=AXIS)(counts)
  np.testing.assert_array_equal(got, np.broadcast_to([10.5, 3.25], (3, 2)))
  x = jnp.float32(0.1) + jnp.float32(1e-9)
  np.testing.assert_array_equal(train.global_sum(x), x)
  np.testing.assert_array_equal(jax.jit(train.global_sum)(x), x)
  # Under a pmap over one device the sum is the identity too, bit for bit.
  one = jax.pmap(train.global_sum, axis_name=AXIS, devices=jax.devices()[:1])
  np.testing.assert_array_equal(one(jnp.array([0.1, 0.7])[:1]), np.float32([0.1]))


def test_global_sum_passes_no_gradient():
  # d/dx [x / global_sum(x)] is 1 / x when the count is a constant, 0 if it were differentiated.
  grad = jax.grad(lambda x: x / train.global_sum(x))(jnp.float32(4.0))
  assert float(grad) == 0.25


def test_shares_of_a_token_mean_add_up_to_the_global_token_mean():
  # Given 3 slices holding 5, 1 and 3 tokens,
  rng = np.random.default_rng(0)
  values = rng.normal(size=(3, 5)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]], np.float32)

  def share(v, m):
    return jnp.sum(v * m) / train.global_sum(jnp.sum(m))

  # the shares add up to the mean over all 9 tokens, not the mean of the three slice means.
  shares = jax.vmap(share, axis_name=AXIS)(values, mask)
  global_mean = np.sum(values * mask, dtype=np.float64) / 9
  np.testing.assert_allclose(np.sum(np.asarray(shares), dtype=np.float64), global_mean, rtol=1e-6)
  slice_means = np.sum(values * mask, 1) / np.sum(mask, 1)
  assert abs(np.mean(slice_means) - global_mean) > 0.05


def test_example_keys_fold_the_global_example_index():
  # Outside the pmap, rows are numbered from 0.
  keys = train.example_keys(KEY, 4)
  want = np.stack([jax.random.fold_in(KEY, r) for r in range(4)])
  np.testing.assert_array_equal(keys, want)
  # On the slice at axis position i, row r is example i * 3 + r of the global batch.
  by_slice = jax.vmap(lambda _: train.example_keys(KEY, 3), axis_name=AXIS)(jnp.arange(4))
  want = np.stack([jax.random.fold_in(KEY, i) for i in range(12)]).reshape(4, 3, 2)
  np.testing.assert_array_equal(by_slice, want)
  # So 4 slices of 3 draw exactly the masks one slice of 12 draws.
  masks = jax.vmap(lambda key: jax.random.bernoulli(key, 0.5, (5,)))
  one_slice = masks(train.example_keys(KEY, 12))
  np.testing.assert_array_equal(masks(by_slice.reshape(12, 2)), one_slice)
  assert 10 < one_slice.sum() < 50  # Masks, not constants.


def test_example_keys_need_a_positive_int():
  with pytest.raises(ValueError, match="positive int, got 0"):
    train.example_keys(KEY, 0)
  with pytest.raises(ValueError, match="positive int, got 2.5"):
    train.example_keys(KEY, 2.5)


def test_experiment_names_a_bad_reduction():
  with pytest.raises(ValueError, match="loss_reduction must be one of .* got 'mean'"):
    train.Experiment(init=None, loss_fn=None, get_batch=None, loss_reduction="mean")


def test_global_reduction_needs_the_runtime_axis():
  optimizer = train.make_optimizer(train.runtime_config())
  with pytest.raises(ValueError, match="needs axis_name='batch'.*got 'devices'"):
    train.make_train_step(lambda p, b, r: (0.0, {}), optimizer, KEY, axis_name="devices",
                          loss_reduction="global")


def test_helpers_refuse_the_legacy_reduction():
  # Under "device_mean" the runtime averages the devices' values, so a share would come out
  # divided by the device count: the helpers say so while tracing, on one device already.
  optimizer = train.make_optimizer(train.runtime_config())
  params = {"w": jnp.ones(2)}
  state = train.TrainState(jnp.int32(0), params, optimizer.init(params))
  for helper in (lambda rng: train.global_sum(jnp.float32(1.0)),
                 lambda rng: train.example_keys(rng, 2)):
    def loss_fn(p, batch, rng, helper=helper):
      del batch
      helper(rng)
      return jnp.sum(p["w"]), {}
    step = train.make_train_step(loss_fn, optimizer, KEY, loss_reduction="device_mean")
    with pytest.raises(ValueError, match="is for Experiment\\(loss_reduction='global'\\)"):
      jax.jit(step)(state, None)


def _token_loss(reduction):
  """Mean cross-entropy over the valid tokens of a ragged batch, as a sum over a count."""
  def loss_fn(params, batch, rng):
    del rng
    logits = jnp.tanh(batch["x"] @ params["w"]) @ params["out"]  # [b, t, v]
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][..., None], -1)[..., 0]
    count = jnp.sum(batch["mask"])
    if reduction == "global":
      count = train.global_sum(count)
    correct = (jnp.argmax(logits, -1) == batch["y"]) * batch["mask"]
    return jnp.sum(nll * batch["mask"]) / count, {"accuracy": jnp.sum(correct) / count}
  return loss_fn


def test_global_reduction_on_one_device_is_bitwise_the_legacy_one():
  # Given a token-averaged loss written as sum / count, pmapped over one device with Adam,
  rng = np.random.default_rng(1)
  b, t, d, v = 6, 7, 5, 4
  lengths = np.array([1, 7, 3, 2, 6, 4])
  batch = {"x": rng.normal(size=(1, b, t, d)).astype(np.float32),
           "y": rng.integers(0, v, size=(1, b, t)).astype(np.int32),
           "mask": (np.arange(t) < lengths[:, None]).astype(np.float32)[None]}
  params = {"w": rng.normal(size=(d, d)).astype(np.float32),
            "out": rng.normal(size=(d, v)).astype(np.float32)}
  config = train.runtime_config()
  optimizer = train.make_optimizer(config)
  runs = {}
  for reduction in ("device_mean", "global"):
    step = jax.pmap(train.make_train_step(_token_loss(reduction), optimizer, KEY, axis_name=AXIS,
                                          loss_reduction=reduction),
                    axis_name=AXIS, devices=jax.devices()[:1])
    state = jax.tree.map(lambda a: np.asarray(a)[None],
                         train.TrainState(np.int32(0), params, optimizer.init(params)))
    history = []
    for _ in range(3):
      state, metrics = step(state, batch)
      history.append(jax.device_get((state.params, metrics)))
    runs[reduction] = history
  # then psum of shares and pmean of means give the same bits at every step.
  for legacy, shared in zip(runs["device_mean"], runs["global"]):
    jax.tree.map(np.testing.assert_array_equal, legacy, shared)
  assert float(runs["global"][0][1]["train/loss"][0]) > 0
