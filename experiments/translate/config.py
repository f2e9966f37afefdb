"""Config of Multi30k German-to-English translation with RNN encoder-decoders or Transformers.

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
* ``transformer``: bentrevett's Transformer (tutorial 6: 3+3 layers, d 256, 8 heads, FFN 512,
  dropout 0.1, learned positions), trained with label smoothing 0.1 and a warmup + cosine
  learning rate (bentrevett: Adam 5e-4 constant; 36.52 with its own BLEU code);
* ``transformer_big``: a Transformer-base-like model (6+6 layers, d 512, 8 heads, FFN 2048,
  sinusoidal positions, output layer tied to the target embedding), meant for a GPU;
* ``smoke``: a few hundred pairs and a tiny model, one to two minutes on a 2-core CPU (used by
  the tests); ``transformer_smoke`` the same data with a tiny 2+1-layer Transformer.

  python -m experiments.translate --workdir runs/translate-transformer \\
      --config experiments/translate/config.py:transformer --config.data_dir DIR
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

  # The model: its family ("rnn" = seqjax.models.encdec, "transformer" = seqjax.models.transformer),
  # then that family's Spec fields.
  config.model = ml_collections.ConfigDict()
  config.model.family = "rnn"
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
  elif arg in ("transformer", "transformer_big", "transformer_smoke"):
    _transformer(config, arg)
  else:
    raise ValueError(f"unknown translate config variant {arg!r}; use 'bigru_additive', 'lstm', "
                     "'gru_context', 'smoke', 'transformer', 'transformer_big' or "
                     "'transformer_smoke'")
  return config


def _transformer(config, arg: str) -> None:
  """The Transformer variants: a new ``config.model`` and their training recipe."""
  # seqjax.models.transformer.Spec fields (vocabularies, special ids and max_len come from the
  # data: max_len covers config.max_len rounded up to pad_multiple and max_decode_len).
  config.model = ml_collections.ConfigDict()
  config.model.family = "transformer"
  # Width of every layer.
  config.model.d_model = 256
  # Attention heads (each reads d_model / num_heads features).
  config.model.num_heads = 8
  # Hidden units of each position-wise feed-forward layer.
  config.model.ffn_size = 512
  # Encoder and decoder depths.
  config.model.encoder_layers = 3
  config.model.decoder_layers = 3
  # Dropout on embeddings and residual branches; attention_dropout on the attention weights.
  config.model.dropout = 0.1
  config.model.attention_dropout = 0.1
  # "learned" (bentrevett) or "sinusoidal" (Vaswani et al.) position embeddings.
  config.model.positions = "learned"
  # LayerNorm after each residual sum ("post", Vaswani et al., bentrevett) or before ("pre").
  config.model.norm = "post"
  # Feed-forward nonlinearity, "relu" or "gelu".
  config.model.activation = "relu"
  # One table for source and target tokens (needs one shared vocabulary).
  config.model.share_embeddings = False
  # The output layer reuses the target embedding (Press & Wolf 2017).
  config.model.tie_output = False
  # Token embeddings times sqrt(d_model) before the positions are added.
  config.model.scale_embeddings = True

  # Label smoothing 0.1 (Vaswani et al.): spreads 10% of each target's probability.
  config.label_smoothing = 0.1
  # Adam with beta2 0.98 (Vaswani et al.), a linear warmup, then a cosine decay to zero over the
  # 10 epochs: the last parameters are the ones scored.
  config.learning_rate = 7e-4
  config.adam_b2 = 0.98
  config.warmup_steps = 300
  config.schedule = "cosine"
  # Validation BLEU table: beam widths 1, 5 and 10 (wider beams cost minutes on a CPU).
  config.sweep_beams = (1, 5, 10)

  if arg == "transformer_big":
    config.model.d_model = 512
    config.model.ffn_size = 2048
    config.model.encoder_layers = 6
    config.model.decoder_layers = 6
    config.model.positions = "sinusoidal"
    config.model.tie_output = True
    # A deeper, wider model wants a smaller peak and a longer warmup.
    config.learning_rate = 5e-4
    config.warmup_steps = 800
  elif arg == "transformer_smoke":
    # The smoke variant's data and schedule (300 pairs, 30 steps, two evaluations), a 2+1-layer
    # model of width 16 (depths differ, so heatmap grids must follow each stack's own), one
    # padded length, few decoder compilations.
    config.max_train_pairs = 300
    config.max_eval_pairs = 40
    config.vocab_size = 400
    config.max_len = 40
    config.pad_multiple = 40
    config.model.d_model = 16
    config.model.num_heads = 2
    config.model.ffn_size = 32
    config.model.encoder_layers = 2
    config.model.decoder_layers = 1
    config.learning_rate = 3e-3
    config.warmup_steps = 5
    config.batch_size = 32
    config.num_steps = 30
    config.log_every = 10
    config.eval_every = 15
    config.checkpoint_every = 30
    config.eval_batch_size = 40
    config.max_decode_len = 20
    config.beam_size = 2
    config.sweep_beams = (1, 2)
    config.sweep_alphas = (0.6,)
    config.num_heatmaps = 2
