"""LSTM with a projection (``weight_hr``, PyTorch's ``proj_size``): the reference against
finite differences, the native path against the reference, errors.

The native path is a kernel of its own (csrc/seq/lstmp.simd.cpp, docs/kernels.md): per step
the gates of each thread's unit blocks, then the projection on its output blocks; these
tests hold it to the reference's step-by-step math.
"""

from __future__ import annotations

import pickle
import warnings

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

# (T, N, I, H, P): odd sizes; P below, equal to and above H (the functional API takes any
# P >= 1; the layers follow PyTorch's P < H); H = 100 and 130 span several SIMD blocks;
# T*N <= 8 (four of them) takes the forward's direct path, the rest the register tiles.
SIZES = [
    (7, 5, 4, 17, 5),
    (1, 1, 3, 1, 1),
    (7, 1, 2, 3, 2),
    (4, 33, 9, 100, 37),
    (3, 5, 6, 130, 129),
    (6, 9, 40, 20, 20),
    (3, 4, 5, 4, 7),
    (2, 3, 5, 20, 7),
]
GRAD_KEYS = ["x", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"]


def _case(T, N, I, H, P, dtype, rng, *, bias=True, h0=True):
    def u(shape, half):
        return rng.uniform(-half, half, shape).astype(dtype)

    return {
        "x": u((T, N, I), 1.0),
        "h0": u((N, P), 0.5) if h0 else None,
        "c0": u((N, H), 0.5),
        "weight_ih": u((4 * H, I), 1 / np.sqrt(I)),
        "weight_hh": u((4 * H, P), 1 / np.sqrt(P)),
        "bias_ih": u((4 * H,), 0.5 / np.sqrt(H)) if bias else None,
        "bias_hh": u((4 * H,), 0.5 / np.sqrt(H)) if bias else None,
        "weight_hr": u((P, H), 1 / np.sqrt(H)),
    }


def _upstream(T, N, H, P, dtype, rng):
    return {
        "dy": rng.standard_normal((T, N, P)).astype(dtype),
        "dh_n": rng.standard_normal((N, P)).astype(dtype),
        "dc_n": rng.standard_normal((N, H)).astype(dtype),
    }


def _as64(d):
    return {k: None if v is None else np.asarray(v, np.float64) for k, v in d.items()}


def _loss(case, up, **kw):
    y, (h, c) = REF.lstm(**case, **kw)
    return float(np.sum(y * up["dy"]) + np.sum(h * up["dh_n"]) + np.sum(c * up["dc_n"]))


@pytest.mark.parametrize(("reverse", "with_lengths"), [(False, False), (True, True), (False, True)])
def test_reference_matches_finite_differences(reverse, with_lengths, rng):
    T, N, I, H, P = 4, 3, 5, 6, 3
    case = _case(T, N, I, H, P, np.float64, rng)
    up = _upstream(T, N, H, P, np.float64, rng)
    kw = {"reverse": reverse, "lengths": random_lengths(T, N, rng) if with_lengths else None}
    *_, tape = REF.lstm(**case, **kw, training=True)
    grads = REF.lstm_backward(tape, up["dy"], up["dh_n"], up["dc_n"])
    assert list(grads) == GRAD_KEYS
    for key in GRAD_KEYS:
        num = central_differences(lambda: _loss(case, up, **kw), case[key])
        # central differences: O(eps^2) truncation and ~1e-10 cancellation error
        assert_allclose_named(f"grad {key}", grads[key], num, rtol=1e-6, atol=1e-8)


def test_reference_without_projection_is_unchanged(rng):
    # weight_hr = identity (P = H) is the plain LSTM: same outputs and gradients.
    T, N, I, H = 5, 3, 4, 6
    case = _case(T, N, I, H, H, np.float64, rng)
    case["weight_hr"] = np.eye(H)
    up = _upstream(T, N, H, H, np.float64, rng)
    plain = {k: v for k, v in case.items() if k != "weight_hr"}
    y1, (h1, _), t1 = REF.lstm(**case, training=True)
    y0, (h0, _), t0 = REF.lstm(**plain, training=True)
    np.testing.assert_allclose(y1, y0, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(h1, h0, rtol=1e-14, atol=1e-15)
    g1 = REF.lstm_backward(t1, up["dy"], up["dh_n"], up["dc_n"])
    g0 = REF.lstm_backward(t0, up["dy"], up["dh_n"], up["dc_n"])
    assert_grads_close({k: g1[k] for k in g0}, g0, rtol=1e-13, atol=1e-14)  # g1 also has weight_hr


def _check(size, dtype, rng, *, bias, reverse, with_lengths, h0):
    T, N, I, H, P = size
    case = _case(T, N, I, H, P, dtype, rng, bias=bias, h0=h0)
    lengths = random_lengths(T, N, rng) if with_lengths else None
    up = _upstream(T, N, H, P, dtype, rng)
    kw = {"reverse": reverse, "lengths": lengths}
    tol = TOL64 if np.dtype(dtype) == np.float64 else TOL32

    y_w, (h_w, c_w), tape_w = REF.lstm(**_as64(case), **kw, training=True)
    y_g, (h_g, c_g), tape_g = NAT.lstm(**case, **kw, training=True, _poison=True)
    y_i, (h_i, c_i) = NAT.lstm(**case, **kw, _poison=True)
    assert isinstance(tape_g, NAT.ProjTape) and tape_g.backend == "native"
    assert y_g.shape == (T, N, P) and h_g.shape == (N, P) and c_g.shape == (N, H)
    assert y_g.dtype == h_g.dtype == c_g.dtype == np.dtype(dtype)
    assert_allclose_named("y", y_g, y_w, **tol)
    assert_allclose_named("h_n", h_g, h_w, **tol)
    assert_allclose_named("c_n", c_g, c_w, **tol)
    # Inference runs the same arithmetic as training (also when it skips the h0 columns).
    for got, want in ((y_i, y_g), (h_i, h_g), (c_i, c_g)):
        np.testing.assert_array_equal(got, want)
    if lengths is not None:
        assert not y_g[np.arange(T)[:, None] >= lengths[None, :]].any()

    g_w = REF.lstm_backward(tape_w, **_as64(up))
    g_g = F.lstm_backward(tape_g, **up)
    assert list(g_g) == list(g_w) == GRAD_KEYS
    assert_grads_close(g_g, g_w, **tol)
    for key, g in g_g.items():
        assert g is None or g.dtype == np.dtype(dtype), key
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


@pytest.mark.parametrize("size", [(5, 33, 9, 100, 37), (1, 8, 19, 256, 128)])
def test_thread_counts_give_the_same_bits(size):
    # The second size has few enough rows (T*N = 8) for the direct path, with two threads.
    def run():
        rng = np.random.default_rng(7)
        return _check(size, np.float32, rng, bias=True, reverse=True, with_lengths=True, h0=True)

    assert_thread_counts_agree(run)


# Sizes for the tape's copies: the tiles, the direct path (T*N <= 8), and weights of more
# than 1 MiB (float64 W_ih 2.3 MiB), which the forward's threads copy past the caches.
COPY_SIZES = [(6, 5, 7, 17, 5), (2, 3, 5, 9, 4), (2, 3, 300, 256, 96)]


@pytest.mark.parametrize("size", COPY_SIZES)
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_tape_ignores_later_edits(size, backend, threads, rng):
    # The backward uses the weights and x of the forward, whatever the caller did since.
    T, N, _, H, P = size
    case = _case(*size, np.float64, rng)
    up = _upstream(T, N, H, P, np.float64, rng)
    *_, tape = F.lstm(**case, training=True, backend=backend)
    want = F.lstm_backward(tape, **up)
    *_, tape = F.lstm(**case, training=True, backend=backend)
    for key in ("x", "h0", "c0", "weight_ih", "weight_hh", "weight_hr"):
        case[key][...] = 9.0
    got = F.lstm_backward(tape, **up)
    assert_same_grads(got, want)


@pytest.mark.parametrize("size", [*COPY_SIZES, (0, 3, 5, 9, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tape_keeps_its_own_copies_unless_told_to_share(size, dtype, threads, rng):
    # The kernel's threads copy x and the weights into the tape: equal bits, no memory in
    # common with the caller's arrays; inside _tape_shares_inputs (the drop-ins, which guard
    # them with autograd's version counters) the tape holds the arrays as given.
    case = _case(*size, dtype, rng)
    keys = ("x", "weight_ih", "weight_hh", "weight_hr")
    *_, tape = F.lstm(**case, training=True)
    for key in keys:
        kept = getattr(tape, key)
        assert not np.shares_memory(kept, case[key]), key
        np.testing.assert_array_equal(kept, case[key], err_msg=key)
    with NAT._tape_shares_inputs():
        *_, tape = F.lstm(**case, training=True)
    for key in keys:
        assert getattr(tape, key) is case[key], key


def test_packed_call_copies_x_and_keeps_the_snapshot(rng):
    # A packed call's weights are the snapshot's read-only arrays: only x is copied.
    case = _case(4, 3, 6, 20, 7, np.float64, rng)
    keys = ("weight_ih", "weight_hh", "weight_hr")
    packed = F.pack_weights("lstm", *(case[k] for k in keys[:2]), weight_hr=case["weight_hr"])
    for T in (4, 0):  # the kernel's copy of x, or (nothing to run) NumPy's
        x = case["x"][:T]
        *_, tape = F.lstm(
            **{**case, **dict.fromkeys(keys), "x": x}, training=True, packed=packed
        )  # fmt: skip
        assert tape.x is not x and not np.shares_memory(tape.x, case["x"])
        np.testing.assert_array_equal(tape.x, x)
        for key in keys:
            assert getattr(tape, key) is getattr(packed, key), key
        assert set(tape.data or {}) <= {"gates", "c", "c0", "m", "rprev", "has_bias_ih",
                                        "has_bias_hh", "lengths", "weight_peephole"}  # fmt: skip


@pytest.mark.parametrize("T", [0, 3])
@pytest.mark.parametrize("N", [0, 2])
def test_empty_sequences_and_batches(T, N, rng):
    H, P, I = 5, 3, 4
    case = _case(T, N, I, H, P, np.float64, rng)
    up = _upstream(T, N, H, P, np.float64, rng)
    for backend in ("native", "reference"):
        y, (h, c), tape = F.lstm(**case, training=True, backend=backend)
        assert y.shape == (T, N, P) and h.shape == (N, P) and c.shape == (N, H)
        g = F.lstm_backward(tape, **up)
        assert g["x"].shape == (T, N, I) and g["h0"].shape == (N, P)
        assert g["weight_hh"].shape == (4 * H, P) and g["weight_hr"].shape == (P, H)
        if T == 0:
            np.testing.assert_array_equal(h, case["h0"])
            np.testing.assert_array_equal(g["h0"], up["dh_n"])
            assert not g["weight_hr"].any() and not g["weight_hh"].any()


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_bad_arguments_name_the_argument_and_shape(backend, rng):
    T, N, I, H, P = 3, 2, 4, 5, 3
    case = _case(T, N, I, H, P, np.float32, rng)

    def call(**over):
        return F.lstm(**{**case, **over}, backend=backend)

    with pytest.raises(ValueError, match=r"weight_hh: expected shape \(4\*H, P\) = \(20, 3\)"):
        call(weight_hh=np.zeros((4 * H, H), np.float32))
    with pytest.raises(ValueError, match=r"weight_hr: expected shape \(P, H\) with H = 5"):
        call(weight_hr=np.zeros((P, H + 1), np.float32))
    with pytest.raises(ValueError, match=r"weight_hr: expected shape \(P, H\)"):
        call(weight_hr=np.zeros((0, H), np.float32))
    with pytest.raises(TypeError, match=r"weight_hr: expected dtype float32"):
        call(weight_hr=np.zeros((P, H), np.float64))
    with pytest.raises(ValueError, match=r"h0: expected shape \(N, P\) = \(2, 3\)"):
        call(h0=np.zeros((N, H), np.float32))
    *_, tape = call(training=True)
    with pytest.raises(ValueError, match=r"dy: expected shape \(T, N, P\) = \(3, 2, 3\)"):
        F.lstm_backward(tape, np.zeros((T, N, H), np.float32))
    with pytest.raises(ValueError, match=r"dh_n: expected shape \(N, P\) = \(2, 3\)"):
        F.lstm_backward(tape, None, np.zeros((N, H), np.float32))
    with pytest.raises(ValueError, match=r"dc_n: expected shape \(N, H\) = \(2, 5\)"):
        F.lstm_backward(tape, None, None, np.zeros((N, P), np.float32))


def test_projection_is_lstm_only():
    x = np.zeros((2, 1, 3))
    w = np.zeros((3, 3))
    with pytest.raises(ValueError, match="weight_hr: a projection exists only for lstm"):
        REF._check_inputs("gru", x, None, None, np.zeros((9, 3)), w, None, None, None, w)


@pytest.mark.parametrize("size", [(4, 5, 7, 40, 19), (2, 3, 7, 40, 19)])
def test_packed_weights(size, rng):
    # pack_weights(..., weight_hr=) snapshots the three weights and lays them out once; calls
    # with it give bitwise the results of calls without, under every target (the layout
    # does not depend on it), in inference and training.
    from conftest import SUPPORTED_ISAS

    # (The second size has few rows: the forward then reads the weights directly.)
    case = _case(*size, np.float32, rng)
    up = _upstream(size[0], size[1], 40, 19, np.float32, rng)
    packed = F.pack_weights(
        "lstm", case["weight_ih"], case["weight_hh"], weight_hr=case["weight_hr"]
    )
    assert packed.weight_hr.shape == (19, 40) and not packed.weight_hr.flags.writeable
    assert "proj_size=19" in repr(packed)
    again = pickle.loads(pickle.dumps(packed))  # laid out again from the snapshot
    np.testing.assert_array_equal(again.weight_hr, packed.weight_hr)
    np.testing.assert_array_equal(again._data, packed._data)
    assert packed.nbytes == again.nbytes > packed._data.nbytes + packed.weight_ih.nbytes
    given = {**case, "weight_ih": None, "weight_hh": None, "weight_hr": None}
    before = fastrnn.get_isa()
    try:
        for isa in SUPPORTED_ISAS:
            fastrnn.set_isa(isa)
            want = F.lstm(**case, training=True)
            snapshot = {k: getattr(packed, k) for k in ("weight_ih", "weight_hh", "weight_hr")}
            for kw in (given, {**case, **snapshot}):  # weights None, or the snapshot's
                got = F.lstm(**kw, packed=packed, training=True)
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1][0], want[1][0])
                np.testing.assert_array_equal(got[1][1], want[1][1])
                g_got, g_want = F.lstm_backward(got[2], **up), F.lstm_backward(want[2], **up)
                for key in GRAD_KEYS:
                    np.testing.assert_array_equal(g_got[key], g_want[key], err_msg=key)
                y_inf, _ = F.lstm(**kw, packed=packed)
                np.testing.assert_array_equal(y_inf, want[0])
    finally:
        fastrnn.set_isa(before)
    with pytest.raises(ValueError, match=r"weight_hr: with packed=, pass packed\.weight_hr"):
        F.lstm(**{**given, "weight_hr": case["weight_hr"]}, packed=packed)
    plain = F.pack_weights("lstm", np.zeros((160, 7), np.float32), np.zeros((160, 40), np.float32))
    with pytest.raises(ValueError, match=r"weight_hr: with packed=, pass packed\.weight_hr"):
        F.lstm(**{**given, "weight_hr": case["weight_hr"]}, packed=plain)
    with pytest.raises(ValueError, match=r"weight_hh: expected shape \(4\*H, P\)"):
        F.pack_weights("lstm", case["weight_ih"], case["weight_ih"], weight_hr=case["weight_hr"])
    with pytest.raises(ValueError, match="weight_hr: a projection exists only for lstm"):
        F.pack_weights("gru", case["weight_ih"], case["weight_hh"], weight_hr=case["weight_hr"])


def test_matches_torch(rng):
    torch = pytest.importorskip("torch")
    T, N, I, H, P = 6, 4, 5, 9, 4
    for dtype, tdt, tol in ((np.float64, torch.float64, TOL64), (np.float32, torch.float32, TOL32)):
        m = torch.nn.LSTM(I, H, proj_size=P).to(tdt)
        w = {k: v.detach().numpy() for k, v in m.named_parameters()}
        x = rng.standard_normal((T, N, I)).astype(dtype)
        h0 = rng.standard_normal((N, P)).astype(dtype)
        c0 = rng.standard_normal((N, H)).astype(dtype)
        up = _upstream(T, N, H, P, dtype, rng)
        xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
        with warnings.catch_warnings():  # "LSTM with projections is not supported with oneDNN"
            warnings.simplefilter("ignore", UserWarning)
            yt, (hnt, cnt) = m(xt, (h0t[None], c0t[None]))
        loss = (yt * torch.tensor(up["dy"])).sum() + (hnt[0] * torch.tensor(up["dh_n"])).sum()
        loss = loss + (cnt[0] * torch.tensor(up["dc_n"])).sum()
        loss.backward()
        y, (h, c), tape = F.lstm(
            x, h0, c0, w["weight_ih_l0"], w["weight_hh_l0"], w["bias_ih_l0"], w["bias_hh_l0"],
            weight_hr=w["weight_hr_l0"], training=True,
        )  # fmt: skip
        assert_allclose_named("y", y, yt.detach().numpy(), **tol)
        assert_allclose_named("h_n", h, hnt[0].detach().numpy(), **tol)
        assert_allclose_named("c_n", c, cnt[0].detach().numpy(), **tol)
        g = F.lstm_backward(tape, **up)
        want = {"x": xt.grad, "h0": h0t.grad, "c0": c0t.grad}
        want.update({k[: -len("_l0")]: p.grad for k, p in m.named_parameters()})
        for key, wt in want.items():
            assert_allclose_named(f"grad {key}", g[key], wt.numpy(), **tol)


def test_tape_is_the_same_on_every_target(rng):
    # The kernel's tape has one layout for every SIMD target: a forward on one target and
    # the backward on another give the reference's gradients.
    from conftest import SUPPORTED_ISAS

    size = (5, 6, 7, 40, 19)
    case = _case(*size, np.float64, rng)
    up = _upstream(5, 6, 40, 19, np.float64, rng)
    *_, tape_w = REF.lstm(**case, training=True)
    want = REF.lstm_backward(tape_w, **up)
    before = fastrnn.get_isa()
    try:
        for fwd_isa in SUPPORTED_ISAS:
            for bwd_isa in SUPPORTED_ISAS:
                fastrnn.set_isa(fwd_isa)
                *_, tape = NAT.lstm(**case, training=True, _poison=True)
                fastrnn.set_isa(bwd_isa)
                got = NAT.lstm_backward(tape, **up, _poison=True)
                for key, w in want.items():
                    assert_allclose_named(f"{fwd_isa}->{bwd_isa} {key}", got[key], w, **TOL64)
    finally:
        fastrnn.set_isa(before)


def test_damaged_tape_is_refused(rng):
    T, N, I, H, P = 3, 2, 4, 5, 3
    case = _case(T, N, I, H, P, np.float32, rng)
    *_, tape = NAT.lstm(**case, training=True)
    hu = 16  # H = 5 rounded up to a 64-byte line of float32
    f32 = np.float32
    for key, bad, want in (
        ("gates", np.zeros((T, N, 4 * H), f32), r"tape gates must have shape \(T, N, 4\*Hu\)"),
        ("c", np.zeros((T, N, H), f32), rf"tape c must have shape \(T, N, Hu\) with Hu = {hu}"),
        ("m", np.zeros((T, N, hu), np.float64), "tape m must have dtype float32"),
        ("rprev", np.zeros((T, N, P), f32), r"tape rprev must have shape \(T, N, Pp\)"),
    ):
        good = tape.data[key]
        tape.data[key] = bad
        with pytest.raises((ValueError, TypeError), match=want):
            F.lstm_backward(tape)
        tape.data[key] = good
    F.lstm_backward(tape)  # intact again


def test_concurrent_python_threads_get_their_own_results(rng):
    import threading

    size = (6, 8, 10, 48, 20)
    cases = [_case(*size, np.float32, np.random.default_rng(k)) for k in range(4)]
    want = [F.lstm(**c)[0] for c in cases]
    got: list = [None] * 4

    def run(k):
        for _ in range(5):
            got[k] = F.lstm(**cases[k])[0]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        np.testing.assert_array_equal(got[k], want[k])


def test_kernel_binding_checks_its_arguments(rng):
    # _core.lstmp_forward / lstmp_backward check what they are given themselves.
    from fastrnn import _core

    T, N, I, H, P = 3, 2, 4, 5, 3
    c = _case(T, N, I, H, P, np.float32, rng)
    args = [c[k] for k in ("x", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    fwd = _core.lstmp_forward
    with pytest.raises(TypeError, match=r"x must be a numpy\.ndarray"):
        fwd([[1.0]], *args[1:], c["weight_hr"], None, False, False)
    with pytest.raises(ValueError, match=r"x must have shape \(T, N, I\)"):
        fwd(c["x"][0], *args[1:], c["weight_hr"], None, False, False)
    with pytest.raises(ValueError, match=r"h0 must have shape \(N, P\) = \(2, 3\)"):
        fwd(c["x"], c["c0"], *args[2:], c["weight_hr"], None, False, False)
    with pytest.raises(ValueError, match=r"weight_hh must have shape \(4\*H, P\)"):
        fwd(*args[:4], np.zeros((4 * H, H), np.float32), *args[5:], c["weight_hr"], None, 0, 0)
    with pytest.raises(ValueError, match=r"lengths must satisfy 1 <= lengths\[n\] <= T"):
        fwd(*args, c["weight_hr"], np.array([0, 3]), False, False)
    *_, tape = fwd(*args, c["weight_hr"], None, False, True)
    bwd = _core.lstmp_backward
    w = (c["weight_ih"], c["weight_hh"], c["weight_hr"])
    with pytest.raises(ValueError, match=r"dy must have shape \(T, N, P\) = \(3, 2, 3\)"):
        bwd(tape, c["x"], *w, False, np.zeros((T, N, H), np.float32), None, None)
    with pytest.raises(ValueError, match=r"tape weight_hh must have shape \(4\*H, P\)"):
        bwd(tape, c["x"], w[0], w[0], w[2], False, None, None, None)
