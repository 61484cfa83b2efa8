"""Stateless sequence functions: one layer, one direction, whole sequences.

Same signatures and semantics as :mod:`fastrnn.reference`, plus ``backend``:
``"native"`` (C++ kernels, the default) or ``"reference"`` (NumPy).
Backward functions dispatch on the tape's backend.
"""

from __future__ import annotations

from typing import Any

from fastrnn import reference

BACKENDS = ("native", "reference")


def _impl(backend: str) -> Any:
    if backend == "reference":
        return reference
    if backend == "native":
        from fastrnn import _native

        return _native
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def rnn(
    x,
    h0,
    weight_ih,
    weight_hh,
    bias_ih=None,
    bias_hh=None,
    *,
    nonlinearity="tanh",
    reverse=False,
    lengths=None,
    training=False,
    backend="native",
):
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
    x,
    h0,
    c0,
    weight_ih,
    weight_hh,
    bias_ih=None,
    bias_hh=None,
    *,
    reverse=False,
    lengths=None,
    training=False,
    backend="native",
):
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
    x,
    h0,
    weight_ih,
    weight_hh,
    bias_ih=None,
    bias_hh=None,
    *,
    reset_after=True,
    reverse=False,
    lengths=None,
    training=False,
    backend="native",
):
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


def rnn_backward(tape, dy=None, dh_n=None):
    return _tape_impl(tape).rnn_backward(tape, dy, dh_n)


def lstm_backward(tape, dy=None, dh_n=None, dc_n=None):
    return _tape_impl(tape).lstm_backward(tape, dy, dh_n, dc_n)


def gru_backward(tape, dy=None, dh_n=None):
    return _tape_impl(tape).gru_backward(tape, dy, dh_n)
