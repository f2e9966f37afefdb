"""Config of the character-level language models on Tiny Shakespeare.

The peer recipe (a 3-layer 512-unit LSTM, dropout 0.2, sequence 256, batch 64, Adam 2e-3, clip 1;
its cuDNN run reached 1.447 nats/char after 750 iterations on an H100, shared/REFERENCES.md)::

  python -m experiments.char_lm --workdir runs/char-lstm --config.data_dir=DIR

where DIR holds ``input.txt`` (without ``--config.data_dir`` it is downloaded). Variants:

  ``""`` (default)  the peer recipe, random windows: on a 2-core CPU of its own with
                   ``--config.native_kernels=auto``, 750 steps reached 1.4461 nats/char in
                   53 min of training (README.md); the default 1,250 steps about 1.5 h
  ``gru``          the same with a GRU
  ``stateful``     the same recipe trained by truncated BPTT over 64 streams
  ``small``        a 2-layer 256-unit LSTM, sequence 128, batch 32, 600 steps: ~15-20 min on 2
                   CPU cores of its own, ~35 min on cores shared with other work (README.md has its figures)
  ``small_gru``, ``small_stateful``: the small recipe with a GRU / with truncated BPTT
  ``transformer``  nanoGPT's character GPT (6 layers, d 384, 6 heads, block 256, dropout 0.2,
                   batch 64, Adam 1e-3 with b2 0.99, warmup 100, cosine to 1e-4, 5000 steps;
                   shared/REFERENCES.md's 1.4700 run): for a GPU
  ``small_transformer``  a 4-layer d-128 GPT at the small LSTM's size and budget (block 128,
                   batch 32, 600 steps)
  ``smoke``, ``smoke_transformer``  seconds; the tests run them

Sampling from a run: ``python -m experiments.char_lm.sample --workdir DIR --prompt "ROMEO:"``.
"""

from seqjax import train

VARIANTS = ("", "gru", "stateful", "small", "small_gru", "small_stateful", "smoke",
            "transformer", "small_transformer", "smoke_transformer")


def get_config(arg: str = ""):
  """Returns the char_lm config; ``arg`` picks a variant (see the module docstring)."""
  if arg not in VARIANTS:
    raise ValueError(f"unknown char_lm config variant {arg!r}; use one of {VARIANTS}")
  config = train.runtime_config()
  # Folder holding input.txt (e.g. shared/data/tiny_shakespeare); "" downloads it.
  config.data_dir = ""
  # Where tensorflow-datasets writes the prepared array_record files; "" = <workdir>/tfds.
  config.tfds_dir = ""
  # Model family: "rnn" (seqjax.models.rnn_lm: a stack of cells) or "transformer"
  # (seqjax.models.transformer_lm: a decoder-only GPT; windows mode only).
  config.model = "rnn"
  # Recurrent cell: any seqjax.cells name ("lstm", "gru", ...).
  config.cell = "lstm"
  # Stacked recurrent layers and units per layer.
  config.num_layers = 3
  config.hidden_size = 512
  # Width of the character embedding.
  config.embed_size = 512
  # Transformer only (num_layers and dropout_rate are shared): width, heads, feed-forward
  # width. Its context is config.seq_len characters (the positions it learns).
  config.d_model = 384
  config.num_heads = 6
  config.ffn_size = 1536
  # Dropout between recurrent layers and before the softmax (training only); for the
  # Transformer, on the embeddings, attention weights and residual branches.
  config.dropout_rate = 0.2
  # "windows": random windows from a zero state; "stateful": truncated BPTT over batch_size
  # streams, the state carried from step to step (the runtime's TrainState.carry).
  config.mode = "windows"
  # Characters per window (windows) or per chunk of every stream (stateful).
  config.seq_len = 256
  # Native CPU kernels of the fused LSTM: "auto" (when built for this CPU) or "off". Off by
  # default: their threads wait on each other at every step, and on cores shared with other
  # jobs a step took 15-30 s instead of the XLA loops' 1.2 s (2x256 LSTM, batch 32 x 128).
  config.native_kernels = "off"
  # Validation: the whole text in this many contiguous streams, read this many characters a call.
  config.eval_streams = 16
  config.eval_chunk = 1024
  # The sample appended to samples.txt at every evaluation.
  config.sample_prompt = "ROMEO:"
  config.sample_length = 300
  config.sample_temperature = 0.8
  # 0: sample from every character; k: from the k most likely only.
  config.sample_top_k = 0
  # Adam 2e-3, constant, clipped to global norm 1 (the peer recipe).
  config.optimizer = "adam"
  config.learning_rate = 2e-3
  config.grad_clip_norm = 1.0
  # Windows (or streams) per step, global.
  config.batch_size = 64
  # Optimiser steps: past the peer's best (750), which then overfit.
  config.num_steps = 1250
  # Train loss to metrics.jsonl every this many steps.
  config.log_every = 25
  # Validation loss and a sample every this many steps.
  config.eval_every = 125
  # A checkpoint every this many steps.
  config.checkpoint_every = 125
  # Also keep the checkpoint of the lowest validation loss.
  config.best_metric = "eval/loss"
  config.best_mode = "min"

  if arg.endswith("transformer"):
    config.model = "transformer"
    config.num_layers = 6
    config.learning_rate = 1e-3
    config.adam_b2 = 0.99
    config.warmup_steps = 100
    config.schedule = "cosine"
    config.min_lr_ratio = 0.1
    config.num_steps = 5000
    config.eval_every = 250
    config.checkpoint_every = 250
  if arg.endswith("gru"):
    config.cell = "gru"
  if arg.endswith("stateful"):
    config.mode = "stateful"
  if arg.startswith("small"):
    config.num_layers = 2
    config.hidden_size = 256
    config.embed_size = 64
    config.seq_len = 128
    config.batch_size = 32
    config.num_steps = 600
    config.log_every = 20
    config.eval_every = 100
    config.checkpoint_every = 100
  elif arg.startswith("smoke"):
    config.num_layers = 2
    config.hidden_size = 16
    config.embed_size = 8
    config.seq_len = 16
    config.batch_size = 4
    config.num_steps = 6
    config.log_every = 2
    config.eval_every = 3
    config.checkpoint_every = 3
    config.eval_streams = 64
    config.eval_chunk = 2048
    config.sample_length = 40
  if arg == "small_transformer":
    config.num_layers = 4
    config.d_model = 128
    config.num_heads = 4
    config.ffn_size = 512
    config.dropout_rate = 0.1
    config.warmup_steps = 50
  if arg == "smoke_transformer":
    config.num_layers = 2
    config.d_model = 16
    config.num_heads = 2
    config.ffn_size = 32
    config.warmup_steps = 2
  return config
