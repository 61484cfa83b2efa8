"""Import and export recurrent weights in Keras and ONNX conventions.

fastrnn stores parameters the PyTorch way (``docs/equations.md``): ``weight_ih``
``(G*H, I)``, ``weight_hh`` ``(G*H, H)``, ``bias_ih`` and ``bias_hh`` ``(G*H,)``, gate
blocks stacked in the order LSTM ``i, f, g, o`` and GRU ``r, z, n``. The functions here
convert one layer at a time at the edge, in NumPy; nothing is converted inside the
kernels. Every result is a fresh array of the input's dtype (float32 or float64).

Per layer (one or two directions):

* :func:`from_keras` / :func:`to_keras`: Keras ``SimpleRNN``, ``LSTM``, ``GRU`` cell
  weights ``kernel`` ``(I, G*H)``, ``recurrent_kernel`` ``(H, G*H)``, ``bias``.
* :func:`from_onnx` / :func:`to_onnx`: ONNX ``RNN``, ``LSTM``, ``GRU`` operator inputs
  ``W`` ``[D, G*H, I]``, ``R`` ``[D, G*H, H]``, ``B`` ``[D, 2*G*H]``, and the LSTM
  peepholes ``P`` ``[D, 3*H]``.

A per-layer fastrnn dict uses the short names ``weight_ih``, ``weight_hh``, ``bias_ih``,
``bias_hh`` (plus ``*_reverse`` for the second direction of a bidirectional layer); an
LSTM dict may also hold ``weight_peephole`` ``(3*H,)`` (blocks ``p_i, p_f, p_o``), a GRU
dict carries ``reset_after`` (bool), the variant fastrnn must run. A one-direction dict
can be passed straight on: ``fastrnn.reference.gru(x, h0, **p)``.

Whole models: :func:`stack_layers` turns a list of per-layer dicts into one flat
PyTorch-named dict (``weight_ih_l0``, ``weight_hh_l1_reverse``, ...) and
:func:`unstack_layers` splits one back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np

from fastrnn.reference import (
    _check_bool,
    _check_float_array,
    _check_float_dtype,
    _check_kind,
    _fmt_shape,
)

__all__ = [
    "KERAS_GATE_ORDER",
    "ONNX_DIRECTIONS",
    "ONNX_GATE_ORDER",
    "from_keras",
    "from_onnx",
    "stack_layers",
    "to_keras",
    "to_onnx",
    "unstack_layers",
]

#: Gate order of each cell kind in Keras weights (fastrnn: lstm i,f,g,o; gru r,z,n).
KERAS_GATE_ORDER: dict[str, str] = {"rnn": "h", "lstm": "ifco", "gru": "zrh"}

#: Gate order of each cell kind in ONNX weights.
ONNX_GATE_ORDER: dict[str, str] = {"rnn": "h", "lstm": "iofc", "gru": "zrh"}

#: Values of the ONNX ``direction`` attribute.
ONNX_DIRECTIONS: tuple[str, ...] = ("forward", "reverse", "bidirectional")

# Block permutations: fastrnn block k is foreign block _FROM[kind][k]; foreign block j is
# fastrnn block _TO[kind][j].
_KERAS_FROM: dict[str, list[int]] = {"rnn": [0], "lstm": [0, 1, 2, 3], "gru": [1, 0, 2]}
_KERAS_TO: dict[str, list[int]] = {"rnn": [0], "lstm": [0, 1, 2, 3], "gru": [1, 0, 2]}
_ONNX_FROM: dict[str, list[int]] = {"rnn": [0], "lstm": [0, 2, 3, 1], "gru": [1, 0, 2]}
_ONNX_TO: dict[str, list[int]] = {"rnn": [0], "lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}
# Peephole blocks: ONNX ``P`` is i, o, f, fastrnn's ``weight_peephole`` i, f, o. Swapping
# the last two blocks is its own inverse, so the one permutation serves both ways.
_ONNX_PEEPHOLE_PERM: list[int] = [0, 2, 1]

_PARAM_NAMES: tuple[str, ...] = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
#: Names a per-layer dict may hold in to_onnx and stack_layers (LSTM peepholes included).
_LAYER_NAMES: tuple[str, ...] = (*_PARAM_NAMES, "weight_peephole")

#: A per-layer entry of :func:`stack_layers`: one dict, or a (forward, reverse) pair.
LayerParams = Union[Mapping[str, Any], tuple[Mapping[str, Any], Mapping[str, Any]]]


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _gdesc(G: int) -> str:
    return f"{G}*H" if G > 1 else "H"


def _float(name: str, a: Any, dtype: np.dtype | None = None, like: str = "") -> np.ndarray:
    """A float32/float64 array; with ``dtype`` given it must match (that of ``like``)."""
    arr = _check_float_dtype(name, a)
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(
            f"{name}: expected dtype {np.dtype(dtype)} (the dtype of {like}), got {arr.dtype}"
        )
    return arr


def _shaped(
    name: str, a: Any, shape: tuple[int, ...], dtype: np.dtype, desc: str, like: str
) -> np.ndarray:
    """Like :func:`_float`, and of exactly ``shape`` (``desc`` is its symbolic form)."""
    return _check_float_array(name, _float(name, a, dtype, like), shape, None, desc)


def _permute_blocks(a: np.ndarray, perm: Sequence[int]) -> np.ndarray:
    """Reorder the ``len(perm)`` equal row blocks of ``a`` (axis 0); returns a copy."""
    G = len(perm)
    H = a.shape[0] // G
    blocks = a.reshape((G, H, *a.shape[1:]))
    return np.ascontiguousarray(blocks[list(perm)].reshape(a.shape))


def _check_reset_after(kind: str, reset_after: Any) -> bool:
    reset_after = _check_bool("reset_after", reset_after)
    if kind != "gru" and not reset_after:
        raise ValueError(f"reset_after: only applies to kind='gru', got False for {kind!r}")
    return reset_after


def _resolve_reset_after(kind: str, params: Mapping[str, Any], reset_after: Any) -> bool:
    """GRU variant for an export: from ``params['reset_after']`` and/or the argument."""
    stored = params.get("reset_after")
    if stored is not None:
        stored = _check_bool("params['reset_after']", stored)
    if reset_after is not None:
        reset_after = _check_bool("reset_after", reset_after)
    if stored is not None and reset_after is not None and stored != reset_after:
        raise ValueError(f"reset_after: {reset_after} contradicts params['reset_after'] = {stored}")
    flag = reset_after if reset_after is not None else stored
    if flag is None:
        flag = True
    if kind != "gru":
        if not flag:
            raise ValueError(f"reset_after: only applies to kind='gru', got False for {kind!r}")
        if "reset_after" in params:
            raise ValueError(f"params: unexpected key 'reset_after' for kind={kind!r}")
    return flag


def _check_param_keys(
    params: Any, suffixes: Sequence[str], names: Sequence[str] = _PARAM_NAMES
) -> None:
    """``params`` must be a mapping holding only ``names`` with these suffixes."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a mapping of parameter names, got {type(params)}")
    allowed = {n + s for n in names for s in suffixes} | {"reset_after"}
    extra = sorted(set(params) - allowed)
    if extra:
        raise ValueError(f"params: unexpected keys {extra}; expected some of {sorted(allowed)}")
    for s in suffixes:
        for n in ("weight_ih", "weight_hh"):
            if params.get(n + s) is None:
                raise ValueError(f"params: missing {n + s!r}")


def _native_direction(
    kind: str, params: Mapping[str, Any], suffix: str, dtype: np.dtype | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, int, int]:
    """Check one direction of a fastrnn dict; returns W_ih, W_hh, b_ih, b_hh, I, H."""
    G = _check_kind(kind)
    gd = _gdesc(G)
    n_ih, n_hh, n_bi, n_bh = (n + suffix for n in _PARAM_NAMES)
    w_ih = _float(n_ih, params[n_ih], dtype, "weight_ih")
    dtype = w_ih.dtype
    if w_ih.ndim != 2 or w_ih.shape[0] % G != 0 or w_ih.shape[0] < G:
        raise ValueError(f"{n_ih}: expected shape ({gd}, I) with H >= 1, got {w_ih.shape}")
    H, I = w_ih.shape[0] // G, int(w_ih.shape[1])
    w_hh = _shaped(n_hh, params[n_hh], (G * H, H), dtype, f"({gd}, H)", n_ih)
    b_ih = params.get(n_bi)
    b_hh = params.get(n_bh)
    if b_ih is not None:
        b_ih = _shaped(n_bi, b_ih, (G * H,), dtype, f"({gd},)", n_ih)
    if b_hh is not None:
        b_hh = _shaped(n_bh, b_hh, (G * H,), dtype, f"({gd},)", n_ih)
    return w_ih, w_hh, b_ih, b_hh, I, H


def _native_peephole(
    params: Mapping[str, Any], suffix: str, H: int, dtype: np.dtype
) -> np.ndarray | None:
    """``params["weight_peephole" + suffix]`` checked to be ``(3*H,)`` of ``dtype``, or None."""
    name = "weight_peephole" + suffix
    p = params.get(name)
    if p is None:
        return None
    return _shaped(name, p, (3 * H,), dtype, "(3*H,)", "weight_ih" + suffix)


# --------------------------------------------------------------------------------------
# Keras
# --------------------------------------------------------------------------------------


def from_keras(
    kind: str,
    kernel: Any,
    recurrent_kernel: Any,
    bias: Any = None,
    *,
    reset_after: bool = True,
) -> dict[str, Any]:
    """Convert one Keras ``SimpleRNN``/``LSTM``/``GRU`` layer's weights to fastrnn's.

    Keras computes ``x @ kernel + h @ recurrent_kernel + bias`` with gate blocks along
    the last axis: LSTM ``i, f, c, o`` (``c`` is fastrnn's candidate ``g``), GRU
    ``z, r, h`` (update, reset, candidate), SimpleRNN a single block. Keras's GRU has
    ``h_t = z * h_{t-1} + (1 - z) * hh`` like fastrnn. So::

        weight_ih = blocks of kernel.T reordered,   weight_hh = same for recurrent_kernel

    Biases: LSTM and SimpleRNN have one ``(G*H,)`` bias, which becomes ``bias_ih``
    (``bias_hh`` is zeros). GRU ``reset_after=True`` has a ``(2, 3*H)`` bias, rows
    ``(input bias, recurrent bias)``, mapping to ``bias_ih`` and ``bias_hh`` exactly
    (the recurrent candidate bias is scaled by r, as in fastrnn). GRU
    ``reset_after=False`` has one ``(3*H,)`` bias added on the input side; it becomes
    ``bias_ih`` with ``bias_hh`` zeros, and the result must be run with fastrnn's
    ``reset_after=False`` (reset applied to h before the recurrent matmul).

    Only the weights are converted: the layer must use Keras's default activations
    (tanh and sigmoid; SimpleRNN's activation maps to fastrnn's ``nonlinearity``).

    Args:
        kind: "rnn" (SimpleRNN), "lstm" or "gru".
        kernel: (I, G*H), float32 or float64.
        recurrent_kernel: (H, G*H), same dtype.
        bias: (G*H,); for GRU with ``reset_after=True`` (2, 3*H); None if
            ``use_bias=False``.
        reset_after: the Keras GRU flag (only ``True`` is allowed for other kinds).

    Returns:
        ``{"weight_ih": (G*H, I), "weight_hh": (G*H, H), "bias_ih": (G*H,) or None,
        "bias_hh": (G*H,) or None}``, plus ``"reset_after": bool`` for GRU: keyword
        arguments for ``fastrnn.reference.<kind>``.

    Raises:
        TypeError: non-float arrays or mixed dtypes (naming the argument).
        ValueError: wrong shapes (naming the argument and the expected shape), an
            unknown ``kind``.
    """
    G = _check_kind(kind)
    reset_after = _check_reset_after(kind, reset_after)
    gd = _gdesc(G)
    kernel = _float("kernel", kernel)
    dtype = kernel.dtype
    if kernel.ndim != 2 or kernel.shape[1] % G != 0 or kernel.shape[1] < G:
        raise ValueError(f"kernel: expected shape (I, {gd}) with H >= 1, got {kernel.shape}")
    H = kernel.shape[1] // G
    recurrent_kernel = _shaped(
        "recurrent_kernel", recurrent_kernel, (H, G * H), dtype, f"(H, {gd})", "kernel"
    )
    perm = _KERAS_FROM[kind]
    out: dict[str, Any] = {
        "weight_ih": _permute_blocks(kernel.T, perm),
        "weight_hh": _permute_blocks(recurrent_kernel.T, perm),
        "bias_ih": None,
        "bias_hh": None,
    }
    if bias is not None:
        if kind == "gru" and reset_after:
            bias = _shaped("bias", bias, (2, 3 * H), dtype, "(2, 3*H)", "kernel")
            out["bias_ih"] = _permute_blocks(bias[0], perm)
            out["bias_hh"] = _permute_blocks(bias[1], perm)
        else:
            bias = _shaped("bias", bias, (G * H,), dtype, f"({gd},)", "kernel")
            out["bias_ih"] = _permute_blocks(bias, perm)
            out["bias_hh"] = np.zeros(G * H, dtype)
    if kind == "gru":
        out["reset_after"] = reset_after
    return out


def to_keras(
    kind: str, params: Mapping[str, Any], *, reset_after: bool | None = None
) -> dict[str, Any]:
    """Convert one direction of one fastrnn layer to Keras weights (inverse of from_keras).

    ``bias_ih`` and ``bias_hh`` are summed into Keras's single bias where Keras has only
    one (LSTM, SimpleRNN, GRU ``reset_after=False``); this is exact for the function
    computed (in GRU ``reset_after=False`` ``b_hn`` sits outside the reset gate, next to
    ``b_in``), so ``to_keras(from_keras(w)) == w`` but a fastrnn dict with a non-zero
    ``bias_hh`` comes back from Keras with it folded into ``bias_ih``.

    Args:
        kind: "rnn", "lstm" or "gru".
        params: ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H), optional ``bias_ih`` and
            ``bias_hh`` (G*H,) (a missing one counts as zeros; both missing means no
            bias), and for GRU optionally ``reset_after``.
        reset_after: GRU variant; None takes ``params["reset_after"]``, else True.

    Returns:
        ``{"kernel": (I, G*H), "recurrent_kernel": (H, G*H), "bias": ...}`` where bias is
        (G*H,), (2, 3*H) for GRU ``reset_after=True``, or None; plus ``"reset_after"``
        for GRU (so ``from_keras(kind, **to_keras(kind, p))`` works).

    Raises:
        TypeError, ValueError: as :func:`from_keras`; also unexpected keys, ``*_reverse``
        keys (export each direction separately) or a conflicting ``reset_after``.
    """
    _check_kind(kind)
    _check_param_keys(params, ("",))
    flag = _resolve_reset_after(kind, params, reset_after)
    w_ih, w_hh, b_ih, b_hh, _, _ = _native_direction(kind, params, "", None)
    perm = _KERAS_TO[kind]
    out: dict[str, Any] = {
        "kernel": np.ascontiguousarray(_permute_blocks(w_ih, perm).T),
        "recurrent_kernel": np.ascontiguousarray(_permute_blocks(w_hh, perm).T),
        "bias": None,
    }
    if b_ih is not None or b_hh is not None:
        zeros = np.zeros(w_ih.shape[0], w_ih.dtype)
        b_ih = zeros if b_ih is None else b_ih
        b_hh = zeros if b_hh is None else b_hh
        if kind == "gru" and flag:
            out["bias"] = np.stack([_permute_blocks(b_ih, perm), _permute_blocks(b_hh, perm)])
        else:
            out["bias"] = _permute_blocks(b_ih + b_hh, perm)
    if kind == "gru":
        out["reset_after"] = flag
    return out


# --------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------


def _check_direction(direction: Any) -> int:
    if not isinstance(direction, str) or direction not in ONNX_DIRECTIONS:
        raise ValueError(f"direction: expected one of {ONNX_DIRECTIONS}, got {direction!r}")
    return 2 if direction == "bidirectional" else 1


def from_onnx(
    kind: str,
    W: Any,
    R: Any,
    B: Any = None,
    *,
    direction: str = "forward",
    linear_before_reset: int = 0,
    hidden_size: int | None = None,
    P: Any = None,
) -> dict[str, Any]:
    """Convert the weights of one ONNX ``RNN``/``LSTM``/``GRU`` node to fastrnn's.

    ONNX computes ``Xt*(W^T) + Ht-1*(R^T) + Wb + Rb`` per gate, blocks stacked along
    axis 1 in the order LSTM ``i, o, f, c``, GRU ``z, r, h``, RNN a single block; ``B``
    is ``[Wb, Rb]`` per direction. So ``weight_ih = W[d]``, ``weight_hh = R[d]``,
    ``bias_ih = Wb``, ``bias_hh = Rb``, each with its gate blocks reordered. GRU:
    ``linear_before_reset=1`` computes ``h~ = g(Xt*(Wh^T) + r (.) (Ht-1*(Rh^T) + Rbh) +
    Wbh)``, fastrnn's ``reset_after=True``; ``linear_before_reset=0`` (the ONNX
    default) computes ``h~ = g(Xt*(Wh^T) + (r (.) Ht-1)*(Rh^T) + Rbh + Wbh)``, which is
    fastrnn's ``reset_after=False`` (``b_hn`` outside the reset gate) with the same
    weights. Both use ``Ht = (1 - z) (.) h~ + z (.) Ht-1`` like fastrnn.

    LSTM peepholes: ONNX adds ``Pi (.) Ct-1`` to the input gate, ``Pf (.) Ct-1`` to the
    forget gate and ``Po (.) Ct`` to the output gate, with ``P[d]`` holding the blocks
    ``Pi, Po, Pf``. fastrnn's ``weight_peephole`` computes the same with the blocks in the
    order ``p_i, p_f, p_o``, so ``weight_peephole = P[d]`` with its last two blocks swapped.

    Only the weights are converted: the node must use the default activations
    (Sigmoid/Tanh; RNN Tanh, or pick fastrnn's ``nonlinearity`` to match), no ``clip``,
    LSTM ``input_forget=0``, and ``layout=0`` refers to X/Y only, not to the weights.

    Directions: ``"forward"`` gives the short names; ``"bidirectional"`` gives them for
    ``W[0]`` and the ``*_reverse`` names for ``W[1]``; ``"reverse"`` gives the short
    names, to be run with ``reverse=True``.

    Args:
        kind: "rnn", "lstm" or "gru".
        W: [D, G*H, I], D = 2 for "bidirectional", else 1.
        R: [D, G*H, H].
        B: [D, 2*G*H] or None (ONNX: zeros; here no bias).
        direction: "forward", "reverse" or "bidirectional".
        linear_before_reset: GRU attribute, 0 or 1 (must be 0 for other kinds).
        hidden_size: the node's attribute, checked against the weights if given.
        P: LSTM peepholes [D, 3*H] (blocks ``Pi, Po, Pf``), or None (ONNX: zeros; here
            no peepholes). Only for kind="lstm".

    Returns:
        ``{"weight_ih", "weight_hh", "bias_ih", "bias_hh"}`` (+ ``*_reverse`` if
        bidirectional; biases None without ``B``), plus ``"reset_after"`` for GRU, plus
        ``"weight_peephole"`` (3*H,) (and ``"weight_peephole_reverse"`` if
        bidirectional) when ``P`` is given, even if it is all zeros, so that an explicit
        ``P`` survives a round trip through :func:`to_onnx`.

    Raises:
        TypeError: non-float arrays or mixed dtypes.
        ValueError: wrong shapes (naming the argument and the expected shape), bad
            ``direction``/``linear_before_reset``/``hidden_size``, ``P`` for a kind
            other than "lstm".
    """
    G = _check_kind(kind)
    D = _check_direction(direction)
    gd = _gdesc(G)
    if isinstance(linear_before_reset, (bool, np.bool_)) or linear_before_reset not in (0, 1):
        raise ValueError(f"linear_before_reset: expected 0 or 1, got {linear_before_reset!r}")
    if kind != "gru" and linear_before_reset != 0:
        raise ValueError(f"linear_before_reset: only applies to kind='gru', got 1 for {kind!r}")
    W = _float("W", W)
    dtype = W.dtype
    if W.ndim != 3 or W.shape[0] != D or W.shape[1] % G != 0 or W.shape[1] < G:
        raise ValueError(
            f"W: expected shape [num_directions, {gd}, I] with num_directions = {D} "
            f"(direction={direction!r}) and H >= 1, got {_fmt_shape(W.shape)}"
        )
    H = W.shape[1] // G
    if hidden_size is not None and (isinstance(hidden_size, bool) or hidden_size != H):
        raise ValueError(f"hidden_size: {hidden_size!r} does not match W, which has H = {H}")
    R = _shaped("R", R, (D, G * H, H), dtype, f"[num_directions, {gd}, H]", "W")
    if B is not None:
        B = _shaped("B", B, (D, 2 * G * H), dtype, f"[num_directions, 2*{gd}]", "W")
    if P is not None:
        if kind != "lstm":
            raise ValueError(f"P: peepholes exist only for kind='lstm', not {kind!r}")
        P = _shaped("P", P, (D, 3 * H), dtype, "[num_directions, 3*H]", "W")
    perm = _ONNX_FROM[kind]
    out: dict[str, Any] = {}
    for d in range(D):
        s = "_reverse" if d == 1 else ""
        out["weight_ih" + s] = _permute_blocks(W[d], perm)
        out["weight_hh" + s] = _permute_blocks(R[d], perm)
        out["bias_ih" + s] = None if B is None else _permute_blocks(B[d, : G * H], perm)
        out["bias_hh" + s] = None if B is None else _permute_blocks(B[d, G * H :], perm)
        if P is not None:
            out["weight_peephole" + s] = _permute_blocks(P[d], _ONNX_PEEPHOLE_PERM)
    if kind == "gru":
        out["reset_after"] = bool(linear_before_reset)
    return out


def to_onnx(
    kind: str,
    params: Mapping[str, Any],
    *,
    direction: str = "forward",
    reset_after: bool | None = None,
) -> dict[str, Any]:
    """Convert one fastrnn layer to the weight inputs of an ONNX node (inverse of from_onnx).

    Args:
        kind: "rnn", "lstm" or "gru".
        params: ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H), optional ``bias_ih``,
            ``bias_hh`` (G*H,) (a missing one counts as zeros; both missing means no
            ``B``); for LSTM optionally ``weight_peephole`` (3*H,) (blocks ``p_i, p_f,
            p_o``; a missing one counts as zeros, both missing means no ``P``); the same
            with ``_reverse`` for "bidirectional"; for GRU optionally ``reset_after``.
        direction: "forward", "reverse" (the dict holds a layer meant to run with
            ``reverse=True``) or "bidirectional".
        reset_after: GRU variant; None takes ``params["reset_after"]``, else True.

    Returns:
        ``{"W": [D, G*H, I], "R": [D, G*H, H], "B": [D, 2*G*H] or None,
        "hidden_size": H}``, plus ``"P": [D, 3*H] or None`` (blocks ``Pi, Po, Pf``) for
        LSTM and ``"linear_before_reset"`` (1 if ``reset_after`` else 0) for GRU, so
        ``from_onnx(kind, **to_onnx(kind, p), direction=...)`` works. A bidirectional
        LSTM with peepholes in one direction only gets zeros in the other's row of
        ``P``; importing it back then yields both ``weight_peephole`` keys.

    Raises:
        TypeError, ValueError: as :func:`from_onnx`; also missing/unexpected keys (e.g.
        ``*_reverse`` keys unless "bidirectional", ``weight_peephole`` for a kind other
        than "lstm"), inconsistent directions or a conflicting ``reset_after``.
    """
    G = _check_kind(kind)
    D = _check_direction(direction)
    suffixes = ("", "_reverse")[:D]
    if kind != "lstm" and isinstance(params, Mapping):
        peep = sorted(k for k in params if k in ("weight_peephole", "weight_peephole_reverse"))
        if peep:
            raise ValueError(
                f"params: {peep[0]!r}: peepholes exist only for kind='lstm', not {kind!r}"
            )
    _check_param_keys(params, suffixes, _LAYER_NAMES if kind == "lstm" else _PARAM_NAMES)
    flag = _resolve_reset_after(kind, params, reset_after)
    dirs = []
    dtype = None
    for s in suffixes:
        w_ih, w_hh, b_ih, b_hh, I, H = _native_direction(kind, params, s, dtype)
        dtype = w_ih.dtype
        dirs.append((w_ih, w_hh, b_ih, b_hh, I, H))
    if D == 2 and dirs[1][4:] != dirs[0][4:]:
        raise ValueError(
            "params: the reverse direction has (I, H) = "
            f"{dirs[1][4:]}, the forward direction {dirs[0][4:]}"
        )
    H = dirs[0][5]
    has_bias = any(d[2] is not None or d[3] is not None for d in dirs)
    perm = _ONNX_TO[kind]
    W = np.stack([_permute_blocks(d[0], perm) for d in dirs])
    R = np.stack([_permute_blocks(d[1], perm) for d in dirs])
    B = None
    if has_bias:
        zeros = np.zeros(G * H, dtype)
        B = np.stack(
            [
                np.concatenate(
                    [
                        _permute_blocks(zeros if d[2] is None else d[2], perm),
                        _permute_blocks(zeros if d[3] is None else d[3], perm),
                    ]
                )
                for d in dirs
            ]
        )
    out: dict[str, Any] = {"W": W, "R": R, "B": B, "hidden_size": H}
    if kind == "lstm":
        peeps = [_native_peephole(params, s, H, dtype) for s in suffixes]
        P = None
        if any(p is not None for p in peeps):
            zeros = np.zeros(3 * H, dtype)
            P = np.stack(
                [_permute_blocks(zeros if p is None else p, _ONNX_PEEPHOLE_PERM) for p in peeps]
            )
        out["P"] = P
    if kind == "gru":
        out["linear_before_reset"] = int(flag)
    return out


# --------------------------------------------------------------------------------------
# Whole models
# --------------------------------------------------------------------------------------

_STACKED_NAME = re.compile(
    r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_peephole)_l(\d+)(_reverse)?$"
)


def stack_layers(layers: Sequence[LayerParams]) -> dict[str, np.ndarray]:
    """Combine per-layer dicts into one PyTorch-named parameter dict.

    Layer ``k`` is ``layers[k]``: a per-layer dict (short names, ``*_reverse`` for a
    bidirectional layer), or a ``(forward, reverse)`` pair of one-direction dicts (e.g.
    the two halves of a Keras ``Bidirectional`` layer). The result maps
    ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` (and
    ``..._l{k}_reverse``) to the arrays (not copied); ``None`` biases are left out. An
    LSTM layer's ``weight_peephole`` becomes ``weight_peephole_l{k}`` (and
    ``weight_peephole_l{k}_reverse``); PyTorch has no such parameter.

    ``reset_after`` (GRU) is not a parameter: every layer's value must agree and it is
    dropped (the model is built with it). Checks: every layer has the same number of
    directions and dtype, layer ``k > 0`` has input size ``D*H`` of layer ``k-1``, a
    ``weight_peephole`` belongs to an LSTM layer (``weight_hh`` has 4*H rows) and is
    ``(3*H,)``.

    Raises:
        TypeError: a layer that is neither a mapping nor a pair; mixed dtypes.
        ValueError: empty ``layers``, missing/unexpected keys, inconsistent sizes,
            directions or ``reset_after``, a misplaced or misshapen ``weight_peephole``.
    """
    if isinstance(layers, Mapping) or not isinstance(layers, Sequence) or not layers:
        raise ValueError("layers: expected a non-empty sequence of per-layer dicts")
    out: dict[str, np.ndarray] = {}
    flags: set[bool] = set()
    D_all = None
    dtype = None
    prev_out = None
    for k, layer in enumerate(layers):
        if isinstance(layer, tuple):
            if len(layer) != 2 or not all(isinstance(p, Mapping) for p in layer):
                raise TypeError(f"layers[{k}]: expected a dict or a (forward, reverse) pair")
            fwd, rev = layer
            for name, p in (("forward", fwd), ("reverse", rev)):
                if any(key.endswith("_reverse") for key in p):
                    raise ValueError(f"layers[{k}]: the {name} dict has *_reverse keys")
            merged: dict[str, Any] = dict(fwd)
            merged.update({key + "_reverse": v for key, v in rev.items() if key != "reset_after"})
            for p in (fwd, rev):
                if "reset_after" in p:
                    flags.add(_check_bool(f"layers[{k}]['reset_after']", p["reset_after"]))
            merged.pop("reset_after", None)
            layer = merged
        elif isinstance(layer, Mapping):
            if "reset_after" in layer:
                flags.add(_check_bool(f"layers[{k}]['reset_after']", layer["reset_after"]))
        else:
            raise TypeError(f"layers[{k}]: expected a dict or a (forward, reverse) pair")
        D = 2 if any(key.endswith("_reverse") for key in layer) else 1
        if D_all is not None and D != D_all:
            raise ValueError(f"layers[{k}]: has {D} direction(s), layer 0 has {D_all}")
        D_all = D
        suffixes = ("", "_reverse")[:D]
        try:
            _check_param_keys(layer, suffixes, _LAYER_NAMES)
        except ValueError as e:
            raise ValueError(f"layers[{k}]: {e}") from None
        for s in suffixes:
            w_ih = np.asarray(layer["weight_ih" + s])
            w_hh = np.asarray(layer["weight_hh" + s])
            if w_ih.ndim != 2 or w_hh.ndim != 2 or w_hh.shape[1] == 0:
                raise ValueError(f"layers[{k}]: weight_ih{s}/weight_hh{s} must be 2-D")
            if dtype is None:
                dtype = w_ih.dtype
            H = w_hh.shape[1]
            if prev_out is not None and w_ih.shape[1] != prev_out:
                raise ValueError(
                    f"layers[{k}]: weight_ih{s} has input size {w_ih.shape[1]}, expected "
                    f"{prev_out} (directions x hidden size of layer {k - 1})"
                )
            for n in _LAYER_NAMES:
                v = layer.get(n + s)
                if v is None:
                    continue
                name = f"layers[{k}]['{n}{s}']"
                v = _float(name, v, dtype, "layers[0]['weight_ih']")
                if n == "weight_peephole":
                    if w_hh.shape[0] != 4 * H:
                        raise ValueError(
                            f"{name}: peepholes exist only for LSTM layers (weight_hh with "
                            f"4*H = {4 * H} rows), got weight_hh{s} with {w_hh.shape[0]} rows"
                        )
                    v = _check_float_array(name, v, (3 * H,), None, "(3*H,)")
                out[f"{n}_l{k}{s}"] = v
        prev_out = D * H
    if len(flags) > 1:
        raise ValueError("layers: 'reset_after' differs between layers")
    return out


def unstack_layers(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Split a PyTorch-named parameter dict into per-layer dicts (inverse of stack_layers).

    Returns one dict per layer ``0..L-1`` with the short names (and ``*_reverse`` for
    bidirectional layers); a missing bias is ``None``; ``weight_peephole_l{k}[_reverse]``
    becomes ``weight_peephole[_reverse]`` and is present only if given. No
    ``reset_after`` is added.

    Raises:
        ValueError: a key that is not ``{weight,bias}_{ih,hh}_l{k}[_reverse]`` or
            ``weight_peephole_l{k}[_reverse]``, a layer index gap, or a layer without
            ``weight_ih``/``weight_hh``.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state: expected a mapping of parameter names, got {type(state)}")
    layers: dict[int, dict[str, Any]] = {}
    for key, value in state.items():
        m = _STACKED_NAME.match(key) if isinstance(key, str) else None
        if m is None:
            raise ValueError(
                f"state: unexpected key {key!r}; expected names like 'weight_ih_l0', "
                "'bias_hh_l1_reverse' or 'weight_peephole_l0'"
            )
        name, k, s = m.group(1), int(m.group(2)), m.group(3) or ""
        layers.setdefault(k, {})[name + s] = value
    if not layers:
        raise ValueError("state: no parameters")
    if sorted(layers) != list(range(len(layers))):
        raise ValueError(f"state: layer indices must be 0..L-1, got {sorted(layers)}")
    result = []
    for k in range(len(layers)):
        layer = layers[k]
        suffixes = ("", "_reverse") if any(n.endswith("_reverse") for n in layer) else ("",)
        for s in suffixes:
            for n in _PARAM_NAMES:
                if n.startswith("weight") and n + s not in layer:
                    raise ValueError(f"state: missing {n}_l{k}{s}")
                layer.setdefault(n + s, None)
        result.append(
            {
                n + s: layer[n + s]
                for s in suffixes
                for n in _LAYER_NAMES
                if n in _PARAM_NAMES or n + s in layer
            }
        )
    return result
