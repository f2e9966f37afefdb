"""Sentence sentiment with ``seqjax.models.classifier``: several seeds trained side by side.

The parameters are ``{"model": tree}`` whose leaves carry a leading ``[S]`` seed axis; the loss is
the sum of the seeds' own losses under one ``jax.vmap``, so every seed's gradient is its own,
and ``train.clip_per_model`` clips each seed alone: S independent runs on shared batches in one
program (bigger matmuls for the CPU). Each evaluation (one per epoch, or every
``config.eval_every`` steps when ``config.num_epochs`` is 0) scores every seed on the
selection split (``validation``: GLUE dev for SST-2) and keeps each seed's best epoch, its
predictions and parameters (``best.npz``, so a resumed run keeps them). ``results.json`` reports
each seed at its best epoch and the mean and spread over seeds; the workdir also gets
``dev.pred.tsv`` (and ``test.pred.tsv`` for the tweets), ``confusion.png``, ``dev_curve.png``
and, with attention pooling, ``attention.png``.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments.sentiment import datasets
from experiments.sentiment import encoding
from experiments.sentiment import plots
from experiments.sentiment import scoring
from seqjax import kernels
from seqjax import train
from seqjax.data import bucketing
from seqjax.models import classifier


class Data:
  """The encoded splits, the tokeniser and the class names of one run."""

  def __init__(self, config, workdir: str):
    if config.dataset not in datasets.DATASETS:
      raise ValueError(f"config.dataset must be one of {datasets.DATASETS}; got "
                       f"{config.dataset!r}")
    if config.data_dir and not os.path.isdir(config.data_dir):
      raise ValueError(f"config.data_dir={config.data_dir!r} is not a folder (leave it empty to "
                       "download the data)")
    raw = datasets.load(config.dataset, config.tfds_dir or os.path.join(workdir, "tfds"),
                        config.data_dir or None)
    self.labels = (datasets.SST2_LABELS if config.dataset == "sst2"
                   else datasets.AIRLINE_LABELS)

    def cut(split, limit):
      texts, labels = raw[split]
      return (texts[:limit], labels[:limit]) if limit else (texts, labels)

    texts, labels = cut("train", config.max_train_examples)
    self.tokenizer = encoding.make_tokenizer(
        config.tokenizer, texts, os.path.join(workdir, "vocab"), word_split=config.word_split,
        min_freq=config.min_freq, vocab_size=config.vocab_size)
    self.train = encoding.encode_texts(texts, labels, self.tokenizer, config.max_len, "train")
    self.evals = {split: encoding.encode_texts(*cut(split, config.max_eval_examples),
                                               self.tokenizer, config.max_len, split)
                  for split in raw if split != "train"}
    if len(self.train) == 0:
      raise ValueError("no training text is left after skipping empty ones")

  def counts(self) -> dict:
    out = {}
    for split, d in [("train", self.train)] + list(self.evals.items()):
      unk = sum(int(np.sum(x == encoding.text_lib.UNK)) for x in d.ids)
      out[split] = {"texts": d.total, "kept": len(d), "empty_skipped": d.empty,
                    "truncated": d.truncated, "tokens": int(d.lengths.sum()),
                    "unk_tokens": unk}
    return out


def make_spec(config, vocab_size: int, num_classes: int) -> classifier.Spec:
  return classifier.Spec(
      vocab_size=vocab_size, num_classes=num_classes, embed_dim=config.embed_dim,
      hidden_size=config.hidden_size, cell=config.cell, num_layers=config.num_layers,
      bidirectional=config.bidirectional, pooling=config.pooling,
      attention_size=config.attention_size, word_dropout=config.word_dropout,
      embed_dropout=config.embed_dropout, layer_dropout=config.layer_dropout,
      output_dropout=config.output_dropout, unk_id=encoding.text_lib.UNK)


def kernel_settings(config) -> kernels.Settings:
  return kernels.Settings(native=None if config.native_kernels else False,
                          threads=config.kernel_threads or None)


def make_loss(spec: classifier.Spec, num_seeds: int, settings: kernels.Settings):
  """``loss_fn(params, batch, rng)`` of the runtime: the sum over seeds of each seed's share."""
  def one_seed(p, key, batch):
    logits, _ = classifier.apply(spec, p, batch["tokens"], batch["lengths"], key,
                                 kernel_settings=settings)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, batch["labels"][:, None], axis=-1)[:, 0]
    count = train.global_sum(jnp.sum(batch["weights"]))
    correct = jnp.argmax(logits, axis=-1) == batch["labels"]
    return (jnp.sum(nll * batch["weights"]) / count,
            jnp.sum(correct * batch["weights"]) / count)

  def loss_fn(params, batch, rng):
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(num_seeds))
    nll, acc = jax.vmap(one_seed, in_axes=(0, 0, None))(params["model"], keys, batch)
    return jnp.sum(nll), {"nll": jnp.mean(nll), "accuracy": jnp.mean(acc)}
  return loss_fn


def make_predict(spec: classifier.Spec, settings: kernels.Settings):
  """Jitted ``(params, tokens, lengths) -> (logits [S, b, c], weights [S, b, t] or None)``."""
  def one(p, tokens, lengths):
    return classifier.apply(spec, p, tokens, lengths, kernel_settings=settings)
  return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def predict(predict_fn, params, data: encoding.EncodedTexts, config) -> np.ndarray:
  """``[S, n]`` predicted classes of every text of ``data``, in ``data``'s order."""
  out = np.zeros((config.num_seeds, len(data)), np.int64)
  for batch in encoding.eval_batches(data, config.eval_batch_size, config.pad_multiple):
    logits, _ = predict_fn(params["model"], batch["tokens"], batch["lengths"])
    real = batch["index"] >= 0
    out[:, batch["index"][real]] = np.argmax(np.asarray(logits), axis=-1)[:, real]
  return out


def make_experiment(config, workdir: str) -> train.Experiment:
  """One data set, ``config.num_seeds`` seeds, as a :class:`seqjax.train.Experiment`."""
  if config.num_seeds < 1:
    raise ValueError(f"config.num_seeds must be >= 1; got {config.num_seeds}")
  classifier.check_pooling(config.pooling)
  data = Data(config, workdir)
  spec = make_spec(config, data.tokenizer.vocab_size, len(data.labels))
  buckets = bucketing.LengthBuckets(data.train.lengths, config.batch_size, config.seed,
                                    config.bucketing)
  if config.num_epochs > 0:
    # Whole epochs, and one evaluation per epoch: each seed's epoch is picked on dev.
    config.num_steps = config.num_epochs * buckets.batches_per_epoch
    config.eval_every = buckets.batches_per_epoch
  table, found = None, 0
  if config.pretrained_vectors:
    words = [data.tokenizer.piece(i) for i in range(data.tokenizer.vocab_size)]
    table, found = encoding.load_vectors(config.pretrained_vectors, words, config.embed_dim,
                                         config.seed)
  settings = kernel_settings(config)
  predict_fn = make_predict(spec, settings)
  best = scoring.BestEpochs(os.path.join(workdir, "best.npz"), config.num_seeds,
                            data.evals, len(data.labels))

  def init(rng):
    keys = jax.random.split(rng, config.num_seeds)
    return {"model": jax.vmap(lambda k: classifier.init(k, spec, table))(keys)}

  def get_batch(step, shard_index, num_shards):
    rows = buckets(step)
    per = len(rows) // num_shards
    batch = encoding.make_batch(data.train, rows[shard_index * per:(shard_index + 1) * per],
                                config.pad_multiple)
    del batch["index"]
    return batch

  def evaluate(params, step):
    preds = {split: predict(predict_fn, params, d, config) for split, d in data.evals.items()}
    return best.update(step, preds, params)

  def results(params, history):  # pylint: disable=unused-argument
    summary = best.summary(buckets.batches_per_epoch)
    cost = {}
    for name, bucketed in (("bucketed", True), ("plain", False)):
      b = bucketing.LengthBuckets(data.train.lengths, config.batch_size, config.seed, bucketed)
      cost[name] = bucketing.padding_cost(b, 0, config.pad_multiple)
    rates = [r["steps_per_sec"] for r in history
             if r.get("split") == "train" and r.get("steps_per_sec")]
    return {"dataset": config.dataset, "labels": list(data.labels), "num_seeds": config.num_seeds,
            "vocab_size": data.tokenizer.vocab_size, "counts": data.counts(),
            "pretrained_vectors_found": found, "batches_per_epoch": buckets.batches_per_epoch,
            "padding_per_epoch": cost,
            "median_steps_per_sec": float(np.median(rates)) if rates else None,
            **summary}

  def plot(workdir, params, history):  # pylint: disable=unused-argument
    split = "validation"
    seed = 0
    best_params = best.params(seed, params["model"])
    if best_params is None:
      best_params = jax.tree.map(lambda x: x[seed], params["model"])
    for name, d in data.evals.items():
      pred = best.predictions(seed, name)
      scoring.write_predictions(os.path.join(workdir, _pred_name(name)), d, pred, data.labels)
    shown = "test" if "test" in data.evals else split
    plots.confusion(os.path.join(workdir, "confusion.png"), data.evals[shown].labels,
                    best.predictions(seed, shown), data.labels,
                    f"{config.dataset} {shown}, seed 0 at its best epoch")
    plots.dev_curves(os.path.join(workdir, "dev_curve.png"), history,
                     buckets.batches_per_epoch, f"{config.dataset}: {split} accuracy by epoch")
    if spec.pooling == "attention":
      d = data.evals[split]
      picks = scoring.pick_examples(d, config.attention_examples)
      batch = encoding.make_batch(d, picks, 1)
      one = jax.tree.map(lambda x: x[None], best_params)
      logits, weights = predict_fn(one, batch["tokens"], batch["lengths"])
      tokens = [_shown_tokens(data.tokenizer, d.texts[i], d.ids[i]) for i in picks]
      plots.attention(os.path.join(workdir, "attention.png"), tokens,
                      np.asarray(weights)[0], d.labels[picks],
                      np.argmax(np.asarray(logits)[0], -1), data.labels)

  return train.Experiment(init=init, loss_fn=make_loss(spec, config.num_seeds, settings),
                          get_batch=get_batch, evaluate=evaluate, results=results, plot=plot,
                          optimizer=train.make_optimizer(config, per_model_clip=True),
                          loss_reduction="global")


def _shown_tokens(tokenizer, text: str, ids) -> list[str]:
  """The words as written (unknown ones too) for a word tokeniser, else the subword pieces."""
  if hasattr(tokenizer, "split"):
    words = tokenizer.split(text, tokenizer.lowercase)[:len(ids)]
    if len(words) == len(ids):
      return words
  return [tokenizer.piece(t) for t in ids]


def _pred_name(split: str) -> str:
  return {"validation": "dev.pred.tsv", "test": "test.pred.tsv"}[split]
