"""The PyTorch peer: the same LSTM recipe with ``nn.LSTM``, the same data, batches and evaluation.

  python -m experiments.char_lm.torch_peer --workdir runs/torch-small --variant small \\
      --data_dir ../shared/data/tiny_shakespeare

trains ``nn.Embedding -> nn.LSTM(num_layers, dropout) -> Dropout -> Linear`` with the recipe of
``config.py``'s variant (sizes, dropout, sequence, batch, Adam, clipping, steps; windows mode) on
the batches ``batches.windows`` draws for seqjax (the same characters at every step), and
evaluates exactly as the seqjax experiment does: the whole validation text in
``eval_streams`` streams read in chunks with the state carried. It writes ``wall_time.jsonl``
(training seconds at each evaluation, evaluations excluded, start-up of the first step included)
and ``results.json`` to the workdir, for the side-by-side time-to-loss in README.md.

On cores shared with other jobs use ``--threads 1``: with two threads each step waited on the
descheduled one (small variant: 4.7 s a step against 1.2 s with one thread).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import torch
from torch import nn

from experiments.char_lm import batches
from experiments.char_lm import config as config_lib
from experiments.char_lm import shakespeare


class CharLstm(nn.Module):
  """Embedding, a stacked LSTM with dropout between layers, dropout, the softmax head."""

  def __init__(self, vocab_size: int, embed_size: int, hidden_size: int, num_layers: int,
               dropout: float):
    super().__init__()
    self.embed = nn.Embedding(vocab_size, embed_size)
    self.lstm = nn.LSTM(embed_size, hidden_size, num_layers, dropout=dropout, batch_first=True)
    self.drop = nn.Dropout(dropout)
    self.head = nn.Linear(hidden_size, vocab_size)

  def forward(self, tokens, state=None):
    ys, state = self.lstm(self.embed(tokens), state)
    return self.head(self.drop(ys)), state


def load_data(data_dir: str):
  """``(vocab, train ids, validation ids)``: the split and vocabulary of the seqjax experiment."""
  text = shakespeare.read_text(os.path.join(data_dir, shakespeare.FILE))
  parts = shakespeare.split_text(text)
  vocab = shakespeare.Vocabulary.from_text(text)
  return vocab, vocab.encode(parts["train"]), vocab.encode(parts["validation"])


@torch.no_grad()
def evaluate(model: CharLstm, layout: dict, chunk_len: int) -> tuple[float, float]:
  """``(nll_sum, count)`` over the evaluation layout, chunk by chunk with the state carried."""
  model.eval()
  inputs, targets = torch.from_numpy(layout["inputs"]).long(), torch.from_numpy(
      layout["targets"]).long()
  mask = torch.from_numpy(layout["mask"])
  state, total = None, 0.0
  for start in range(0, inputs.shape[1], chunk_len):
    part = slice(start, start + chunk_len)
    logits, state = model(inputs[:, part], state)
    nll = nn.functional.cross_entropy(logits.transpose(1, 2), targets[:, part], reduction="none")
    total += float((nll * mask[:, part]).double().sum())
  model.train()
  return total, float(mask.sum())


def make_training(config, vocab_size: int, seed: int):
  torch.manual_seed(seed)
  model = CharLstm(vocab_size, config.embed_size, config.hidden_size, config.num_layers,
                   config.dropout_rate)
  optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate,
                               betas=(config.adam_b1, config.adam_b2), eps=config.eps)

  def step(batch) -> float:
    inputs = torch.from_numpy(batch["inputs"]).long()
    targets = torch.from_numpy(batch["targets"]).long()
    logits, _ = model(inputs)
    loss = nn.functional.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip_norm > 0:
      nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
    optimizer.step()
    return loss.item()

  return model, step


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--variant", default="small", help="a config.py variant (windows mode)")
  parser.add_argument("--data_dir", required=True, help="folder holding input.txt")
  parser.add_argument("--num_steps", type=int, default=0, help="0: the variant's")
  parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default")
  parser.add_argument("--eval_every", type=int, default=0, help="0: the variant's")
  parser.add_argument("--stop_below", type=float, default=0.0,
                      help="stop after the first evaluation at or below this many nats/char "
                           "(a time-to-loss peer need not train on); 0: never")
  args = parser.parse_args(argv)
  config = config_lib.get_config(args.variant)
  if config.mode != "windows" or config.cell != "lstm":
    raise SystemExit(f"error: the peer trains the LSTM in windows mode; variant {args.variant!r}"
                     f" is {config.cell} in {config.mode} mode")
  num_steps = args.num_steps or config.num_steps
  eval_every = args.eval_every or config.eval_every
  if num_steps < 1 or eval_every < 1 or args.stop_below < 0:
    raise SystemExit(f"error: --num_steps and --eval_every must be positive and --stop_below "
                     f"not negative; got {num_steps}, {eval_every}, {args.stop_below}")
  if args.threads:
    torch.set_num_threads(args.threads)
  os.makedirs(args.workdir, exist_ok=True)
  vocab, train_ids, val_ids = load_data(args.data_dir)
  layout = batches.evaluation_streams(val_ids, config.eval_streams, config.eval_chunk)
  timeline_path = os.path.join(args.workdir, "wall_time.jsonl")
  open(timeline_path, "w", encoding="utf-8").close()
  start = time.perf_counter()
  evaluating = 0.0
  model, step = make_training(config, len(vocab), config.seed)
  history = []
  for i in range(num_steps):
    loss = step(batches.windows(train_ids, config.seed, i, config.batch_size, config.seq_len))
    done = i + 1
    if done % config.log_every == 0:
      print(f"step {done}/{num_steps} train/loss={loss:.4f}", flush=True)
    if done % eval_every == 0 or done == num_steps:
      began = time.perf_counter()
      nll, count = evaluate(model, layout, config.eval_chunk)
      nats = nll / count
      record = {"step": done, "train_seconds": began - start - evaluating, "eval/loss": nats,
                "eval/bits_per_char": nats / math.log(2), "train/loss": loss}
      history.append(record)
      with open(timeline_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
      print(f"step {done} eval/loss={nats:.4f} ({record['train_seconds']:.0f} s)", flush=True)
      evaluating += time.perf_counter() - began
      if nats <= args.stop_below:
        print(f"stopped at step {done}: {nats:.4f} <= --stop_below {args.stop_below}", flush=True)
        break
  best = min(history, key=lambda r: r["eval/loss"])
  results = {"framework": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
             "variant": args.variant, "num_steps": num_steps,
             "steps_done": history[-1]["step"], "best_eval_loss": best["eval/loss"],
             "best_eval_bits_per_char": best["eval/bits_per_char"], "best_step": best["step"],
             "train_seconds": history[-1]["train_seconds"], "machine": platform.processor()
             or platform.machine(), "cpus": os.cpu_count()}
  with open(os.path.join(args.workdir, "results.json"), "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
  print(json.dumps(results))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
