"""``python -m seqjax._native [compiler]``: builds the native CPU kernels (see seqjax/native.py)."""

import sys

from seqjax import native

if __name__ == "__main__":
  print(f"built {native.build(sys.argv[1] if len(sys.argv) > 1 else None)}")
