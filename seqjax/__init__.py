"""seqjax: recurrent sequence models in JAX.

Cells are pure functions (``seqjax.cells``); ``seqjax.recurrent`` is the one place that runs them
through time (``unroll`` with lengths and reverse, ``bidirectional``, deep ``stack``s);
``seqjax.layers`` holds embeddings, dense heads and the masked loss; ``seqjax.nn`` wraps the same
functions as Flax modules. Shape letters: b batch, t time, d input, h hidden, v vocabulary.
"""

from seqjax import cells
from seqjax import layers
from seqjax import nn
from seqjax import recurrent
from seqjax.cells import CELL_NAMES
from seqjax.cells import Cell
from seqjax.cells import get_cell
from seqjax.layers import dense
from seqjax.layers import dense_log_softmax
from seqjax.layers import embed
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
