"""Config of Multi30k German-to-English translation with RNN encoder-decoders.

  python -m experiments.translate --workdir runs/translate-bigru-additive --config.data_dir DIR

(DIR holds the six raw Multi30k task-1 files; leave ``--config.data_dir`` out to download them
from github.com/multi30k/dataset.) The default, ``bigru_additive``, takes about 2.5 minutes on one
H100 (94 s of training, 2026-11-23) and scores test2016 BLEU 36.61 cased / 36.88 lowercase with beam
5 (published 28.30; README.md, results/bigru-additive-h100/). The other variants::

  python -m experiments.translate --workdir runs/translate-lstm \\
      --config experiments/translate/config.py:lstm --config.data_dir DIR
  python -m experiments.translate --workdir runs/translate-gru-context \\
      --config experiments/translate/config.py:gru_context --config.data_dir DIR
  python -m experiments.translate --workdir /tmp/translate-smoke \\
      --config experiments/translate/config.py:smoke --config.data_dir DIR

Variants (each the recipe of one bentrevett/pytorch-seq2seq model, 10 epochs of batch 128):

* ``bigru_additive`` (default): bidirectional GRU encoder, GRU decoder, Bahdanau attention
  (tutorial 3; published 28.30 BLEU);
* ``lstm``: 2-layer LSTM encoder and decoder, no attention, reading the source backwards as
  Sutskever et al. 2014 did (tutorial 1, which does not reverse; 13.76). Without the reversal
  the full-size run scored 13.44 on the H100, with it 15.41
  (``results/lstm-h100``, ``results/lstm-reversed-h100``);
* ``gru_context``: GRU encoder and decoder, the encoder's final state fed at every step
  (tutorial 2, Cho; 20.61);
* ``smoke``: a few hundred pairs and a tiny model, one to two minutes on a 2-core CPU (used by
  the tests).
"""

import ml_collections

from seqjax import train

# Multi30k task 1 has 29,000 training pairs: 226 batches of 128 per epoch.
_TRAIN_PAIRS = 29000


def get_config(arg: str = ""):
  """Returns the translation config; ``arg`` picks a variant (see the module docstring)."""
  config = train.runtime_config()
  # Folder with the raw Multi30k files (train.de.gz, val.en.gz, ...); "" downloads them.
  config.data_dir = ""
  # Where tensorflow-datasets writes the prepared array_record files; "" = <workdir>/tfds.
  config.tfds_dir = ""
  # Source language code ("de" or "en").
  config.source_lang = "de"
  # Target language code (the other one).
  config.target_lang = "en"
  # Use only the first N training pairs; 0 = all.
  config.max_train_pairs = 0
  # Use only the first N validation and test pairs; 0 = all.
  config.max_eval_pairs = 0
  # "sentencepiece" (unigram subwords trained on the training split) or "word" (min_freq cut-off).
  # Sentencepiece scored higher test BLEU in the reduced CPU runs (31.93 vs 30.87 with words,
  # results/bigru-additive-word-cpu-small).
  config.tokenizer = "sentencepiece"
  # Sentencepiece vocabulary size per language.
  config.vocab_size = 6000
  # Word tokeniser: keep words seen at least this often in training.
  config.min_freq = 2
  # Longest sentence in tokens (with its end token); longer ones are truncated and counted.
  config.max_len = 64
  # Padded lengths are multiples of this: fewer distinct shapes to compile.
  config.pad_multiple = 8

  # The model (seqjax.models.encdec.Spec fields).
  config.model = ml_collections.ConfigDict()
  # Recurrent cell of encoder and decoder ("gru", "lstm", ...).
  config.model.cell = "gru"
  # Embedding size of source and target tokens.
  config.model.embed_size = 256
  # Hidden units per layer (per direction in the encoder).
  config.model.hidden_size = 512
  # Encoder stack depth.
  config.model.encoder_layers = 1
  # Decoder stack depth.
  config.model.decoder_layers = 1
  # Bidirectional encoder.
  config.model.bidirectional = True
  # Read each source sentence backwards (Sutskever et al. 2014).
  config.model.reverse_source = False
  # "none", "additive" (Bahdanau), "dot" or "general" (Luong).
  config.model.attention = "additive"
  # Hidden size of the additive attention score.
  config.model.attention_size = 512
  # With attention "none": feed the encoder's final state at every decoder step (Cho et al.).
  config.model.feed_context = True
  # Dropout on embeddings and between stacked layers.
  config.model.dropout = 0.5

  # Label smoothing of the training cross-entropy.
  config.label_smoothing = 0.0
  # Decoding of test.hyp.txt and test/bleu: beam width (1 = greedy).
  config.beam_size = 5
  # GNMT length penalty ((5 + length) / 6) ** alpha of that beam search.
  config.alpha = 0.6
  # Longest output in tokens.
  config.max_decode_len = 64
  # Sentences per decoding / evaluation batch.
  config.eval_batch_size = 128
  # BLEU table on the validation set (Britz et al. 2017): its beam widths ...
  config.sweep_beams = (1, 3, 5, 10, 25)
  # ... times these length penalties.
  config.sweep_alphas = (0.0, 0.6, 1.0)
  # Attention heatmaps (PNG) of the first N test sentences; 0 = none.
  config.num_heatmaps = 4

  # bentrevett's training: Adam 1e-3, batch 128, gradient clipping at 1, 10 epochs.
  config.optimizer = "adam"
  # Adam's learning rate (constant).
  config.learning_rate = 1e-3
  # Clip gradients to this global norm.
  config.grad_clip_norm = 1.0
  # Sentence pairs per step (global).
  config.batch_size = 128
  # 10 epochs.
  config.num_steps = 10 * (_TRAIN_PAIRS // 128)
  # Training loss to metrics.jsonl every this many steps.
  config.log_every = 50
  # Validation loss and greedy BLEU once per epoch.
  config.eval_every = _TRAIN_PAIRS // 128
  # A checkpoint once per epoch.
  config.checkpoint_every = _TRAIN_PAIRS // 128
  # Also keep the checkpoint of the best validation BLEU.
  config.best_metric = "eval/bleu"
  # Higher BLEU is better.
  config.best_mode = "max"

  if arg in ("", "bigru_additive"):
    pass
  elif arg == "lstm":
    # Sutskever-style: stacked LSTMs, no attention, the source read backwards.
    config.model.cell = "lstm"
    config.model.encoder_layers = 2
    config.model.decoder_layers = 2
    config.model.bidirectional = False
    config.model.attention = "none"
    config.model.feed_context = False
    config.model.reverse_source = True
    config.num_heatmaps = 0
  elif arg == "gru_context":
    # Cho-style: the encoder's final state as context at every decoder step.
    config.model.bidirectional = False
    config.model.attention = "none"
    config.model.feed_context = True
    config.num_heatmaps = 0
  elif arg == "smoke":
    # 300 training pairs, a tiny model, 30 steps, two evaluations.
    config.max_train_pairs = 300
    config.max_eval_pairs = 40
    config.vocab_size = 400
    config.max_len = 40
    config.pad_multiple = 40
    config.model.embed_size = 16
    config.model.hidden_size = 24
    config.model.attention_size = 16
    config.model.dropout = 0.1
    config.batch_size = 32
    config.num_steps = 30
    config.log_every = 10
    config.eval_every = 15
    # Checkpoints mid-run, so the resume test can kill the run between two of them.
    config.checkpoint_every = 5
    config.eval_batch_size = 40
    config.max_decode_len = 20
    config.beam_size = 3
    config.sweep_beams = (1, 3)
    config.sweep_alphas = (0.0, 1.0)
    config.num_heatmaps = 2
  else:
    raise ValueError(f"unknown translate config variant {arg!r}; use 'bigru_additive', 'lstm', "
                     "'gru_context' or 'smoke'")
  return config
