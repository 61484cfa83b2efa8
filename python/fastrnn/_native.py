"""Native (C++) backend of :mod:`fastrnn.functional`: argument checks, then one call.

Same signatures, semantics and error messages as :mod:`fastrnn.reference` (whose
``_check_*`` helpers validate the arguments); the work happens in ``_core.seq_forward``
and ``_core.seq_backward`` (``csrc/seq``), which check everything again before any
kernel runs. ``_poison=True`` (tests only) fills every output and workspace with NaN
before the kernels run, so an element they fail to write shows up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from fastrnn import _core
from fastrnn import reference as _ref

__all__ = [
    "NativeTape",
    "ProjTape",
    "gru",
    "gru_backward",
    "lstm",
    "lstm_backward",
    "rnn",
    "rnn_backward",
]


@dataclasses.dataclass(eq=False)
class NativeTape:
    """What a native ``training=True`` forward keeps for the matching ``*_backward``.

    ``data`` holds the kernel's arrays, indexed by time step ``t``: ``hprev`` (T, N, Hp)
    the state entering step t, ``gates`` (T, N, G*Hp) the gate activations (LSTM, GRU;
    an RNN's are its states, so it keeps ``hlast`` (N, Hp), the state after the last step,
    instead), ``cprev`` and ``clast`` (LSTM: c entering step t, and (N, Hp) c after the
    last step: the backward recomputes tanh(c_t) from them), ``aux`` (GRU: ``W_hn h + b_hn`` with
    ``reset_after``, else ``r * h``), plus private copies of ``x`` and the weights (the
    arrays as given inside :func:`_tape_shares_inputs`; an LSTM's ``weight_peephole`` too,
    None without peepholes). Rows and gate segments are Hp
    apart: H rounded up to whole 64-byte lines when H spans at least four of them (the
    kernel streams the tape to memory in whole lines), else H; columns past H are unused.
    """

    kind: str
    dtype: np.dtype
    T: int
    N: int
    I: int
    H: int
    reverse: bool
    nonlinearity: str
    reset_after: bool
    has_bias_ih: bool
    has_bias_hh: bool
    data: dict[str, Any] | None
    backend: str = "native"
    has_peephole: bool = False


_local = threading.local()


@contextlib.contextmanager
def _tape_shares_inputs() -> Iterator[None]:
    """Training forwards in this block (this thread only) keep ``x`` and the weights in the
    tape as given, without private copies. For callers that themselves guarantee those
    arrays stay unchanged until the backward: the PyTorch drop-ins, whose saved tensors'
    version counters make PyTorch raise on any in-place edit in between."""
    before = getattr(_local, "share", False)
    _local.share = True
    try:
        yield
    finally:
        _local.share = before


def _forward(
    kind: str,
    x: Any,
    h0: Any,
    c0: Any,
    weight_ih: Any,
    weight_hh: Any,
    bias_ih: Any,
    bias_hh: Any,
    nonlinearity: str,
    reset_after: bool,
    reverse: Any,
    lengths: Any,
    training: Any,
    poison: bool,
    packed: Any = None,
    weight_peephole: Any = None,
) -> tuple:
    inp = _ref._check_inputs(
        kind, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths,
        weight_peephole=weight_peephole,
    )  # fmt: skip
    reverse = _ref._check_bool("reverse", reverse)
    training = _ref._check_bool("training", training)
    T, N, I, H = inp.T, inp.N, inp.I, inp.H
    tape = None
    if T == 0 or N == 0:
        y = np.zeros((T, N, H), inp.dtype)
        h_n = np.array(inp.h0, copy=True)
        c_n = None if inp.c0 is None else np.array(inp.c0, copy=True)
        data = None
    else:
        y, h_n, c_n, data = _core.seq_forward(
            kind,
            inp.x,
            inp.h0,
            inp.c0,
            inp.weight_ih,
            inp.weight_hh,
            inp.bias_ih,
            inp.bias_hh,
            inp.lengths,
            nonlinearity,
            reset_after,
            reverse,
            training,
            # the tape must not see later in-place edits by the caller: it keeps the
            # kernel's own copies of x and the weights (not of a packed snapshot's weights,
            # which are read-only)
            training and not getattr(_local, "share", False),
            poison,
            share_weights=packed is not None,
            packed=None if packed is None else packed._data,
            packed_isa=-1 if packed is None else packed._isa,
            peephole=inp.weight_peephole,
        )
    if training:
        tape = NativeTape(
            kind=kind,
            dtype=inp.dtype,
            T=T,
            N=N,
            I=I,
            H=H,
            reverse=reverse,
            nonlinearity=nonlinearity,
            reset_after=reset_after,
            has_bias_ih=inp.bias_ih is not None,
            has_bias_hh=inp.bias_hh is not None,
            data=data,
            has_peephole=inp.weight_peephole is not None,
        )
    state = (h_n, c_n) if kind == "lstm" else h_n
    return (y, state, tape) if training else (y, state)


def _backward(kind: str, tape: Any, dy: Any, dh_n: Any, dc_n: Any, poison: bool) -> dict:
    if not isinstance(tape, NativeTape):
        raise TypeError(f"tape: expected a fastrnn._native.NativeTape, got {type(tape).__name__}")
    if tape.kind != kind:
        raise ValueError(f"tape: expected a tape from {kind}(), got one from {tape.kind}()")
    T, N, I, H, dt = tape.T, tape.N, tape.I, tape.H, tape.dtype
    G = _ref.GATES[kind]
    dy = _ref._check_optional_float_array("dy", dy, (T, N, H), dt, "(T, N, H)")
    dh_n = _ref._check_optional_float_array("dh_n", dh_n, (N, H), dt, "(N, H)")
    if kind == "lstm":
        dc_n = _ref._check_optional_float_array("dc_n", dc_n, (N, H), dt, "(N, H)")
    if tape.data is None:  # T == 0 or N == 0: nothing ran
        out: dict[str, Any] = {
            "x": np.zeros((T, N, I), dt),
            "h0": np.zeros((N, H), dt) if dh_n is None else np.array(dh_n, copy=True),
        }
        if kind == "lstm":
            out["c0"] = np.zeros((N, H), dt) if dc_n is None else np.array(dc_n, copy=True)
        out["weight_ih"] = np.zeros((G * H, I), dt)
        out["weight_hh"] = np.zeros((G * H, H), dt)
        out["bias_ih"] = np.zeros(G * H, dt) if tape.has_bias_ih else None
        out["bias_hh"] = np.zeros(G * H, dt) if tape.has_bias_hh else None
        if tape.has_peephole:
            out["weight_peephole"] = np.zeros(3 * H, dt)
        return out
    return dict(
        _core.seq_backward(
            kind,
            tape.data,
            tape.nonlinearity,
            tape.reset_after,
            tape.reverse,
            dy,
            dh_n,
            dc_n,
            poison,
        )
    )


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
    _poison=False,
    _packed=None,
):
    """Native :func:`fastrnn.reference.rnn` (same arguments and results)."""
    nonlinearity = _ref._check_nonlinearity(nonlinearity)
    return _forward(
        "rnn",
        x,
        h0,
        None,
        weight_ih,
        weight_hh,
        bias_ih,
        bias_hh,
        nonlinearity,
        True,
        reverse,
        lengths,
        training,
        _poison,
        _packed,
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
    weight_hr=None,
    weight_peephole=None,
    _poison=False,
    _packed=None,
):
    """Native :func:`fastrnn.reference.lstm` (same arguments and results)."""
    if weight_hr is not None:
        return _lstm_proj(
            x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
            reverse, lengths, training, _poison, _packed, weight_peephole,
        )  # fmt: skip
    return _forward(
        "lstm",
        x,
        h0,
        c0,
        weight_ih,
        weight_hh,
        bias_ih,
        bias_hh,
        "tanh",
        True,
        reverse,
        lengths,
        training,
        _poison,
        _packed,
        weight_peephole,
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
    _poison=False,
    _packed=None,
):
    """Native :func:`fastrnn.reference.gru` (same arguments and results)."""
    reset_after = _ref._check_bool("reset_after", reset_after)
    return _forward(
        "gru",
        x,
        h0,
        None,
        weight_ih,
        weight_hh,
        bias_ih,
        bias_hh,
        "tanh",
        reset_after,
        reverse,
        lengths,
        training,
        _poison,
        _packed,
    )


def rnn_backward(tape, dy=None, dh_n=None, *, _poison=False):
    """Native :func:`fastrnn.reference.rnn_backward`."""
    return _backward("rnn", tape, dy, dh_n, None, _poison)


def lstm_backward(tape, dy=None, dh_n=None, dc_n=None, *, _poison=False):
    """Native :func:`fastrnn.reference.lstm_backward`."""
    if isinstance(tape, ProjTape):
        return _lstm_proj_backward(tape, dy, dh_n, dc_n, _poison)
    return _backward("lstm", tape, dy, dh_n, dc_n, _poison)


def gru_backward(tape, dy=None, dh_n=None, *, _poison=False):
    """Native :func:`fastrnn.reference.gru_backward`."""
    return _backward("gru", tape, dy, dh_n, None, _poison)


# --------------------------------------------------------------------------------------
# LSTM with a projection (weight_hr, PyTorch's proj_size): _core.lstmp_forward and
# _core.lstmp_backward (csrc/seq/lstmp.simd.cpp)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class ProjTape:
    """What a native ``lstm(..., weight_hr=W_hr, training=True)`` keeps for the backward:
    ``data``, the kernel's arrays (``gates`` (T, N, 4*Hu) activations with the gate columns
    grouped by blocks of units, ``c`` (T, N, Hu) the cell state after each step, ``c0``,
    ``m`` (T, N, Hu) ``o*tanh(c_t)``, ``rprev`` (T, N, Pp) the state entering each step;
    Hu and Pp are H and P rounded up to whole 64-byte lines; ``weight_peephole``, the
    peepholes or None), and the forward's ``x`` and weights (private copies, or the arrays
    as given inside :func:`_tape_shares_inputs`)."""

    dtype: np.dtype
    T: int
    N: int
    I: int
    H: int
    P: int
    reverse: bool
    has_bias_ih: bool
    has_bias_hh: bool
    data: dict[str, Any] | None
    x: np.ndarray
    weight_ih: np.ndarray
    weight_hh: np.ndarray
    weight_hr: np.ndarray
    kind: str = "lstm"
    backend: str = "native"
    has_peephole: bool = False


def _lstm_proj(
    x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
    reverse, lengths, training, poison, packed, weight_peephole,
):  # fmt: skip
    inp = _ref._check_inputs(
        "lstm", x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, weight_hr,
        weight_peephole,
    )  # fmt: skip
    reverse = _ref._check_bool("reverse", reverse)
    training = _ref._check_bool("training", training)
    T, N, I, H, P, dt = inp.T, inp.N, inp.I, inp.H, inp.P, inp.dtype
    data = None
    # the tape must not see later in-place edits by the caller: the kernel copies x and the
    # weights for it (not a packed snapshot's weights, which are read-only)
    copies = training and not getattr(_local, "share", False)
    names = ("x", "weight_ih", "weight_hh", "weight_hr")
    if T == 0 or N == 0:
        y = np.zeros((T, N, P), dt)
        h_n, c_n = np.array(inp.h0, copy=True), np.array(inp.c0, copy=True)
        # nothing ran: the tape's copies are made here (a packed call's weights are the
        # snapshot's, kept as they are)
        wcopy = copies and packed is None
        kept = {k: np.array(getattr(inp, k), copy=wcopy or (copies and k == "x")) for k in names}
    else:
        y, h_n, c_n, data = _core.lstmp_forward(
            inp.x, inp.h0, inp.c0, inp.weight_ih, inp.weight_hh, inp.bias_ih, inp.bias_hh,
            inp.weight_hr, inp.lengths, reverse, training, poison,
            None if packed is None else packed._data, copies, packed is not None,
            inp.weight_peephole,
        )  # fmt: skip
        # x and the weights (the kernel's copies or the arrays given) become the tape's own
        # fields; data keeps the kernel's arrays only
        kept = {k: data.pop(k) for k in names} if training else {}
    if not training:
        return y, (h_n, c_n)
    tape = ProjTape(
        dtype=dt, T=T, N=N, I=I, H=H, P=P, reverse=reverse,
        has_bias_ih=inp.bias_ih is not None, has_bias_hh=inp.bias_hh is not None, data=data,
        x=kept["x"], weight_ih=kept["weight_ih"], weight_hh=kept["weight_hh"],
        weight_hr=kept["weight_hr"], has_peephole=inp.weight_peephole is not None,
    )  # fmt: skip
    return y, (h_n, c_n), tape


def _lstm_proj_backward(tape: ProjTape, dy: Any, dh_n: Any, dc_n: Any, poison: bool) -> dict:
    T, N, I, H, P, dt = tape.T, tape.N, tape.I, tape.H, tape.P, tape.dtype
    dy = _ref._check_optional_float_array("dy", dy, (T, N, P), dt, "(T, N, P)")
    dh_n = _ref._check_optional_float_array("dh_n", dh_n, (N, P), dt, "(N, P)")
    dc_n = _ref._check_optional_float_array("dc_n", dc_n, (N, H), dt, "(N, H)")
    if tape.data is None:  # T == 0 or N == 0: nothing ran
        return {
            "x": np.zeros((T, N, I), dt),
            "h0": np.zeros((N, P), dt) if dh_n is None else np.array(dh_n, copy=True),
            "c0": np.zeros((N, H), dt) if dc_n is None else np.array(dc_n, copy=True),
            "weight_ih": np.zeros((4 * H, I), dt),
            "weight_hh": np.zeros((4 * H, P), dt),
            "bias_ih": np.zeros(4 * H, dt) if tape.has_bias_ih else None,
            "bias_hh": np.zeros(4 * H, dt) if tape.has_bias_hh else None,
            "weight_hr": np.zeros((P, H), dt),
            **({"weight_peephole": np.zeros(3 * H, dt)} if tape.has_peephole else {}),
        }
    grads = _core.lstmp_backward(
        tape.data, tape.x, tape.weight_ih, tape.weight_hh, tape.weight_hr, tape.reverse,
        dy, dh_n, dc_n, poison,
    )  # fmt: skip
    return dict(grads)
