"""Whole models as pure ``init`` / apply functions over ``seqjax.layers``, ``cells`` and
``recurrent``: the encoder-decoder (``seqjax.models.encdec``); shapes as in ``seqjax/__init__.py``.
"""

from seqjax.models import encdec
