"""Native CPU kernels (C++ sources); ``python -m seqjax._native`` builds them (see native.py)."""
