"""GEMM entry point behind :func:`fastrnn.ops.matmul`.

The product runs in fastrnn's own packed GEMM (C++, the active SIMD target, OpenMP
over output blocks with ``fastrnn.get_num_threads()`` threads, GIL released). The sum
over the inner dimension is always done in the same order, so results are bitwise
identical for any thread count.
"""

from __future__ import annotations

import numpy as np

from fastrnn import _core
from fastrnn._runtime import _empty
from fastrnn.reference import FLOAT_DTYPES, _check_bool

__all__ = ["matmul"]


def _operand(x: object, name: str) -> np.ndarray:
    """``x`` as a 2-D float32/float64 array whose rows the kernel can read in place.

    A row-contiguous view (unit stride along the last axis, positive row stride) is
    used as it is; anything else is copied once into a C-contiguous array.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    item = x.itemsize
    rows, cols = x.shape
    if x.size == 0:
        return x
    ok = x.flags.aligned and (cols <= 1 or x.strides[1] == item)
    if ok and rows > 1 and cols > 0:
        s0 = x.strides[0]
        ok = s0 > 0 and s0 % item == 0 and s0 // item >= cols
    return x if ok else np.ascontiguousarray(x)


def _check_out(out: object, shape: tuple[int, int], dtype: np.dtype, a, b) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out must have dtype {dtype}, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out must have shape {shape}, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError("out must be writable")
    if np.shares_memory(out, a) or np.shares_memory(out, b):
        raise ValueError("out must not overlap a or b")
    return out


def matmul(
    a: np.ndarray,
    b: np.ndarray,
    transpose_a: bool = False,
    transpose_b: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Matrix product ``C = op(a) @ op(b)`` with fastrnn's packed GEMM.

    ``op(x)`` is ``x.T`` when the matching ``transpose_*`` flag is set, else ``x``.

    Args:
        a: 2-D float32 or float64 array; ``op(a)`` has shape ``(M, K)`` (so ``a`` is
            ``(M, K)``, or ``(K, M)`` with ``transpose_a=True``).
        b: 2-D array of the same dtype; ``op(b)`` has shape ``(K, N)`` (``b`` is
            ``(K, N)``, or ``(N, K)`` with ``transpose_b=True``).
        transpose_a: use ``a.T`` (no copy is made; the kernel reads ``a`` transposed).
        transpose_b: use ``b.T`` (no copy is made).
        out: optional C-contiguous, writable ``(M, N)`` array of the same dtype that
            does not overlap ``a`` or ``b``; it is overwritten (never read).

    Returns:
        ``C`` of shape ``(M, N)``: ``C[i, j] = sum_p op(a)[i, p] * op(b)[p, j]``
        (``out`` when given). Any strides are accepted for ``a`` and ``b``; operands
        whose last axis is not unit-stride are copied once first.

    Raises:
        TypeError: an argument is not an ndarray, a dtype is not float32/float64, the
            dtypes differ, or a ``transpose_*`` flag is not a bool.
        ValueError: an argument is not 2-D, the inner dimensions disagree, or ``out``
            has the wrong shape, is not C-contiguous, is read-only or overlaps an input.
    """
    transpose_a = _check_bool("transpose_a", transpose_a)
    transpose_b = _check_bool("transpose_b", transpose_b)
    if not isinstance(a, np.ndarray):
        raise TypeError(f"a must be a numpy.ndarray, got {type(a).__name__}")
    if not isinstance(b, np.ndarray):
        raise TypeError(f"b must be a numpy.ndarray, got {type(b).__name__}")
    if a.ndim != 2:
        raise ValueError(f"a must be 2-D, got shape {a.shape}")
    if b.ndim != 2:
        raise ValueError(f"b must be 2-D, got shape {b.shape}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"a must have dtype float32 or float64, got {a.dtype}")
    if b.dtype != a.dtype:
        raise TypeError(f"a and b must have the same dtype, got a: {a.dtype}, b: {b.dtype}")
    m, k = (a.shape[1], a.shape[0]) if transpose_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if transpose_b else b.shape
    if k != kb:
        ta = "a.T" if transpose_a else "a"
        tb = "b.T" if transpose_b else "b"
        raise ValueError(
            f"inner dimensions differ: {ta} has shape {(m, k)} and {tb} has shape {(kb, n)}"
        )
    if out is None:
        out = _empty((m, n), a.dtype)
    else:
        out = _check_out(out, (m, n), a.dtype, a, b)
    _core.gemm(_operand(a, "a"), _operand(b, "b"), transpose_a, transpose_b, out, 1.0, 0.0)
    return out


class PackedB:
    """``op(b)`` (``K x N``) packed once into the GEMM's panel layout, for reuse.

    Private: for tests and benchmarks (the sequence kernels pack their recurrent
    weights the same way in C++). The layout belongs to the SIMD target active when
    the object is made, and ``matmul`` keeps using that target's kernels.
    """

    def __init__(self, b: np.ndarray, transpose_b: bool = False) -> None:
        b = _operand(b, "b")
        self._packed = _core.PackedB(b, _check_bool("transpose_b", transpose_b))
        self.k: int = int(self._packed.k)
        self.n: int = int(self._packed.n)
        self.dtype: np.dtype = np.dtype(self._packed.dtype)
        self.isa: str = str(self._packed.isa)
        self.panel: int = int(self._packed.panel)

    def matmul(
        self,
        a: np.ndarray,
        out: np.ndarray | None = None,
        *,
        transpose_a: bool = False,
        alpha: float = 1.0,
        beta: float = 0.0,
        j0: int = 0,
        j1: int | None = None,
    ) -> np.ndarray:
        """``out[:, j0:j1] = alpha * op(a) @ B[:, j0:j1] + beta * out[:, j0:j1]``.

        ``op(a)`` is ``(M, K)``; ``out`` is ``(M, N)`` (columns outside ``[j0, j1)``
        are left alone; ``out`` is not read when ``beta == 0``). ``j0`` must be a
        multiple of ``self.panel``.
        """
        a = self._check_a(a)
        transpose_a = _check_bool("transpose_a", transpose_a)
        m = a.shape[1] if transpose_a else a.shape[0]
        if out is None:
            out = np.empty((m, self.n), dtype=self.dtype)
        else:
            out = _check_out(out, (m, self.n), self.dtype, a, a)
        self._packed._matmul(
            a, out, transpose_a, float(alpha), float(beta), int(j0), j1, False, None, None
        )
        return out

    def record_tiles(
        self,
        a: np.ndarray,
        out: np.ndarray,
        *,
        transpose_a: bool = False,
        alpha: float = 1.0,
        beta: float = 0.0,
        j0: int = 0,
        j1: int | None = None,
    ) -> tuple[list[tuple[int, int, int, int]], np.ndarray, np.ndarray]:
        """Like :meth:`matmul` with an epilogue that records what it is called on.

        Returns ``(tiles, snapshot, counts)``: the ``(row0, rows, col0, cols)`` of each
        epilogue call, a copy of each tile's values taken inside its call (NaN where
        none), and how many calls covered each element of ``out``.
        """
        a = self._check_a(a)
        transpose_a = _check_bool("transpose_a", transpose_a)
        m = a.shape[1] if transpose_a else a.shape[0]
        out = _check_out(out, (m, self.n), self.dtype, a, a)
        snapshot = np.full((m, self.n), np.nan, dtype=self.dtype)
        counts = np.zeros((m, self.n), dtype=np.int32)
        tiles = self._packed._matmul(
            a,
            out,
            transpose_a,
            float(alpha),
            float(beta),
            int(j0),
            j1,
            True,
            snapshot,
            counts,
        )
        return [tuple(int(v) for v in t) for t in tiles], snapshot, counts

    def _check_a(self, a: object) -> np.ndarray:
        a = _operand(a, "a")
        if a.dtype != self.dtype:
            raise TypeError(f"a must have dtype {self.dtype} (that of b), got {a.dtype}")
        return a
