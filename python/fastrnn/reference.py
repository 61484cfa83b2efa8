"""Pure-NumPy reference for every forward and backward pass (the test oracle).

Written for clarity, not speed: one readable loop over time steps, the equations in the
docstrings, and backpropagation through time spelled out step by step. The only
concession to speed is that matrix products which do not depend on the recurrence (the
input projection in forward, the weight and input gradients in backward) are done once
over all ``T*N`` rows.

Conventions (PyTorch's names, shapes and gate order; see ``docs/equations.md``):

* ``x`` is time-major ``(T, N, I)``; states ``h0``, ``c0`` and ``h_n``, ``c_n`` are
  ``(N, H)``; ``y`` is ``(T, N, H)``.
* ``weight_ih`` is ``(G*H, I)``, ``weight_hh`` is ``(G*H, H)``, ``bias_ih`` and
  ``bias_hh`` are ``(G*H,)`` or ``None`` (no bias); ``G`` is 1 (rnn), 4 (lstm, gates
  i, f, g, o) or 3 (gru, gates r, z, n).
* ``lengths`` (optional, ``(N,)`` integers in ``[1, T]``): step ``t`` of sample ``n`` is
  *active* iff ``t < lengths[n]``. An inactive step leaves the sample's state unchanged
  and writes 0 to ``y[t, n]``. With ``reverse=True`` time runs from ``T-1`` down to 0,
  so each sample's reversed sequence starts from ``h0`` at its own last valid step
  (PyTorch's packed-sequence semantics for the reverse direction).
* float32 or float64; all floating arguments share one dtype and all arithmetic is done
  in it.
* ``T == 0`` is allowed: ``y`` is ``(0, N, H)`` and the final states are copies of the
  initial ones; backward then gives ``dx`` of shape ``(0, N, I)``, ``dh0 = dh_n`` (and
  ``dc0 = dc_n``) and zero weight/bias gradients.
* NaN and inf in any input propagate to the outputs like ordinary IEEE arithmetic; no
  exception is raised and no floating-point warning is emitted.

``training=True`` additionally returns a :class:`Tape` holding everything the matching
``*_backward`` function needs; backward returns a dict of gradients of the scalar loss
``L = sum(y*dy) + sum(h_n*dh_n) (+ sum(c_n*dc_n))`` with respect to the forward's inputs.

The ``_check_*`` helpers at the top are shared with the other backends, so every
backend rejects bad input with the same exception types and messages.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import numpy as np

__all__ = [
    "GATES",
    "NONLINEARITIES",
    "Tape",
    "gru",
    "gru_backward",
    "lstm",
    "lstm_backward",
    "rnn",
    "rnn_backward",
]

#: Number of gates G per cell kind: weights have ``G*H`` rows.
GATES: dict[str, int] = {"rnn": 1, "lstm": 4, "gru": 3}
# G*H, and the shapes of weight_hh and of a bias, as error messages spell them
_GDESC = {G: (g, f"({g}, H)", f"({g},)") for G, g in ((1, "H"), (3, "3*H"), (4, "4*H"))}

#: Activation functions accepted by :func:`rnn`.
NONLINEARITIES: tuple[str, ...] = ("tanh", "relu", "sigmoid")

FLOAT_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES


# --------------------------------------------------------------------------------------
# Argument checking (reused by the other backends)
# --------------------------------------------------------------------------------------


def _fmt_shape(shape: tuple[int, ...]) -> str:
    """``(3, 4)`` -> ``'(3, 4)'``, ``(5,)`` -> ``'(5,)'`` (like ``str(tuple)``)."""
    return str(tuple(int(s) for s in shape))


def _check_float_dtype(name: str, a: Any, dtype: np.dtype | None = None) -> np.ndarray:
    """Return ``a`` as an ndarray whose dtype is float32/float64 (and ``dtype`` if given).

    Raises ``TypeError`` naming ``name`` otherwise. Does not copy ndarrays.
    """
    # Identity tests first (the usual case; this runs for every array argument of every
    # call), the conversion and the equality tests only when they fail.
    if type(a) is np.ndarray:
        arr = a
    elif a is None:
        raise TypeError(f"{name}: expected a float32 or float64 array, got None")
    else:
        arr = np.asarray(a)
    dt = arr.dtype
    if dt is not _F32 and dt is not _F64 and dt not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {dt}")
    if dtype is not None and dt is not dtype and dt != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)} (the dtype of x), got {dt}")
    return arr


def _check_float_array(
    name: str,
    a: Any,
    shape: tuple[int, ...],
    dtype: np.dtype | None,
    shape_desc: str | None = None,
) -> np.ndarray:
    """Check that ``a`` is a float array of exactly ``shape`` and ``dtype``; return it.

    ``shape_desc`` is the symbolic form shown in the message, e.g. ``"(4*H, H)"``, so an
    error reads ``"weight_hh: expected shape (4*H, H) = (68, 17), got (68, 16)"``.
    Raises ``TypeError`` for a wrong dtype and ``ValueError`` for a wrong shape.
    """
    arr = _check_float_dtype(name, a, dtype)
    if arr.shape != tuple(shape):
        want = _fmt_shape(shape)
        if shape_desc is not None:
            want = f"{shape_desc} = {want}"
        raise ValueError(f"{name}: expected shape {want}, got {_fmt_shape(arr.shape)}")
    return arr


def _check_optional_float_array(
    name: str,
    a: Any,
    shape: tuple[int, ...],
    dtype: np.dtype,
    shape_desc: str | None = None,
) -> np.ndarray | None:
    """Like :func:`_check_float_array`, but ``None`` passes through as ``None``."""
    if a is None:
        return None
    return _check_float_array(name, a, shape, dtype, shape_desc)


def _check_bool(name: str, value: Any) -> bool:
    """Accept ``True``/``False`` (and NumPy bools); raise ``TypeError`` otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")


def _check_index(name: str, value: Any) -> int:
    """``value`` as a Python int (ints, NumPy integers, 0-d integer arrays; not bools);
    ``TypeError`` otherwise."""
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def _check_kind(kind: str) -> int:
    """Return G for ``kind`` in ``GATES``; ``ValueError`` otherwise."""
    if kind not in GATES:
        raise ValueError(f"kind: expected one of {tuple(GATES)}, got {kind!r}")
    return GATES[kind]


def _check_nonlinearity(nonlinearity: Any) -> str:
    """``nonlinearity`` must be one of ``NONLINEARITIES``; ``ValueError`` otherwise."""
    if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected one of {NONLINEARITIES}, got {nonlinearity!r}")
    return nonlinearity


def _check_lengths(lengths: Any, N: int, T: int) -> np.ndarray | None:
    """Validate ``lengths``: ``None`` or a 1-D integer array of shape (N,), 1 <= l <= T.

    Returns an int64 copy (or ``None``). A non-integer dtype is a ``TypeError``; a
    wrong shape or an out-of-range value is a ``ValueError``.
    """
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"lengths: expected an integer array of shape (N,), got dtype {arr.dtype}")
    if arr.shape != (N,):
        raise ValueError(
            f"lengths: expected shape (N,) = {_fmt_shape((N,))}, got {_fmt_shape(arr.shape)}"
        )
    if arr.size and (arr.min() < 1 or arr.max() > T):
        bad = arr[(arr < 1) | (arr > T)]
        raise ValueError(
            f"lengths: every value must satisfy 1 <= lengths[n] <= T = {T}, got {int(bad[0])}"
        )
    return arr.astype(np.int64, copy=True)


@dataclasses.dataclass(eq=False)
class _Inputs:
    """Validated, normalised forward inputs (``h0``/``c0`` filled with zeros if None)."""

    kind: str
    G: int
    T: int
    N: int
    I: int
    H: int
    dtype: np.dtype
    x: np.ndarray
    h0: np.ndarray
    c0: np.ndarray | None
    weight_ih: np.ndarray
    weight_hh: np.ndarray
    bias_ih: np.ndarray | None
    bias_hh: np.ndarray | None
    lengths: np.ndarray | None
    weight_hr: np.ndarray | None = None  # lstm with a projection: (P, H)
    P: int = 0  # the state's size: H, or P with weight_hr
    weight_peephole: np.ndarray | None = None  # lstm with peepholes: (3*H,), i, f, o


def _check_inputs(
    kind: str,
    x: Any,
    h0: Any,
    c0: Any,
    weight_ih: Any,
    weight_hh: Any,
    bias_ih: Any,
    bias_hh: Any,
    lengths: Any,
    weight_hr: Any = None,
    weight_peephole: Any = None,
) -> _Inputs:
    """Check every forward argument of a ``kind`` cell and return them normalised.

    Sizes: ``T, N, I`` come from ``x``; ``H`` from ``weight_ih`` (which has ``G*H`` rows);
    with ``weight_hr`` (lstm only, ``(P, H)``) the state ``h`` has P columns instead of H.
    ``weight_peephole`` (lstm only) must be ``(3*H,)``.
    Pass ``c0=None`` for non-LSTM kinds. The returned arrays are the caller's (no copy),
    except that missing ``h0``/``c0`` become new zero arrays.
    """
    G = _check_kind(kind)
    x = _check_float_dtype("x", x)
    dtype = x.dtype
    if x.ndim != 3:
        raise ValueError(f"x: expected a 3-D array of shape (T, N, I), got shape {x.shape}")
    T, N, I = x.shape  # Python ints (an ndarray's shape)

    weight_ih = _check_float_dtype("weight_ih", weight_ih, dtype)
    gdesc, hh_desc, b_desc = _GDESC[G]
    if weight_ih.ndim != 2 or weight_ih.shape[1] != I or weight_ih.shape[0] % G != 0:
        raise ValueError(
            f"weight_ih: expected shape ({gdesc}, I) with I = {I}, got {weight_ih.shape}"
        )
    H = int(weight_ih.shape[0]) // G
    if H < 1:
        raise ValueError(
            f"weight_ih: expected shape ({gdesc}, I) with H >= 1, got {weight_ih.shape}"
        )
    GH = G * H
    P, s_desc = H, "H"
    if weight_hr is not None:
        if kind != "lstm":
            raise ValueError(f"weight_hr: a projection exists only for lstm, not {kind}")
        weight_hr = _check_weight_hr_shape(_check_float_dtype("weight_hr", weight_hr, dtype), H)
        P, s_desc = int(weight_hr.shape[0]), "P"
        hh_desc = f"({_GDESC[G][0]}, P)"
    weight_hh = _check_float_array("weight_hh", weight_hh, (GH, P), dtype, hh_desc)
    bias_ih = _check_optional_float_array("bias_ih", bias_ih, (GH,), dtype, b_desc)
    bias_hh = _check_optional_float_array("bias_hh", bias_hh, (GH,), dtype, b_desc)
    if weight_peephole is not None:
        if kind != "lstm":
            raise ValueError(f"weight_peephole: peepholes exist only for lstm, not {kind}")
        weight_peephole = _check_float_array(
            "weight_peephole", weight_peephole, (3 * H,), dtype, "(3*H,)"
        )

    if h0 is None:
        h0 = np.zeros((N, P), dtype)
    else:
        h0 = _check_float_array("h0", h0, (N, P), dtype, f"(N, {s_desc})")
    if kind == "lstm":
        if c0 is None:
            c0 = np.zeros((N, H), dtype)
        else:
            c0 = _check_float_array("c0", c0, (N, H), dtype, "(N, H)")
    else:
        c0 = None
    lengths = _check_lengths(lengths, N, T)
    return _Inputs(kind, G, T, N, I, H, dtype, x, h0, c0, weight_ih, weight_hh, bias_ih,
                   bias_hh, lengths, weight_hr, P, weight_peephole)  # fmt: skip


def _check_weight_hr_shape(weight_hr: np.ndarray, H: int) -> np.ndarray:
    """An LSTM projection must be (P, H) with P >= 1; ``ValueError`` otherwise."""
    if weight_hr.ndim != 2 or weight_hr.shape[1] != H or weight_hr.shape[0] < 1:
        raise ValueError(
            f"weight_hr: expected shape (P, H) with H = {H} and P >= 1, got {weight_hr.shape}"
        )
    return weight_hr


def _check_grad(name: str, g: Any, shape: tuple[int, ...], dtype: np.dtype, desc: str) -> Any:
    """An upstream gradient: ``None`` means zeros; otherwise it must match ``shape``."""
    if g is None:
        return np.zeros(shape, dtype)
    return _check_float_array(name, g, shape, dtype, desc)


def _check_tape(tape: Any, kind: str) -> Tape:
    if not isinstance(tape, Tape):
        raise TypeError(f"tape: expected a fastrnn.reference.Tape, got {type(tape).__name__}")
    if tape.kind != kind:
        raise ValueError(f"tape: expected a tape from {kind}(), got one from {tape.kind}()")
    return tape


# --------------------------------------------------------------------------------------
# Small math helpers
# --------------------------------------------------------------------------------------


def _sigmoid(a: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-a)); exp overflow (a << 0) correctly gives 0."""
    return 1.0 / (1.0 + np.exp(-a))


def _activate(name: str, a: np.ndarray) -> np.ndarray:
    if name == "tanh":
        return np.tanh(a)
    if name == "sigmoid":
        return _sigmoid(a)
    return np.maximum(a, 0)  # relu; np.maximum propagates NaN


def _activate_grad(name: str, a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """d out / d a for ``out = activation(a)`` (relu: 1 where a > 0, else 0)."""
    if name == "tanh":
        return 1 - out * out
    if name == "sigmoid":
        return out * (1 - out)
    return (a > 0).astype(a.dtype)


def _active_mask(lengths: np.ndarray | None, T: int, N: int) -> np.ndarray:
    """Boolean (T, N, 1): True where step t of sample n is active (t < lengths[n])."""
    if lengths is None:
        return np.ones((T, N, 1), dtype=bool)
    return (np.arange(T)[:, None] < lengths[None, :])[:, :, None]


def _time_order(T: int, reverse: bool) -> range:
    return range(T - 1, -1, -1) if reverse else range(T)


def _input_projection(inp: _Inputs) -> np.ndarray:
    """Gx[t] = x[t] W_ih^T + b_ih for every step at once: one (T*N, I) x (I, G*H) matmul."""
    T, N, I, GH = inp.T, inp.N, inp.I, inp.G * inp.H
    gx = (inp.x.reshape(T * N, I) @ inp.weight_ih.T).reshape(T, N, GH)
    if inp.bias_ih is not None:
        gx += inp.bias_ih
    return gx


def _errstate() -> Any:
    """NaN/inf propagate silently (documented behaviour), without RuntimeWarnings."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")


# --------------------------------------------------------------------------------------
# The tape
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class Tape:
    """What a ``training=True`` forward saves for the matching ``*_backward``.

    Arrays are time-indexed by the real time step ``t`` (not by processing order):

    * ``h_prev`` (T, N, H): the state the cell saw at step t (for inactive steps, the
      carried state; unused);
    * ``gates`` (T, N, G*H): activations per step: rnn: pre-activation ``a`` and output
      are stored separately (``gates`` = pre-activation, ``extra`` = output); lstm: i, f,
      g, o after their nonlinearities; gru: r, z, n after their nonlinearities;
    * ``c_prev``, ``c_new`` (lstm): the cell state before and after step t;
    * ``m`` (lstm with ``weight_hr``) (T, N, H): ``o * tanh(c_t)``, which the projection
      turns into ``h_t = m W_hr^T``; ``h_prev`` then has P columns;
    * ``extra`` (rnn): phi(a); (gru, reset_after=True): ``W_hn h + b_hn``; (gru,
      reset_after=False): ``r * h_prev``;
    * ``active`` (T, N, 1) bool: the step mask derived from ``lengths``.
    """

    kind: str
    backend: str
    dtype: np.dtype
    T: int
    N: int
    I: int
    H: int
    x: np.ndarray
    h0: np.ndarray
    c0: np.ndarray | None
    weight_ih: np.ndarray
    weight_hh: np.ndarray
    has_bias_ih: bool
    has_bias_hh: bool
    lengths: np.ndarray | None
    reverse: bool
    active: np.ndarray
    h_prev: np.ndarray
    gates: np.ndarray
    extra: np.ndarray | None = None
    c_prev: np.ndarray | None = None
    c_new: np.ndarray | None = None
    nonlinearity: str | None = None
    reset_after: bool | None = None
    weight_hr: np.ndarray | None = None
    m: np.ndarray | None = None
    P: int = 0
    weight_peephole: np.ndarray | None = None


def _new_tape(inp: _Inputs, reverse: bool, active: np.ndarray, gates_shape: int) -> Tape:
    """A tape holding copies of the inputs (so later edits by the caller cannot leak in)."""
    T, N, H = inp.T, inp.N, inp.H
    return Tape(
        kind=inp.kind,
        backend="reference",
        dtype=inp.dtype,
        T=T,
        N=N,
        I=inp.I,
        H=H,
        x=np.array(inp.x, copy=True),
        h0=np.array(inp.h0, copy=True),
        c0=None if inp.c0 is None else np.array(inp.c0, copy=True),
        weight_ih=np.array(inp.weight_ih, copy=True),
        weight_hh=np.array(inp.weight_hh, copy=True),
        has_bias_ih=inp.bias_ih is not None,
        has_bias_hh=inp.bias_hh is not None,
        lengths=inp.lengths,
        reverse=reverse,
        active=active,
        h_prev=np.zeros((T, N, inp.P), inp.dtype),
        gates=np.zeros((T, N, gates_shape), inp.dtype),
        weight_hr=None if inp.weight_hr is None else np.array(inp.weight_hr, copy=True),
        P=inp.P,
        weight_peephole=(
            None if inp.weight_peephole is None else np.array(inp.weight_peephole, copy=True)
        ),
    )


def _weight_grads(
    tape: Tape, dgx: np.ndarray, dgh: np.ndarray, hh_input: np.ndarray
) -> dict[str, Any]:
    """Gradients that need no recurrence, each one matmul over all T*N rows.

    ``dgx`` (T, N, G*H) is dL/d(x W_ih^T + b_ih), ``dgh`` (T, N, G*H) is
    dL/d(hh_input W_hh^T + b_hh) where ``hh_input`` (T, N, H) is what multiplied W_hh.
    """
    T, N, I = tape.T, tape.N, tape.I
    GH = dgx.shape[2]
    dgx2 = dgx.reshape(T * N, GH)
    dgh2 = dgh.reshape(T * N, GH)
    return {
        "x": (dgx2 @ tape.weight_ih).reshape(T, N, I),
        "weight_ih": dgx2.T @ tape.x.reshape(T * N, I),
        "weight_hh": dgh2.T @ hh_input.reshape(T * N, hh_input.shape[2]),
        "bias_ih": dgx2.sum(axis=0) if tape.has_bias_ih else None,
        "bias_hh": dgh2.sum(axis=0) if tape.has_bias_hh else None,
    }


# --------------------------------------------------------------------------------------
# Vanilla RNN
# --------------------------------------------------------------------------------------


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
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, Tape]:
    """Vanilla (Elman) RNN over a whole sequence, one layer, one direction.

    For each active step ``t`` (t = 0..T-1, or T-1..0 if ``reverse``)::

        h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),   y_t = h_t

    with ``phi`` = tanh, relu (max(a, 0)) or sigmoid (1 / (1 + exp(-a))).

    Args:
        x: (T, N, I) inputs, float32 or float64 (sets the dtype of everything).
        h0: (N, H) initial state, or None for zeros.
        weight_ih: (H, I).  weight_hh: (H, H).
        bias_ih, bias_hh: (H,) or None (no bias).
        nonlinearity: "tanh", "relu" or "sigmoid".
        reverse: process time from T-1 down to 0 (``y[t]`` is still the output at t).
        lengths: None or (N,) integers in [1, T]; inactive steps (t >= lengths[n]) keep
            the state and write 0 to ``y[t, n]``.
        training: also return a :class:`Tape` for :func:`rnn_backward`.

    Returns:
        ``(y, h_n)`` or ``(y, h_n, tape)``: y (T, N, H), h_n (N, H). With T == 0, y is
        (0, N, H) and h_n is a copy of h0 (zeros if None). NaN/inf propagate.

    Raises:
        TypeError: non-float or mixed dtypes (naming the argument).
        ValueError: inconsistent shapes, bad ``lengths`` or ``nonlinearity``.
    """
    nonlinearity = _check_nonlinearity(nonlinearity)
    reverse = _check_bool("reverse", reverse)
    training = _check_bool("training", training)
    inp = _check_inputs("rnn", x, h0, None, weight_ih, weight_hh, bias_ih, bias_hh, lengths)
    T, N, H = inp.T, inp.N, inp.H
    active = _active_mask(inp.lengths, T, N)
    tape = _new_tape(inp, reverse, active, H) if training else None
    if tape is not None:
        tape.nonlinearity = nonlinearity
        tape.extra = np.zeros((T, N, H), inp.dtype)

    with _errstate():
        gx = _input_projection(inp)
        y = np.zeros((T, N, H), inp.dtype)
        h = np.array(inp.h0, copy=True)
        for t in _time_order(T, reverse):
            a = gx[t] + h @ inp.weight_hh.T
            if inp.bias_hh is not None:
                a += inp.bias_hh
            h_new = _activate(nonlinearity, a)
            if tape is not None:
                tape.h_prev[t] = h
                tape.gates[t] = a
                tape.extra[t] = h_new
            h = np.where(active[t], h_new, h)
            y[t] = np.where(active[t], h_new, 0)
    if tape is not None:
        return y, h, tape
    return y, h


def rnn_backward(
    tape: Tape, dy: np.ndarray | None = None, dh_n: np.ndarray | None = None
) -> dict[str, np.ndarray | None]:
    """Backpropagation through time for :func:`rnn`.

    Going back over the steps in the reverse of the forward's processing order, with
    ``dh`` the gradient flowing into the state after step t::

        dh  += dy_t                       (active steps only)
        da   = dh * phi'(a_t)             (tanh: 1 - h_t^2, sigmoid: h_t (1 - h_t),
                                           relu: [a_t > 0])
        dh   = da W_hh                    (inactive steps pass dh through unchanged)

    then ``dW_ih = sum_t da_t^T x_t``, ``dW_hh = sum_t da_t^T h_{t-1}``,
    ``db_ih = db_hh = sum_t da_t``, ``dx_t = da_t W_ih``.

    Args:
        tape: from ``rnn(..., training=True)``.
        dy: (T, N, H) gradient w.r.t. y, or None (zeros).
        dh_n: (N, H) gradient w.r.t. h_n, or None (zeros).

    Returns:
        dict with "x" (T, N, I), "h0" (N, H), "weight_ih" (H, I), "weight_hh" (H, H),
        "bias_ih", "bias_hh" ((H,), or None if the forward had no such bias).
    """
    tape = _check_tape(tape, "rnn")
    T, N, H, dt = tape.T, tape.N, tape.H, tape.dtype
    dy = _check_grad("dy", dy, (T, N, H), dt, "(T, N, H)")
    dh = np.array(_check_grad("dh_n", dh_n, (N, H), dt, "(N, H)"), copy=True)
    da_all = np.zeros((T, N, H), dt)
    with _errstate():
        for t in reversed(_time_order(T, tape.reverse)):
            act = tape.active[t]
            dh_t = dh + dy[t]
            da = dh_t * _activate_grad(tape.nonlinearity, tape.gates[t], tape.extra[t])
            da = np.where(act, da, 0)
            da_all[t] = da
            dh = np.where(act, da @ tape.weight_hh, dh)
        grads = _weight_grads(tape, da_all, da_all, tape.h_prev)
    grads["h0"] = dh
    return _ordered(grads)


# --------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------


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
    weight_hr: np.ndarray | None = None,
    weight_peephole: np.ndarray | None = None,
) -> (
    tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]
    | tuple[np.ndarray, tuple[np.ndarray, np.ndarray], Tape]
):
    """LSTM over a whole sequence, one layer, one direction (PyTorch gate order i, f, g, o).

    For each active step ``t`` (t = 0..T-1, or T-1..0 if ``reverse``), with
    ``[a_i, a_f, a_g, a_o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh`` split in 4 blocks of H::

        i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
        c_t = f * c_{t-1} + i * g
        h_t = o * tanh(c_t),   y_t = h_t

    With a projection (``weight_hr``, PyTorch's ``proj_size = P``), ``h_t = W_hr m_t`` with
    ``m_t = o * tanh(c_t)``: h0, h_n and y_t have P columns, ``weight_hh`` is (4*H, P).

    With peepholes (``weight_peephole = [p_i, p_f, p_o]``, three blocks of H: ONNX's ``P``
    input, oneDNN's peephole LSTM), the gates also see the cell state, unit by unit::

        i = sigmoid(a_i + p_i * c_{t-1})   f = sigmoid(a_f + p_f * c_{t-1})
        o = sigmoid(a_o + p_o * c_t)

    Args:
        x: (T, N, I) inputs, float32 or float64 (sets the dtype of everything).
        h0, c0: (N, H) initial states (h0 (N, P) with a projection), or None for zeros.
        weight_ih: (4*H, I).  weight_hh: (4*H, H), or (4*H, P) with a projection.
        bias_ih, bias_hh: (4*H,) or None (no bias).
        reverse: process time from T-1 down to 0 (``y[t]`` is still the output at t).
        lengths: None or (N,) integers in [1, T]; inactive steps (t >= lengths[n]) keep
            both states and write 0 to ``y[t, n]``.
        training: also return a :class:`Tape` for :func:`lstm_backward`.
        weight_hr: None, or (P, H) with P >= 1: the projection of each output.
        weight_peephole: None, or (3*H,): the peephole weights p_i, p_f, p_o.

    Returns:
        ``(y, (h_n, c_n))`` or ``(y, (h_n, c_n), tape)``: y (T, N, H), h_n, c_n (N, H)
        (y (T, N, P) and h_n (N, P) with a projection). With T == 0, y is empty and h_n,
        c_n are copies of h0, c0 (zeros if None). NaN/inf propagate.

    Raises:
        TypeError: non-float or mixed dtypes (naming the argument).
        ValueError: inconsistent shapes or bad ``lengths``.
    """
    reverse = _check_bool("reverse", reverse)
    training = _check_bool("training", training)
    inp = _check_inputs(
        "lstm", x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, weight_hr,
        weight_peephole,
    )  # fmt: skip
    T, N, H, P = inp.T, inp.N, inp.H, inp.P
    w_hr = inp.weight_hr
    peep = None if inp.weight_peephole is None else inp.weight_peephole.reshape(3, H)
    active = _active_mask(inp.lengths, T, N)
    tape = _new_tape(inp, reverse, active, 4 * H) if training else None
    if tape is not None:
        tape.c_prev = np.zeros((T, N, H), inp.dtype)
        tape.c_new = np.zeros((T, N, H), inp.dtype)
        if w_hr is not None:
            tape.m = np.zeros((T, N, H), inp.dtype)

    with _errstate():
        gx = _input_projection(inp)
        y = np.zeros((T, N, P), inp.dtype)
        h = np.array(inp.h0, copy=True)
        c = np.array(inp.c0, copy=True)
        for t in _time_order(T, reverse):
            a = gx[t] + h @ inp.weight_hh.T
            if inp.bias_hh is not None:
                a += inp.bias_hh
            a_i, a_f, a_g, a_o = (a[:, k * H : (k + 1) * H] for k in range(4))
            if peep is not None:
                a_i = a_i + peep[0] * c
                a_f = a_f + peep[1] * c
            i = _sigmoid(a_i)
            f = _sigmoid(a_f)
            g = np.tanh(a_g)
            c_new = f * c + i * g
            if peep is not None:
                a_o = a_o + peep[2] * c_new
            o = _sigmoid(a_o)
            m = o * np.tanh(c_new)
            h_new = m if w_hr is None else m @ w_hr.T
            if tape is not None:
                tape.h_prev[t] = h
                tape.c_prev[t] = c
                tape.c_new[t] = c_new
                tape.gates[t] = np.concatenate([i, f, g, o], axis=1)
                if tape.m is not None:
                    tape.m[t] = m
            h = np.where(active[t], h_new, h)
            c = np.where(active[t], c_new, c)
            y[t] = np.where(active[t], h_new, 0)
    if tape is not None:
        return y, (h, c), tape
    return y, (h, c)


def lstm_backward(
    tape: Tape,
    dy: np.ndarray | None = None,
    dh_n: np.ndarray | None = None,
    dc_n: np.ndarray | None = None,
) -> dict[str, np.ndarray | None]:
    """Backpropagation through time for :func:`lstm`.

    Going back over the steps in the reverse of the forward's processing order, with
    ``dh``, ``dc`` the gradients flowing into the states after step t (active steps;
    inactive steps pass ``dh`` and ``dc`` through unchanged)::

        dh  += dy_t
        do   = dh * tanh(c_t)
        dc  += dh * o * (1 - tanh(c_t)^2)
        di   = dc * g        df = dc * c_{t-1}        dg = dc * i
        da_i = di * i (1 - i)    da_f = df * f (1 - f)
        da_g = dg * (1 - g^2)    da_o = do * o (1 - o)
        dh   = da W_hh           dc = dc * f

    then ``dW_ih = sum_t da_t^T x_t``, ``dW_hh = sum_t da_t^T h_{t-1}``,
    ``db_ih = db_hh = sum_t da_t``, ``dx_t = da_t W_ih``.

    With a projection, the first line becomes ``dh += dy_t; dW_hr += dh^T m_t;
    dh = dh W_hr`` (from the state's P columns to m_t's H), and ``dh = da W_hh`` has P
    columns again.

    With peepholes, ``dc += da_o * p_o`` before ``di``, ``df``, ``dg`` are taken, the cell
    gradient handed back is ``dc = dc * f + da_i * p_i + da_f * p_f``, and
    ``dp_i = sum_t da_i c_{t-1}``, ``dp_f = sum_t da_f c_{t-1}``, ``dp_o = sum_t da_o c_t``
    (summed over the batch too).

    Args:
        tape: from ``lstm(..., training=True)``.
        dy: (T, N, H) or None.  dh_n, dc_n: (N, H) or None (None means zeros). With a
            projection, dy is (T, N, P) and dh_n (N, P).

    Returns:
        dict with "x" (T, N, I), "h0", "c0" (N, H), "weight_ih" (4H, I),
        "weight_hh" (4H, H), "bias_ih", "bias_hh" ((4H,) or None without biases); with a
        projection "h0" is (N, P), "weight_hh" (4H, P), and "weight_hr" (P, H) is added;
        with peepholes, "weight_peephole" (3H,).
    """
    tape = _check_tape(tape, "lstm")
    T, N, H, dt = tape.T, tape.N, tape.H, tape.dtype
    w_hr = tape.weight_hr
    P, s_desc = (H, "H") if w_hr is None else (tape.P, "P")
    dy = _check_grad("dy", dy, (T, N, P), dt, f"(T, N, {s_desc})")
    dh = np.array(_check_grad("dh_n", dh_n, (N, P), dt, f"(N, {s_desc})"), copy=True)
    dc = np.array(_check_grad("dc_n", dc_n, (N, H), dt, "(N, H)"), copy=True)
    da_all = np.zeros((T, N, 4 * H), dt)
    dw_hr = None if w_hr is None else np.zeros_like(w_hr)
    peep = None if tape.weight_peephole is None else tape.weight_peephole.reshape(3, H)
    dpeep = np.zeros((3, H), dt)
    with _errstate():
        for t in reversed(_time_order(T, tape.reverse)):
            act = tape.active[t]
            gates = tape.gates[t]
            i = gates[:, 0 * H : 1 * H]
            f = gates[:, 1 * H : 2 * H]
            g = gates[:, 2 * H : 3 * H]
            o = gates[:, 3 * H : 4 * H]
            tanh_c = np.tanh(tape.c_new[t])
            dh_t = dh + dy[t]
            if w_hr is not None:  # through h_t = m_t W_hr^T
                dw_hr += np.where(act, dh_t, 0).T @ tape.m[t]
                dh_t = dh_t @ w_hr
            do = dh_t * tanh_c
            da_o = do * o * (1 - o)
            dc_t = dc + dh_t * o * (1 - tanh_c * tanh_c)
            if peep is not None:
                dc_t = dc_t + da_o * peep[2]
            di = dc_t * g
            df = dc_t * tape.c_prev[t]
            dg = dc_t * i
            da = np.concatenate(
                [di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), da_o], axis=1
            )
            da = np.where(act, da, 0)
            da_all[t] = da
            dh = np.where(act, da @ tape.weight_hh, dh)
            dc_prev = dc_t * f
            if peep is not None:
                da_i, da_f, da_o = da[:, :H], da[:, H : 2 * H], da[:, 3 * H :]
                dc_prev = dc_prev + da_i * peep[0] + da_f * peep[1]
                dpeep[0] += (da_i * tape.c_prev[t]).sum(axis=0)
                dpeep[1] += (da_f * tape.c_prev[t]).sum(axis=0)
                dpeep[2] += (da_o * tape.c_new[t]).sum(axis=0)
            dc = np.where(act, dc_prev, dc)
        grads = _weight_grads(tape, da_all, da_all, tape.h_prev)
    grads["h0"] = dh
    grads["c0"] = dc
    if dw_hr is not None:
        grads["weight_hr"] = dw_hr
    if peep is not None:
        grads["weight_peephole"] = dpeep.reshape(3 * H)
    return _ordered(grads)


# --------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------


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
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, Tape]:
    """GRU over a whole sequence, one layer, one direction (PyTorch gate order r, z, n).

    For each active step ``t`` (t = 0..T-1, or T-1..0 if ``reverse``), with the weights
    split in 3 blocks of H rows (``W_ir, W_iz, W_in`` and ``W_hr, W_hz, W_hn``; biases
    likewise)::

        r = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        reset_after=True  (PyTorch, cuDNN, Keras reset_after=True, oneDNN LBR-GRU):
            n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn))
        reset_after=False (Keras reset_after=False, oneDNN GRU; reset before the matmul):
            n = tanh(W_in x_t + b_in + W_hn (r * h_{t-1}) + b_hn)
            (b_hn is added outside the product and is *not* scaled by r)
        h_t = (1 - z) * n + z * h_{t-1},   y_t = h_t

    Args:
        x: (T, N, I) inputs, float32 or float64 (sets the dtype of everything).
        h0: (N, H) initial state, or None for zeros.
        weight_ih: (3*H, I).  weight_hh: (3*H, H).
        bias_ih, bias_hh: (3*H,) or None (no bias).
        reset_after: which candidate formula (above); True is PyTorch's.
        reverse: process time from T-1 down to 0 (``y[t]`` is still the output at t).
        lengths: None or (N,) integers in [1, T]; inactive steps (t >= lengths[n]) keep
            the state and write 0 to ``y[t, n]``.
        training: also return a :class:`Tape` for :func:`gru_backward`.

    Returns:
        ``(y, h_n)`` or ``(y, h_n, tape)``: y (T, N, H), h_n (N, H). With T == 0, y is
        (0, N, H) and h_n is a copy of h0 (zeros if None). NaN/inf propagate.

    Raises:
        TypeError: non-float or mixed dtypes (naming the argument).
        ValueError: inconsistent shapes or bad ``lengths``.
    """
    reset_after = _check_bool("reset_after", reset_after)
    reverse = _check_bool("reverse", reverse)
    training = _check_bool("training", training)
    inp = _check_inputs("gru", x, h0, None, weight_ih, weight_hh, bias_ih, bias_hh, lengths)
    T, N, H = inp.T, inp.N, inp.H
    active = _active_mask(inp.lengths, T, N)
    tape = _new_tape(inp, reverse, active, 3 * H) if training else None
    if tape is not None:
        tape.reset_after = reset_after
        tape.extra = np.zeros((T, N, H), inp.dtype)
    w_hrz, w_hn = inp.weight_hh[: 2 * H], inp.weight_hh[2 * H :]
    b_hh = inp.bias_hh if inp.bias_hh is not None else np.zeros(3 * H, inp.dtype)
    b_hrz, b_hn = b_hh[: 2 * H], b_hh[2 * H :]

    with _errstate():
        gx = _input_projection(inp)
        y = np.zeros((T, N, H), inp.dtype)
        h = np.array(inp.h0, copy=True)
        for t in _time_order(T, reverse):
            gh_rz = h @ w_hrz.T + b_hrz
            r = _sigmoid(gx[t, :, 0 * H : 1 * H] + gh_rz[:, 0 * H : 1 * H])
            z = _sigmoid(gx[t, :, 1 * H : 2 * H] + gh_rz[:, 1 * H : 2 * H])
            if reset_after:
                extra = h @ w_hn.T + b_hn  # W_hn h + b_hn
                n = np.tanh(gx[t, :, 2 * H :] + r * extra)
            else:
                extra = r * h  # the input of W_hn
                n = np.tanh(gx[t, :, 2 * H :] + extra @ w_hn.T + b_hn)
            h_new = (1 - z) * n + z * h
            if tape is not None:
                tape.h_prev[t] = h
                tape.gates[t] = np.concatenate([r, z, n], axis=1)
                tape.extra[t] = extra
            h = np.where(active[t], h_new, h)
            y[t] = np.where(active[t], h_new, 0)
    if tape is not None:
        return y, h, tape
    return y, h


def gru_backward(
    tape: Tape, dy: np.ndarray | None = None, dh_n: np.ndarray | None = None
) -> dict[str, np.ndarray | None]:
    """Backpropagation through time for :func:`gru`.

    Going back over the steps in the reverse of the forward's processing order, with
    ``dh`` the gradient flowing into the state after step t (active steps; inactive
    steps pass ``dh`` through unchanged)::

        dh  += dy_t
        dn   = dh * (1 - z)      dz = dh * (h_{t-1} - n)
        da_n = dn * (1 - n^2)    da_z = dz * z (1 - z)
        reset_after=True,  with e = W_hn h_{t-1} + b_hn:
            da_r = da_n * e * r (1 - r)
            dh   = dh * z + [da_r, da_z, r * da_n] W_hh
        reset_after=False, with s = r * h_{t-1}:
            ds   = da_n W_hn
            da_r = ds * h_{t-1} * r (1 - r)
            dh   = dh * z + [da_r, da_z] [W_hr; W_hz] + ds * r

    The x-side pre-activations get ``[da_r, da_z, da_n]`` (so ``db_ih`` sums those and
    ``dW_ih = sum_t [...]^T x_t``); the h-side ones get ``[da_r, da_z, r * da_n]``
    (reset_after) or ``[da_r, da_z, da_n]`` (reset before), and ``dW_hh`` multiplies
    them by ``h_{t-1}`` (r and z rows, and n rows if reset_after) or by ``s`` (n rows,
    reset before).

    Args:
        tape: from ``gru(..., training=True)``.
        dy: (T, N, H) or None.  dh_n: (N, H) or None (None means zeros).

    Returns:
        dict with "x" (T, N, I), "h0" (N, H), "weight_ih" (3H, I), "weight_hh" (3H, H),
        "bias_ih", "bias_hh" ((3H,) or None without biases).
    """
    tape = _check_tape(tape, "gru")
    T, N, H, dt = tape.T, tape.N, tape.H, tape.dtype
    dy = _check_grad("dy", dy, (T, N, H), dt, "(T, N, H)")
    dh = np.array(_check_grad("dh_n", dh_n, (N, H), dt, "(N, H)"), copy=True)
    dgx_all = np.zeros((T, N, 3 * H), dt)
    dgh_all = np.zeros((T, N, 3 * H), dt)
    w_hrz, w_hn = tape.weight_hh[: 2 * H], tape.weight_hh[2 * H :]
    with _errstate():
        for t in reversed(_time_order(T, tape.reverse)):
            act = tape.active[t]
            gates = tape.gates[t]
            r = gates[:, 0 * H : 1 * H]
            z = gates[:, 1 * H : 2 * H]
            n = gates[:, 2 * H : 3 * H]
            h_prev = tape.h_prev[t]
            extra = tape.extra[t]
            dh_t = dh + dy[t]
            dn = dh_t * (1 - z)
            dz = dh_t * (h_prev - n)
            da_n = dn * (1 - n * n)
            da_z = dz * z * (1 - z)
            if tape.reset_after:
                da_r = da_n * extra * r * (1 - r)
                dgh = np.concatenate([da_r, da_z, r * da_n], axis=1)
                dh_prev = dh_t * z + dgh @ tape.weight_hh
            else:
                ds = da_n @ w_hn
                da_r = ds * h_prev * r * (1 - r)
                dgh = np.concatenate([da_r, da_z, da_n], axis=1)
                dh_prev = dh_t * z + dgh[:, : 2 * H] @ w_hrz + ds * r
            dgx = np.concatenate([da_r, da_z, da_n], axis=1)
            dgx_all[t] = np.where(act, dgx, 0)
            dgh_all[t] = np.where(act, dgh, 0)
            dh = np.where(act, dh_prev, dh)

        grads = _weight_grads(tape, dgx_all, dgh_all, tape.h_prev)
        if not tape.reset_after:
            # The n rows of W_hh multiplied s = r * h_{t-1}, not h_{t-1}.
            dgh_n = dgh_all[:, :, 2 * H :].reshape(T * N, H)
            grads["weight_hh"][2 * H :] = dgh_n.T @ tape.extra.reshape(T * N, H)
    grads["h0"] = dh
    return _ordered(grads)


_GRAD_ORDER = (
    "x", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr",
    "weight_peephole",
)  # fmt: skip


def _ordered(grads: dict[str, Any]) -> dict[str, Any]:
    """The gradient dict in a fixed key order (x, h0, [c0,] weights, biases)."""
    return {k: grads[k] for k in _GRAD_ORDER if k in grads}
