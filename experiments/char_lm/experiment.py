"""Character-level language models on Tiny Shakespeare: an RNN reads text a character at a time.

  python -m experiments.char_lm --workdir runs/char-lstm [--config experiments/char_lm/config.py:small]

The model (``seqjax.models.rnn_lm``): embedding, a stack of any seqjax cells with dropout between
layers, a softmax over the 65 characters; or, with ``config.model="transformer"``, the
decoder-only GPT of ``seqjax.models.transformer_lm`` (random windows only; ``models.py``). Two
ways to train (``config.mode``, ``batches.py``):
``"windows"`` (random windows, each from a zero state, nanoGPT style) and ``"stateful"``
(truncated backpropagation through time: ``B`` streams through the text, the recurrent state
carried from one step to the next in the runtime's ``TrainState.carry`` and cut from the
gradient at every chunk border).

Every evaluation scores the whole validation text, in ``config.eval_streams`` contiguous streams
read in chunks with the state carried (exact: the same as one long unroll per stream; for the
Transformer, chunks of its context length, each from an empty context), in nats
and bits per character, and appends a sample from ``config.sample_prompt`` to ``samples.txt``.
The workdir also gets ``vocab.json`` (what ``python -m experiments.char_lm.sample`` reads),
``wall_time.jsonl`` (training seconds at each evaluation, evaluations excluded, compilation
included; a resumed run continues the clock of the steps before it) and ``learning_curve.png``.
"""

from __future__ import annotations

import json
import math
import os
import re
import time

import jax
import jax.numpy as jnp

from experiments.char_lm import batches
from experiments.char_lm import models
from experiments.char_lm import sampling
from experiments.char_lm import shakespeare
from seqjax import kernels
from seqjax import train
from seqjax.models import rnn_lm

SAMPLES_FILE = "samples.txt"
WALL_TIME_FILE = "wall_time.jsonl"
_HEADER = re.compile(r"^=== step (\d+) ===\n", re.MULTILINE)


def check_config(config) -> None:
  """Raises ValueError naming the first bad experiment field."""
  if config.mode not in batches.MODES:
    raise ValueError(f"config.mode must be one of {batches.MODES}, got {config.mode!r}")
  for name in ("seq_len", "eval_streams", "eval_chunk", "sample_length"):
    if config[name] < 1:
      raise ValueError(f"config.{name} must be >= 1, got {config[name]}")
  if not config.sample_temperature > 0:
    raise ValueError(f"config.sample_temperature must be > 0, got {config.sample_temperature}")
  if config.native_kernels not in ("auto", "off"):
    raise ValueError(f"config.native_kernels must be 'auto' or 'off', got "
                     f"{config.native_kernels!r}")


def kernel_settings(config) -> kernels.Settings:
  return kernels.Settings(native=None if config.native_kernels == "auto" else False)


def load_text(config, workdir: str) -> dict[str, str]:
  """``{"train": str, "validation": str}`` from ``config.data_dir`` or the download."""
  tfds_dir = config.tfds_dir or os.path.join(workdir, "tfds")
  return shakespeare.load(tfds_dir, config.data_dir or None)


def eval_chunk(config, spec) -> int:
  """Characters per evaluation call: ``config.eval_chunk``, or the Transformer's context."""
  return spec.max_len if models.is_transformer(spec) else config.eval_chunk


def make_evaluator(spec, settings: kernels.Settings):
  """``evaluate(params, layout, chunk_len) -> (nll_sum, count)`` over a
  :func:`batches.evaluation_streams` layout, chunk by chunk (float64 sums on the host): for a
  recurrent model with the state carried (exact: one long unroll per stream), for a Transformer
  each chunk from an empty context (``models.py``)."""
  transformer = models.is_transformer(spec)

  @jax.jit
  def chunk(params, inputs, targets, mask, carry):
    if transformer:
      logits = models.window_logits(params, spec, inputs)
    else:
      logits, carry = rnn_lm.apply(params, spec, inputs, carry, kernel_settings=settings)
    return jnp.sum(rnn_lm.token_nll(logits, targets) * mask), carry

  def evaluate(params, layout, chunk_len):
    inputs, targets, mask = layout["inputs"], layout["targets"], layout["mask"]
    carry = None if transformer else rnn_lm.initial_carry(spec, inputs.shape[0])
    total = 0.0
    for start in range(0, inputs.shape[1], chunk_len):
      part = slice(start, start + chunk_len)
      nll, carry = chunk(params, inputs[:, part], targets[:, part], mask[:, part], carry)
      total += float(nll)
    return total, float(mask.sum())

  return evaluate


def bits_per_char(nats: float) -> float:
  return nats / math.log(2.0)


def write_sample(workdir: str, step: int, text: str) -> None:
  """Adds step ``step``'s sample to samples.txt after the samples of earlier steps only (a
  resumed run re-evaluates steps past its checkpoint: the file reads as an uninterrupted run's)."""
  path = os.path.join(workdir, SAMPLES_FILE)
  blocks = []
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      parts = _HEADER.split(f.read())[1:]  # [step, text, step, text, ...]
    blocks = [(int(s), t) for s, t in zip(parts[::2], parts[1::2]) if int(s) < step]
  blocks.append((step, text))
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(f"=== step {s} ===\n{t.rstrip(chr(10))}\n\n" for s, t in blocks))


def record_wall_time(workdir: str, step: int, seconds: float, nats: float,
                     earlier: float | None) -> float:
  """Adds step ``step``'s evaluation to wall_time.jsonl; returns the seconds of earlier processes.

  ``seconds`` are this process's training seconds. A resumed run keeps the records of the steps
  before its first evaluation and continues their clock from the last of them (``earlier``: None
  at a process's first evaluation, then what this returned); the records of steps it re-evaluates
  are replaced, so the file reads as one run's. Steps redone after an interruption count twice,
  the time between a run's last evaluation and its interruption not at all.
  """
  path = os.path.join(workdir, WALL_TIME_FILE)
  records = []
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      records = [r for r in map(json.loads, filter(str.strip, f)) if r["step"] < step]
  if earlier is None:
    earlier = records[-1]["train_seconds"] if records else 0.0
  records.append({"step": step, "train_seconds": earlier + seconds, "eval/loss": nats})
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(json.dumps(r) + "\n" for r in records))
  return earlier


def make_experiment(config, workdir: str) -> train.Experiment:
  check_config(config)
  text = load_text(config, workdir)
  vocab = shakespeare.Vocabulary.from_text(text["train"] + text["validation"])
  if jax.process_index() == 0:
    vocab.save(workdir)
  spec = models.make_spec(config, len(vocab))
  chunk_len = eval_chunk(config, spec)
  settings = kernel_settings(config)
  data = vocab.encode(text["train"], "training text")
  layout = batches.evaluation_streams(vocab.encode(text["validation"], "validation text"),
                                      config.eval_streams, chunk_len)
  prompt_ids = vocab.encode(config.sample_prompt, "config.sample_prompt")
  evaluate_text = make_evaluator(spec, settings)
  family = models.family(config)
  num_params = models.count_params(
      jax.eval_shape(lambda key: models.init(key, spec), jax.random.PRNGKey(0)))
  clock = {"start": time.perf_counter(), "evaluating": 0.0, "earlier": None}

  def init(rng):
    return models.init(rng, spec)

  def mean_nll(logits, targets):
    """This device's share of the global batch's mean next-character loss."""
    nll = rnn_lm.token_nll(logits, targets)
    return jnp.sum(nll) / train.global_sum(jnp.float32(nll.size))

  def loss_windows(params, batch, rng):
    keys = train.example_keys(rng, batch["inputs"].shape[0])
    logits = models.window_logits(params, spec, batch["inputs"], keys, settings)
    return mean_nll(logits, batch["targets"]), {}

  def loss_stateful(params, batch, rng, carry):
    keys = train.example_keys(rng, batch["inputs"].shape[0])
    carry = rnn_lm.reset(carry, batch["starts"])
    logits, carry = rnn_lm.apply(params, spec, batch["inputs"], carry, dropout_key=keys,
                                 kernel_settings=settings)
    return mean_nll(logits, batch["targets"]), {}, rnn_lm.detach(carry)

  def get_batch(step, shard_index, num_shards):
    if config.mode == "windows":
      return batches.windows(data, config.seed, step, config.batch_size, config.seq_len,
                             shard_index, num_shards)
    return batches.streams(data, step, config.batch_size, config.seq_len, shard_index,
                           num_shards)

  def evaluate(params, step):
    began = time.perf_counter()
    train_seconds = began - clock["start"] - clock["evaluating"]
    nll, count = evaluate_text(params, layout, chunk_len)
    nats = nll / count
    metrics = {"eval/loss": nats, "eval/bits_per_char": bits_per_char(nats)}
    if jax.process_index() == 0:
      sample = sampling.generate(params, spec, prompt_ids, config.sample_length,
                                 config.sample_temperature, config.sample_top_k, config.seed)
      write_sample(workdir, step, config.sample_prompt + vocab.decode(sample))
      clock["earlier"] = record_wall_time(workdir, step, train_seconds, nats, clock["earlier"])
    clock["evaluating"] += time.perf_counter() - began
    return metrics

  def results(params, history):
    del params
    evals = [r for r in history if r["split"] == "eval"]
    best = min(evals, key=lambda r: r["eval/loss"]) if evals else None
    return {"model": family, "cell": config.cell if family == "rnn" else None,
            "num_layers": config.num_layers, "parameters": num_params,
            "hidden_size": config.hidden_size if family == "rnn" else config.d_model,
            "mode": config.mode,
            "vocab_size": len(vocab), "validation_predictions": int(layout["mask"].sum()),
            "best_eval_loss": best and best["eval/loss"],
            "best_eval_bits_per_char": best and best["eval/bits_per_char"],
            "best_step": best and best["step"]}

  def plot(workdir_, params, history):
    del params
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    fig, ax = plt.subplots(figsize=(6, 4))
    for split, key in (("train", "train/loss"), ("eval", "eval/loss")):
      rows = [r for r in history if r["split"] == split]
      ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=f"{split} (nats/char)")
    ax.set(xlabel="step", ylabel="cross-entropy (nats/char)",
           title=f"Tiny Shakespeare, {' '.join(reversed(models.label(config)))}, {config.mode}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(workdir_, "learning_curve.png"), dpi=100)
    plt.close(fig)

  stateful = config.mode == "stateful"
  if stateful:
    batches.chunks_per_span(len(data), config.batch_size, config.seq_len)  # Fails early if short.
  return train.Experiment(
      init=init, loss_fn=loss_stateful if stateful else loss_windows, get_batch=get_batch,
      evaluate=evaluate, results=results, plot=plot, loss_reduction="global",
      init_carry=(lambda rng: rnn_lm.initial_carry(spec, config.batch_size)) if stateful
      else None)
