"""LSTM with peepholes (``weight_peephole`` = [p_i, p_f, p_o], ONNX's ``P``): the reference
against finite differences, the native kernel against the reference, errors.

The native path is the LSTM kernel (csrc/seq/seq.simd.cpp; with a projection,
csrc/seq/lstmp.simd.cpp) with the peephole terms in its gate math (cells::lstm_step,
cells::lstm_bwd) and the peephole gradients summed like the bias gradients; these tests
hold it to the reference's step-by-step math.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import _native as NAT
from fastrnn import functional as F
from fastrnn import reference as REF
from helpers import (
    assert_allclose_named,
    assert_grads_close,
    assert_same_grads,
    assert_thread_counts_agree,
    central_differences,
    random_lengths,
)
from test_native import TOL32, TOL64

# (T, N, I, H): odd sizes. H = 1, 3, 17, 100, 130 (one partial SIMD block, several blocks
# and a short last one), N = 1, 5, 33, T = 1 and 7; T*N <= 8 takes the forward's direct
# path, the rest the register tiles.
SIZES = [
    (7, 5, 4, 17),
    (1, 1, 3, 1),
    (7, 1, 2, 3),
    (4, 33, 9, 100),
    (3, 5, 6, 130),
    (1, 33, 40, 20),
    (2, 3, 5, 20),
]
GRAD_KEYS = ["x", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_peephole"]


def _case(T, N, I, H, dtype, rng, *, bias=True, h0=True):
    def u(shape, half):
        return rng.uniform(-half, half, shape).astype(dtype)

    return {
        "x": u((T, N, I), 1.0),
        "h0": u((N, H), 0.5) if h0 else None,
        "c0": u((N, H), 1.0),
        "weight_ih": u((4 * H, I), 1 / np.sqrt(I)),
        "weight_hh": u((4 * H, H), 1 / np.sqrt(H)),
        "bias_ih": u((4 * H,), 0.5 / np.sqrt(H)) if bias else None,
        "bias_hh": u((4 * H,), 0.5 / np.sqrt(H)) if bias else None,
        # larger than weights usually are, so that the peephole terms weigh in the results
        "weight_peephole": u((3 * H,), 1.0),
    }


def _upstream(T, N, H, dtype, rng):
    return {
        "dy": rng.standard_normal((T, N, H)).astype(dtype),
        "dh_n": rng.standard_normal((N, H)).astype(dtype),
        "dc_n": rng.standard_normal((N, H)).astype(dtype),
    }


def _as64(d):
    return {k: None if v is None else np.asarray(v, np.float64) for k, v in d.items()}


def _loss(case, up, **kw):
    y, (h, c) = REF.lstm(**case, **kw)[:2]
    return float(np.sum(y * up["dy"]) + np.sum(h * up["dh_n"]) + np.sum(c * up["dc_n"]))


def _finite_differences(case, up, keys, **kw):
    return {k: central_differences(lambda: _loss(case, up, **kw), case[k]) for k in keys}


@pytest.mark.parametrize(
    ("reverse", "with_lengths", "bias"),
    [(False, False, True), (True, True, True), (False, True, False), (True, False, False)],
)
def test_reference_matches_finite_differences(reverse, with_lengths, bias, rng):
    T, N, I, H = 5, 3, 4, 6
    case = _case(T, N, I, H, np.float64, rng, bias=bias)
    up = _upstream(T, N, H, np.float64, rng)
    kw = {"reverse": reverse, "lengths": random_lengths(T, N, rng) if with_lengths else None}
    *_, tape = REF.lstm(**case, **kw, training=True)
    grads = REF.lstm_backward(tape, **up)
    assert list(grads) == GRAD_KEYS
    keys = [k for k in GRAD_KEYS if case[k] is not None]
    for key, num in _finite_differences(case, up, keys, **kw).items():
        # central differences: O(eps^2) truncation and ~1e-10 cancellation error
        assert_allclose_named(f"grad {key}", grads[key], num, rtol=1e-6, atol=1e-8)
    if not bias:
        assert grads["bias_ih"] is None and grads["bias_hh"] is None


def test_reference_with_projection_matches_finite_differences(rng):
    # Peepholes and a projection together (the reference only): h_t = W_hr (o * tanh(c_t)).
    T, N, I, H, P = 4, 3, 5, 6, 3
    case = _case(T, N, I, H, np.float64, rng)
    case["h0"] = rng.uniform(-0.5, 0.5, (N, P))
    case["weight_hh"] = rng.uniform(-0.5, 0.5, (4 * H, P))
    case["weight_hr"] = rng.uniform(-0.4, 0.4, (P, H))
    up = _upstream(T, N, H, np.float64, rng)
    up["dy"] = rng.standard_normal((T, N, P))
    up["dh_n"] = rng.standard_normal((N, P))
    kw = {"reverse": True, "lengths": random_lengths(T, N, rng)}
    *_, tape = REF.lstm(**case, **kw, training=True)
    grads = REF.lstm_backward(tape, **up)
    assert list(grads) == [*GRAD_KEYS[:-1], "weight_hr", "weight_peephole"]
    for key, num in _finite_differences(case, up, list(grads), **kw).items():
        assert_allclose_named(f"grad {key}", grads[key], num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("training", [False, True])
def test_zero_peepholes_are_the_plain_lstm(backend, training, rng):
    # a + 0 * c is a: the same bits as the call without peepholes, outputs and gradients.
    T, N, I, H = 5, 9, 7, 33
    case = _case(T, N, I, H, np.float64, rng)
    case["weight_peephole"] = np.zeros(3 * H)
    plain = {k: v for k, v in case.items() if k != "weight_peephole"}
    kw = {"backend": backend, "training": training, "lengths": random_lengths(T, N, rng)}
    got, want = F.lstm(**case, **kw), F.lstm(**plain, **kw)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1][0], want[1][0])
    np.testing.assert_array_equal(got[1][1], want[1][1])
    if training:
        up = _upstream(T, N, H, np.float64, rng)
        g_got, g_want = F.lstm_backward(got[2], **up), F.lstm_backward(want[2], **up)
        assert list(g_got) == GRAD_KEYS and list(g_want) == GRAD_KEYS[:-1]
        assert_same_grads({k: g_got[k] for k in g_want}, g_want)


def _check(size, dtype, rng, *, bias, reverse, with_lengths, h0, packed=False):
    T, N, I, H = size
    case = _case(T, N, I, H, dtype, rng, bias=bias, h0=h0)
    lengths = random_lengths(T, N, rng) if with_lengths else None
    up = _upstream(T, N, H, dtype, rng)
    kw = {"reverse": reverse, "lengths": lengths}
    tol = TOL64 if np.dtype(dtype) == np.float64 else TOL32

    y_w, (h_w, c_w), tape_w = REF.lstm(**_as64(case), **kw, training=True)
    y_g, (h_g, c_g), tape_g = NAT.lstm(**case, **kw, training=True, _poison=True)
    y_i, (h_i, c_i) = NAT.lstm(**case, **kw, _poison=True)
    assert isinstance(tape_g, NAT.NativeTape) and tape_g.has_peephole
    assert y_g.dtype == h_g.dtype == c_g.dtype == np.dtype(dtype)
    assert_allclose_named("y", y_g, y_w, **tol)
    assert_allclose_named("h_n", h_g, h_w, **tol)
    assert_allclose_named("c_n", c_g, c_w, **tol)
    # Inference runs the same arithmetic as training.
    for got, want in ((y_i, y_g), (h_i, h_g), (c_i, c_g)):
        np.testing.assert_array_equal(got, want)
    if lengths is not None:
        assert not y_g[np.arange(T)[:, None] >= lengths[None, :]].any()

    g_w = REF.lstm_backward(tape_w, **_as64(up))
    g_g = NAT.lstm_backward(tape_g, **up, _poison=True)
    assert list(g_g) == list(g_w) == GRAD_KEYS
    assert_grads_close(g_g, g_w, **tol)
    for key, g in g_g.items():
        assert g is None or g.dtype == np.dtype(dtype), key
    if packed:  # packed weights (peepholes passed beside them): the same bits
        pw = F.pack_weights("lstm", case["weight_ih"], case["weight_hh"])
        over = {**case, "weight_ih": None, "weight_hh": None}
        y_p, (h_p, c_p), tape_p = F.lstm(**over, **kw, training=True, packed=pw)
        for got, want in ((y_p, y_g), (h_p, h_g), (c_p, c_g)):
            np.testing.assert_array_equal(got, want)
        assert_same_grads(F.lstm_backward(tape_p, **up), g_g)
    return y_g, h_g, c_g, g_g


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("size", SIZES, ids=[str(s) for s in SIZES])
def test_native_matches_reference(size, dtype, isa, threads, rng):
    flags = [  # (bias, reverse, lengths, h0): every flag on and off across the calls
        (True, False, False, True),
        (False, True, True, False),
        (True, True, False, False),
        (True, False, True, True),
    ]
    for bias, reverse, with_lengths, h0 in flags:
        _check(size, dtype, rng, bias=bias, reverse=reverse, with_lengths=with_lengths, h0=h0)


@pytest.mark.parametrize("size", [(6, 40, 24, 64), (3, 2, 5, 17)])
def test_packed_weights_give_the_same_bits(size, isa, rng):
    _check(size, np.float32, rng, bias=True, reverse=False, with_lengths=True, h0=True,
           packed=True)  # fmt: skip


@pytest.mark.parametrize("size", [(5, 33, 9, 100), (1, 8, 19, 256), (9, 64, 16, 300)])
def test_thread_counts_give_the_same_bits(size):
    # (1, 8, 19, 256): few enough rows for the direct path; H = 300 with 64 rows: blocks
    # shared by both threads, whose peephole sums are taken after the loop.
    def run():
        rng = np.random.default_rng(7)
        return _check(size, np.float32, rng, bias=True, reverse=True, with_lengths=True, h0=True)

    assert_thread_counts_agree(run)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_tape_ignores_later_edits(backend, rng):
    # The backward uses the peepholes (and x, weights) of the forward, whatever the caller
    # did since.
    T, N, I, H = 4, 5, 6, 17
    case = _case(T, N, I, H, np.float64, rng)
    up = _upstream(T, N, H, np.float64, rng)
    *_, tape = F.lstm(**case, training=True, backend=backend)
    want = F.lstm_backward(tape, **up)
    *_, tape = F.lstm(**case, training=True, backend=backend)
    case["weight_peephole"][...] = 9.0
    got = F.lstm_backward(tape, **up)
    assert_same_grads(got, want)


def test_tape_keeps_its_own_copy_unless_told_to_share(rng):
    case = _case(3, 2, 4, 9, np.float32, rng)
    *_, tape = F.lstm(**case, training=True)
    kept = tape.data["weight_peephole"]
    assert not np.shares_memory(kept, case["weight_peephole"])
    np.testing.assert_array_equal(kept, case["weight_peephole"])
    with NAT._tape_shares_inputs():
        *_, tape = F.lstm(**case, training=True)
    assert tape.data["weight_peephole"] is case["weight_peephole"]


@pytest.mark.parametrize("T", [0, 3])
@pytest.mark.parametrize("N", [0, 2])
def test_empty_sequences_and_batches(T, N, rng):
    H, I = 5, 4
    case = _case(T, N, I, H, np.float64, rng)
    up = _upstream(T, N, H, np.float64, rng)
    results = {}
    for backend in ("native", "reference"):
        y, (h, c), tape = F.lstm(**case, training=True, backend=backend)
        assert y.shape == (T, N, H) and h.shape == (N, H) and c.shape == (N, H)
        g = F.lstm_backward(tape, **up)
        assert list(g) == GRAD_KEYS and g["weight_peephole"].shape == (3 * H,)
        if T == 0 or N == 0:
            assert not g["weight_peephole"].any()
        results[backend] = g
    assert_grads_close(results["native"], results["reference"], **TOL64)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_bad_arguments_name_the_argument_and_shape(backend, rng):
    T, N, I, H = 3, 2, 4, 5
    case = _case(T, N, I, H, np.float32, rng)

    def call(**over):
        return F.lstm(**{**case, **over}, backend=backend)

    with pytest.raises(ValueError, match=r"weight_peephole: expected shape \(3\*H,\) = \(15,\)"):
        call(weight_peephole=np.zeros(4 * H, np.float32))
    with pytest.raises(ValueError, match=r"weight_peephole: expected shape \(3\*H,\)"):
        call(weight_peephole=np.zeros((3, H), np.float32))
    with pytest.raises(TypeError, match=r"weight_peephole: expected dtype float32"):
        call(weight_peephole=np.zeros(3 * H, np.float64))
    with pytest.raises(TypeError, match=r"weight_peephole"):
        call(weight_peephole=[0.0] * (3 * H))
    with pytest.raises(ValueError, match="weight_peephole: peepholes exist only for lstm"):
        REF._check_inputs(
            "gru", case["x"], None, None, np.zeros((3 * H, I), np.float32),
            np.zeros((3 * H, H), np.float32), None, None, None,
            weight_peephole=np.zeros(3 * H, np.float32),
        )  # fmt: skip


# (T, N, I, H, P): the projection kernel (csrc/seq/lstmp.simd.cpp) with peepholes; T*N <= 8
# takes its direct path, H = 100 and 130 several unit blocks and a padded last one.
PROJ_SIZES = [(7, 5, 4, 17, 5), (1, 1, 3, 1, 1), (2, 3, 5, 20, 7), (4, 33, 9, 100, 37),
              (3, 5, 6, 130, 129)]  # fmt: skip
PROJ_KEYS = [*GRAD_KEYS[:-1], "weight_hr", "weight_peephole"]


def _check_proj(size, dtype, rng, *, reverse, with_lengths):
    T, N, I, H, P = size
    case = _case(T, N, I, H, dtype, rng)
    case["h0"] = rng.uniform(-0.5, 0.5, (N, P)).astype(dtype)
    case["weight_hh"] = (rng.uniform(-0.5, 0.5, (4 * H, P)) / np.sqrt(P)).astype(dtype)
    case["weight_hr"] = (rng.uniform(-1, 1, (P, H)) / np.sqrt(H)).astype(dtype)
    up = _upstream(T, N, H, dtype, rng)
    up["dy"] = rng.standard_normal((T, N, P)).astype(dtype)
    up["dh_n"] = rng.standard_normal((N, P)).astype(dtype)
    kw = {"reverse": reverse, "lengths": random_lengths(T, N, rng) if with_lengths else None}
    tol = TOL64 if np.dtype(dtype) == np.float64 else TOL32
    y_w, (h_w, c_w), tape_w = REF.lstm(**_as64(case), **kw, training=True)
    y_g, (h_g, c_g), tape_g = NAT.lstm(**case, **kw, training=True, _poison=True)
    y_i, (h_i, c_i) = NAT.lstm(**case, **kw, _poison=True)
    assert isinstance(tape_g, NAT.ProjTape) and tape_g.has_peephole
    for name, got, want in (("y", y_g, y_w), ("h_n", h_g, h_w), ("c_n", c_g, c_w)):
        assert_allclose_named(name, got, want, **tol)
    for got, want in ((y_i, y_g), (h_i, h_g), (c_i, c_g)):
        np.testing.assert_array_equal(got, want)
    g_w = REF.lstm_backward(tape_w, **_as64(up))
    g_g = NAT.lstm_backward(tape_g, **up, _poison=True)
    assert list(g_g) == list(g_w) == PROJ_KEYS
    assert_grads_close(g_g, g_w, **tol)
    return y_g, h_g, c_g, g_g


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("size", PROJ_SIZES, ids=[str(s) for s in PROJ_SIZES])
def test_native_projection_with_peepholes_matches_reference(size, dtype, isa, threads, rng):
    for reverse, with_lengths in ((False, False), (True, True), (False, True)):
        _check_proj(size, dtype, rng, reverse=reverse, with_lengths=with_lengths)


def test_projection_with_peepholes_thread_counts_give_the_same_bits():
    def run():
        rng = np.random.default_rng(11)
        return _check_proj((5, 33, 9, 100, 37), np.float32, rng, reverse=True, with_lengths=True)

    assert_thread_counts_agree(run)


def test_projection_with_peepholes_empty_sequence(rng):
    case = _case(0, 2, 4, 5, np.float64, rng)
    case.update(h0=np.ones((2, 3)), weight_hh=np.ones((20, 3)), weight_hr=np.ones((3, 5)))
    for backend in ("native", "reference"):
        *_, tape = F.lstm(**case, training=True, backend=backend)
        g = F.lstm_backward(tape)
        assert list(g) == PROJ_KEYS and g["weight_peephole"].shape == (15,)
        assert not g["weight_peephole"].any()


def test_kernel_binding_checks_its_arguments(rng):
    case = _case(3, 2, 4, 5, np.float32, rng)
    args = ("lstm", case["x"], case["h0"], case["c0"], case["weight_ih"], case["weight_hh"],
            None, None, None, "tanh", True, False, True)  # fmt: skip
    with pytest.raises(ValueError, match=r"weight_peephole must have shape \(3\*H,\)"):
        fastrnn._core.seq_forward(*args, peephole=np.zeros(14, np.float32))
    with pytest.raises(TypeError, match="weight_peephole must have dtype float32"):
        fastrnn._core.seq_forward(*args, peephole=np.zeros(15))
    gru = ("gru", case["x"], case["h0"], None, case["weight_ih"][:15], case["weight_hh"][:15],
           None, None, None, "tanh", True, False, True)  # fmt: skip
    with pytest.raises(ValueError, match="peepholes exist only for lstm"):
        fastrnn._core.seq_forward(*gru, peephole=np.zeros(15, np.float32))
    *_, data = fastrnn._core.seq_forward(*args, peephole=np.zeros(15, np.float32))
    data["weight_peephole"] = np.zeros(16, np.float32)
    with pytest.raises(ValueError, match=r"tape weight_peephole must have shape \(3\*H,\)"):
        fastrnn._core.seq_backward("lstm", data, "tanh", True, False, None, None, None)
    # the projection kernel's binding
    whh, whr = np.zeros((20, 3), np.float32), np.zeros((3, 5), np.float32)
    h0 = np.zeros((2, 3), np.float32)
    proj = (case["x"], h0, case["c0"], case["weight_ih"], whh, None, None, whr, None, False, True)
    with pytest.raises(ValueError, match=r"weight_peephole must have shape \(3\*H,\)"):
        fastrnn._core.lstmp_forward(*proj, peephole=np.zeros(16, np.float32))
    *_, data = fastrnn._core.lstmp_forward(*proj, peephole=np.zeros(15, np.float32))
    data["weight_peephole"] = np.zeros(15)
    with pytest.raises(TypeError, match="tape weight_peephole must have dtype float32"):
        fastrnn._core.lstmp_backward(
            data, case["x"], case["weight_ih"], whh, whr, False, None, None, None
        )


def test_concurrent_python_threads_get_their_own_results(rng):
    cases = [_case(6, 9, 8, 40, np.float64, rng) for _ in range(2)]
    want = [F.lstm_backward(F.lstm(**c, training=True)[2], **_upstream(6, 9, 40, np.float64,
                            np.random.default_rng(i))) for i, c in enumerate(cases)]  # fmt: skip
    got = [None, None]

    def run(i):
        for _ in range(5):
            *_, tape = F.lstm(**cases[i], training=True)
            got[i] = F.lstm_backward(tape, **_upstream(6, 9, 40, np.float64,
                                                       np.random.default_rng(i)))  # fmt: skip

    workers = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for i in range(2):
        assert_same_grads(got[i], want[i])
