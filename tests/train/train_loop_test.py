"""In-process tests of the runtime: train_step arithmetic, schedules, RNG, files, checkpoints.

The end-to-end behaviour (resume, signals) is tested through the CLI in runtime_resume_test.py;
devices and processes in slices_match_test.py (in process) and devices_match_test.py.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from seqjax import train
from seqjax.train import checkpointing
from seqjax.train import config as config_lib
from seqjax.train import workdir as workdir_lib

RNG = np.random.default_rng(0)
XS = RNG.normal(size=(6, 3)).astype(np.float32)
YS = RNG.normal(size=(6,)).astype(np.float32)
W0 = RNG.normal(size=(3,)).astype(np.float32)


def quadratic_loss(params, batch, rng):  # pylint: disable=unused-argument
  err = batch["xs"] @ params["w"] - batch["ys"]
  return jnp.mean(err ** 2), {"abs_err": jnp.mean(jnp.abs(err))}


def hand_grad(w):
  """d/dw mean((xs w - ys)^2) = 2/n xs^T (xs w - ys), in float64."""
  xs, ys = XS.astype(np.float64), YS.astype(np.float64)
  return 2.0 / len(ys) * xs.T @ (xs @ w - ys)


def config_with(**fields) -> ml_collections.ConfigDict:
  config = train.runtime_config()
  config.update(fields)
  return config


def take_steps(config, n):
  """``n`` jitted train steps on the quadratic; returns ([w after each step], [metrics])."""
  optimizer = train.make_optimizer(config)
  step = jax.jit(train.make_train_step(quadratic_loss, optimizer, jax.random.PRNGKey(0),
                                       schedule=train.make_schedule(config),
                                       nan_at_step=config.nan_at_step))
  params = {"w": jnp.asarray(W0)}
  state = train.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
  ws, metrics = [], []
  for _ in range(n):
    state, m = step(state, {"xs": XS, "ys": YS})
    ws.append(np.asarray(state.params["w"], np.float64))
    metrics.append({k: float(v) for k, v in m.items()})
  return ws, metrics, state


def test_sgd_step_with_clipping_matches_hand_computation():
  # Clip to a norm below the gradient's so clipping is active.
  g = hand_grad(W0.astype(np.float64))
  clip = 0.5 * np.linalg.norm(g)
  config = config_with(optimizer="sgd", momentum=0.0, learning_rate=0.1, grad_clip_norm=clip)
  (w1,), (metrics,), state = take_steps(config, 1)
  np.testing.assert_allclose(w1, W0 - 0.1 * g * clip / np.linalg.norm(g), rtol=1e-5)
  np.testing.assert_allclose(metrics["train/grad_norm"], np.linalg.norm(g), rtol=1e-5)
  err = XS.astype(np.float64) @ W0 - YS
  np.testing.assert_allclose(metrics["train/loss"], np.mean(err ** 2), rtol=1e-5)
  np.testing.assert_allclose(metrics["train/abs_err"], np.mean(np.abs(err)), rtol=1e-5)
  assert int(state.step) == 1


def test_per_model_clipping_clips_each_copy_as_if_alone():
  # Given two models, each with three copies on a leading axis, and gradients of very different
  # norms, When clipped per model, Then each copy equals optax.clip_by_global_norm of it alone.
  rng = np.random.default_rng(0)
  grads = {"a": {"w": rng.normal(size=(3, 4, 2)) * np.array([0.01, 1.0, 50.0])[:, None, None],
                 "b": rng.normal(size=(3, 2))},
           "b": {"w": rng.normal(size=(3, 5)) * 0.1}}
  grads = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), grads)
  clip = train.clip_per_model(1.0)
  clipped, _ = clip.update(grads, clip.init(grads))
  alone = optax.clip_by_global_norm(1.0)
  for name in grads:
    for i in range(3):
      copy = jax.tree.map(lambda a, i=i: a[i], grads[name])
      expected, _ = alone.update(copy, alone.init(copy))
      for got, want in zip(jax.tree.leaves(jax.tree.map(lambda a, i=i: a[i], clipped[name])),
                           jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
  norms = [np.sqrt(sum(np.sum(np.square(leaf[i])) for leaf in jax.tree.leaves(clipped["a"])))
           for i in range(3)]
  assert norms[0] < 1.0 and abs(norms[1] - 1.0) < 1e-5 and abs(norms[2] - 1.0) < 1e-5
  with pytest.raises(ValueError, match="max_norm must be > 0"):
    train.clip_per_model(0.0)
  with pytest.raises(ValueError, match="needs parameters {name: tree"):
    clip.update([grads["a"]["w"]], clip.init(grads))


def test_sgd_momentum_two_steps():
  config = config_with(optimizer="sgd", momentum=0.9, learning_rate=0.05)
  (w1, w2), _, _ = take_steps(config, 2)
  g1 = hand_grad(W0.astype(np.float64))
  np.testing.assert_allclose(w1, W0 - 0.05 * g1, rtol=1e-5)
  velocity = 0.9 * g1 + hand_grad(w1)
  np.testing.assert_allclose(w2, w1 - 0.05 * velocity, rtol=1e-5)


def test_adam_first_step_is_sign_like():
  # After one step Adam's bias-corrected moments are g and g^2: the update is lr * g / (|g| + eps).
  config = config_with(optimizer="adam", learning_rate=0.01, eps=1e-8)
  (w1,), _, _ = take_steps(config, 1)
  g = hand_grad(W0.astype(np.float64))
  np.testing.assert_allclose(w1, W0 - 0.01 * g / (np.abs(g) + 1e-8), rtol=1e-5)


def test_rmsprop_first_step():
  # nu = (1 - decay) g^2, update = lr * g / sqrt(nu + eps) (optax puts eps inside the root).
  config = config_with(optimizer="rmsprop", momentum=0.0, learning_rate=0.01,
                       rmsprop_decay=0.9, eps=1e-8)
  (w1,), _, _ = take_steps(config, 1)
  g = hand_grad(W0.astype(np.float64))
  np.testing.assert_allclose(w1, W0 - 0.01 * g / np.sqrt(0.1 * g ** 2 + 1e-8), rtol=1e-5)


def test_warmup_then_cosine_schedule():
  config = config_with(learning_rate=1.0, schedule="cosine", warmup_steps=10, num_steps=110,
                       min_lr_ratio=0.1)
  lr = train.make_schedule(config)
  expected = {0: 0.0, 5: 0.5, 10: 1.0, 60: 0.1 + 0.9 * 0.5, 110: 0.1}
  for step, value in expected.items():
    np.testing.assert_allclose(float(lr(step)), value, rtol=1e-6, atol=1e-7, err_msg=str(step))
  # The learning rate a step used is reported in its metrics.
  _, metrics, _ = take_steps(config_with(optimizer="sgd", momentum=0.0, learning_rate=1e-3,
                                         warmup_steps=4), 3)
  np.testing.assert_allclose([m["train/learning_rate"] for m in metrics], [0, 2.5e-4, 5e-4],
                             atol=1e-9)


def test_step_rng_depends_on_the_step_alone():
  def noisy_loss(params, batch, rng):  # pylint: disable=unused-argument
    return jnp.sum(params["w"]) * 0.0, {"noise": jax.random.uniform(rng)}
  base = jax.random.PRNGKey(3)
  opt = train.make_optimizer(config_with(optimizer="sgd"))
  step = jax.jit(train.make_train_step(noisy_loss, opt, base))
  params = {"w": jnp.ones(2)}
  state = train.TrainState(jnp.int32(7), params, opt.init(params))
  _, m1 = step(state, None)
  _, m2 = step(state._replace(params={"w": jnp.zeros(2)}), None)  # Other params, same step.
  _, m3 = step(state._replace(step=jnp.int32(8)), None)
  want = jax.random.uniform(jax.random.fold_in(base, 7))
  assert float(m1["train/noise"]) == float(want) == float(m2["train/noise"])
  assert float(m3["train/noise"]) != float(want)


def test_nan_at_step_poisons_exactly_that_step():
  _, metrics, _ = take_steps(config_with(optimizer="sgd", learning_rate=1e-3, nan_at_step=2), 2)
  assert np.isfinite(metrics[0]["train/loss"]) and np.isnan(metrics[1]["train/loss"])


def test_truncate_metrics_keeps_steps_up_to_the_checkpoint(tmp_path):
  lines = [json.dumps({"step": s, "split": "train", "train/loss": s / 10}) for s in
           range(5, 55, 5)]
  lines.insert(4, json.dumps({"step": 20, "split": "eval", "eval/mse": 1.0}))
  (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 55, "spl')  # Torn.
  dropped = workdir_lib.truncate_metrics(str(tmp_path), 20)
  records = workdir_lib.read_metrics(str(tmp_path))
  assert [(r["step"], r["split"]) for r in records] == [
      (5, "train"), (10, "train"), (15, "train"), (20, "train"), (20, "eval")]
  assert dropped == 7  # Steps 25..50 and the torn line.


def test_config_diff_names_nested_and_missing_keys():
  old = {"seed": 0, "model": {"hidden": 8, "cell": "lstm"}, "allow_config_change": False}
  new = {"seed": 0, "model": {"hidden": 16, "cell": "lstm", "layers": 2},
         "allow_config_change": True}
  assert config_lib.diff(old, new) == ["model.hidden", "model.layers"]
  assert config_lib.diff(old, old) == []


@pytest.mark.parametrize("field, value, message", [
    ("optimizer", "adagrad", "config.optimizer must be one of"),
    ("schedule", "linear", "config.schedule must be one of"),
    ("log_every", 0, "config.log_every must be > 0, got 0"),
    ("best_mode", "lowest", "config.best_mode must be 'min' or 'max'"),
])
def test_validate_names_the_bad_field(field, value, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    config_lib.validate(config_with(**{field: value}))


def _state(step):
  return {"step": np.int32(step), "w": np.arange(4, dtype=np.float32) * step}  # A numpy scalar.


@pytest.mark.parametrize("damage", ["flip_bytes", "swap_in_other_state"])
def test_checkpointer_keeps_last_n_and_best_and_skips_corrupt(tmp_path, damage):
  ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=2,
                                    best_metric="eval/loss", best_mode="min")
  losses = {1: 3.0, 2: 1.0, 3: 2.0, 4: 4.0, 5: 5.0}  # Step 2 is the best.
  for step, loss in losses.items():
    ckpt.save(step, _state(step), {"eval/loss": loss})
  ckpt.wait()
  assert ckpt.all_steps() == [2, 4, 5]
  state_dir = tmp_path / "checkpoints" / "5" / "state"
  if damage == "flip_bytes":  # Bit rot in the stored arrays.
    for d, _, files in os.walk(state_dir):
      for name in files:
        path = os.path.join(d, name)
        if "METADATA" not in name and os.path.getsize(path) > 64:
          data = bytearray(open(path, "rb").read())
          data[-32:] = bytes(b ^ 0xFF for b in data[-32:])
          open(path, "wb").write(data)
  else:  # A well-formed orbax item with the wrong contents: only the digest can tell.
    shutil.rmtree(state_dir)
    shutil.copytree(tmp_path / "checkpoints" / "4" / "state", state_dir)
  state, step = ckpt.restore_latest(_state(0))
  assert step == 4
  np.testing.assert_array_equal(state["w"], _state(4)["w"])
  assert os.path.isdir(tmp_path / "corrupt_checkpoints" / "5")
  assert ckpt.all_steps() == [2, 4]
  ckpt.close()


def test_digest_sees_one_bit():
  a = {"w": np.ones(3, np.float32)}
  b = {"w": np.ones(3, np.float32)}
  b["w"].view(np.uint32)[1] ^= 1
  assert checkpointing.digest(a) != checkpointing.digest(b)
  assert checkpointing.digest(a) == checkpointing.digest({"w": np.ones(3, np.float32)})


def test_checkpoints_that_fit_no_target_are_put_back_not_lost(tmp_path):
  # A model whose shapes changed fails on every checkpoint: that is an error, not corruption.
  ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=2)
  for step in (1, 2):
    ckpt.save(step, _state(step))
  ckpt.wait()
  with pytest.raises(checkpointing.CheckpointError, match="none of the 2 checkpoints"):
    ckpt.restore_latest({"step": np.int32(0), "w": np.zeros(5, np.float32)})
  assert ckpt.all_steps() == [1, 2]
  state, step = ckpt.restore_latest(_state(0))
  assert step == 2
  np.testing.assert_array_equal(state["w"], _state(2)["w"])
  ckpt.close()
