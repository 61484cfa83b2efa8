"""Reusable test helpers: random weights and cases, upstream gradients, named comparisons.

Inputs are drawn so that gates do not saturate: ``x`` ~ U(-1, 1), each weight matrix
~ U(-1, 1) / sqrt(fan_in) (fan_in = I for ``weight_ih``, H for ``weight_hh``), biases
~ U(-0.5, 0.5) / sqrt(H), states ~ U(-0.5, 0.5). Pre-activations then have a standard
deviation of roughly 0.5, where sigmoid and tanh are far from flat.

Every helper takes the ``rng`` (``np.random.Generator``) to draw from, so each test gets
fresh, reproducible inputs (see the ``rng`` fixture in ``conftest.py``).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

#: Gates per cell kind (rows of the weights are G*H).
GATES: dict[str, int] = {"rnn": 1, "lstm": 4, "gru": 3}

KINDS: tuple[str, ...] = ("rnn", "lstm", "gru")


def random_weights(
    kind: str,
    I: int,
    H: int,
    dtype: Any,
    rng: np.random.Generator,
    bias: bool = True,
    scale: float | None = None,
) -> dict[str, np.ndarray | None]:
    """Random parameters of one ``kind`` cell in PyTorch layout.

    Returns ``{"weight_ih": (G*H, I), "weight_hh": (G*H, H), "bias_ih": (G*H,) or None,
    "bias_hh": (G*H,) or None}`` of ``dtype``. With ``scale`` given, every entry is
    U(-scale, scale); by default weights are U(-1, 1)/sqrt(fan_in) and biases
    U(-0.5, 0.5)/sqrt(H) (gates stay unsaturated).
    """
    G = GATES[kind]
    dtype = np.dtype(dtype)

    def uniform(shape: tuple[int, ...], half_width: float) -> np.ndarray:
        return rng.uniform(-half_width, half_width, shape).astype(dtype)

    s_ih = scale if scale is not None else 1.0 / np.sqrt(max(I, 1))
    s_hh = scale if scale is not None else 1.0 / np.sqrt(H)
    s_b = scale if scale is not None else 0.5 / np.sqrt(H)
    return {
        "weight_ih": uniform((G * H, I), s_ih),
        "weight_hh": uniform((G * H, H), s_hh),
        "bias_ih": uniform((G * H,), s_b) if bias else None,
        "bias_hh": uniform((G * H,), s_b) if bias else None,
    }


def random_case(
    kind: str,
    T: int,
    N: int,
    I: int,
    H: int,
    dtype: Any,
    rng: np.random.Generator,
    bias: bool = True,
    scale: float | None = None,
    zero_state: bool = False,
) -> dict[str, np.ndarray | None]:
    """Keyword arguments for ``reference.<kind>(**case)``.

    Keys: ``x`` (T, N, I), ``h0`` (N, H), ``c0`` (N, H; lstm only), and the keys of
    :func:`random_weights`. ``zero_state=True`` passes ``h0``/``c0`` as ``None``.
    """
    dtype = np.dtype(dtype)
    case: dict[str, np.ndarray | None] = {
        "x": rng.uniform(-1.0, 1.0, (T, N, I)).astype(dtype),
        "h0": None if zero_state else rng.uniform(-0.5, 0.5, (N, H)).astype(dtype),
    }
    if kind == "lstm":
        case["c0"] = None if zero_state else rng.uniform(-0.5, 0.5, (N, H)).astype(dtype)
    case.update(random_weights(kind, I, H, dtype, rng, bias=bias, scale=scale))
    return case


def random_upstream(
    kind: str, T: int, N: int, H: int, dtype: Any, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Random upstream gradients: ``dy`` (T, N, H), ``dh_n`` (N, H), ``dc_n`` (lstm)."""
    dtype = np.dtype(dtype)
    up = {
        "dy": rng.standard_normal((T, N, H)).astype(dtype),
        "dh_n": rng.standard_normal((N, H)).astype(dtype),
    }
    if kind == "lstm":
        up["dc_n"] = rng.standard_normal((N, H)).astype(dtype)
    return up


def split_output(kind: str, out: tuple) -> tuple[np.ndarray, dict[str, np.ndarray], Any]:
    """``(y, states, tape_or_None)`` from any forward's return value.

    ``states`` is ``{"h_n": ...}`` (plus ``"c_n"`` for lstm).
    """
    tape = out[2] if len(out) == 3 else None
    if kind == "lstm":
        y, (h_n, c_n) = out[0], out[1]
        return y, {"h_n": h_n, "c_n": c_n}, tape
    return out[0], {"h_n": out[1]}, tape


def scalar_loss(kind: str, out: tuple, up: dict[str, np.ndarray]) -> float:
    """``L = sum(y*dy) + sum(h_n*dh_n) (+ sum(c_n*dc_n))``, accumulated in float64."""
    y, states, _ = split_output(kind, out)
    total = np.sum(np.asarray(y, np.float64) * up["dy"])
    total += np.sum(np.asarray(states["h_n"], np.float64) * up["dh_n"])
    if kind == "lstm":
        total += np.sum(np.asarray(states["c_n"], np.float64) * up["dc_n"])
    return float(total)


def backward(
    module: Any, kind: str, tape: Any, up: dict[str, np.ndarray], **kw: Any
) -> dict[str, Any]:
    """Call ``module.<kind>_backward`` with the upstream gradients in ``up`` (and ``kw``,
    e.g. ``_poison=True`` for the native backend)."""
    fn = getattr(module, f"{kind}_backward")
    if kind == "lstm":
        return fn(tape, up["dy"], up["dh_n"], up["dc_n"], **kw)
    return fn(tape, up["dy"], up["dh_n"], **kw)


def packs_weights(kind: str, size: tuple, dtype: Any = np.float32, backward: bool = False) -> bool:
    """Whether the native forward's workspace for ``size`` = (T, N, I, H) holds packed
    copies of weight_ih and weight_hh (the backward's: of weight_hh; sizes with T*N well
    below H, so dG alone cannot pass that)."""
    import fastrnn

    T, N, I, H = size
    f64 = np.dtype(dtype) == np.float64
    work = fastrnn._core.seq_work_elements(kind, T, N, I, H, f64, backward=backward)
    return work >= GATES[kind] * H * (H if backward else I + H)


def assert_same_grads(got: dict, want: dict, what: str = "grad") -> None:
    """Two gradient dicts bit for bit: every key of ``want``, None exactly where it is None."""
    for key, w in want.items():
        if w is None:
            assert got[key] is None, f"{what} {key}"
        else:
            np.testing.assert_array_equal(got[key], w, err_msg=f"{what} {key}")


def central_differences(
    loss: Callable[[], float], x: np.ndarray, idx: Any = None, eps: float = 1e-6
) -> np.ndarray:
    """dloss/dx by central differences, perturbing ``x`` in place (restored after): at the
    flat indices ``idx`` (a 1-D array of them), or with ``idx`` None at every element, in
    ``x``'s shape. ``x`` must be C-contiguous (its flat view is written)."""
    flat = x.reshape(-1)
    assert np.shares_memory(flat, x), "central_differences: x must be C-contiguous"
    points = np.arange(flat.size) if idx is None else np.asarray(idx)
    numeric = np.empty(points.size)
    for k, j in enumerate(points):
        old = flat[j]
        flat[j] = old + eps
        plus = loss()
        flat[j] = old - eps
        minus = loss()
        flat[j] = old
        numeric[k] = (plus - minus) / (2 * eps)
    return numeric.reshape(x.shape) if idx is None else numeric


def assert_thread_counts_agree(run: Callable[[], tuple]) -> None:
    """``run()`` under 1 and then 2 threads (the count restored after) must give the same
    bits: it returns arrays and, last, a gradient dict."""
    import fastrnn

    results = []
    for nt in (1, 2):
        before = fastrnn.get_num_threads()
        fastrnn.set_num_threads(nt)
        try:
            results.append(run())
        finally:
            fastrnn.set_num_threads(before)
    (*arrays1, g1), (*arrays2, g2) = results
    for a, b in zip(arrays1, arrays2):
        np.testing.assert_array_equal(b, a)
    assert_same_grads(g2, g1)


def assert_allclose_named(
    name: str, got: Any, want: Any, rtol: float = 1e-7, atol: float = 0.0
) -> None:
    """``np.testing.assert_allclose`` with a message naming the quantity and the worst
    element (index, got, want, absolute and relative error)."""
    got = np.asarray(got)
    want = np.asarray(want)
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {got.shape} != expected {want.shape}")
    if got.size == 0:
        return
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    bad = ~np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    if not bad.any():
        return
    err = np.where(bad, np.abs(g - w), -np.inf)
    idx = np.unravel_index(int(np.argmax(err)), err.shape)
    denom = abs(w[idx]) if w[idx] != 0 else 1.0
    raise AssertionError(
        f"{name}: {int(bad.sum())} of {got.size} elements differ (rtol={rtol:g}, atol={atol:g});"
        f" worst at {tuple(int(i) for i in idx)}: got {g[idx]!r}, want {w[idx]!r},"
        f" abs err {abs(g[idx] - w[idx]):.3e}, rel err {abs(g[idx] - w[idx]) / denom:.3e}"
    )


def assert_grads_close(
    got: dict[str, Any], want: dict[str, Any], rtol: float = 1e-7, atol: float = 0.0
) -> None:
    """Compare two gradient dicts key by key (``None`` must match ``None``)."""
    assert set(got) == set(want), f"gradient keys differ: {sorted(got)} != {sorted(want)}"
    for key in want:
        if want[key] is None or got[key] is None:
            assert got[key] is None and want[key] is None, f"{key}: one gradient is None"
            continue
        assert_allclose_named(f"grad {key}", got[key], want[key], rtol=rtol, atol=atol)


def random_lengths(T: int, N: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) int64 lengths in [1, T]; when N >= 2 one sample has length T and one length 1
    (so both extremes are always exercised)."""
    lengths = rng.integers(1, T + 1, size=N).astype(np.int64)
    if N >= 2:
        order = rng.permutation(N)
        lengths[order[0]] = T
        lengths[order[1]] = 1
    return lengths


# (kind, extra keyword arguments) for every cell variant, and their test ids.
VARIANTS = [
    ("rnn", {"nonlinearity": "tanh"}),
    ("rnn", {"nonlinearity": "relu"}),
    ("rnn", {"nonlinearity": "sigmoid"}),
    ("lstm", {}),
    ("gru", {"reset_after": True}),
    ("gru", {"reset_after": False}),
]
VARIANT_IDS = ["rnn-tanh", "rnn-relu", "rnn-sigmoid", "lstm", "gru", "gru-reset-before"]


def call_without_warning(category: type[Warning], fn: Callable[[], Any]) -> Any:
    """``fn()``, asserting that it warns nothing of ``category`` (even a warning already
    shown once); returns its result."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = fn()
    assert not [w for w in rec if issubclass(w.category, category)]
    return out
