"""GEMM entry point behind fastrnn.ops.matmul (to be filled in)."""

from __future__ import annotations


def matmul(a, b, transpose_a=False, transpose_b=False, out=None):
    raise NotImplementedError("fastrnn.ops.matmul is not built yet")
