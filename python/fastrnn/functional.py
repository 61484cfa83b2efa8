"""Stateless sequence functions: one layer, one direction, whole sequences.

Same signatures and semantics as :mod:`fastrnn.reference`, plus ``backend``:
``"native"`` (C++ kernels, the default) or ``"reference"`` (NumPy). Backward functions
dispatch on the tape's ``backend``.

Shapes (time-major): ``x`` (T, N, I); ``h0``, ``c0`` (N, H) or ``None`` (zeros);
``weight_ih`` (G*H, I); ``weight_hh`` (G*H, H); ``bias_ih``, ``bias_hh`` (G*H,) or
``None``; ``y`` (T, N, H). G = 1 (rnn), 4 (lstm: i, f, g, o), 3 (gru: r, z, n).
``lengths`` (N,) integers in [1, T]: step t of sample n is active iff t < lengths[n];
inactive steps keep the state and write ``y[t, n] = 0``. ``reverse=True`` runs
t = T-1 .. 0. ``training=True`` also returns a tape for the matching ``*_backward``,
which returns the gradients of ``L = sum(y*dy) + sum(h_n*dh_n) (+ sum(c_n*dc_n))``
as a dict with keys ``"x", "h0", ("c0"), "weight_ih", "weight_hh", "bias_ih",
"bias_hh"`` (bias gradients are ``None`` when the bias was ``None``).
float32 and float64; all floating arguments share one dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastrnn import reference

BACKENDS = ("native", "reference")

__all__ = ["BACKENDS", "gru", "gru_backward", "lstm", "lstm_backward", "rnn", "rnn_backward"]


_native: Any = None  # fastrnn._native, imported on first use


def _impl(backend: str) -> Any:
    global _native
    if backend == "native":
        if _native is None:  # an import statement here cost ~0.5 us on every call
            from fastrnn import _native as native

            _native = native
        return _native
    if backend == "reference":
        return reference
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def rnn(
    x: np.ndarray,
    h0: np.ndarray | None,
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    bias_ih: np.ndarray | None = None,
    bias_hh: np.ndarray | None = None,
    *,
    nonlinearity: str = "tanh",
    reverse: bool = False,
    lengths: np.ndarray | None = None,
    training: bool = False,
    backend: str = "native",
) -> tuple:
    """Vanilla RNN over a sequence: ``h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.

    ``phi`` is ``nonlinearity``: ``"tanh"``, ``"relu"`` or ``"sigmoid"``. Returns
    ``(y, h_n)``, or ``(y, h_n, tape)`` when ``training``; ``y`` (T, N, H), ``h_n`` (N, H).
    """
    return _impl(backend).rnn(
        x,
        h0,
        weight_ih,
        weight_hh,
        bias_ih,
        bias_hh,
        nonlinearity=nonlinearity,
        reverse=reverse,
        lengths=lengths,
        training=training,
    )


def lstm(
    x: np.ndarray,
    h0: np.ndarray | None,
    c0: np.ndarray | None,
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    bias_ih: np.ndarray | None = None,
    bias_hh: np.ndarray | None = None,
    *,
    reverse: bool = False,
    lengths: np.ndarray | None = None,
    training: bool = False,
    backend: str = "native",
) -> tuple:
    """LSTM over a sequence (gates i, f, g, o in PyTorch's order).

    ``[i, f, g, o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh``; i, f, o = sigmoid(.),
    g = tanh(.); ``c_t = f*c_{t-1} + i*g``, ``h_t = o*tanh(c_t)``. Returns
    ``(y, (h_n, c_n))``, or ``(y, (h_n, c_n), tape)`` when ``training``.
    """
    return _impl(backend).lstm(
        x,
        h0,
        c0,
        weight_ih,
        weight_hh,
        bias_ih,
        bias_hh,
        reverse=reverse,
        lengths=lengths,
        training=training,
    )


def gru(
    x: np.ndarray,
    h0: np.ndarray | None,
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    bias_ih: np.ndarray | None = None,
    bias_hh: np.ndarray | None = None,
    *,
    reset_after: bool = True,
    reverse: bool = False,
    lengths: np.ndarray | None = None,
    training: bool = False,
    backend: str = "native",
) -> tuple:
    """GRU over a sequence (gates r, z, n in PyTorch's order).

    r, z = sigmoid(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z});
    ``reset_after=True`` (PyTorch, cuDNN): ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))``;
    ``reset_after=False`` (Keras' other variant): ``n = tanh(W_in x + b_in + W_hn (r*h)
    + b_hn)``; ``h_t = (1 - z)*n + z*h_{t-1}``. Returns ``(y, h_n)``, or
    ``(y, h_n, tape)`` when ``training``.
    """
    return _impl(backend).gru(
        x,
        h0,
        weight_ih,
        weight_hh,
        bias_ih,
        bias_hh,
        reset_after=reset_after,
        reverse=reverse,
        lengths=lengths,
        training=training,
    )


def _tape_impl(tape: Any) -> Any:
    return _impl(getattr(tape, "backend", "reference"))


def rnn_backward(
    tape: Any, dy: np.ndarray | None = None, dh_n: np.ndarray | None = None
) -> dict[str, Any]:
    """BPTT for :func:`rnn`: ``dy`` (T, N, H) and ``dh_n`` (N, H), ``None`` = zeros."""
    return _tape_impl(tape).rnn_backward(tape, dy, dh_n)


def lstm_backward(
    tape: Any,
    dy: np.ndarray | None = None,
    dh_n: np.ndarray | None = None,
    dc_n: np.ndarray | None = None,
) -> dict[str, Any]:
    """BPTT for :func:`lstm`: ``dy`` (T, N, H), ``dh_n`` and ``dc_n`` (N, H)."""
    return _tape_impl(tape).lstm_backward(tape, dy, dh_n, dc_n)


def gru_backward(
    tape: Any, dy: np.ndarray | None = None, dh_n: np.ndarray | None = None
) -> dict[str, Any]:
    """BPTT for :func:`gru`: ``dy`` (T, N, H) and ``dh_n`` (N, H), ``None`` = zeros."""
    return _tape_impl(tape).gru_backward(tape, dy, dh_n)
