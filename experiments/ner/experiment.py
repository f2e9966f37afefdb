"""CoNLL-2003 NER: several seeds of one BiLSTM tagger trained side by side, selected on testa.

The seeds' parameters are stacked on a leading ``[seeds]`` axis and trained by one ``vmap``ped
program on the same batches (each seed has its own initialisation and dropout masks, clipping
per seed): the 2-core CPU runs three small models faster together than one after another.

Every evaluation tags the validation split (testa) and the test split (testb) with every seed;
a seed whose validation F1 is its best so far has its test scores recorded in ``best.json`` and
its test predictions written to ``test.pred.conll`` (``seed<i>/`` in the workdir), so the
reported test F1 is always that of the seed's best validation checkpoint. ``best.json`` is read
back on resume. ``results.json`` holds, per seed and as mean/spread over seeds, the selected
step, validation and test precision/recall/F1, per-type test scores and the seqeval cross-check.

  python -m experiments.ner --workdir runs/ner-crf [--config experiments/ner/config.py:softmax]
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.ner import conll
from experiments.ner import features
from experiments.ner import model
from experiments.ner import plots
from experiments.ner import scoring
from seqjax import layers
from seqjax import train


def load_data(config, workdir: str):
  """``(vocab, {split: features.Encoded}, stats)`` of the configured CoNLL-2003 copy."""
  if config.data_dir and not os.path.isdir(config.data_dir):
    raise ValueError(f"config.data_dir={config.data_dir!r} is not a folder (leave it empty to "
                     "download CoNLL-2003)")
  splits, stats = conll.load(config.tfds_dir or os.path.join(workdir, "tfds"),
                             config.data_dir or None)
  if config.max_train_sentences:
    splits["train"] = splits["train"][:config.max_train_sentences]
  if config.max_eval_sentences:
    for split in ("validation", "test"):
      splits[split] = splits[split][:config.max_eval_sentences]
  vocab = features.Vocab.build(splits["train"])
  return vocab, {split: features.encode(s, vocab) for split, s in splits.items()}, stats


def _tag_names(ids: np.ndarray, n: int) -> list[str]:
  return [conll.TAGS[int(i)] for i in ids[:n]]


def _mean_std(values):
  values = np.asarray(values, np.float64)
  return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1
          else 0.0, "min": float(values.min()), "max": float(values.max())}


def make_experiment(config, workdir: str) -> train.Experiment:
  """The tagger of ``config`` over ``config.num_seeds`` seeds as a runtime Experiment."""
  if config.num_seeds < 1:
    raise ValueError(f"config.num_seeds must be >= 1, got {config.num_seeds}")
  for name in ("dropout", "word_dropout"):
    if not 0.0 <= config[name] < 1.0:
      raise ValueError(f"config.{name} must be in [0, 1), got {config[name]}")
  started = time.perf_counter()
  vocab, data, stats = load_data(config, workdir)
  spec = model.Spec(vocab.num_words, vocab.num_chars, len(conll.TAGS), config.word_dim,
                    config.casing_dim, config.char_dim, config.char_filters, config.hidden_size,
                    config.output, config.cell, config.native_kernels)
  buckets = tuple(int(b) for b in config.buckets.split(","))
  batches = features.BucketedBatches(data["train"], config.batch_size, config.seed, buckets)
  seeds = config.num_seeds
  best_path = os.path.join(workdir, "best.json")
  best = {}
  if os.path.exists(best_path):  # a resumed run keeps the selections made before
    with open(best_path, encoding="utf-8") as f:
      best = {int(k): v for k, v in json.load(f).items()}

  def init(rng):
    return {"tagger": jax.vmap(lambda k: model.init(k, spec))(jax.random.split(rng, seeds))}

  def get_batch(step, shard_index, num_shards):
    batch = batches(step)
    per = config.batch_size // num_shards
    return {k: v[shard_index * per:(shard_index + 1) * per] for k, v in batch.items()}

  def loss_fn(params, batch, rng):
    keys = train.example_keys(rng, batch["lengths"].shape[0])
    tokens = train.global_sum(jnp.sum(batch["lengths"]).astype(jnp.float32))

    def one_seed(p, seed):
      seed_keys = layers.fold_keys(keys, seed)
      scores = model.emissions(spec, p, batch, seed_keys, config.dropout, config.word_dropout)
      return jnp.sum(model.token_losses(spec, p, scores, batch)) / tokens

    losses = jax.vmap(one_seed)(params["tagger"], jnp.arange(seeds))  # [seeds]
    # The seeds' parameters are disjoint, so the sum's gradient is each seed's own gradient.
    return jnp.sum(losses), {"loss_per_token": jnp.mean(losses),
                             "tokens": jnp.sum(batch["lengths"]).astype(jnp.float32)}

  predict = jax.jit(jax.vmap(lambda p, b: model.predict(spec, p, b), in_axes=(0, None)))

  def tag_split(params, split):
    """``[seeds]`` lists of predicted tag lists of ``split``, in file order."""
    enc = data[split]
    out = [[None] * len(enc) for _ in range(seeds)]
    for batch in features.eval_batches(enc, config.eval_batch_size, buckets):
      tags = np.asarray(predict(params["tagger"], batch))  # [seeds, b, t]
      for row, i in enumerate(batch["index"]):
        if i >= 0:
          for s in range(seeds):
            out[s][i] = _tag_names(tags[s, row], batch["lengths"][row])
    return out

  def gold(split):
    enc = data[split]
    return [_tag_names(t, len(t)) for t in enc.tags]

  def evaluate(params, step):
    pred = {split: tag_split(params, split) for split in ("validation", "test")}
    metrics = {}
    for s in range(seeds):
      valid = scoring.evaluate(gold("validation"), pred["validation"][s])
      test = scoring.evaluate(gold("test"), pred["test"][s])
      metrics[f"eval/valid_f1_seed{s}"] = valid["f1"]
      metrics[f"eval/test_f1_seed{s}"] = test["f1"]
      if s not in best or valid["f1"] > best[s]["valid"]["f1"]:
        best[s] = {"step": int(step), "valid": valid, "test": test}
        seed_dir = os.path.join(workdir, f"seed{s}")
        os.makedirs(seed_dir, exist_ok=True)
        scoring.write_conll(os.path.join(seed_dir, "test.pred.conll"), data["test"].tokens,
                            gold("test"), pred["test"][s])
    metrics["eval/valid_f1"] = float(np.mean([metrics[f"eval/valid_f1_seed{s}"]
                                              for s in range(seeds)]))
    metrics["eval/test_f1"] = float(np.mean([metrics[f"eval/test_f1_seed{s}"]
                                             for s in range(seeds)]))
    if jax.process_index() == 0:
      with open(best_path, "w", encoding="utf-8") as f:
        json.dump({str(k): v for k, v in best.items()}, f, indent=1)
    return metrics

  def results(params, history):  # pylint: disable=unused-argument
    per_seed = []
    for s in range(seeds):
      g, p = scoring.read_conll(os.path.join(workdir, f"seed{s}", "test.pred.conll"))
      per_seed.append({"seed": s, "step": best[s]["step"],
                       "valid": {k: best[s]["valid"][k] for k in ("precision", "recall", "f1")},
                       "test": {k: best[s]["test"][k] for k in ("precision", "recall", "f1")},
                       "test_per_type": best[s]["test"]["per_type"],
                       "test_seqeval": _seqeval(g, p)})
    types = sorted(per_seed[0]["test_per_type"])
    return {"output": config.output, "num_seeds": seeds, "data_stats": stats,
            "vocab": {"words": vocab.num_words, "chars": vocab.num_chars,
                      "singletons": len(vocab.singletons)},
            "steps_per_epoch": batches.batches_per_epoch,
            "test_f1": _mean_std([r["test"]["f1"] for r in per_seed]),
            "valid_f1": _mean_std([r["valid"]["f1"] for r in per_seed]),
            "test_per_type_f1": {t: _mean_std([r["test_per_type"][t]["f1"] for r in per_seed])
                                 for t in types},
            "per_seed": per_seed,
            "wall_seconds_this_process": time.perf_counter() - started}

  def plot(plot_workdir, params, history):  # pylint: disable=unused-argument
    plots.learning_curves(os.path.join(plot_workdir, "learning_curves.png"), history, seeds,
                          batches.batches_per_epoch, f"CoNLL-2003, BiLSTM-{config.output}")

  return train.Experiment(init=init, loss_fn=loss_fn, get_batch=get_batch, evaluate=evaluate,
                          results=results, plot=plot,
                          optimizer=train.make_optimizer(config, per_model_clip=True),
                          loss_reduction="global")


def _seqeval(gold, predicted):
  """seqeval's scores of the same predictions (default, conlleval-compatible mode), or None."""
  try:
    from seqeval import metrics  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return {"precision": 100.0 * metrics.precision_score(gold, predicted),
          "recall": 100.0 * metrics.recall_score(gold, predicted),
          "f1": 100.0 * metrics.f1_score(gold, predicted)}
