"""The former import path of :mod:`seqjax.models.encdec`: the very same module object."""
import sys

from seqjax.models import encdec as _encdec

sys.modules[__name__] = _encdec
