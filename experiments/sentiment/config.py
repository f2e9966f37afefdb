"""Config of sentence sentiment: a BiLSTM with pooling on SST-2 or the airline tweets.

  python -m experiments.sentiment --workdir runs/sst2 \\
      --config.data_dir ../shared/data/sst2

trains three seeds side by side (one ``jax.vmap``-ed step) on SST-2's 67,349 training phrases
and selects each seed's epoch by GLUE dev accuracy (README.md: times and results). Others::

  python -m experiments.sentiment --workdir runs/airline \\
      --config experiments/sentiment/config.py:airline \\
      --config.data_dir ../shared/data/twitter_airline_sentiment
  python -m experiments.sentiment --workdir /tmp/sentiment-smoke \\
      --config experiments/sentiment/config.py:smoke --config.data_dir ../shared/data/sst2
  python -m experiments.sentiment.padding --workdir runs/padding \\
      --config.data_dir ../shared/data/sst2      # bucketing against plain padding

Without ``--config.data_dir`` the files are downloaded (the GLUE SST-2 zip; the tweets' CSV).
Variants: ``sst2`` (the default ``""``), ``airline``, ``smoke`` (SST-2, a few steps on a slice of
the data, tiny model: seconds; the tests run it).
"""

from seqjax import train


def get_config(arg: str = ""):
  """Returns the sentiment config; ``arg`` picks a variant ("", "sst2", "airline", "smoke")."""
  config = train.runtime_config()
  # "sst2" or "airline".
  config.dataset = "sst2"
  # Folder with the raw files (train.tsv[.gz], dev.tsv[.gz] / Tweets.csv[.gz]); "" downloads.
  config.data_dir = ""
  # Where tensorflow-datasets writes the prepared array_record files; "" = <workdir>/tfds.
  config.tfds_dir = ""
  # Use only the first this many training texts (and evaluation texts); 0 = all.
  config.max_train_examples = 0
  config.max_eval_examples = 0
  # Tokens: "word" (training vocabulary) or "sentencepiece" (subwords).
  config.tokenizer = "word"
  # How "word" splits: "whitespace" (text tokenised already) or "punct" (words and punctuation).
  config.word_split = "whitespace"
  # Words seen fewer times in training become UNK.
  config.min_freq = 1
  # Subword vocabulary size of "sentencepiece".
  config.vocab_size = 8000
  # Texts are cut to this many tokens (counted in results.json).
  config.max_len = 64
  # A word2vec / GloVe text file to initialise the embeddings from; "" = random N(0, 0.1^2).
  config.pretrained_vectors = ""
  # Embedding size e (must match pretrained_vectors when given).
  config.embed_dim = 300
  # Recurrent cell ("lstm", "gru", ...), hidden units per direction, layers, directions.
  config.cell = "lstm"
  config.hidden_size = 150
  config.num_layers = 1
  config.bidirectional = True
  # Pooling over time: "last", "mean", "max" or "attention".
  config.pooling = "attention"
  # Hidden size of the attention pooling's score.
  config.attention_size = 100
  # Probability of replacing a training token by UNK (teaches the UNK row; regularises).
  config.word_dropout = 0.1
  # Dropout on the embeddings, between stacked layers, and on the pooled vector before the head.
  config.embed_dropout = 0.5
  config.layer_dropout = 0.0
  config.output_dropout = 0.5
  # Length-bucketed batches (True) or random batches padded to their longest text (False).
  config.bucketing = True
  # Padded lengths are multiples of this (few distinct shapes to compile).
  config.pad_multiple = 8
  # Seeds trained side by side in one vmapped step (parameter init and dropout differ; the
  # batches are shared); seed i is config.seed + i.
  config.num_seeds = 3
  # Epochs of training; when > 0 it sets num_steps, and eval_every becomes one epoch (0: the
  # num_steps and eval_every fields rule). Two is what the reported SST-2 run trained (README.md).
  config.num_epochs = 2
  # Run the fused LSTM's loops as the native CPU kernels (seqjax/kernels/native). Off: their
  # threads meet at a barrier every time step, which stalls when other jobs share the cores.
  config.native_kernels = False
  # Threads of each native kernel call; 0 = the cores this process may use.
  config.kernel_threads = 0
  # Rows per evaluation batch.
  config.eval_batch_size = 256
  # Dev sentences drawn with their attention weights (attention pooling).
  config.attention_examples = 6
  # Adam with gradient clipping per seed; texts per step.
  config.optimizer = "adam"
  config.learning_rate = 1e-3
  config.grad_clip_norm = 5.0
  config.batch_size = 64
  config.log_every = 200
  config.checkpoint_every = 1000

  if arg == "airline":
    config.dataset = "airline"
    config.word_split = "punct"
    config.min_freq = 2
    config.num_epochs = 5
    config.batch_size = 32
  elif arg == "smoke":
    config.max_train_examples = 256
    config.max_eval_examples = 64
    config.embed_dim = 16
    config.hidden_size = 16
    config.attention_size = 8
    config.num_seeds = 2
    config.num_epochs = 2
    config.batch_size = 32
    config.eval_batch_size = 32
    config.log_every = 4
    config.checkpoint_every = 8
    config.attention_examples = 3
    # Every batch padded to max_len: one shape to compile instead of one per bucket.
    config.pad_multiple = 64
  elif arg not in ("", "sst2"):
    raise ValueError(f"unknown sentiment config variant {arg!r}; use '', 'sst2', 'airline' or "
                     "'smoke'")
  return config
