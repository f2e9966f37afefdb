"""seqjax: recurrent sequence models in JAX.

Cells are pure functions (``seqjax.cells``); ``seqjax.recurrent`` is the one place that runs them
through time (``unroll`` with lengths and reverse, ``bidirectional``, deep ``stack``s);
``seqjax.layers`` holds the shared basics once (embedding, dense, dropout, the length mask, the
masked cross-entropy); ``seqjax.attention`` and ``seqjax.decoding`` serve any decoder;
``seqjax.models`` holds whole models (the encoder-decoder); ``seqjax.nn`` wraps the same functions
as Flax modules.

Shape glossary: every docstring in seqjax writes shapes with these letters, one meaning each.

====  ==================================================================================
b     batch (examples, or sentences)
t     time: steps of a sequence (in an encoder-decoder, of the target)
s     source time: steps of the memory an attention or a decoder reads
d     input features of a cell or a dense layer
e     embedding size
h     hidden units of a cell (per direction)
G     gates of a cell: RNN 1, GRU 3, LSTM 4 (``Cell.gates``)
g     gate width, ``G * h``: the columns of ``w_ih`` and ``w_hh``
v     vocabulary size
q     query features of an attention
m     memory features: what an attention reads (its keys), e.g. encoder outputs, ``h`` or ``2h``
a     hidden size of the additive attention score
n     beam width: hypotheses kept per sentence
L     stacked layers; D directions (2 when bidirectional, else 1)
...   any number of leading axes
====  ==================================================================================

Names that are not shapes: a PRNG key is ``key`` (its splits ``key_<use>``); ``keys`` are an
attention's keys; ``top_k`` is the number of tokens sampling keeps.
"""

from seqjax import attention
from seqjax import cells
from seqjax import decoding
from seqjax import layers
from seqjax import models
from seqjax import nn
from seqjax import recurrent
from seqjax.cells import CELL_NAMES
from seqjax.cells import Cell
from seqjax.cells import get_cell
from seqjax.layers import cross_entropy
from seqjax.layers import dense
from seqjax.layers import dense_log_softmax
from seqjax.layers import dropout
from seqjax.layers import embed
from seqjax.layers import fold_keys
from seqjax.layers import init_dense
from seqjax.layers import init_embedding
from seqjax.layers import mask_from_lengths
from seqjax.layers import masked_cross_entropy
from seqjax.recurrent import bidirectional
from seqjax.recurrent import init_bidirectional
from seqjax.recurrent import init_stack
from seqjax.recurrent import stack
from seqjax.recurrent import unroll
from seqjax.interop import from_torch
