"""fastrnn.interop: Keras and ONNX weight conventions.

Round trips must be exact. Semantics are checked against small NumPy implementations of
the foreign conventions written here from their documented equations (Keras layer code
and the ONNX operator spec): run on random inputs with the foreign weights, they must
match ``fastrnn.reference`` on the converted weights to ~1e-12 in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn import functional, interop
from fastrnn import reference as ref
from helpers import GATES, random_weights

T, N, I, H = 5, 3, 4, 6
RTOL, ATOL = 1e-12, 1e-13


def sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


# --------------------------------------------------------------------------------------
# Foreign conventions, written from their documentation
# --------------------------------------------------------------------------------------


def keras_run(kind, kernel, recurrent_kernel, bias, x, h0, c0=None, reset_after=True):
    """Keras SimpleRNN/LSTM/GRU cell loop; x (T, N, I) time-major; returns y, h (, c)."""
    u = recurrent_kernel.shape[0]
    h, c = h0.copy(), None if c0 is None else c0.copy()
    ys = []
    if bias is None:
        in_b = rec_b = 0.0
    elif kind == "gru" and reset_after:
        in_b, rec_b = bias[0], bias[1]
    else:
        in_b, rec_b = bias, 0.0
    for xt in x:
        if kind == "rnn":
            h = np.tanh(xt @ kernel + in_b + h @ recurrent_kernel)
        elif kind == "lstm":
            zz = xt @ kernel + h @ recurrent_kernel + in_b
            i = sigmoid(zz[:, :u])
            f = sigmoid(zz[:, u : 2 * u])
            c = f * c + i * np.tanh(zz[:, 2 * u : 3 * u])
            o = sigmoid(zz[:, 3 * u :])
            h = o * np.tanh(c)
        else:
            mx = xt @ kernel + in_b
            x_z, x_r, x_h = mx[:, :u], mx[:, u : 2 * u], mx[:, 2 * u :]
            if reset_after:
                inner = h @ recurrent_kernel + rec_b
            else:
                inner = h @ recurrent_kernel[:, : 2 * u]
            z = sigmoid(x_z + inner[:, :u])
            r = sigmoid(x_r + inner[:, u : 2 * u])
            if reset_after:
                rec_h = r * inner[:, 2 * u :]
            else:
                rec_h = (r * h) @ recurrent_kernel[:, 2 * u :]
            hh = np.tanh(x_h + rec_h)
            h = z * h + (1 - z) * hh
        ys.append(h)
    return (np.stack(ys), h) if kind != "lstm" else (np.stack(ys), h, c)


def onnx_run(kind, W, R, B, x, initial_h, initial_c=None, direction="forward", lbr=0, P=None):
    """ONNX RNN/LSTM/GRU: X [T, N, I]; returns Y [T, D, N, H], Y_h [D, N, H] (, Y_c).

    ``P`` [D, 3*H]: LSTM peepholes, blocks i, o, f (None: zeros, as in ONNX).
    """
    D, Hh = W.shape[0], R.shape[2]
    G = W.shape[1] // Hh
    Y = np.zeros((x.shape[0], D, x.shape[1], Hh))
    Y_h, Y_c = np.zeros((D, x.shape[1], Hh)), np.zeros((D, x.shape[1], Hh))
    for d in range(D):
        Wd, Rd = W[d], R[d]
        Wb = np.zeros(G * Hh) if B is None else B[d, : G * Hh]
        Rb = np.zeros(G * Hh) if B is None else B[d, G * Hh :]
        blk = [slice(k * Hh, (k + 1) * Hh) for k in range(G)]
        Ht = initial_h[d].copy()
        Ct = None if initial_c is None else initial_c[d].copy()
        backward = direction == "reverse" or d == 1
        steps = range(x.shape[0] - 1, -1, -1) if backward else range(x.shape[0])
        for t in steps:
            Xt = x[t]
            # Xt*(W^T) + Ht-1*(R^T) + Wb + Rb for each gate block
            lin = [Xt @ Wd[b].T + Ht @ Rd[b].T + Wb[b] + Rb[b] for b in blk]
            if kind == "rnn":
                Ht = np.tanh(lin[0])
            elif kind == "lstm":  # gates i, o, f, c; peepholes i, o, f
                Pi, Po, Pf = (0.0, 0.0, 0.0) if P is None else (P[d][b] for b in blk[:3])
                it = sigmoid(lin[0] + Pi * Ct)  # Pi (.) Ct-1
                ft = sigmoid(lin[2] + Pf * Ct)  # Pf (.) Ct-1
                ct = np.tanh(lin[3])
                Ct = ft * Ct + it * ct
                ot = sigmoid(lin[1] + Po * Ct)  # Po (.) Ct, the new cell state
                Ht = ot * np.tanh(Ct)
            else:  # gates z, r, h
                zt, rt = sigmoid(lin[0]), sigmoid(lin[1])
                h = blk[2]
                if lbr == 0:
                    ht = np.tanh(Xt @ Wd[h].T + (rt * Ht) @ Rd[h].T + Rb[h] + Wb[h])
                else:
                    ht = np.tanh(Xt @ Wd[h].T + rt * (Ht @ Rd[h].T + Rb[h]) + Wb[h])
                Ht = (1 - zt) * ht + zt * Ht
            Y[t, d] = Ht
        Y_h[d] = Ht
        if Ct is not None:
            Y_c[d] = Ct
    return (Y, Y_h) if kind != "lstm" else (Y, Y_h, Y_c)


# --------------------------------------------------------------------------------------
# Random foreign weights
# --------------------------------------------------------------------------------------


def keras_weights(kind, rng, dtype=np.float64, reset_after=True, bias=True):
    G = GATES[kind]
    out = {
        "kernel": rng.uniform(-0.5, 0.5, (I, G * H)).astype(dtype),
        "recurrent_kernel": rng.uniform(-0.4, 0.4, (H, G * H)).astype(dtype),
        "bias": None,
    }
    if bias:
        shape = (2, 3 * H) if kind == "gru" and reset_after else (G * H,)
        out["bias"] = rng.uniform(-0.3, 0.3, shape).astype(dtype)
    return out


def onnx_weights(kind, rng, D, dtype=np.float64, bias=True, peephole=False, i=I, h=H):
    """ONNX inputs W, R, B (and P [D, 3*h] with ``peephole``) for input size i, hidden h."""
    G = GATES[kind]
    out = {
        "W": rng.uniform(-0.5, 0.5, (D, G * h, i)).astype(dtype),
        "R": rng.uniform(-0.4, 0.4, (D, G * h, h)).astype(dtype),
        "B": rng.uniform(-0.3, 0.3, (D, 2 * G * h)).astype(dtype) if bias else None,
    }
    if peephole:
        out["P"] = rng.uniform(-0.8, 0.8, (D, 3 * h)).astype(dtype)
    return out


# (kind, reset_after): the GRU comes in both variants
KERAS_VARIANTS = [("rnn", True), ("lstm", True), ("gru", True), ("gru", False)]
ONNX_VARIANTS = [("rnn", 0), ("lstm", 0), ("gru", 0), ("gru", 1)]
DIRECTIONS = list(interop.ONNX_DIRECTIONS)


def run_ref(kind, params, x, h0, c0=None, reverse=False):
    """fastrnn.reference on a one-direction dict; returns (y, h_n[, c_n])."""
    fn = getattr(ref, kind)
    if kind == "lstm":
        y, (h, c) = fn(x, h0, c0, **params, reverse=reverse)
        return y, h, c
    return fn(x, h0, **params, reverse=reverse)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray) or isinstance(b[k], np.ndarray):
            assert a[k].dtype == b[k].dtype, k
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def direction_params(p, d):
    s = "_reverse" if d == 1 else ""
    out = {n: p[n + s] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    if "weight_peephole" + s in p:
        out["weight_peephole"] = p["weight_peephole" + s]
    if "reset_after" in p:
        out["reset_after"] = p["reset_after"]
    return out


# --------------------------------------------------------------------------------------
# Keras
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("kind", "reset_after"), KERAS_VARIANTS)
def test_keras_round_trip(kind, reset_after, bias, dtype, rng):
    w = keras_weights(kind, rng, dtype, reset_after, bias)
    p = interop.from_keras(kind, **w, reset_after=reset_after)
    for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        assert p[n] is None if not bias and n.startswith("bias") else p[n].dtype == dtype
    back = interop.to_keras(kind, p)
    if kind == "gru":
        assert p["reset_after"] is reset_after
        w = {**w, "reset_after": reset_after}
    assert_same(back, w)


@pytest.mark.parametrize(("kind", "reset_after"), KERAS_VARIANTS)
def test_keras_import_matches_keras_equations(kind, reset_after, rng):
    w = keras_weights(kind, rng, reset_after=reset_after)
    x = rng.uniform(-1, 1, (T, N, I))
    h0 = rng.uniform(-0.5, 0.5, (N, H))
    c0 = rng.uniform(-0.5, 0.5, (N, H)) if kind == "lstm" else None
    want = keras_run(kind, **w, x=x, h0=h0, c0=c0, reset_after=reset_after)
    got = run_ref(kind, interop.from_keras(kind, **w, reset_after=reset_after), x, h0, c0)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("kind", "reset_after"), KERAS_VARIANTS)
def test_keras_export_matches_keras_equations(kind, reset_after, rng):
    """Native weights with non-zero bias_hh: folding the biases keeps the function."""
    p = random_weights(kind, I, H, np.float64, rng)
    if kind == "gru":
        p["reset_after"] = reset_after
    x = rng.uniform(-1, 1, (T, N, I))
    h0 = rng.uniform(-0.5, 0.5, (N, H))
    c0 = rng.uniform(-0.5, 0.5, (N, H)) if kind == "lstm" else None
    w = interop.to_keras(kind, p)
    want = run_ref(kind, p, x, h0, c0)
    got = keras_run(kind, w["kernel"], w["recurrent_kernel"], w["bias"], x, h0, c0, reset_after)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    # and back: same function again (biases now folded into bias_ih where Keras has one)
    again = interop.from_keras(kind, **w)
    for a, b in zip(run_ref(kind, again, x, h0, c0), want):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def test_keras_gru_reset_after_native_round_trip_is_exact(rng):
    p = {**random_weights("gru", I, H, np.float32, rng), "reset_after": True}
    assert_same(interop.from_keras("gru", **interop.to_keras("gru", p)), p)


# --------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(("kind", "lbr"), ONNX_VARIANTS)
def test_onnx_round_trip(kind, lbr, direction, bias, dtype, rng):
    D = 2 if direction == "bidirectional" else 1
    w = onnx_weights(kind, rng, D, dtype, bias)
    extra = {"linear_before_reset": lbr} if kind == "gru" else {}
    p = interop.from_onnx(kind, **w, direction=direction, **extra)
    assert ("weight_ih_reverse" in p) == (D == 2)
    assert "weight_peephole" not in p
    back = interop.to_onnx(kind, p, direction=direction)
    peep = {"P": None} if kind == "lstm" else {}
    assert_same(back, {**w, "hidden_size": H, **peep, **extra})
    # and the other way: fastrnn -> ONNX -> fastrnn is lossless too
    assert_same(interop.from_onnx(kind, **back, direction=direction), p)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(("kind", "lbr"), ONNX_VARIANTS)
def test_onnx_import_matches_onnx_equations(kind, lbr, direction, rng):
    D = 2 if direction == "bidirectional" else 1
    w = onnx_weights(kind, rng, D)
    x = rng.uniform(-1, 1, (T, N, I))
    h0 = rng.uniform(-0.5, 0.5, (D, N, H))
    c0 = rng.uniform(-0.5, 0.5, (D, N, H)) if kind == "lstm" else None
    want = onnx_run(kind, **w, x=x, initial_h=h0, initial_c=c0, direction=direction, lbr=lbr)
    extra = {"linear_before_reset": lbr} if kind == "gru" else {}
    p = interop.from_onnx(kind, **w, direction=direction, **extra)
    if kind == "gru":
        assert p["reset_after"] is bool(lbr)
    for d in range(D):
        reverse = direction == "reverse" or d == 1
        got = run_ref(
            kind, direction_params(p, d), x, h0[d], None if c0 is None else c0[d], reverse
        )
        np.testing.assert_allclose(got[0], want[0][:, d], rtol=RTOL, atol=ATOL)
        for a, b in zip(got[1:], want[1:]):
            np.testing.assert_allclose(a, b[d], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("kind", "reset_after"), KERAS_VARIANTS)
def test_onnx_export_matches_onnx_equations(kind, reset_after, rng):
    p = {
        **random_weights(kind, I, H, np.float64, rng),
        **{k + "_reverse": v for k, v in random_weights(kind, I, H, np.float64, rng).items()},
    }
    w = interop.to_onnx(kind, p, direction="bidirectional", reset_after=reset_after)
    x = rng.uniform(-1, 1, (T, N, I))
    h0 = rng.uniform(-0.5, 0.5, (2, N, H))
    c0 = rng.uniform(-0.5, 0.5, (2, N, H)) if kind == "lstm" else None
    lbr = w.get("linear_before_reset", 0)
    assert lbr == int(reset_after) or kind != "gru"
    want = onnx_run(kind, w["W"], w["R"], w["B"], x, h0, c0, "bidirectional", lbr)
    for d in range(2):
        q = direction_params(p, d)
        if kind == "gru":
            q["reset_after"] = reset_after
        got = run_ref(kind, q, x, h0[d], None if c0 is None else c0[d], d == 1)
        np.testing.assert_allclose(want[0][:, d], got[0], rtol=RTOL, atol=ATOL)
        for a, b in zip(want[1:], got[1:]):
            np.testing.assert_allclose(a[d], b, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_onnx_peephole_round_trip(direction, bias, dtype, rng):
    D = 2 if direction == "bidirectional" else 1
    w = onnx_weights("lstm", rng, D, dtype, bias, peephole=True)
    p = interop.from_onnx("lstm", **w, direction=direction)
    names = ("weight_peephole", "weight_peephole_reverse")[:D]
    assert [k for k in p if k.startswith("weight_peephole")] == list(names)
    for n in names:
        assert p[n].dtype == dtype
        assert p[n].shape == (3 * H,)
    back = interop.to_onnx("lstm", p, direction=direction)
    assert_same(back, {**w, "hidden_size": H})
    assert_same(interop.from_onnx("lstm", **back, direction=direction), p)


def test_onnx_peephole_block_order(rng):
    """ONNX P holds blocks i, o, f; weight_peephole holds i, f, o."""
    w = onnx_weights("lstm", rng, 2)
    blocks = np.repeat(np.arange(1.0, 7.0), H).reshape(2, 3 * H)  # [[1, 2, 3], [4, 5, 6]]
    p = interop.from_onnx("lstm", **w, direction="bidirectional", P=blocks)
    np.testing.assert_array_equal(p["weight_peephole"], np.repeat([1.0, 3.0, 2.0], H))
    np.testing.assert_array_equal(p["weight_peephole_reverse"], np.repeat([4.0, 6.0, 5.0], H))
    o = interop.to_onnx("lstm", p, direction="bidirectional")
    np.testing.assert_array_equal(o["P"], blocks)


def test_onnx_zero_peepholes_round_trip(rng):
    """An explicit all-zero P is kept (as zero peepholes), so it survives a round trip."""
    w = onnx_weights("lstm", rng, 1)
    zeros = np.zeros((1, 3 * H))
    p = interop.from_onnx("lstm", **w, P=zeros)
    assert_same(p, {**interop.from_onnx("lstm", **w), "weight_peephole": zeros[0]})
    assert_same(interop.to_onnx("lstm", p), {**w, "P": zeros, "hidden_size": H})


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_onnx_peephole_import_matches_onnx_equations(direction, backend, rng):
    """Odd sizes; peepholes large enough that swapping any two of its blocks shows."""
    t, n, i, h = 5, 3, 4, 7
    D = 2 if direction == "bidirectional" else 1
    w = onnx_weights("lstm", rng, D, peephole=True, i=i, h=h)
    x = rng.uniform(-1, 1, (t, n, i))
    h0 = rng.uniform(-0.5, 0.5, (D, n, h))
    c0 = rng.uniform(-0.5, 0.5, (D, n, h))
    want = onnx_run("lstm", **w, x=x, initial_h=h0, initial_c=c0, direction=direction)
    # the peepholes matter: without them the ONNX outputs differ far beyond the tolerance
    plain = onnx_run("lstm", w["W"], w["R"], w["B"], x, h0, c0, direction)
    assert np.abs(plain[0] - want[0]).max() > 1e-3
    p = interop.from_onnx("lstm", **w, direction=direction, hidden_size=h)
    for d in range(D):
        reverse = direction == "reverse" or d == 1
        y, (h_n, c_n) = functional.lstm(
            x, h0[d], c0[d], **direction_params(p, d), reverse=reverse, backend=backend
        )
        np.testing.assert_allclose(y, want[0][:, d], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(h_n, want[1][d], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(c_n, want[2][d], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_onnx_peephole_export_matches_onnx_equations(backend, rng):
    """Peepholes in the forward direction only: the reverse row of P is zeros."""
    t, n, i, h = 5, 3, 4, 7
    p = {
        **random_weights("lstm", i, h, np.float64, rng),
        **{k + "_reverse": v for k, v in random_weights("lstm", i, h, np.float64, rng).items()},
        "weight_peephole": rng.uniform(-0.8, 0.8, 3 * h),
    }
    w = interop.to_onnx("lstm", p, direction="bidirectional")
    assert w["P"].shape == (2, 3 * h)
    np.testing.assert_array_equal(w["P"][1], np.zeros(3 * h))
    x = rng.uniform(-1, 1, (t, n, i))
    h0 = rng.uniform(-0.5, 0.5, (2, n, h))
    c0 = rng.uniform(-0.5, 0.5, (2, n, h))
    want = onnx_run("lstm", **{k: w[k] for k in "WRBP"}, x=x, initial_h=h0, initial_c=c0,
                    direction="bidirectional")  # fmt: skip
    for d in range(2):
        y, (h_n, c_n) = functional.lstm(
            x, h0[d], c0[d], **direction_params(p, d), reverse=d == 1, backend=backend
        )
        np.testing.assert_allclose(want[0][:, d], y, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(want[1][d], h_n, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(want[2][d], c_n, rtol=RTOL, atol=ATOL)
    # importing it back gives zero peepholes for the reverse direction: the same function
    again = interop.from_onnx("lstm", **w, direction="bidirectional")
    np.testing.assert_array_equal(again["weight_peephole_reverse"], np.zeros(3 * h))
    np.testing.assert_array_equal(again["weight_peephole"], p["weight_peephole"])


def test_keras_to_onnx_through_fastrnn(rng):
    """A Keras GRU (reset_after=True) exported to ONNX needs linear_before_reset=1."""
    w = keras_weights("gru", rng)
    o = interop.to_onnx("gru", interop.from_keras("gru", **w))
    assert o["linear_before_reset"] == 1
    x = rng.uniform(-1, 1, (T, N, I))
    h0 = rng.uniform(-0.5, 0.5, (N, H))
    y_k, h_k = keras_run("gru", **w, x=x, h0=h0)
    y_o, h_o = onnx_run("gru", o["W"], o["R"], o["B"], x, h0[None], lbr=1)
    np.testing.assert_allclose(y_o[:, 0], y_k, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(h_o[0], h_k, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------
# Whole models
# --------------------------------------------------------------------------------------


def test_stack_unstack_round_trip(rng):
    l0 = {**random_weights("gru", I, H, np.float64, rng), "reset_after": False}
    l0.update({k + "_reverse": v for k, v in random_weights("gru", I, H, np.float64, rng).items()})
    fwd = {**random_weights("gru", 2 * H, H, np.float64, rng), "reset_after": False}
    rev = {**random_weights("gru", 2 * H, H, np.float64, rng, bias=False), "reset_after": False}
    sd = interop.stack_layers([l0, (fwd, rev)])
    assert "reset_after" not in sd
    assert "bias_ih_l1_reverse" not in sd
    assert sd["weight_ih_l1_reverse"] is rev["weight_ih"]
    assert len(sd) == 8 + 6
    layers = interop.unstack_layers(sd)
    assert len(layers) == 2
    assert_same(layers[0], {k: v for k, v in l0.items() if k != "reset_after"})
    assert layers[1]["bias_hh_reverse"] is None
    assert interop.stack_layers(layers).keys() == sd.keys()


def test_onnx_layers_to_state_dict(rng):
    """Each ONNX node is one layer; stack_layers names them like PyTorch."""
    nodes = [onnx_weights("lstm", rng, 2) for _ in range(2)]
    nodes[1]["W"] = rng.uniform(-0.5, 0.5, (2, 4 * H, 2 * H))
    sd = interop.stack_layers(
        [interop.from_onnx("lstm", **n, direction="bidirectional") for n in nodes]
    )
    names = {f"{n}_l{k}{s}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
             for k in (0, 1) for s in ("", "_reverse")}  # fmt: skip
    assert sd.keys() == names
    np.testing.assert_array_equal(
        sd["weight_hh_l1_reverse"][H : 2 * H], nodes[1]["R"][1][2 * H : 3 * H]
    )


def test_stack_unstack_peepholes(rng):
    """weight_peephole travels as weight_peephole_l{k}[_reverse], like weight_hr_l{k}."""
    nodes = [onnx_weights("lstm", rng, 2, peephole=True), onnx_weights("lstm", rng, 2)]
    nodes[1]["W"] = rng.uniform(-0.5, 0.5, (2, 4 * H, 2 * H))
    layers = [interop.from_onnx("lstm", **n, direction="bidirectional") for n in nodes]
    fwd = {**random_weights("lstm", 2 * H, H, np.float64, rng)}
    rev = {**fwd, "weight_peephole": rng.uniform(-0.5, 0.5, 3 * H)}
    sd = interop.stack_layers([*layers, (fwd, rev)])
    assert sd["weight_peephole_l0"] is layers[0]["weight_peephole"]
    assert sd["weight_peephole_l0_reverse"] is layers[0]["weight_peephole_reverse"]
    assert sd["weight_peephole_l2_reverse"] is rev["weight_peephole"]
    assert not any(k.startswith("weight_peephole_l1") for k in sd)
    assert "weight_peephole_l2" not in sd
    back = interop.unstack_layers(sd)
    assert_same(back[0], layers[0])
    assert_same(back[1], layers[1])
    assert "weight_peephole" not in back[2]
    assert back[2]["weight_peephole_reverse"] is rev["weight_peephole"]
    assert interop.stack_layers(back).keys() == sd.keys()
    # and on to ONNX: layer 0's P comes back exactly
    assert_same(
        interop.to_onnx("lstm", back[0], direction="bidirectional"), {**nodes[0], "hidden_size": H}
    )


def test_onnx_model_loads_into_torch(rng):
    """Two bidirectional ONNX LSTM nodes -> stack_layers -> torch.nn.LSTM, same outputs."""
    torch = pytest.importorskip("torch")
    nodes = [onnx_weights("lstm", rng, 2), onnx_weights("lstm", rng, 2)]
    nodes[1]["W"] = rng.uniform(-0.5, 0.5, (2, 4 * H, 2 * H))
    sd = interop.stack_layers(
        [interop.from_onnx("lstm", **n, direction="bidirectional") for n in nodes]
    )
    m = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True).double()
    m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    assert interop.stack_layers(interop.unstack_layers(sd)).keys() == m.state_dict().keys()
    x = rng.uniform(-1, 1, (T, N, I))
    h0 = rng.uniform(-0.5, 0.5, (4, N, H))
    c0 = rng.uniform(-0.5, 0.5, (4, N, H))
    inp = x
    for k, n in enumerate(nodes):
        hk, ck = h0[2 * k : 2 * k + 2], c0[2 * k : 2 * k + 2]
        Y, Y_h, Y_c = onnx_run(
            "lstm", **n, x=inp, initial_h=hk, initial_c=ck, direction="bidirectional"
        )
        inp = np.concatenate([Y[:, 0], Y[:, 1]], axis=-1)
    with torch.no_grad():
        y_t, (h_t, c_t) = m(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
    np.testing.assert_allclose(y_t.numpy(), inp, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_t.numpy()[2:], Y_h, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c_t.numpy()[2:], Y_c, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def test_keras_bad_input(rng):
    w = keras_weights("lstm", rng)
    with pytest.raises(ValueError, match=r"kind: expected one of"):
        interop.from_keras("cell", **w)
    with pytest.raises(ValueError, match=r"kernel: expected shape \(I, 4\*H\)"):
        interop.from_keras("lstm", w["kernel"][:, :-1], w["recurrent_kernel"], w["bias"])
    with pytest.raises(
        ValueError, match=r"recurrent_kernel: expected shape \(H, 4\*H\) = \(6, 24\)"
    ):
        interop.from_keras("lstm", w["kernel"], w["recurrent_kernel"][:-1], w["bias"])
    with pytest.raises(ValueError, match=r"bias: expected shape \(4\*H,\) = \(24,\)"):
        interop.from_keras("lstm", w["kernel"], w["recurrent_kernel"], w["bias"][:-1])
    with pytest.raises(
        TypeError,
        match=r"recurrent_kernel: expected dtype float64 \(the dtype of kernel\), got float32",
    ):
        interop.from_keras("lstm", w["kernel"], w["recurrent_kernel"].astype(np.float32))
    with pytest.raises(TypeError, match=r"kernel: expected dtype float32 or float64, got int64"):
        interop.from_keras("rnn", np.zeros((I, H), np.int64), w["recurrent_kernel"])
    with pytest.raises(ValueError, match=r"reset_after: only applies to kind='gru'"):
        interop.from_keras("lstm", **w, reset_after=False)
    g = keras_weights("gru", rng)
    # a flat (6*H,) CuDNNGRU-style bias, or a reset_after=False bias for a reset_after GRU
    with pytest.raises(ValueError, match=r"bias: expected shape \(2, 3\*H\) = \(2, 18\)"):
        interop.from_keras("gru", g["kernel"], g["recurrent_kernel"], g["bias"].reshape(-1))
    with pytest.raises(ValueError, match=r"bias: expected shape \(3\*H,\)"):
        interop.from_keras("gru", **g, reset_after=False)


def test_to_keras_bad_input(rng):
    p = random_weights("gru", I, H, np.float64, rng)
    with pytest.raises(ValueError, match=r"unexpected keys \['weight_ih_reverse'\]"):
        interop.to_keras("gru", {**p, "weight_ih_reverse": p["weight_ih"]})
    with pytest.raises(ValueError, match=r"missing 'weight_hh'"):
        interop.to_keras("gru", {"weight_ih": p["weight_ih"]})
    with pytest.raises(ValueError, match=r"contradicts params\['reset_after'\]"):
        interop.to_keras("gru", {**p, "reset_after": True}, reset_after=False)
    with pytest.raises(ValueError, match=r"weight_hh: expected shape \(3\*H, H\) = \(18, 6\)"):
        interop.to_keras("gru", {**p, "weight_hh": p["weight_hh"].T})
    with pytest.raises(ValueError, match=r"bias_hh: expected shape \(3\*H,\)"):
        interop.to_keras("gru", {**p, "bias_hh": p["bias_hh"][:-1]})
    with pytest.raises(TypeError, match=r"params: expected a mapping"):
        interop.to_keras("gru", [p["weight_ih"], p["weight_hh"]])
    with pytest.raises(ValueError, match=r"unexpected key 'reset_after' for kind='lstm'"):
        interop.to_keras(
            "lstm", {**random_weights("lstm", I, H, np.float64, rng), "reset_after": True}
        )


def test_onnx_bad_input(rng):
    w = onnx_weights("lstm", rng, 1)
    with pytest.raises(ValueError, match=r"direction: expected one of"):
        interop.from_onnx("lstm", **w, direction="both")
    with pytest.raises(
        ValueError, match=r"W: expected shape \[num_directions, 4\*H, I\] with num_directions = 2"
    ):
        interop.from_onnx("lstm", **w, direction="bidirectional")
    with pytest.raises(
        ValueError, match=r"R: expected shape \[num_directions, 4\*H, H\] = \(1, 24, 6\)"
    ):
        interop.from_onnx("lstm", w["W"], w["R"][:, :, :-1], w["B"])
    with pytest.raises(
        ValueError, match=r"B: expected shape \[num_directions, 2\*4\*H\] = \(1, 48\)"
    ):
        interop.from_onnx("lstm", w["W"], w["R"], w["B"][:, :-1])
    with pytest.raises(
        ValueError, match=r"P: expected shape \[num_directions, 3\*H\] = \(1, 18\), got \(1, 24\)"
    ):
        interop.from_onnx("lstm", **w, P=np.ones((1, 4 * H)))
    with pytest.raises(
        ValueError, match=r"P: expected shape \[num_directions, 3\*H\] = \(2, 18\), got \(1, 18\)"
    ):
        w2 = onnx_weights("lstm", rng, 2)
        interop.from_onnx("lstm", **w2, direction="bidirectional", P=np.ones((1, 3 * H)))
    with pytest.raises(ValueError, match=r"P: expected shape \[num_directions, 3\*H\]"):
        interop.from_onnx("lstm", **w, P=np.ones(3 * H))
    with pytest.raises(TypeError, match=r"P: expected dtype float64 \(the dtype of W\)"):
        interop.from_onnx("lstm", **w, P=np.ones((1, 3 * H), np.float32))
    with pytest.raises(ValueError, match=r"hidden_size: 5 does not match W, which has H = 6"):
        interop.from_onnx("lstm", **w, hidden_size=5)
    with pytest.raises(ValueError, match=r"linear_before_reset: only applies to kind='gru'"):
        interop.from_onnx("lstm", **w, linear_before_reset=1)
    g = onnx_weights("gru", rng, 1)
    with pytest.raises(ValueError, match=r"linear_before_reset: expected 0 or 1, got 2"):
        interop.from_onnx("gru", **g, linear_before_reset=2)
    with pytest.raises(ValueError, match=r"P: peepholes exist only for kind='lstm'"):
        interop.from_onnx("gru", **g, P=np.zeros((1, 3 * H)))
    with pytest.raises(ValueError, match=r"P: peepholes exist only for kind='lstm', not 'rnn'"):
        interop.from_onnx("rnn", **onnx_weights("rnn", rng, 1), P=np.ones((1, 3 * H)))
    with pytest.raises(TypeError, match=r"B: expected dtype float64 \(the dtype of W\)"):
        interop.from_onnx("gru", g["W"], g["R"], g["B"].astype(np.float32))


def test_to_onnx_bad_input(rng):
    p = random_weights("rnn", I, H, np.float64, rng)
    with pytest.raises(ValueError, match=r"missing 'weight_ih_reverse'"):
        interop.to_onnx("rnn", p, direction="bidirectional")
    q = {
        **p,
        **{k + "_reverse": v for k, v in random_weights("rnn", I + 1, H, np.float64, rng).items()},
    }
    with pytest.raises(ValueError, match=r"reverse direction has \(I, H\) = \(5, 6\)"):
        interop.to_onnx("rnn", q, direction="bidirectional")
    with pytest.raises(ValueError, match=r"unexpected keys"):
        interop.to_onnx("rnn", q, direction="forward")
    with pytest.raises(ValueError, match=r"weight_ih: expected shape \(H, I\) with H >= 1"):
        interop.to_onnx("rnn", {**p, "weight_ih": np.zeros((0, I))})


def test_to_onnx_bad_peepholes(rng):
    p = random_weights("lstm", I, H, np.float64, rng)
    q = {**p, **{k + "_reverse": v for k, v in p.items()}}
    peep = rng.uniform(-0.5, 0.5, 3 * H)
    with pytest.raises(
        ValueError, match=r"weight_peephole: expected shape \(3\*H,\) = \(18,\), got \(24,\)"
    ):
        interop.to_onnx("lstm", {**p, "weight_peephole": np.zeros(4 * H)})
    with pytest.raises(
        ValueError, match=r"weight_peephole_reverse: expected shape \(3\*H,\) = \(18,\)"
    ):
        interop.to_onnx(
            "lstm",
            {**q, "weight_peephole": peep, "weight_peephole_reverse": peep.reshape(3, H)},
            direction="bidirectional",
        )
    with pytest.raises(
        TypeError, match=r"weight_peephole: expected dtype float64 \(the dtype of weight_ih\)"
    ):
        interop.to_onnx("lstm", {**p, "weight_peephole": peep.astype(np.float32)})
    with pytest.raises(ValueError, match=r"unexpected keys \['weight_peephole_reverse'\]"):
        interop.to_onnx("lstm", {**p, "weight_peephole_reverse": peep})
    for kind in ("rnn", "gru"):
        r = random_weights(kind, I, H, np.float64, rng)
        with pytest.raises(
            ValueError,
            match=rf"params: 'weight_peephole': peepholes exist only for kind='lstm', not '{kind}'",
        ):
            interop.to_onnx(kind, {**r, "weight_peephole": peep})
    # Keras LSTMs have no peepholes
    with pytest.raises(ValueError, match=r"unexpected keys \['weight_peephole'\]"):
        interop.to_keras("lstm", {**p, "weight_peephole": peep})


def test_stack_bad_input(rng):
    a = random_weights("rnn", I, H, np.float64, rng)
    b = random_weights("rnn", H + 1, H, np.float64, rng)
    with pytest.raises(ValueError, match=r"layers\[1\]: weight_ih has input size 7, expected 6"):
        interop.stack_layers([a, b])
    with pytest.raises(ValueError, match=r"layers\[1\]: has 2 direction\(s\), layer 0 has 1"):
        interop.stack_layers([a, (a, a)])
    with pytest.raises(ValueError, match=r"non-empty sequence"):
        interop.stack_layers([])
    with pytest.raises(
        TypeError, match=r"layers\[0\]: expected a dict or a \(forward, reverse\) pair"
    ):
        interop.stack_layers([[a]])
    with pytest.raises(ValueError, match=r"'reset_after' differs between layers"):
        g = random_weights("gru", I, H, np.float64, rng)
        g2 = random_weights("gru", H, H, np.float64, rng)
        interop.stack_layers([{**g, "reset_after": True}, {**g2, "reset_after": False}])
    with pytest.raises(ValueError, match=r"unexpected key 'weight_l0'"):
        interop.unstack_layers({"weight_l0": a["weight_ih"]})
    with pytest.raises(ValueError, match=r"layer indices must be 0..L-1, got \[0, 2\]"):
        interop.unstack_layers(
            {"weight_ih_l0": 0, "weight_hh_l0": 0, "weight_ih_l2": 0, "weight_hh_l2": 0}
        )
    with pytest.raises(ValueError, match=r"missing weight_hh_l0"):
        interop.unstack_layers({"weight_ih_l0": a["weight_ih"]})
    with pytest.raises(ValueError, match=r"unexpected key 'weight_peephole_l0_fwd'"):
        interop.unstack_layers({"weight_peephole_l0_fwd": np.zeros(3 * H)})


def test_stack_bad_peepholes(rng):
    lstm = random_weights("lstm", I, H, np.float64, rng)
    gru = random_weights("gru", I, H, np.float64, rng)
    with pytest.raises(
        ValueError,
        match=r"layers\[0\]\['weight_peephole'\]: peepholes exist only for LSTM layers",
    ):
        interop.stack_layers([{**gru, "weight_peephole": np.zeros(3 * H)}])
    with pytest.raises(
        ValueError,
        match=r"layers\[0\]\['weight_peephole'\]: expected shape \(3\*H,\) = \(18,\), got \(6,\)",
    ):
        interop.stack_layers([{**lstm, "weight_peephole": np.zeros(H)}])
    with pytest.raises(TypeError, match=r"layers\[0\]\['weight_peephole'\]: expected dtype"):
        interop.stack_layers([{**lstm, "weight_peephole": np.zeros(3 * H, np.float32)}])
