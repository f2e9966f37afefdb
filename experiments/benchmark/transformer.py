r"""Transformer training-step speed: seqjax against PyTorch's ``nn.Transformer``, same shapes.

One TRAINING step of the translation experiment's ``transformer`` recipe: embeddings (times
sqrt(d)) plus learned positions, the encoder-decoder with padding and causal masks and dropout,
the output projection, cross-entropy with label smoothing over the target tokens, the backward,
gradient clipping at norm 1 and an Adam update. seqjax's step is one jitted function; PyTorch's is
``torch.nn.Transformer(batch_first=True)`` with the same sizes, embeddings, output layer, loss
and optimiser. Both are timed on the same machine in interleaved rounds
(``timing.interleaved_seconds``) and reported as tokens/s, counting source and target positions
(``batch * (source + target length)``), with seqjax's ratio to PyTorch. Benchmarks are not
tests: nothing here asserts a speed.

    python -m experiments.benchmark.transformer --torch_threads=2 --json=out.json
    python -m experiments.benchmark.transformer --batch=128 --src_len=32 --tgt_len=32 \
        --nodonate --dropout_keys=batch        # variants of seqjax's step

The model sizes come from ``experiments/translate/config.py:<--variant>``; the vocabularies are
its sentencepiece sizes (``vocab_size``). PyTorch's ``nn.Transformer`` adds a final LayerNorm
after each stack (one more per stack than a post-norm model needs): 1,024 of ~8.6M parameters.
"""

from __future__ import annotations

import functools
import json
import math
import os

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.benchmark import timing
from experiments.translate import config as translate_config
from experiments.translate import models
from seqjax.models import encdec


def _batch(b: int, s: int, t: int, src_vocab: int, tgt_vocab: int, seed: int = 0) -> dict:
  """Random ids with the last quarter of the rows padded by up to a quarter of their length."""
  rng = np.random.default_rng(seed)
  src_lengths = np.full((b,), s, np.int32)
  tgt_lengths = np.full((b,), t, np.int32)
  ragged = slice(b - b // 4, b)  # bucketed batches are nearly, not exactly, one length
  src_lengths[ragged] = rng.integers(max(1, s - s // 4), s + 1, size=b // 4)
  tgt_lengths[ragged] = rng.integers(max(1, t - t // 4), t + 1, size=b // 4)
  src = rng.integers(3, src_vocab, size=(b, s)).astype(np.int32)
  tgt = rng.integers(3, tgt_vocab, size=(b, t + 1)).astype(np.int32)
  tgt[:, 0] = 1  # BOS
  src[np.arange(s)[None] >= src_lengths[:, None]] = 0
  tgt_mask = np.arange(t)[None] < tgt_lengths[:, None]
  # BOS + the target's prefix in, the target out; pad (0) past each length.
  return {"src": src, "src_lengths": src_lengths, "tgt_in": tgt[:, :-1] * tgt_mask,
          "tgt_out": tgt[:, 1:] * tgt_mask, "tgt_mask": tgt_mask}


def _optimizer_settings(config) -> dict:
  return {"lr": config.learning_rate, "b1": config.adam_b1, "b2": config.adam_b2,
          "eps": config.eps, "clip": config.grad_clip_norm,
          "label_smoothing": config.label_smoothing}


def seqjax_fn(config, spec, batch: dict, donate: bool = True, dropout_keys: str = "example"):
  """seqjax's training step, compiled and warmed up: ``run()`` does one step (and blocks).

  ``run.loss()`` returns the loss of the last step.
  """
  lib = models.module(config)
  opt = _optimizer_settings(config)
  optimizer = optax.chain(optax.clip_by_global_norm(opt["clip"]),
                          optax.adam(opt["lr"], b1=opt["b1"], b2=opt["b2"], eps=opt["eps"]))
  params = jax.jit(lib.init, static_argnums=1)(jax.random.PRNGKey(0), spec)  # not op by op
  b = batch["src"].shape[0]

  def step(params, opt_state, batch, key):
    key = jax.random.split(key, b) if dropout_keys == "example" else key

    def loss_fn(params):
      logits, _ = lib.forward(params, spec, batch["src"], batch["src_lengths"], batch["tgt_in"],
                              dropout_key=key)
      total, tokens = encdec.loss(logits, batch["tgt_out"], batch["tgt_mask"],
                                  opt["label_smoothing"], reduction="sum")
      return total / jnp.maximum(tokens, 1.0)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  jitted = jax.jit(step, donate_argnums=(0, 1) if donate else ())
  batch = jax.device_put(batch)
  state = {"params": params, "opt": jax.jit(optimizer.init)(params), "n": 0, "loss": None}

  def run():
    key = jax.random.fold_in(jax.random.PRNGKey(1), state["n"])
    state["params"], state["opt"], state["loss"] = jax.block_until_ready(
        jitted(state["params"], state["opt"], batch, key))
    state["n"] += 1

  run.loss = lambda: float(state["loss"])
  run.params = lambda: lib.count_params(state["params"])
  run()
  return run


def torch_fn(config, spec, batch: dict):
  """PyTorch's training step with ``nn.Transformer`` (same sizes, loss and optimiser)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  m = config.model
  d = m.d_model

  class Seq2Seq(nn.Module):
    """Embeddings * sqrt(d) + learned positions, nn.Transformer, a linear output layer."""

    def __init__(self):
      super().__init__()
      self.src_embed, self.tgt_embed = nn.Embedding(spec.src_vocab, d), nn.Embedding(
          spec.tgt_vocab, d)
      self.src_pos, self.tgt_pos = nn.Embedding(spec.max_len, d), nn.Embedding(spec.max_len, d)
      self.core = nn.Transformer(d, m.num_heads, m.encoder_layers, m.decoder_layers, m.ffn_size,
                                 m.dropout, activation=m.activation, batch_first=True,
                                 norm_first=m.norm == "pre")
      self.drop = nn.Dropout(m.dropout)
      self.out = nn.Linear(d, spec.tgt_vocab)

    def forward(self, src, src_pad, tgt_in, tgt_pad):
      scale = math.sqrt(d)
      x = self.drop(self.src_embed(src) * scale + self.src_pos.weight[:src.shape[1]])
      y = self.drop(self.tgt_embed(tgt_in) * scale + self.tgt_pos.weight[:tgt_in.shape[1]])
      t = tgt_in.shape[1]
      causal = torch.ones(t, t, dtype=torch.bool).triu(1)  # True: may not attend (as the pads)
      h = self.core(x, y, tgt_mask=causal, src_key_padding_mask=src_pad,
                    tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad,
                    tgt_is_causal=True)
      return self.out(h)

  torch.manual_seed(0)
  model = Seq2Seq().train()
  opt = _optimizer_settings(config)
  optimizer = torch.optim.Adam(model.parameters(), lr=opt["lr"], betas=(opt["b1"], opt["b2"]),
                               eps=opt["eps"])
  src = torch.as_tensor(batch["src"], dtype=torch.long)
  tgt_in = torch.as_tensor(batch["tgt_in"], dtype=torch.long)
  src_pad = torch.as_tensor(np.arange(src.shape[1])[None] >= batch["src_lengths"][:, None])
  tgt_pad = torch.as_tensor(~batch["tgt_mask"])
  # Padded targets are pad (0): ignored by the loss, as the mask does in seqjax.
  tgt_out = torch.as_tensor(batch["tgt_out"], dtype=torch.long)
  state = {"loss": None}

  def run():
    optimizer.zero_grad(set_to_none=True)
    logits = model(src, src_pad, tgt_in, tgt_pad)
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1),
                                       ignore_index=0, label_smoothing=opt["label_smoothing"])
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), opt["clip"])
    optimizer.step()
    state["loss"] = float(loss.detach())

  run.loss = lambda: state["loss"]
  run.params = lambda: sum(p.numel() for p in model.parameters())
  run()
  return run


def benchmark(config, batch_size: int, src_len: int, tgt_len: int, repeats: int,
              settle_seconds: float, peers=("torch",), donate: bool = True,
              dropout_keys: str = "example") -> list[dict]:
  """Times the step of every implementation; one row each (tokens/s, ratio to PyTorch)."""
  if min(batch_size, src_len, tgt_len, repeats) < 1:
    raise app.UsageError(f"--batch, --src_len, --tgt_len and --repeats must be >= 1; got "
                         f"{batch_size}, {src_len}, {tgt_len}, {repeats}")
  vocab = config.vocab_size  # sentencepiece's vocabulary has exactly this many pieces
  spec = models.make_spec(config, vocab, vocab)
  if max(src_len, tgt_len) > spec.max_len:
    raise app.UsageError(f"--src_len={src_len} / --tgt_len={tgt_len} exceed the model's "
                         f"max_len={spec.max_len}")
  for peer in peers:
    if peer != "torch":
      raise app.UsageError(f"unknown peer {peer!r}; the only peer is torch")
  batch = _batch(batch_size, src_len, tgt_len, vocab, vocab)
  fns = {"seqjax": seqjax_fn(config, spec, batch, donate, dropout_keys)}
  if peers:
    fns["torch"] = torch_fn(config, spec, batch)
  seconds = timing.interleaved_seconds(fns, repeats, settle_seconds)
  tokens = batch_size * (src_len + tgt_len)
  rows = [{"impl": name, "shape": f"{batch_size}x{src_len}x{tgt_len}", "seconds": sec,
           "tokens_per_sec": tokens / sec, "params": fns[name].params(),
           "loss_after": fns[name].loss()} for name, sec in seconds.items()]
  if "torch" in seconds:
    for row in rows:
      row["vs_torch"] = seconds["torch"] / row["seconds"]
  return rows


def _define_flags() -> dict:
  """The command's flags (defined only when run as a command: importing defines none)."""
  return dict(
      variant=flags.DEFINE_string("variant", "transformer", "variant of experiments/translate/"
                                   "config.py whose model and optimiser are timed"),
      batch=flags.DEFINE_integer("batch", 128, "sentence pairs per step (the recipe's batch)"),
      src_len=flags.DEFINE_integer("src_len", 32, "padded source length (an epoch of the "
                                    "recipe's bucketed batches: 55% pad to 16, 35% to 24, 7% to "
                                    "32, mean 20.4)"),
      tgt_len=flags.DEFINE_integer("tgt_len", 32, "padded target length (the batches pad source "
                                    "and target to one length)"),
      repeats=flags.DEFINE_integer("repeats", 10, "timed rounds (interleaved); medians kept"),
      torch_threads=flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads"),
      settle_ms=flags.DEFINE_float("settle_ms", 50.0, "idle ms plus one untimed call before "
                                    "each timed call (see timing.interleaved_seconds)"),
      donate=flags.DEFINE_bool("donate", True, "donate the parameters and Adam's state to "
                                "seqjax's step (updated in place)"),
      dropout_keys=flags.DEFINE_enum("dropout_keys", "example", ["example", "batch"],
                                      "seqjax's dropout: one key per sentence (as the training "
                                      "runtime does) or one key for the batch"),
      peers=flags.DEFINE_list("peers", ["torch"], "torch, or empty for seqjax alone"),
      json=flags.DEFINE_string("json", None, "write the settings and rows as JSON here"))


def settings_record(values: dict, threads) -> dict:
  """The JSON head of a run: machine, versions, model and timing settings."""
  import torch  # pylint: disable=g-import-not-at-top
  config = translate_config.get_config(values["variant"])
  return {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
          "jax": jax.__version__, "torch": torch.__version__, "torch_threads": threads,
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "model": config.model.to_dict(),
          "vocab": config.vocab_size, "tokens": "batch * (src_len + tgt_len)",
          **{k: values[k] for k in ("variant", "batch", "src_len", "tgt_len", "repeats",
                                    "settle_ms", "donate", "dropout_keys")}}


def main(argv, handles):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  values = {name: handle.value for name, handle in handles.items()}
  config = translate_config.get_config(values["variant"])
  threads = timing.torch_threads(values["torch_threads"]) if values["peers"] else None
  load_before = os.getloadavg()
  rows = benchmark(config, values["batch"], values["src_len"], values["tgt_len"],
                   values["repeats"], values["settle_ms"] / 1e3, values["peers"],
                   values["donate"], values["dropout_keys"])
  record = settings_record(values, threads)
  # Other work on a shared CPU slows both libraries, PyTorch's spinning threads the more.
  record["load_average_1min"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
  print(" ".join(f"{k}={v}" for k, v in record.items() if k not in ("model", "tokens")))
  for row in rows:
    ratio = f"  {row['vs_torch']:.2f}x PyTorch" if "vs_torch" in row else ""
    print(f"{row['impl']:>7} {row['shape']:>10} {row['params']:>10,} params "
          f"{row['seconds'] * 1e3:8.1f} ms/step {row['tokens_per_sec']:>10,.0f} tok/s{ratio}")
  if values["json"]:
    with open(values["json"], "w") as f:
      json.dump({**record, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  app.run(functools.partial(main, handles=_define_flags()))
