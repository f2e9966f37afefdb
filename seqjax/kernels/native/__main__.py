"""Builds the native CPU kernels for this machine's CPU.

    python -m seqjax.kernels.native [compiler]              # build (default compiler: $CXX, g++)
    python -m seqjax.kernels.native --if-needed [compiler]  # only where missing, stale or built
                                                            # for another CPU (what make runs)
"""

import sys

from seqjax.kernels.native import library

if __name__ == "__main__":
  args = sys.argv[1:]
  if_needed = "--if-needed" in args
  args = [a for a in args if a != "--if-needed"]
  if if_needed and library.LIBRARY.exists() and not library.refusal(library.LIBRARY):
    print(f"{library.LIBRARY} is built for this CPU and up to date")
  else:
    print(f"built {library.build(args[0] if args else None)}")
