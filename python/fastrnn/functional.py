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

Packed weights: every native forward lays ``weight_ih`` and ``weight_hh`` out for its
kernels (a transposed copy, blocked by hidden units), which costs about as much as reading
them twice. A caller that runs the same weights many times can do that once:
``packed = pack_weights("lstm", weight_ih, weight_hh)`` takes a read-only snapshot of the
weights and lays it out; pass ``packed=packed`` with ``packed.weight_ih`` and
``packed.weight_hh`` (or ``None``) as the weights. Results are bitwise those of the same
call without it. After changing the weights, pack them again.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from fastrnn import reference

BACKENDS = ("native", "reference")

__all__ = [
    "BACKENDS",
    "PackedWeights",
    "gru",
    "gru_backward",
    "lstm",
    "lstm_backward",
    "pack_weights",
    "rnn",
    "rnn_backward",
]


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


class PackedWeights:
    """A read-only snapshot of one layer's ``weight_ih`` and ``weight_hh``, laid out once
    for the native forward (see :func:`pack_weights`).

    ``weight_ih`` (G*H, I) and ``weight_hh`` (G*H, H) are the snapshot (read-only arrays);
    ``kind``, ``reset_after`` (GRU), ``dtype``, ``input_size``, ``hidden_size`` describe it;
    ``nbytes`` counts the snapshot and the packed layout. The layout belongs to the SIMD
    target in use when it was made: under another one (:func:`fastrnn.set_isa`) calls are
    still right, and lay the weights out per call again. An LSTM with a projection also
    has ``weight_hr`` (P, H) (else None), and ``weight_hh`` is (4*H, P); its layout is the
    same on every target.
    """

    __slots__ = (
        "_data",
        "_isa",
        "dtype",
        "hidden_size",
        "input_size",
        "kind",
        "reset_after",
        "weight_hh",
        "weight_hr",
        "weight_ih",
    )

    def __init__(
        self, kind: str, weight_ih: Any, weight_hh: Any, reset_after: bool, weight_hr: Any = None
    ) -> None:
        from fastrnn import _core

        G = reference._check_kind(kind)
        reset_after = reference._check_bool("reset_after", reset_after)
        if weight_hr is not None and kind != "lstm":
            raise ValueError(f"weight_hr: a projection exists only for lstm, not {kind}")
        snap = []
        named = [("weight_ih", weight_ih), ("weight_hh", weight_hh)]
        if weight_hr is not None:
            named.append(("weight_hr", weight_hr))
        for name, w in named:
            if not isinstance(w, np.ndarray):
                raise TypeError(f"{name}: expected a numpy.ndarray, got {type(w).__name__}")
            if w.dtype not in reference.FLOAT_DTYPES:
                raise TypeError(f"{name}: expected dtype float32 or float64, got {w.dtype}")
            if name != "weight_hr" and (w.ndim != 2 or w.shape[0] < G or w.shape[0] % G):
                raise ValueError(
                    f"{name}: expected shape (G*H, {'I' if name == 'weight_ih' else 'H'}) with "
                    f"G={G} for {kind}, got {w.shape}"
                )
            base = np.array(w, order="C", copy=True)
            base.setflags(write=False)
            snap.append(base.view())  # a view of a read-only base cannot be made writeable
        wih, whh = snap[:2]
        whr = snap[2] if weight_hr is not None else None
        H = wih.shape[0] // G
        S = H if whr is None else whr.shape[0]  # the columns of weight_hh
        for name, w in (("weight_hh", whh), ("weight_hr", whr)):
            if w is not None and w.dtype != wih.dtype:
                raise TypeError(
                    f"{name}: expected dtype {wih.dtype} (that of weight_ih), got {w.dtype}"
                )
        if whr is not None:
            reference._check_weight_hr_shape(whr, H)
        if whh.shape != (G * H, S):
            want = "(G*H, H)" if whr is None else "(4*H, P)"
            raise ValueError(f"weight_hh: expected shape {want} = {(G * H, S)}, got {whh.shape}")
        if whr is None:
            data, isa = _core.seq_pack_weights(kind, wih, whh, reset_after)
        else:  # the projection's layout, the same on every target
            data, isa = _core.lstmp_pack_weights(wih, whh, whr), -1
        data.setflags(write=False)
        self.kind, self.reset_after = kind, reset_after
        self.weight_ih, self.weight_hh, self.weight_hr = wih, whh, whr
        self.dtype, self.input_size, self.hidden_size = wih.dtype, wih.shape[1], H
        self._data, self._isa = data, isa

    def __reduce__(self) -> tuple:
        # A copy (pickle, copy.deepcopy) lays the snapshot out again: unpickled arrays are
        # writable, and the layout belongs to the SIMD target of the machine that made it.
        args = (self.kind, self.weight_ih, self.weight_hh, self.reset_after, self.weight_hr)
        return (PackedWeights, args)

    @property
    def nbytes(self) -> int:
        hr = 0 if self.weight_hr is None else self.weight_hr.nbytes
        return self.weight_ih.nbytes + self.weight_hh.nbytes + hr + self._data.nbytes

    def __repr__(self) -> str:
        extra = "" if self.kind != "gru" else f", reset_after={self.reset_after}"
        if self.weight_hr is not None:
            extra = f", proj_size={self.weight_hr.shape[0]}"
        return (
            f"PackedWeights({self.kind!r}, input_size={self.input_size}, "
            f"hidden_size={self.hidden_size}, dtype={self.dtype}{extra})"
        )


def pack_weights(
    kind: str,
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    *,
    reset_after: bool = True,
    weight_hr: np.ndarray | None = None,
) -> PackedWeights:
    """Snapshot and lay out one layer's weights for repeated forwards of ``kind``
    (``"rnn"``, ``"lstm"``, ``"gru"``; ``reset_after`` selects the GRU variant;
    ``weight_hr``, an LSTM's projection, see :func:`lstm`).

    Pass the result as ``packed=`` to :func:`rnn`, :func:`lstm` or :func:`gru` with
    ``weight_ih=packed.weight_ih`` and ``weight_hh=packed.weight_hh`` (and
    ``weight_hr=packed.weight_hr``), or ``None`` for each: the forward then skips laying
    them out (10-30% of a short sequence's or small batch's time). The snapshot is a copy:
    later edits of the arrays given here do not reach it; pack again after changing the
    weights. Training forwards accept it too (their tapes keep the snapshot instead of
    copying the weights).
    """
    return PackedWeights(kind, weight_ih, weight_hh, reset_after, weight_hr)


def _unpack(kind: str, packed: Any, weight_ih: Any, weight_hh: Any, reset_after: bool) -> tuple:
    """The weights of a call given ``packed`` (checked against its other arguments)."""
    if not isinstance(packed, PackedWeights):
        raise TypeError(
            f"packed: expected None or a PackedWeights from pack_weights(), got "
            f"{type(packed).__name__}"
        )
    if packed.kind != kind:
        raise ValueError(f"packed: packed for {packed.kind}(), not {kind}()")
    if kind == "gru" and type(reset_after) is bool and packed.reset_after != reset_after:
        raise ValueError(
            f"packed: packed with reset_after={packed.reset_after}, called with "
            f"reset_after={reset_after}"
        )
    for name, given, own in (
        ("weight_ih", weight_ih, packed.weight_ih),
        ("weight_hh", weight_hh, packed.weight_hh),
    ):
        if given is not None and given is not own:
            raise ValueError(
                f"{name}: with packed=, pass packed.{name} or None (packed holds a snapshot "
                f"of the weights; call pack_weights() again after changing them)"
            )
    return packed.weight_ih, packed.weight_hh


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
    packed: PackedWeights | None = None,
) -> tuple:
    """Vanilla RNN over a sequence: ``h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.

    ``phi`` is ``nonlinearity``: ``"tanh"``, ``"relu"`` or ``"sigmoid"``. Returns
    ``(y, h_n)``, or ``(y, h_n, tape)`` when ``training``; ``y`` (T, N, H), ``h_n`` (N, H).
    ``packed``: these weights from :func:`pack_weights` (the module docstring).
    """
    if packed is not None:
        weight_ih, weight_hh = _unpack("rnn", packed, weight_ih, weight_hh, True)
    return _call(backend, "rnn", packed)(
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
    packed: PackedWeights | None = None,
    weight_hr: np.ndarray | None = None,
    weight_peephole: np.ndarray | None = None,
) -> tuple:
    """LSTM over a sequence (gates i, f, g, o in PyTorch's order).

    ``[i, f, g, o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh``; i, f, o = sigmoid(.),
    g = tanh(.); ``c_t = f*c_{t-1} + i*g``, ``h_t = o*tanh(c_t)``. Returns
    ``(y, (h_n, c_n))``, or ``(y, (h_n, c_n), tape)`` when ``training``.
    ``packed``: these weights from :func:`pack_weights` (the module docstring).
    ``weight_hr`` (P, H): a projection (PyTorch's ``proj_size = P``), ``h_t = W_hr (o*tanh(c_t))``;
    h0, h_n and y then have P columns and ``weight_hh`` is (4*H, P); the backward's dict
    adds ``"weight_hr"``.
    ``weight_peephole`` (3*H,): peephole weights ``[p_i, p_f, p_o]`` (ONNX's ``P``):
    ``i = sigmoid(a_i + p_i*c_{t-1})``, ``f = sigmoid(a_f + p_f*c_{t-1})``,
    ``o = sigmoid(a_o + p_o*c_t)``; the backward's dict adds ``"weight_peephole"``.
    """
    if packed is not None:
        weight_ih, weight_hh = _unpack("lstm", packed, weight_ih, weight_hh, True)
        if weight_hr is not None and weight_hr is not packed.weight_hr:
            raise ValueError(
                "weight_hr: with packed=, pass packed.weight_hr or None (packed holds a "
                "snapshot of the weights; call pack_weights() again after changing them)"
            )
        weight_hr = packed.weight_hr
    return _call(backend, "lstm", packed)(
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
        weight_hr=weight_hr,
        weight_peephole=weight_peephole,
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
    packed: PackedWeights | None = None,
) -> tuple:
    """GRU over a sequence (gates r, z, n in PyTorch's order).

    r, z = sigmoid(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z});
    ``reset_after=True`` (PyTorch, cuDNN): ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))``;
    ``reset_after=False`` (Keras' other variant): ``n = tanh(W_in x + b_in + W_hn (r*h)
    + b_hn)``; ``h_t = (1 - z)*n + z*h_{t-1}``. Returns ``(y, h_n)``, or
    ``(y, h_n, tape)`` when ``training``. ``packed``: these weights from
    :func:`pack_weights` (the module docstring).
    """
    if packed is not None:
        weight_ih, weight_hh = _unpack("gru", packed, weight_ih, weight_hh, reset_after)
    return _call(backend, "gru", packed)(
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


def _call(backend: str, kind: str, packed: PackedWeights | None) -> Any:
    """The backend's forward for ``kind``; the native one bound to ``packed``."""
    impl = _impl(backend)
    fn = getattr(impl, kind)
    if packed is None or impl is reference:
        return fn
    return functools.partial(fn, _packed=packed)


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
