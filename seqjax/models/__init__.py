"""Whole models as pure ``init`` / apply functions over ``seqjax.layers``, ``cells`` and
``recurrent``: the encoder-decoder (``seqjax.models.encdec``) and the linear-chain CRF that any
tagger can put over its scores (``seqjax.models.crf``); shapes as in ``seqjax/__init__.py``.
"""

from seqjax.models import crf
from seqjax.models import encdec
