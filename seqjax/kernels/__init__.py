"""Opt-in fast paths for a whole recurrent layer, and the one function that chooses among them.

Shapes use the glossary in ``seqjax/__init__.py``.

``recurrent.unroll`` runs every cell through ``lax.scan``; for ``lstm`` and ``gru``
(``reset_after``) a layer can instead run as one of these, each checked against the scan:

* ``fused.py``: one ``jax.custom_vjp`` per layer with a hand-written backward and XLA loops
  (the default on CPU and GPU for a float32 carry);
* ``native/``: the fused LSTM's loops as C++ CPU kernels (XLA FFI), when built for this CPU;
* ``pallas_rnn.py``: the fused path's loops as Pallas kernels (GPU, interpreted on CPU);
* ``cudnn.py``: the plain LSTM through cuDNN via ``jax.experimental.rnn`` (GPU).

``algebra.py`` holds the backward algebra ``fused.py`` and ``pallas_rnn.py`` share.
:func:`choose` (``dispatch.py``) is the one place that decides which runs, from the cell, the
dtypes, the backend, ``remat``, the caller's ``impl=`` and a :class:`Settings` value;
:func:`run` runs the chosen path. Importing this package imports neither Pallas nor
``jax.experimental.rnn`` and builds nothing: those load when their path first runs.
"""

from seqjax.kernels.dispatch import IMPLS
from seqjax.kernels.dispatch import Impl
from seqjax.kernels.dispatch import NATIVE_MIN_HIDDEN
from seqjax.kernels.dispatch import Settings
from seqjax.kernels.dispatch import choose
from seqjax.kernels.dispatch import run
from seqjax.kernels.dispatch import supports
