"""Multi-layer, optionally bidirectional recurrent stacks over :mod:`fastrnn.functional`.

The stateless engine behind :class:`fastrnn.RNN`, :class:`fastrnn.LSTM`,
:class:`fastrnn.GRU` and the PyTorch drop-ins. Every layer and direction is one call of
the single-layer functions (``functional.rnn/lstm/gru`` and their ``*_backward``): there
is no per-step Python loop here.

Conventions (PyTorch's, for ``L`` layers, ``D`` directions (2 if bidirectional), hidden
size ``H``):

* ``x`` is time-major ``(T, N, I)``; ``y`` is ``(T, N, D*H)`` with the forward
  direction in ``y[..., :H]`` and the reverse direction in ``y[..., H:]``.
* Parameters are named ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
  ``bias_hh_l{k}`` with suffix ``_reverse`` for the reverse direction; ``weight_ih_l0`` is
  ``(G*H, I)``, ``weight_ih_l{k>0}`` is ``(G*H, D*H)``, ``weight_hh_l{k}`` is ``(G*H, H)``,
  biases ``(G*H,)``; all biases absent when the stack has none. An LSTM with a projection
  adds ``weight_hr_l{k}`` ``(P, H)``, one with peepholes ``weight_peephole_l{k}``
  ``(3*H,)`` (see :func:`param_names` for the order).
* States are ``(L*D, N, H)``, row ``k*D + d`` for layer ``k``, direction ``d``; for LSTM
  the state is a pair ``(h, c)``.
* Layer ``k`` reads ``x`` (``k = 0``) or the output of layer ``k-1``. With
  ``training=True`` and ``dropout = p > 0``, the input of every layer ``k >= 1`` is
  multiplied by a mask whose entries are 0 with probability ``p`` and ``1/(1-p)``
  otherwise (inverted dropout), drawn from ``rng``; the output of the last layer and the
  states are never dropped. The masks are kept in the tape (``tape.masks[k]``; ``None``
  for layer 0 or when no dropout was applied), so backward uses the same ones.
* ``lengths`` (``(N,)`` ints in ``[1, T]``) gives PyTorch's packed-sequence semantics:
  steps ``t >= lengths[n]`` leave the state unchanged and write 0 to ``y``; the reverse
  direction starts at each sample's last valid step.

Backward returns gradients of the scalar ``L = sum(y*dy) + sum(h_n*dh_n) (+ sum(c_n*dc_n))``
with respect to ``x``, the initial state and every parameter; summing them into
accumulated gradients is the caller's job.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, Union

import numpy as np

from fastrnn import functional
from fastrnn.reference import FLOAT_DTYPES

__all__ = [
    "GATES",
    "MODES",
    "StackTape",
    "check_lengths",
    "check_peephole",
    "param_names",
    "param_shapes",
    "stack_backward",
    "stack_forward",
]

#: Gates G per mode: weights have ``G*H`` rows.
GATES: dict[str, int] = {"rnn": 1, "lstm": 4, "gru": 3}
MODES: tuple[str, ...] = tuple(GATES)

State = Union[np.ndarray, tuple[np.ndarray, np.ndarray], None]


def param_names(
    num_layers: int,
    bidirectional: bool = False,
    bias: bool = True,
    proj: bool = False,
    peephole: bool = False,
) -> list[str]:
    """PyTorch's parameter names in PyTorch's order (layer, direction, ih/hh, w/b, and
    ``weight_hr`` last for an LSTM with a projection).

    ``peephole`` (an LSTM with peepholes, which PyTorch lacks) adds
    ``weight_peephole_l{k}`` (and ``..._reverse``) as the last parameter of each layer and
    direction, after the biases and after ``weight_hr``: leaving those names out gives
    PyTorch's names in PyTorch's order.
    """
    names = []
    for k in range(num_layers):
        for sfx in ("", "_reverse") if bidirectional else ("",):
            names += [f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}"]
            if bias:
                names += [f"bias_ih_l{k}{sfx}", f"bias_hh_l{k}{sfx}"]
            if proj:
                names.append(f"weight_hr_l{k}{sfx}")
            if peephole:
                names.append(f"weight_peephole_l{k}{sfx}")
    return names


def param_shapes(
    mode: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    bidirectional: bool = False,
    bias: bool = True,
    proj_size: int = 0,
    peephole: bool = False,
) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape for a stack, in PyTorch's order. ``proj_size`` P > 0 (lstm
    only): each layer's output h_t = W_hr m_t has P columns (``weight_hr`` (P, H)), which
    ``weight_hh`` and the next layer's ``weight_ih`` take in. ``peephole`` (lstm only):
    each layer and direction also has ``weight_peephole`` (3*H,), the blocks p_i, p_f, p_o
    (see :func:`param_names` for its place)."""
    G = _check_mode(mode)
    peephole = check_peephole(mode, peephole)
    H = hidden_size
    D = 2 if bidirectional else 1
    S = proj_size if proj_size > 0 else H  # the state's (and each direction's output) size
    shapes: dict[str, tuple[int, ...]] = {}
    for name in param_names(num_layers, bidirectional, bias, proj_size > 0, peephole):
        layer = int(name.split("_l")[1].split("_")[0])
        if name.startswith("weight_peephole"):
            shapes[name] = (3 * H,)
        elif name.startswith("weight_ih"):
            shapes[name] = (G * H, input_size if layer == 0 else D * S)
        elif name.startswith("weight_hh"):
            shapes[name] = (G * H, S)
        elif name.startswith("weight_hr"):
            shapes[name] = (proj_size, H)
        else:
            shapes[name] = (G * H,)
    return shapes


@functools.lru_cache(maxsize=64)
def _shapes_cached(
    mode: str,
    I: int,
    H: int,
    L: int,
    bidirectional: bool,
    bias: bool,
    proj_size: int = 0,
    peephole: bool = False,
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(param_shapes(mode, I, H, L, bidirectional, bias, proj_size, peephole).items())


def _check_mode(mode: Any) -> int:
    if mode not in GATES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    return GATES[mode]


def check_lengths(lengths: Any, N: int, T: int) -> np.ndarray | None:
    """``None`` or an int64 copy of ``lengths`` after checking it is ``(N,)`` ints in [1, T]."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"lengths: expected a 1-D integer array of shape (N,) = ({N},), got dtype {arr.dtype}"
        )
    if arr.shape != (N,):
        raise ValueError(f"lengths: expected shape (N,) = ({N},), got {arr.shape}")
    if N and (arr.min() < 1 or arr.max() > T):
        bad = int(arr[(arr < 1) | (arr > T)][0])
        raise ValueError(f"lengths: every value must be in [1, T] = [1, {T}], got {bad}")
    return arr.astype(np.int64)


def check_proj_size(mode: str, proj_size: Any, hidden_size: int) -> int:
    """``proj_size`` as an int: 0 (no projection), or for lstm 1 <= P < H (PyTorch's rule)."""
    if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)):
        raise TypeError(f"proj_size: expected an int, got {proj_size!r}")
    P = int(proj_size)
    if P == 0:
        return 0
    if mode != "lstm":
        raise ValueError(f"proj_size: only lstm has a projection, got proj_size={P} for {mode}")
    if not 0 < P < hidden_size:
        raise ValueError(
            f"proj_size: expected 0 or 1 <= proj_size < hidden_size = {hidden_size}, got {P}"
        )
    return P


def check_peephole(mode: str, peephole: Any) -> bool:
    """``peephole`` as a bool after checking that it is one, and that only lstm has it."""
    if not isinstance(peephole, (bool, np.bool_)):
        raise TypeError(f"peephole: expected a bool, got {type(peephole).__name__}")
    if peephole and mode != "lstm":
        raise ValueError(f"peephole: only lstm has peepholes, got peephole=True for {mode}")
    return bool(peephole)


def _check_float(name: str, a: Any, dtype: np.dtype, shape: tuple[int, ...], desc: str):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array of shape {desc}, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the dtype of x), got {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {desc} = {shape}, got {a.shape}")
    return a


@dataclasses.dataclass(eq=False)
class StackTape:
    """Everything :func:`stack_backward` needs: one functional tape per layer/direction.

    ``tapes[k][d]`` is the tape of layer ``k``, direction ``d``; ``masks[k]`` the dropout
    mask applied to layer ``k``'s input ``(T, N, D*H)`` (or ``None``). ``proj_size``: P of
    an LSTM with a projection (its states h and outputs have P columns), else 0.
    ``peephole``: whether the LSTM has peepholes (their gradients come from the tapes).
    """

    mode: str
    num_layers: int
    num_directions: int
    hidden_size: int
    T: int
    N: int
    I: int
    dtype: np.dtype
    tapes: list[list[Any]]
    masks: list[np.ndarray | None]
    proj_size: int = 0
    peephole: bool = False


def stack_forward(
    mode: str,
    x: np.ndarray,
    params: Mapping[str, np.ndarray],
    *,
    num_layers: int,
    hidden_size: int,
    bidirectional: bool = False,
    state: State = None,
    lengths: Any = None,
    dropout: float = 0.0,
    rng: np.random.Generator | None = None,
    training: bool = False,
    nonlinearity: str = "tanh",
    reset_after: bool = True,
    backend: str = "native",
    packed: Mapping[str, functional.PackedWeights] | None = None,
    proj_size: int = 0,
    peephole: bool = False,
) -> tuple[np.ndarray, State, StackTape | None]:
    """Run a stack of ``num_layers`` recurrent layers over ``x``.

    Args:
        mode: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        x: (T, N, I) float32 or float64, time-major.
        params: name -> array with PyTorch's names and shapes (see the module docstring);
            every array must have ``x``'s dtype. Biases are all present or all absent.
        num_layers: L >= 1.
        hidden_size: H >= 1.
        bidirectional: D = 2 directions per layer if True.
        state: None (zeros), h0 (L*D, N, H), or for lstm ``(h0, c0)``.
        lengths: None or (N,) ints in [1, T].
        dropout: p in [0, 1], applied to the inputs of layers 1..L-1 when ``training``.
        rng: generator for the dropout masks (a fresh unseeded one if None).
        training: apply dropout and record a tape for :func:`stack_backward`.
        nonlinearity: rnn only: ``"tanh"``, ``"relu"`` or ``"sigmoid"``.
        reset_after: gru only: PyTorch's GRU (True) or Keras' ``reset_after=False``.
        backend: ``"native"`` or ``"reference"``.
        packed: layer/direction suffix (``"l0"``, ``"l0_reverse"``, ...) -> that layer's
            :func:`fastrnn.functional.pack_weights`, used where ``params`` holds its
            snapshot arrays themselves (any other weights run unpacked).
        proj_size: lstm only: P >= 1 projects each layer's output to P columns
            (``weight_hr_l{k}`` (P, H)); y is then (T, N, D*P) and h0, h_n (L*D, N, P),
            while c0, c_n stay (L*D, N, H). 0: no projection.
        peephole: lstm only: each layer and direction has peepholes, ``params`` holds
            ``weight_peephole_l{k}`` (3*H,) (p_i, p_f, p_o; see
            :func:`fastrnn.functional.lstm`). They are not part of a ``packed`` layout and
            are always read from ``params``.

    Returns:
        ``(y, state_n, tape)``: y (T, N, D*H); state_n like ``state`` (``(h_n, c_n)`` for
        lstm); tape a :class:`StackTape` if ``training`` else None.
    """
    _check_mode(mode)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x: expected a numpy array of shape (T, N, I), got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x: expected dtype float32 or float64, got {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"x: expected a 3-D array of shape (T, N, I), got shape {x.shape}")
    for nm, v in (("num_layers", num_layers), ("hidden_size", hidden_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{nm}: expected an int >= 1, got {v!r}")
    if not 0.0 <= float(dropout) <= 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1], got {dropout!r}")
    T, N, I = (int(s) for s in x.shape)
    L, H, D = int(num_layers), int(hidden_size), 2 if bidirectional else 1
    P = check_proj_size(mode, proj_size, H)
    peep = check_peephole(mode, peephole)
    S = P if P else H
    dtype = x.dtype
    lengths = check_lengths(lengths, N, T)

    bias = "bias_ih_l0" in params
    if not peep and "weight_peephole_l0" in params:
        raise ValueError(
            "params: holds 'weight_peephole_l0' but peephole=False (pass peephole=True to use "
            "the peepholes)"
        )
    for name, shape in _shapes_cached(mode, I, H, L, bool(bidirectional), bias, P, peep):
        a = params.get(name)
        if a is None:
            raise ValueError(f"params: missing {name!r} (expected shape {shape})")
        if type(a) is not np.ndarray or a.dtype != dtype or a.shape != shape:
            _check_float(f"params[{name!r}]", a, dtype, shape, str(shape))

    h0, c0 = _split_state(mode, state, (L * D, N, S), dtype, (L * D, N, H))

    tapes: list[list[Any]] = []
    masks: list[np.ndarray | None] = []
    hs, cs = [], []
    inp = np.ascontiguousarray(x)
    p = float(dropout)
    for k in range(L):
        mask = None
        if k > 0 and training and p > 0.0:
            if rng is None:
                rng = np.random.default_rng()
            keep = rng.random(inp.shape) >= p
            scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
            mask = (keep * scale).astype(dtype)
            inp = inp * mask
        masks.append(mask)
        outs, layer_tapes = [], []
        for d in range(D):
            sfx = f"l{k}" + ("_reverse" if d else "")
            args = (params[f"weight_ih_{sfx}"], params[f"weight_hh_{sfx}"])
            if bias:
                args += (params[f"bias_ih_{sfx}"], params[f"bias_hh_{sfx}"])
            else:
                args += (None, None)
            kw: dict[str, Any] = dict(
                reverse=bool(d), lengths=lengths, training=training, backend=backend
            )
            if P:
                kw["weight_hr"] = params[f"weight_hr_{sfx}"]
            if peep:  # not part of a packed layout: always passed as it is
                kw["weight_peephole"] = params[f"weight_peephole_{sfx}"]
            pw = packed.get(sfx) if packed else None
            if pw is not None and pw.weight_ih is args[0] and pw.weight_hh is args[1]:
                if not P or pw.weight_hr is kw["weight_hr"]:
                    kw["packed"] = pw
            row = k * D + d
            hrow = None if h0 is None else h0[row]
            if mode == "lstm":
                crow = None if c0 is None else c0[row]
                res = functional.lstm(inp, hrow, crow, *args, **kw)
                y_d, (h_n, c_n) = res[0], res[1]
                cs.append(c_n)
            elif mode == "gru":
                res = functional.gru(inp, hrow, *args, reset_after=reset_after, **kw)
                y_d, h_n = res[0], res[1]
            else:
                res = functional.rnn(inp, hrow, *args, nonlinearity=nonlinearity, **kw)
                y_d, h_n = res[0], res[1]
            hs.append(h_n)
            outs.append(y_d)
            layer_tapes.append(res[2] if training else None)
        tapes.append(layer_tapes)
        inp = outs[0] if D == 1 else np.concatenate(outs, axis=2)
    y = inp
    h_n = _stack_rows(hs)
    state_n: State = (h_n, _stack_rows(cs)) if mode == "lstm" else h_n
    tape = None
    if training:
        tape = StackTape(mode, L, D, H, T, N, I, dtype, tapes, masks, P, peep)
    return y, state_n, tape


def _stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    """(L*D, N, H) from L*D arrays (N, H); a cheap view for a single row."""
    return rows[0][None] if len(rows) == 1 else np.stack(rows)


def _split_state(
    mode: str,
    state: Any,
    shape: tuple[int, int, int],
    dtype: np.dtype,
    c_shape: tuple[int, int, int] | None = None,
):
    """(h0, c0) from ``state`` after checking shapes; either may be None (zeros).
    ``c_shape``: c's shape when it differs from h's (an LSTM with a projection)."""
    c_shape = shape if c_shape is None else c_shape
    desc = "(L*D, N, H)" if c_shape == shape else "(L*D, N, P)"
    c_desc = "(L*D, N, H)"
    if state is None:
        return None, None
    if mode == "lstm":
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(
                f"state: expected a pair (h0, c0) of arrays of shapes {desc} = {shape} and "
                f"{c_desc} = {c_shape} for lstm, got {type(state).__name__}"
            )
        h0, c0 = state
        if h0 is not None:
            _check_float("state h0", h0, dtype, shape, desc)
        if c0 is not None:
            _check_float("state c0", c0, dtype, c_shape, c_desc)
        return h0, c0
    if isinstance(state, (tuple, list)):
        raise TypeError(f"state: expected one array of shape {desc} = {shape} for {mode}, got a "
                        f"{type(state).__name__}")  # fmt: skip
    return _check_float("state", state, dtype, shape, desc), None


# Per layer and direction, in the order of param_names.
_GRAD_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "weight_peephole")


def stack_backward(
    tape: StackTape, dy: np.ndarray | None = None, dstate: State = None
) -> tuple[np.ndarray, State, dict[str, np.ndarray]]:
    """Backpropagation through a stack run by :func:`stack_forward` with ``training=True``.

    Args:
        tape: the :class:`StackTape` from the forward.
        dy: (T, N, D*H) gradient w.r.t. y, or None (zeros).
        dstate: gradient w.r.t. ``state_n``: None (zeros), (L*D, N, H), or for lstm a pair
            ``(dh_n, dc_n)`` (either may be None).

    Returns:
        ``(dx, dstate0, grads)``: dx (T, N, I); dstate0 the gradient w.r.t. the initial
        state, (L*D, N, H) or for lstm ``(dh0, dc0)`` (also when the forward's state was
        None, i.e. zeros); grads name -> gradient for every parameter (the names and
        order of :func:`param_names`; PyTorch's without peepholes).
    """
    if not isinstance(tape, StackTape):
        raise TypeError(f"tape: expected a StackTape from stack_forward, got {type(tape).__name__}")
    mode, L, D, H = tape.mode, tape.num_layers, tape.num_directions, tape.hidden_size
    T, N, dtype = tape.T, tape.N, tape.dtype
    P = tape.proj_size
    S = P if P else H
    if dy is not None:
        desc = "(T, N, D*P)" if P else "(T, N, D*H)"
        dy = _check_float("dy", dy, dtype, (T, N, D * S), desc)
    dh_n, dc_n = _split_state(mode, dstate, (L * D, N, S), dtype, (L * D, N, H))

    grads_by_layer: list[dict[str, np.ndarray]] = []
    dh0 = np.zeros((L * D, N, S), dtype)
    dc0 = np.zeros((L * D, N, H), dtype) if mode == "lstm" else None
    dout = dy
    dinp = None
    for k in reversed(range(L)):
        dinp = None
        layer_grads: dict[str, np.ndarray] = {}
        for d in range(D):
            row = k * D + d
            t = tape.tapes[k][d]
            dy_d = None if dout is None else np.ascontiguousarray(dout[..., d * S : (d + 1) * S])
            dh = None if dh_n is None else dh_n[row]
            if mode == "lstm":
                dc = None if dc_n is None else dc_n[row]
                g = functional.lstm_backward(t, dy_d, dh, dc)
                dc0[row] = g["c0"]  # type: ignore[index]
            elif mode == "gru":
                g = functional.gru_backward(t, dy_d, dh)
            else:
                g = functional.rnn_backward(t, dy_d, dh)
            dh0[row] = g["h0"]
            dinp = g["x"] if dinp is None else dinp + g["x"]
            sfx = f"l{k}" + ("_reverse" if d else "")
            for pname in _GRAD_NAMES:
                if g.get(pname) is not None:
                    layer_grads[f"{pname}_{sfx}"] = g[pname]
        grads_by_layer.append(layer_grads)
        mask = tape.masks[k]
        dout = dinp if mask is None else dinp * mask
    grads: dict[str, np.ndarray] = {}
    for layer_grads in reversed(grads_by_layer):
        grads.update(layer_grads)
    dx = dout if dout is not None else np.zeros((T, N, tape.I), dtype)
    dstate0: State = (dh0, dc0) if mode == "lstm" else dh0  # type: ignore[assignment]
    return dx, dstate0, grads
