"""Low-level native kernels for direct use and testing: GEMM and activations."""

from __future__ import annotations

from fastrnn._ops_gemm import matmul
from fastrnn._ops_math import *  # noqa: F403  (activation functions; see _ops_math.__all__)
from fastrnn._ops_math import __all__ as _math_all

__all__ = ["matmul", *_math_all]
