"""Whole models as pure ``init`` / apply functions over ``seqjax.layers``, ``cells``,
``recurrent`` and ``attention``; shapes as in ``seqjax/__init__.py``:

* ``encdec``: the RNN encoder-decoder with or without attention;
* ``transformer``: the Transformer encoder-decoder with the same interface (``encode``,
  ``decode_step``, ``forward``), so ``seqjax.decoding`` and ``encdec.loss`` serve both, and the
  decoder-only language model (``transformer_lm``, re-exported), built from ``transformer_blocks``;
* ``rnn_lm``: a recurrent language model whose state is carried between calls (truncated BPTT);
* ``classifier``: sentence encoder, pooling and head; ``crf``: the linear-chain CRF any tagger can
  put over its scores.
"""

from seqjax.models import classifier
from seqjax.models import crf
from seqjax.models import encdec
from seqjax.models import rnn_lm
from seqjax.models import transformer
from seqjax.models import transformer_lm
