"""Elementwise activations on NumPy arrays: ``exp``, ``tanh``, ``sigmoid``.

The native kernels evaluate each function with range reduction and a polynomial in
SIMD registers of the active target (see ``fastrnn.get_isa()``); they do not call the
C math library. Every function has a documented maximum error (``max_error``), the
same for all targets, pinned by the tests against float64/long-double NumPy.

Special values are exact: ``exp(-inf) = 0``, ``exp(inf) = inf``, overflow gives
``inf``, ``tanh(±0) = ±0``, ``tanh(±inf) = ±1``, ``sigmoid(-inf) = 0``,
``sigmoid(inf) = 1``, and NaN gives NaN. Results too small for a normal number are
returned as denormals (not flushed to zero).
"""

from __future__ import annotations

import numpy as np

from fastrnn import _core
from fastrnn.reference import FLOAT_DTYPES

__all__ = ["MAX_ERROR_ULP", "exp", "max_error", "sigmoid", "tanh"]

_FUNCTIONS = ("exp", "tanh", "sigmoid", "tanh_fast", "sigmoid_fast")

#: Maximum error in ulp (units in the last place of the exact result) per function and
#: dtype: the largest bound over the SIMD targets this machine supports, so it holds
#: whichever target is active. ``max_error`` gives the bound of one target. Results below
#: the smallest normal number have an error of at most one unit of the denormal spacing.
MAX_ERROR_ULP: dict[str, dict[str, float]] = {
    name: {
        dt: max(float(_core.math_max_error_ulp(name, dt, t)) for t in _core.supported_isas())
        for dt in ("float32", "float64")
    }
    for name in _FUNCTIONS
}


def max_error(name: str, dtype: object, isa: str | None = None) -> float:
    """Documented maximum error of ``fastrnn.ops.<name>`` in ulp.

    Args:
        name: ``'exp'``, ``'tanh'``, ``'sigmoid'``, or ``'tanh_fast'`` /
            ``'sigmoid_fast'`` for ``tanh(x, fast=True)`` / ``sigmoid(x, fast=True)``.
        dtype: anything ``np.dtype`` accepts that means float32 or float64.
        isa: a SIMD target this CPU supports (``'generic'``, ``'avx2'``, ``'avx512'``);
            default: the active one (``fastrnn.get_isa()``).

    An ulp is the spacing of floating-point numbers of ``dtype`` at the exact result.
    The bounds (see ``docs/math.md``) are 1 ulp for exp; 2 ulp for tanh and sigmoid
    on targets with FMA (2.5 for float64 tanh); 3 ulp without FMA (generic); 3 ulp for
    the ``fast=True`` variants everywhere.
    """
    if name not in _FUNCTIONS:
        raise ValueError(f"max_error: name must be one of {_FUNCTIONS}, got {name!r}")
    dt = np.dtype(dtype)  # type: ignore[call-overload]
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"max_error: dtype must be float32 or float64, got {dt}")
    if isa is not None and not isinstance(isa, str):
        raise TypeError(f"max_error: isa must be a str or None, got {type(isa).__name__}")
    return float(_core.math_max_error_ulp(name, dt.name, isa or ""))


def _apply(name: str, x: object, out: np.ndarray | None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
        raise TypeError(f"{name}: x must have dtype float32 or float64, got {arr.dtype}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if out is None:
        res = np.empty(arr.shape, dtype=arr.dtype)
    else:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"{name}: out must be a numpy.ndarray, got {type(out).__name__}")
        if out.dtype != arr.dtype:
            raise TypeError(f"{name}: out must have dtype {arr.dtype} like x, got {out.dtype}")
        if out.shape != arr.shape:
            raise ValueError(f"{name}: out must have shape {arr.shape} like x, got {out.shape}")
        if not out.flags.writeable:
            raise ValueError(f"{name}: out must be writable")
        if not out.flags.c_contiguous:
            raise ValueError(f"{name}: out must be C-contiguous")
        res = out
    in_place = (
        arr.flags.c_contiguous
        and arr.size > 0
        and arr.__array_interface__["data"][0] == res.__array_interface__["data"][0]
    )
    if not in_place and (not arr.flags.c_contiguous or np.may_share_memory(arr, res)):
        # Non-contiguous input, or an input overlapping out other than exactly:
        # work from a contiguous copy.
        arr = np.array(arr, order="C", copy=True)
    _core.math_apply(name, arr, res)
    return res


def exp(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Elementwise ``e**x``.

    Args:
        x: float32 or float64 array of any shape (non-contiguous input is copied).
        out: optional C-contiguous, writable array of x's shape and dtype; may be ``x``
            itself (in place).

    Returns:
        An array of x's shape and dtype (``out`` when given).

    Max error: ``max_error('exp', dtype)`` ulp (1 ulp on every target). ``exp(x)`` is ``inf`` above
    ~88.72 (float32) / ~709.78 (float64) and 0 below ~-103.97 / ~-745.13.
    """
    return _apply("exp", x, out)


def tanh(x: np.ndarray, out: np.ndarray | None = None, *, fast: bool = False) -> np.ndarray:
    """Elementwise ``tanh(x) = (e**x - e**-x) / (e**x + e**-x)``.

    Computed as ``tanh(|x|) = -t / (2 + t)`` with ``t = expm1(-2|x|)``, sign from x,
    so the relative error stays small near 0 (``tanh(x) = x`` for tiny x).

    Args:
        x: float32 or float64 array of any shape (non-contiguous input is copied).
        out: optional C-contiguous, writable array of x's shape and dtype; may be ``x``.
        fast: skip the final division correction (about 25% faster; max error
            ``max_error('tanh_fast', dtype)`` = 3 ulp). Same special values.

    Returns:
        An array of x's shape and dtype (``out`` when given).

    Max error: ``max_error('tanh', dtype)`` ulp.
    """
    return _apply("tanh_fast" if fast else "tanh", x, out)


def sigmoid(x: np.ndarray, out: np.ndarray | None = None, *, fast: bool = False) -> np.ndarray:
    """Elementwise logistic sigmoid ``σ(x) = 1 / (1 + e**-x)``.

    Computed from ``e = exp(-|x|)`` as ``1 / (1 + e)`` for x >= 0 and ``e / (1 + e)``
    for x < 0, so nothing overflows and tiny results keep their relative accuracy.

    Args:
        x: float32 or float64 array of any shape (non-contiguous input is copied).
        out: optional C-contiguous, writable array of x's shape and dtype; may be ``x``.
        fast: skip the final division correction (about 25% faster; max error
            ``max_error('sigmoid_fast', dtype)`` = 3 ulp). Same special values.

    Returns:
        An array of x's shape and dtype (``out`` when given).

    Max error: ``max_error('sigmoid', dtype)`` ulp.
    """
    return _apply("sigmoid_fast" if fast else "sigmoid", x, out)
