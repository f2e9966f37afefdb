"""Config of CoNLL-2003 named-entity tagging: a BiLSTM over words, casing and characters.

  python -m experiments.ner --workdir runs/ner-crf \\
      --config.data_dir ../shared/data/conll2003/iob2
  python -m experiments.ner --workdir runs/ner-softmax \\
      --config experiments/ner/config.py:softmax --config.data_dir ../shared/data/conll2003/iob2

train three seeds of the CRF (default) or softmax tagger side by side, with randomly initialised
word embeddings, select each seed on testa (validation) and report its testb (test) F1; the
README gives the times and results. Without ``--config.data_dir`` the three files are
downloaded. Variants: ``crf`` (the default ``""``), ``softmax``, ``smoke`` (a few hundred
sentences, a few steps: seconds; the tests run it).
"""

from seqjax import train

# Sentences in CoNLL-2003's training split over the batch size: optimiser steps per epoch.
STEPS_PER_EPOCH = 14041 // 32


def get_config(arg: str = ""):
  """Returns the NER config; ``arg`` picks a variant ("", "crf", "softmax", "smoke")."""
  config = train.runtime_config()
  # Folder with train.txt(.gz), valid.txt(.gz), test.txt(.gz); "" downloads them.
  config.data_dir = ""
  # Where tensorflow-datasets writes the prepared array_record files; "" = <workdir>/tfds.
  config.tfds_dir = ""
  # Use only the first this many training sentences (0 = all); for the smoke test.
  config.max_train_sentences = 0
  # Use only the first this many validation and test sentences (0 = all); for the smoke test.
  config.max_eval_sentences = 0
  # Output layer: "crf" (linear-chain CRF, Viterbi decoding) or "softmax" (per-token argmax).
  config.output = "crf"
  # Seeds trained side by side in one program (vmap); each is selected on validation F1.
  config.num_seeds = 3
  # Recurrent cell of the BiLSTM (any name of seqjax.cells).
  config.cell = "lstm"
  # Run the LSTM on the native CPU kernels (their threads stall on a busy shared CPU).
  config.native_kernels = False
  # Word embedding size (random init; no pretrained vectors).
  config.word_dim = 100
  # Size of the casing-category embedding.
  config.casing_dim = 8
  # Character embedding size and the number of width-3 convolution filters over them.
  config.char_dim = 30
  config.char_filters = 50
  # Hidden units per direction of the BiLSTM.
  config.hidden_size = 128
  # Dropout on the token features and on the BiLSTM outputs.
  config.dropout = 0.5
  # Probability that a word seen once in training is read as UNK during training.
  config.word_dropout = 0.5
  # Adam with warmup and a cosine decay; gradient norm clipped per seed.
  config.optimizer = "adam"
  config.learning_rate = 2e-3
  config.schedule = "cosine"
  config.warmup_steps = 100
  config.min_lr_ratio = 0.05
  config.grad_clip_norm = 5.0
  # Sentences per step.
  config.batch_size = 32
  # Padded sentence lengths (one compiled program each); longer ones pad to a multiple of 32.
  config.buckets = "8,16,24,32,40,48,64,80,128"
  # Sentences per evaluation batch.
  config.eval_batch_size = 256
  # Optimiser steps of the run: 4 epochs (what a shared 2-core CPU trained in an hour).
  config.num_steps = 4 * STEPS_PER_EPOCH
  # Training loss to metrics.jsonl every this many steps.
  config.log_every = 100
  # Validation and test F1 of every seed once an epoch.
  config.eval_every = STEPS_PER_EPOCH
  # A checkpoint once an epoch.
  config.checkpoint_every = STEPS_PER_EPOCH

  if arg == "softmax":
    config.output = "softmax"
  elif arg == "smoke":
    config.max_train_sentences = 200
    config.max_eval_sentences = 100
    config.num_seeds = 2
    config.word_dim = 16
    config.char_dim = 8
    config.char_filters = 8
    config.hidden_size = 16
    config.batch_size = 16
    config.eval_batch_size = 64
    # One padded length: one program to compile for training and one for tagging.
    config.buckets = "128"
    config.warmup_steps = 0
    # Large steps so that a few of them visibly lower the loss.
    config.learning_rate = 0.005
    config.num_steps = 40
    config.log_every = 5
    config.eval_every = 20
    config.checkpoint_every = 20
  elif arg not in ("", "crf"):
    raise ValueError(f"unknown ner config variant {arg!r}; use '', 'crf', 'softmax' or 'smoke'")
  return config
