"""Multi30k German-to-English translation: RNN encoder-decoders or a Transformer, beam search.

  python -m experiments.translate --workdir DIR [--config experiments/translate/config.py:VARIANT]
      [--config.data_dir FOLDER_WITH_RAW_MULTI30K_FILES]

The data come through the tfds builder ``seqjax.data.multi30k`` (a local folder, or downloaded);
the tokenisers are trained on the training split and saved in ``DIR/tokenizers`` (a resumed run
reloads them). ``config.model.family`` picks the RNN encoder-decoder or the Transformer
(``models.py``); both go through the same functions below. Training is teacher-forced
cross-entropy on length-bucketed batches; every ``eval_every`` steps the validation loss and
greedy BLEU are logged. At the end the workdir gets, besides the runtime's files:

* ``results.json``: sacrebleu BLEU on test2016, cased and ``lowercase=True``, for greedy decoding
  and for the configured beam; the beam width x length penalty BLEU table on the validation set;
  parameter count and data statistics;
* ``test.hyp.txt``: the detokenised test translations of the configured decoding, in test order;
* ``attention_<i>.png``: source x output attention heatmaps of the first test sentences (the
  attention each decoder step returns);
* Transformers also get ``heads_<kind>_<i>.png`` for those sentences, ``kind`` one of
  ``encoder_self``, ``decoder_self``, ``cross``: one map per layer (rows) and head (columns),
  with the greedy translation as the decoder's input;
* ``timing.json``: wall-clock seconds of training and evaluation in this process (kept out of
  results.json so that a resumed run's results equal an uninterrupted run's).
"""

from __future__ import annotations

import functools
import json
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from experiments.translate import heatmaps
from experiments.translate import models
from seqjax import decoding
from seqjax import train
from seqjax.data import multi30k
from seqjax.data import text
from seqjax.models import encdec

def load_data(config, workdir: str) -> dict:
  """Reads Multi30k, trains (or reloads) the tokenisers and encodes every split.

  Returns:
    ``{"src_tok", "tgt_tok", "train", "validation", "test"}``; each split is a
    :class:`seqjax.data.text.EncodedPairs` with its reference texts in ``.references``.
  """
  langs = (config.source_lang, config.target_lang)
  if set(langs) != set(multi30k.LANGUAGES):
    raise ValueError(f"config.source_lang and config.target_lang must be 'de' and 'en' in some "
                     f"order; got {langs}")
  if config.data_dir and not os.path.isdir(config.data_dir):
    raise ValueError(f"config.data_dir={config.data_dir!r} is not a folder (leave it empty to "
                     "download Multi30k)")
  splits = multi30k.load(config.tfds_dir or os.path.join(workdir, "tfds"),
                         config.data_dir or None)
  src_index = multi30k.LANGUAGES.index(config.source_lang)
  limits = {"train": config.max_train_pairs, "validation": config.max_eval_pairs,
            "test": config.max_eval_pairs}
  pairs = {}
  for split, rows in splits.items():
    rows = rows[:limits[split]] if limits[split] else rows
    pairs[split] = [(row[src_index], row[1 - src_index]) for row in rows]
  directory = os.path.join(workdir, "tokenizers")
  tokenizers = [text.build_tokenizer(config.tokenizer, [p[side] for p in pairs["train"]],
                                     directory, f"{config.tokenizer}_{lang}",
                                     vocab_size=config.vocab_size, min_freq=config.min_freq)
                for side, lang in enumerate(langs)]
  data = {"src_tok": tokenizers[0], "tgt_tok": tokenizers[1]}
  for split, split_pairs in pairs.items():
    encoded = text.encode_pairs(split_pairs, *tokenizers, config.max_len, name=split)
    encoded.references = [tgt for _, tgt in split_pairs]
    data[split] = encoded
  return data


def _padded_length(data: text.EncodedPairs, multiple: int) -> int:
  """One padded length for a whole evaluation split: one compilation per decoder."""
  longest = max([len(x) for x in data.src] + [len(x) for x in data.tgt] + [1])
  return -(-longest // multiple) * multiple


def _batches(data: text.EncodedPairs, batch_size: int, multiple: int):
  length = _padded_length(data, multiple)
  for batch in text.eval_batches(data, batch_size, length):
    yield batch


def bleu(hypotheses: list[str], references: list[str]) -> dict:
  """sacrebleu corpus BLEU (13a tokenisation), cased and lower-cased."""
  import sacrebleu  # pylint: disable=g-import-not-at-top
  cased = sacrebleu.corpus_bleu(hypotheses, [references])
  lower = sacrebleu.corpus_bleu(hypotheses, [references], lowercase=True)
  return {"bleu": cased.score, "bleu_lowercase": lower.score}


class Translator:
  """Jitted decoding of whole splits with one model spec (compiled once per beam width).

  ``lib`` is the model's module (``models.module(config)``), ``spec`` its ``Spec``.
  """

  def __init__(self, lib, spec, config, tgt_tok):
    self.spec, self.config, self.tgt_tok = spec, config, tgt_tok

    @functools.partial(jax.jit, static_argnames=("beam_size",))
    def translate(params, src, src_lengths, alpha, beam_size):
      state = lib.encode(params, spec, src, src_lengths)
      step_fn = lib.log_prob_step(params, spec)
      kwargs = dict(max_len=config.max_decode_len, bos_id=text.BOS, eos_id=text.EOS,
                    pad_id=text.PAD)
      if beam_size == 1:
        out = decoding.greedy(step_fn, state, **kwargs)
        return out.tokens, out.attention
      out = decoding.beam_search(step_fn, state, beam_size=beam_size, alpha=alpha,
                                 return_attention=False, **kwargs)
      return out.tokens[:, 0], None

    @jax.jit
    def loss_sums(params, batch):
      logits, _ = lib.forward(params, spec, batch["src"], batch["src_lengths"], batch["tgt_in"])
      nll = -encdec.token_log_probs(logits, batch["tgt_out"])
      return jnp.sum(nll * batch["tgt_mask"]), jnp.sum(batch["tgt_mask"])

    self._translate, self._loss_sums = translate, loss_sums

  def loss(self, params, data: text.EncodedPairs) -> float:
    """Teacher-forced cross-entropy per target token (nats)."""
    total = tokens = 0.0
    for batch in _batches(data, self.config.eval_batch_size, self.config.pad_multiple):
      batch = {k: v for k, v in batch.items() if k != "index"}
      nll, n = self._loss_sums(params, batch)
      total, tokens = total + float(nll), tokens + float(n)
    return total / max(tokens, 1.0)

  def translate(self, params, data: text.EncodedPairs, beam_size: int = 1, alpha: float = 0.0,
                with_attention: bool = False):
    """Detokenised translations of every input line (empty for skipped lines), in input order.

    With ``with_attention`` also returns ``{line: (src ids, output ids, weights [t, s])}``.
    """
    hypotheses = [""] * data.total
    attention = {}
    for batch in _batches(data, self.config.eval_batch_size, self.config.pad_multiple):
      tokens, weights = self._translate(params, batch["src"], batch["src_lengths"],
                                        np.float32(alpha), beam_size)
      tokens = np.asarray(tokens)
      for row, position in enumerate(batch["index"]):
        if position < 0:
          continue
        line = int(data.index[position])
        hypotheses[line] = self.tgt_tok.decode(tokens[row])
        if with_attention and weights is not None:
          src = data.src[position]
          out = tokens[row][:int(np.sum(tokens[row] != text.PAD))]
          attention[line] = (src, out, np.asarray(weights[row])[:len(out), :len(src)])
    return (hypotheses, attention) if with_attention else hypotheses


def head_maps(lib, spec, params, sentences) -> list[dict]:
  """Per-layer, per-head attention of a few sentences, teacher-forced on their translations.

  Args:
    sentences: ``[(src ids, output ids)]``, the output as decoded (ending with ``EOS``).

  Returns:
    One ``{kind: [L, h, rows, cols]}`` per sentence (kinds of ``heatmaps.KINDS``), padding cut
    off; the decoder reads ``BOS`` + the output without its last token, so row ``i`` is the
    attention that produced output token ``i``.
  """
  if not sentences:
    return []
  s = max(len(src) for src, _ in sentences)
  t = max(len(out) for _, out in sentences)
  src, src_lengths = text.pad([src for src, _ in sentences], s)
  tgt_in, _ = text.pad([out[:-1] for _, out in sentences], t, prefix=text.BOS)
  maps = jax.jit(lib.attention_maps, static_argnums=1)(params, spec, src, src_lengths, tgt_in)
  maps = {kind: np.asarray(maps[kind]) for kind in heatmaps.KINDS}
  out = []
  for i, (src_ids, out_ids) in enumerate(sentences):
    rows = {"encoder_self": len(src_ids), "decoder_self": len(out_ids), "cross": len(out_ids)}
    cols = {"encoder_self": len(src_ids), "decoder_self": len(out_ids), "cross": len(src_ids)}
    out.append({kind: maps[kind][:, i, :, :rows[kind], :cols[kind]] for kind in heatmaps.KINDS})
  return out


def make_experiment(config, workdir: str) -> train.Experiment:
  """Translation as a :class:`seqjax.train.Experiment` writing its extra files into ``workdir``."""
  if config.beam_size < 1 or any(b < 1 for b in config.sweep_beams):
    raise ValueError(f"config.beam_size and config.sweep_beams must be >= 1; got "
                     f"{config.beam_size} and {tuple(config.sweep_beams)}")
  started = time.time()
  data = load_data(config, workdir)
  src_tok, tgt_tok = data["src_tok"], data["tgt_tok"]
  lib = models.module(config)
  spec = models.make_spec(config, src_tok.vocab_size, tgt_tok.vocab_size)
  batches = text.BucketedBatches(data["train"], config.batch_size, config.seed,
                                 config.pad_multiple)
  translator = Translator(lib, spec, config, tgt_tok)
  clock = {"train_start": None, "eval_seconds": 0.0, "prepare_seconds": time.time() - started}
  logging.info("translate: %s -> %s, %d training pairs, vocabularies %d / %d, %s",
               config.source_lang, config.target_lang, len(data["train"]), src_tok.vocab_size,
               tgt_tok.vocab_size, spec)

  def init(rng):
    params = jax.jit(lib.init, static_argnums=1)(rng, spec)  # one compilation, not many
    logging.info("translate: %d parameters", lib.count_params(params))
    return params

  def loss_fn(params, batch, rng):
    # Dropout masks from each sentence's index in the global batch, not from the device.
    keys = train.example_keys(rng, batch["src"].shape[0])
    logits, _ = lib.forward(params, spec, batch["src"], batch["src_lengths"], batch["tgt_in"],
                            dropout_key=keys)
    total, tokens = encdec.loss(logits, batch["tgt_out"], batch["tgt_mask"],
                                config.label_smoothing, reduction="sum")
    # This device's share of the mean over every target token of the global batch; "tokens"
    # is a count, totalled over devices.
    return total / jnp.maximum(train.global_sum(tokens), 1.0), {"tokens": tokens}

  def get_batch(step, shard_index, num_shards):
    if clock["train_start"] is None:
      clock["train_start"] = time.time()
    batch = batches(step)
    rows = config.batch_size // num_shards
    return {k: v[shard_index * rows:(shard_index + 1) * rows]
            for k, v in batch.items() if k != "index"}

  def evaluate(params, step):
    del step
    start = time.time()
    hypotheses = translator.translate(params, data["validation"])
    scores = bleu(hypotheses, data["validation"].references)
    metrics = {"eval/loss": translator.loss(params, data["validation"]),
               "eval/bleu": scores["bleu"], "eval/bleu_lowercase": scores["bleu_lowercase"]}
    clock["eval_seconds"] += time.time() - start
    return metrics

  def results(params, history):
    del history
    trained = time.time()
    test, validation = data["test"], data["validation"]
    out = {"params": lib.count_params(params), "model": config.model.to_dict(),
           "vocab_sizes": [src_tok.vocab_size, tgt_tok.vocab_size],
           "data": {split: {"pairs": data[split].total, "kept": len(data[split]),
                            "empty_skipped": data[split].empty,
                            "truncated": data[split].truncated}
                    for split in ("train", "validation", "test")},
           "test/loss": translator.loss(params, test)}
    greedy, attention = translator.translate(params, test, with_attention=True)
    out.update({f"test/greedy_{k}": v for k, v in bleu(greedy, test.references).items()})
    hypotheses = greedy
    if config.beam_size > 1:
      hypotheses = translator.translate(params, test, config.beam_size, config.alpha)
    out.update({f"test/{k}": v for k, v in bleu(hypotheses, test.references).items()})
    out["test/decoding"] = {"beam_size": config.beam_size, "alpha": config.alpha}
    with open(os.path.join(workdir, "test.hyp.txt"), "w", encoding="utf-8") as f:
      f.writelines(h + "\n" for h in hypotheses)

    table, valid_greedy = {}, None
    for beam in config.sweep_beams:
      row = {}
      for alpha in config.sweep_alphas:
        if beam == 1:  # greedy: the length penalty cannot change a single hypothesis
          valid_greedy = valid_greedy or translator.translate(params, validation)
          hyps = valid_greedy
        else:
          hyps = translator.translate(params, validation, beam, alpha)
        row[f"alpha={alpha}"] = round(bleu(hyps, validation.references)["bleu"], 2)
      table[f"beam={beam}"] = row
    out["validation/bleu_beam_x_alpha"] = table

    lines = sorted(attention)[:config.num_heatmaps]
    for line in lines:
      src, tokens, weights = attention[line]
      heatmaps.plot_attention(os.path.join(workdir, f"attention_{line}.png"),
                              [src_tok.piece(t) for t in src], [tgt_tok.piece(t) for t in tokens],
                              weights)
    if models.family(config) == "transformer":
      sentences = [attention[line][:2] for line in lines]
      for line, (src, tokens), maps in zip(lines, sentences,
                                           head_maps(lib, spec, params, sentences)):
        src_pieces = [src_tok.piece(t) for t in src]
        out_pieces = [tgt_tok.piece(t) for t in tokens]
        in_pieces = [tgt_tok.piece(text.BOS)] + out_pieces[:-1]
        axes = {"encoder_self": (src_pieces, src_pieces), "decoder_self": (out_pieces, in_pieces),
                "cross": (out_pieces, src_pieces)}
        for kind, weights in maps.items():
          heatmaps.plot_heads(os.path.join(workdir, f"heads_{kind}_{line}.png"), kind,
                              *axes[kind], weights)
    now = time.time()
    timing = {"prepare_seconds": round(clock["prepare_seconds"], 1),
              "train_seconds": round(trained - (clock["train_start"] or trained)
                                     - clock["eval_seconds"], 1),
              "periodic_eval_seconds": round(clock["eval_seconds"], 1),
              "final_eval_seconds": round(now - trained, 1), "devices": str(jax.devices())}
    with open(os.path.join(workdir, "timing.json"), "w", encoding="utf-8") as f:
      json.dump(timing, f, indent=2)
    logging.info("translate: test BLEU %.2f (lowercase %.2f); %s", out["test/bleu"],
                 out["test/bleu_lowercase"], timing)
    return out

  return train.Experiment(init=init, loss_fn=loss_fn, get_batch=get_batch, evaluate=evaluate,
                          results=results, loss_reduction="global")
