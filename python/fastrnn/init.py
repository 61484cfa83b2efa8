"""Parameter initialisers for recurrent layers and cells.

Each function draws from a :class:`numpy.random.Generator` and returns a new array of
the requested shape and dtype. Weights of recurrent layers stack ``G`` gate blocks of
``H`` rows (``weight_ih`` is ``(G*H, I)``, ``weight_hh`` is ``(G*H, H)``, PyTorch's gate
order); the gate-aware helpers initialise each ``(H, ·)`` block on its own, which is
what Keras and Flax do for their kernels.

Schemes for a whole set of recurrent parameters (:func:`init_recurrent`):

* ``"uniform"`` (default, PyTorch's): every weight and bias ~ U(-k, k), ``k = 1/sqrt(H)``.
* ``"xavier"``: every gate block of ``weight_ih`` and ``weight_hh`` Xavier/Glorot
  uniform, U(-a, a) with ``a = sqrt(6 / (fan_in + H))``; biases 0.
* ``"orthogonal"`` (Keras' default for recurrent layers): ``weight_ih`` gate blocks
  Xavier uniform, each ``(H, H)`` gate block of ``weight_hh`` a random orthogonal
  matrix; biases 0.

An LSTM's projection ``weight_hr`` (P, H) is one block: U(-k, k), Xavier uniform, or
orthogonal (orthonormal rows) under the three schemes.

An LSTM's peepholes ``weight_peephole`` (3*H,) (blocks p_i, p_f, p_o) are U(-k, k),
``k = 1/sqrt(H)``, under every scheme: each block scales the cell state unit by unit (a
diagonal matrix), which the Xavier and orthogonal rules for full matrices do not fit, and
this keeps them as small as PyTorch's weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fastrnn.reference import FLOAT_DTYPES

__all__ = ["SCHEMES", "init_recurrent", "orthogonal", "uniform", "xavier_uniform"]

#: Names accepted by :func:`init_recurrent` (and the ``init=`` argument of layers).
SCHEMES: tuple[str, ...] = ("uniform", "xavier", "orthogonal")


def uniform(
    rng: np.random.Generator, shape: tuple[int, ...], bound: float, dtype: str = "float64"
) -> np.ndarray:
    """Samples of U(-bound, bound) with the given ``shape``."""
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def xavier_uniform(
    rng: np.random.Generator, shape: tuple[int, int], gain: float = 1.0, dtype: str = "float64"
) -> np.ndarray:
    """Xavier/Glorot uniform for a ``(fan_out, fan_in)`` matrix.

    U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))``: keeps the variance of
    activations and of gradients roughly equal across a linear map.
    """
    fan_out, fan_in = shape
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(rng, shape, bound, dtype)


def orthogonal(
    rng: np.random.Generator, shape: tuple[int, int], gain: float = 1.0, dtype: str = "float64"
) -> np.ndarray:
    """A random ``(rows, cols)`` matrix with orthonormal rows or columns, times ``gain``.

    Q of the QR factorisation of a standard normal matrix, with the signs of R's
    diagonal folded in so the result is uniformly (Haar) distributed. For square
    ``shape`` the matrix is orthogonal: ``Q @ Q.T == I``.
    """
    rows, cols = shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    d = np.sign(np.diag(r))
    d[d == 0] = 1.0
    q = q * d
    if rows < cols:
        q = q.T
    return (gain * q).astype(dtype)


def _gate_blocks(fn, rng: np.random.Generator, shape: tuple[int, int], gates: int, dtype: str):
    """Apply a matrix initialiser to each of the ``gates`` row blocks of ``shape``."""
    rows, cols = shape
    h = rows // gates
    return np.concatenate([fn(rng, (h, cols), dtype=dtype) for _ in range(gates)], axis=0)


def init_recurrent(
    shapes: Mapping[str, tuple[int, ...]],
    *,
    gates: int,
    hidden_size: int,
    scheme: str = "uniform",
    rng: np.random.Generator | None = None,
    dtype: str = "float32",
) -> dict[str, np.ndarray]:
    """New parameters for a recurrent layer or cell.

    Args:
        shapes: parameter name -> shape, in the order to draw them. Names starting with
            ``weight_ih``, ``weight_hh``, ``bias``, ``weight_hr`` (an LSTM's projection,
            (P, H)) or ``weight_peephole`` (an LSTM's peepholes, (3*H,)) are recognised.
        gates: G (1 rnn, 3 gru, 4 lstm).
        hidden_size: H.
        scheme: one of :data:`SCHEMES` (see the module docstring).
        rng: the generator to draw from (a fresh unseeded one if None).
        dtype: ``"float32"`` or ``"float64"``.

    Returns:
        dict name -> new C-contiguous array, same order as ``shapes``.

    Raises:
        ValueError: an unknown scheme or parameter name, ``gates`` or ``hidden_size``
            below 1, or a shape that is not ``(G*H, ·)`` for a weight / ``(G*H,)`` for a
            bias (the gate-aware schemes split the rows into G blocks of H), or not
            ``(3*H,)`` for peepholes.
        TypeError: ``gates`` or ``hidden_size`` not an int, ``dtype`` not float32/float64.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"init: expected one of {SCHEMES}, got {scheme!r}")
    for arg, value in (("gates", gates), ("hidden_size", hidden_size)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"init: {arg} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"init: {arg} must be >= 1, got {value}")
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise TypeError(f"init: dtype must be float32 or float64, got {np.dtype(dtype)}")
    if rng is None:
        rng = np.random.default_rng()
    out: dict[str, np.ndarray] = {}
    GH = int(gates) * int(hidden_size)
    k = 1.0 / math.sqrt(hidden_size)
    for name, shape in shapes.items():
        shape = tuple(int(s) for s in shape)
        if name.startswith(("weight_ih", "weight_hh")):
            if len(shape) != 2 or shape[0] != GH or shape[1] < 1:
                raise ValueError(
                    f"init: {name} must have shape (G*H, n) = ({GH}, n) with n >= 1 "
                    f"(G = {gates}, H = {hidden_size}), got {shape}"
                )
        elif name.startswith("bias"):
            if shape != (GH,):
                raise ValueError(
                    f"init: {name} must have shape (G*H,) = ({GH},) "
                    f"(G = {gates}, H = {hidden_size}), got {shape}"
                )
        elif name.startswith("weight_hr"):
            if len(shape) != 2 or shape[1] != hidden_size or shape[0] < 1:
                raise ValueError(
                    f"init: {name} must have shape (P, H) = (P, {hidden_size}) with P >= 1, "
                    f"got {shape}"
                )
        elif name.startswith("weight_peephole"):
            if shape != (3 * hidden_size,):
                raise ValueError(
                    f"init: {name} must have shape (3*H,) = ({3 * hidden_size},) "
                    f"(H = {hidden_size}), got {shape}"
                )
        else:
            raise ValueError(f"init: unknown parameter name {name!r}")
        if scheme == "uniform" or name.startswith("weight_peephole"):
            arr = uniform(rng, shape, k, dtype)
        elif name.startswith("weight_hr"):  # one block: (P, H)
            fn = orthogonal if scheme == "orthogonal" else xavier_uniform
            arr = fn(rng, shape, dtype=dtype)  # type: ignore[arg-type]
        elif name.startswith("bias"):
            arr = np.zeros(shape, dtype)
        elif name.startswith("weight_hh") and scheme == "orthogonal":
            arr = _gate_blocks(orthogonal, rng, shape, gates, dtype)  # type: ignore[arg-type]
        else:
            arr = _gate_blocks(xavier_uniform, rng, shape, gates, dtype)  # type: ignore[arg-type]
        out[name] = np.ascontiguousarray(arr)
    return out
