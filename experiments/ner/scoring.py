"""Entity-level precision, recall and F1 exactly as the CoNLL shared task's conlleval scores them.

An entity (a "chunk") counts as correct only when the prediction has a chunk with the same
first token, the same last token and the same type. Chunks are read with conlleval's rules for
where a chunk starts and ends, which also decide ill-formed sequences: an ``I-X`` after ``O``
or after a chunk of another type starts a new chunk, as it would in IOB1. Precision, recall and
F1 are micro-averaged over all chunks (and per type), in percent; with nothing predicted the
precision is 0, and F1 is 0 when precision + recall is 0.

Also writes and reads the ``token gold predicted`` files (one token a line, a blank line between
sentences) that conlleval itself reads.
"""

from __future__ import annotations

from typing import Iterable, Sequence


def _split(tag: str) -> tuple[str, str]:
  if tag == "O" or "-" not in tag:
    return "O" if tag == "O" else tag, ""
  prefix, _, kind = tag.partition("-")
  return prefix, kind


def _ends(prev_tag, tag, prev_type, kind) -> bool:
  # conlleval's endOfChunk: does a chunk end between the previous token and this one?
  return (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
          or (prev_tag != "O" and prev_type != kind))


def _starts(prev_tag, tag, prev_type, kind) -> bool:
  # conlleval's startOfChunk: does a chunk start at this token?
  return (tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
          or (tag != "O" and prev_type != kind))


def chunks(tags: Sequence[str]) -> set[tuple[int, int, str]]:
  """``{(first, last, type)}`` token spans of the entities in one sentence's tags."""
  out, start = set(), None
  prev_tag, prev_type = "O", ""
  for i, label in enumerate(list(tags) + ["O"]):  # the sentence end closes an open chunk
    tag, kind = _split(label)
    if start is not None and _ends(prev_tag, tag, prev_type, kind):
      out.add((start, i - 1, prev_type))
      start = None
    if _starts(prev_tag, tag, prev_type, kind):
      start = i
    prev_tag, prev_type = tag, kind
  return out


def _prf(correct: int, predicted: int, gold: int) -> dict:
  precision = 100.0 * correct / predicted if predicted else 0.0
  recall = 100.0 * correct / gold if gold else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f1": f1, "correct": correct,
          "predicted": predicted, "gold": gold}


def evaluate(gold: Iterable[Sequence[str]], predicted: Iterable[Sequence[str]]) -> dict:
  """Scores predicted tag sequences against gold ones, sentence by sentence.

  Args:
    gold, predicted: one list of tags (``"O"``, ``"B-PER"``, ...) per sentence; the two must
      have the same number of sentences and of tokens in each.

  Returns:
    ``{"precision", "recall", "f1", "correct", "predicted", "gold", "accuracy",
    "per_type": {type: {"precision", "recall", "f1", "correct", "predicted", "gold"}}}``;
    scores in percent, ``accuracy`` the token accuracy.
  """
  counts: dict[str, list[int]] = {}
  tokens = right = 0
  for n, (g, p) in enumerate(zip(gold, predicted, strict=True)):
    if len(g) != len(p):
      raise ValueError(f"sentence {n}: {len(g)} gold tags but {len(p)} predicted")
    tokens += len(g)
    right += sum(a == b for a, b in zip(g, p))
    g_chunks, p_chunks = chunks(g), chunks(p)
    for kind in {c[2] for c in g_chunks | p_chunks}:
      c = counts.setdefault(kind, [0, 0, 0])
      g_kind = {x for x in g_chunks if x[2] == kind}
      p_kind = {x for x in p_chunks if x[2] == kind}
      c[0] += len(g_kind & p_kind)
      c[1] += len(p_kind)
      c[2] += len(g_kind)
  total = [sum(c[i] for c in counts.values()) for i in range(3)]
  out = _prf(*total)
  out["accuracy"] = 100.0 * right / tokens if tokens else 0.0
  out["per_type"] = {kind: _prf(*counts[kind]) for kind in sorted(counts)}
  return out


def write_conll(path: str, tokens: Sequence[Sequence[str]], gold: Sequence[Sequence[str]],
                predicted: Sequence[Sequence[str]]) -> None:
  """``token gold predicted`` per line, a blank line after each sentence (conlleval's input)."""
  with open(path, "w", encoding="utf-8") as f:
    for words, g, p in zip(tokens, gold, predicted, strict=True):
      for row in zip(words, g, p, strict=True):
        f.write(" ".join(row) + "\n")
      f.write("\n")


def read_conll(path: str) -> tuple[list[list[str]], list[list[str]]]:
  """``(gold, predicted)`` tag lists per sentence from a file of :func:`write_conll`."""
  gold, predicted, g, p = [], [], [], []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      columns = line.split()
      if not columns:
        if g:
          gold.append(g)
          predicted.append(p)
        g, p = [], []
        continue
      if len(columns) != 3:
        raise ValueError(f"{path}:{number}: expected 3 columns (token gold predicted), got "
                         f"{len(columns)}")
      g.append(columns[1])
      p.append(columns[2])
  if g:
    gold.append(g)
    predicted.append(p)
  return gold, predicted
