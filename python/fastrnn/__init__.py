"""fastrnn: fast CPU recurrent networks (RNN, LSTM, GRU) under a NumPy API.

The kernels are C++ with SIMD (chosen at run time) and OpenMP; ``fastrnn.reference``
is a pure-NumPy implementation of the same math used as the test oracle.
"""

from __future__ import annotations

from fastrnn import _core
from fastrnn._runtime import build_info, get_isa, get_num_threads, set_isa, set_num_threads

__version__: str = _core.build_info()["version"]

__all__ = [
    "__version__",
    "build_info",
    "get_isa",
    "get_num_threads",
    "set_isa",
    "set_num_threads",
]
