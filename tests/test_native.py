"""Native sequence kernels (fastrnn._native / csrc/seq) against the NumPy reference.

Every cell and variant, inference and training, float32 and float64, each SIMD target
the CPU has (fixture ``isa``) and 1 and 2 threads (fixture ``threads``), on odd sizes,
with and without bias, reverse, lengths: outputs, final states and every gradient, with
random upstream gradients on y and the final states. All native calls run with
``_poison=True``: outputs and workspaces are NaN-filled before the kernels run, so an
element the kernels fail to write shows up as NaN.
"""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import _native as NAT
from fastrnn import functional as F
from fastrnn import ops
from fastrnn import reference as REF
from helpers import (
    GATES,
    VARIANT_IDS,
    VARIANTS,
    assert_allclose_named,
    assert_grads_close,
    assert_same_grads,
    backward,
    packs_weights,
    random_case,
    random_lengths,
    random_upstream,
    split_output,
)

# (T, N, I, H): a spread of odd sizes (H = 1, 3, 17, 100, 130; N = 1, 5, 33; T = 1, 7;
# I != H) rather than the full product. H = 100 and 130 are several SIMD blocks on every
# target, so two threads really split the units; H = 1 and 3 are a partial block.
# (6, 9, 400, 20): fewer blocks than threads (one for RNN), yet enough work (the input
# projection) for two threads: they split the blocks' rows (seq.simd.cpp, team_size).
SIZES = [
    (7, 5, 4, 17),
    (1, 1, 3, 1),
    (7, 1, 2, 3),
    (4, 33, 9, 100),
    (3, 5, 6, 130),
    (6, 9, 400, 20),
]

# float64: native and reference do the same operations in another order (blocked sums,
# FMA) and the activations have <= 3 ulp error, so results agree to a few ulps of O(1)
# values; 1e-11 relative with a 1e-12 absolute floor (values near 0) leaves margin.
TOL64 = {"rtol": 1e-11, "atol": 1e-12}
# float32: the native side rounds every operation to 2^-24 ~ 6e-8 (the oracle is the
# float64 reference on the same float32-representable inputs). A dot product over
# K <= I + H = 136 terms of O(1) size may drift by ~K/2 ulp in the worst case, and up to
# 7 recurrent steps (and T*N = 132 row sums in the weight gradients) compound that by
# about another 10x; 3e-4 relative with a 3e-5 absolute floor bounds this with margin
# while still catching any wrong gate, index or sign (those are O(1) errors).
TOL32 = {"rtol": 3e-4, "atol": 3e-5}


def _call(module, kind, variant, case, **kw):
    return getattr(module, f"{kind}")(**case, **variant, **kw)


def _as64(case):
    return {k: None if v is None else np.asarray(v, np.float64) for k, v in case.items()}


def _check_case(kind, variant, size, dtype, rng, bias, reverse, with_lengths):
    T, N, I, H = size
    case = random_case(kind, T, N, I, H, dtype, rng, bias=bias)
    lengths = random_lengths(T, N, rng) if with_lengths else None
    up = random_upstream(kind, T, N, H, dtype, rng)
    kw = {"reverse": reverse, "lengths": lengths}
    tol = TOL64 if np.dtype(dtype) == np.float64 else TOL32

    want = _call(REF, kind, variant, _as64(case), training=True, **kw)
    got = _call(NAT, kind, variant, case, training=True, _poison=True, **kw)
    inf = _call(NAT, kind, variant, case, training=False, _poison=True, **kw)
    y_w, s_w, tape_w = split_output(kind, want)
    y_g, s_g, tape_g = split_output(kind, got)
    y_i, s_i, _ = split_output(kind, inf)
    assert tape_g.backend == "native" and tape_g.kind == kind
    assert y_g.dtype == np.dtype(dtype)
    assert_allclose_named("y", y_g, y_w, **tol)
    # Inference and training run the same arithmetic: bitwise equal.
    np.testing.assert_array_equal(y_i, y_g)
    for key in s_w:
        assert_allclose_named(key, s_g[key], s_w[key], **tol)
        np.testing.assert_array_equal(s_i[key], s_g[key])
    if lengths is not None:
        t = np.arange(T)[:, None]
        assert not y_g[t >= lengths[None, :]].any(), "inactive steps must write y = 0"

    g_w = backward(REF, kind, tape_w, _as64(up))
    g_g = backward(NAT, kind, tape_g, up, _poison=True)
    assert list(g_g) == list(g_w)
    assert_grads_close(g_g, g_w, **tol)
    for key, g in g_g.items():
        assert g is None or g.dtype == np.dtype(dtype), key


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("kind", "variant"), VARIANTS, ids=VARIANT_IDS)
def test_matches_reference(kind, variant, dtype, isa, threads, rng):
    # Each size once, with bias / reverse / lengths varied across sizes so every
    # combination of the three flags shows up for each variant, dtype, target, threads.
    flags = [
        (True, False, False),
        (False, True, True),
        (True, True, False),
        (True, False, True),
        (False, False, False),
        (True, True, True),
    ]
    assert len(flags) == len(SIZES)
    for size, (bias, reverse, with_lengths) in zip(SIZES, flags):
        _check_case(kind, variant, size, dtype, rng, bias, reverse, with_lengths)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("kind", "variant"), VARIANTS, ids=VARIANT_IDS)
def test_streamed_tape_matches_reference(kind, variant, dtype, isa, threads, rng):
    # A training tape of >= 1 MiB of gate activations is written with streaming stores
    # (seq.simd.cpp, tape_units); H = 64 makes every tape row whole, aligned vectors on
    # every target, so that path carries the whole tape (the sizes above are too small).
    # H = 100 has the tape's rows and gate segments padded to whole lines (seq.h,
    # tape_stride: 112 floats, 104 doubles), the last block's writes running into the pad.
    _check_case(kind, variant, (64, 64, 5, 64), dtype, rng, True, False, False)
    _check_case(kind, variant, (64, 64, 5, 64), dtype, rng, True, True, True)
    _check_case(kind, variant, (64, 48, 5, 100), dtype, rng, True, False, True)


# (T, N, I, H) with few rows in all (T*N at most (I + H) / 40, at most 8): forward and
# backward read the weights unpacked (seq.simd.cpp, Geo::direct: dot products forward,
# axpy_rows backward). Several blocks of units (two threads split them; with N = 8 one
# block is shared by rows), K not a multiple of the vector width, one row and pairs of
# rows, more than one step.
DIRECT_SIZES = [
    (1, 1, 37, 130),
    (3, 1, 203, 130),
    (1, 3, 201, 99),
    (2, 4, 251, 70),
    (1, 8, 331, 70),
]
# A few more rows (up to 16, or up to 64 when the weights take >= 4 MiB), over few steps
# (thin_rows: T^2 bounded by the weights' size): the forward computes W x^T from the
# weights unpacked (Geo::thin, transposed_rows). One row more than the direct threshold; a
# block shared by rows (N = 13, three blocks); two steps (h^T carried between them) with
# 1.9 MiB of float32 weights (RNN) and with 4 MiB and 40 rows. The backward's tiles read
# W_hh and W_ih unpacked too (H = 45, 70, 410: a last block past H, copied alone; I = 251,
# 300, 803: column strips with a tail). PACKED_SIZE has 21 rows and small weights;
# LONG_FEW_ROWS few rows over too many steps (thin's step products cost more than packing).
THIN_SIZES = [
    (1, 9, 251, 70),
    (1, 13, 300, 45),
    (2, 8, 803, 410),
    (2, 20, 1536, 512),
]
PACKED_SIZE = (3, 7, 251, 70)
LONG_FEW_ROWS = [(12, 1, 512, 512), (8, 4, 256, 256)]


# The variants with one RNN nonlinearity (paths that do not depend on it), with their ids.
ONE_RNN_VARIANT = [
    (v, i) for v, i in zip(VARIANTS, VARIANT_IDS) if i not in ("rnn-relu", "rnn-sigmoid")
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(
    ("kind", "variant"), [v for v, _ in ONE_RNN_VARIANT], ids=[i for _, i in ONE_RNN_VARIANT]
)
def test_streamed_weight_gradients_match_reference(kind, variant, dtype, isa, threads, rng):
    # A call of few rows (unpacked: 3 rows direct, 18 transposed) whose weight_ih gradient
    # takes >= 4 MiB: the backward writes it past the caches (seq.simd.cpp,
    # small_k_product), and weight_hh's too for RNN and LSTM. I = 1031 leaves most rows of
    # the gradients unaligned to lines and a tail of columns past the last whole vector.
    H = {"rnn": 1027, "lstm": 515, "gru": 600}[kind]
    for size in ((1, 3, 1031, H), (2, 9, 1031, H)):
        assert GATES[kind] * H * 1031 * 4 >= 4 << 20
        if variant.get("reset_after", True):
            assert not packs_weights(kind, size, dtype), size
        _check_case(kind, variant, size, dtype, rng, True, size[0] == 2, size[0] == 2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(
    ("kind", "variant"), [v for v, _ in ONE_RNN_VARIANT], ids=[i for _, i in ONE_RNN_VARIANT]
)
def test_long_weight_gradients_match_reference(kind, variant, dtype, isa, threads, rng):
    # More than 256 rows in all: the weight gradients' GEMM sums k in several blocks
    # (gemm.simd.cpp, KC = 256), over more gate rows than one block of A holds. weight_ih's
    # and weight_hh's share each packed block of dG^T (gemm_shared_a) when both fit in one
    # B block side by side: I + H = 82 here; 280 at the second size, past float64's 256
    # columns on AVX-512, so there two separate GEMMs.
    for size, with_lengths in (((5, 61, 37, 45), False), ((3, 90, 150, 130), True)):
        _check_case(kind, variant, size, dtype, rng, True, with_lengths, with_lengths)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("kind", "variant"), VARIANTS, ids=VARIANT_IDS)
def test_unpacked_forward_matches_reference(kind, variant, dtype, isa, threads, rng):
    # (GRU with the reset before the matmul always packs, in its own loop: the same sizes
    # check that path; packs_weights sizes the reset-after workspace.)
    assert packs_weights(kind, PACKED_SIZE, dtype)
    for size in LONG_FEW_ROWS:
        assert packs_weights(kind, size, dtype), size
    flags = [
        (True, False, False),
        (True, True, True),
        (False, False, True),
        (True, True, True),
        (True, False, True),
    ]
    for size, (bias, reverse, with_lengths) in zip(DIRECT_SIZES, flags):
        assert not packs_weights(kind, size, dtype), size
        _check_case(kind, variant, size, dtype, rng, bias, reverse, with_lengths)
    for size, (bias, reverse, with_lengths) in zip(THIN_SIZES, flags[1:]):
        assert not packs_weights(kind, size, dtype), size
        _check_case(kind, variant, size, dtype, rng, bias, reverse, with_lengths)
    _check_case(kind, variant, PACKED_SIZE, dtype, rng, True, True, True)


def test_backward_packing_choice_follows_weight_hh_size():
    # bwd_geometry: unpacked up to 64 rows while W_hh < 12 MiB (here 8 MiB of float64
    # over 32 rows of N = 2), up to 16 rows with N >= 4 at 32 MiB, never with N < 4 there.
    f64 = np.float64
    assert not packs_weights("lstm", (16, 2, 512, 512), f64, backward=True)
    assert not packs_weights("lstm", (3, 4, 1024, 1024), f64, backward=True)
    assert packs_weights("lstm", (8, 2, 1024, 1024), f64, backward=True)
    assert packs_weights("lstm", (5, 4, 1024, 1024), f64, backward=True)
    assert not packs_weights("lstm", (5, 8, 1024, 1024), f64, backward=True)


NOT_RNN = [(v, i) for v, i in zip(VARIANTS, VARIANT_IDS) if v[0] != "rnn"]


@pytest.mark.parametrize(("kind", "variant"), [v for v, _ in NOT_RNN], ids=[i for _, i in NOT_RNN])
def test_forward_and_backward_pack_apart(kind, variant, isa, threads, rng):
    # The backward chooses whether to pack weight_hh on its own (seq.simd.cpp,
    # bwd_geometry): PACKED_SIZE packs in the forward and reads the weights unpacked in the
    # backward; 24 rows of LSTM H = 1024 (20 of GRU) with N = 4 the other way round (W_hh
    # of 12-16 MiB). (GRU with the reset before the matmul packs in both, in its own loops;
    # packs_weights sizes the reset-after workspaces.)
    big = (6, 4, 1024, 1024) if kind == "lstm" else (5, 4, 1024, 1024)
    assert packs_weights(kind, PACKED_SIZE) and not packs_weights(kind, big)
    assert not packs_weights(kind, PACKED_SIZE, backward=True)
    assert packs_weights(kind, big, backward=True)
    for size in (PACKED_SIZE, big):
        _check_case(kind, variant, size, np.float32, rng, True, True, True)


@pytest.mark.parametrize(("kind", "variant"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize(
    "shape",
    [
        (5, 6, 7, 130),
        (4, 10, 5, 100),
        (2, 3, 201, 130),
        (1, 8, 331, 70),
        (1, 13, 300, 45),
        (6, 9, 400, 20),
    ],
    ids=str,
)
def test_thread_count_is_bitwise_invisible(kind, variant, shape, isa, rng):
    # An odd number of hidden-unit blocks makes 2 (and with N = 10, 3) threads split the
    # left-over block by rows (seq.simd.cpp, join_team): that must not change a bit either.
    # (2, 3, 201, 130) and (1, 8, 331, 70) read the weights unpacked (DIRECT_SIZES), as does
    # (1, 13, 300, 45) transposed (THIN_SIZES), its third block split by rows. (6, 9, 400,
    # 20) has fewer blocks than threads: all of them split by rows.
    T, N, I, H = shape
    case = random_case(kind, T, N, I, H, np.float32, rng)
    up = random_upstream(kind, T, N, H, np.float32, rng)
    lengths = random_lengths(T, N, rng)
    before = fastrnn.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            fastrnn.set_num_threads(n)
            out = _call(NAT, kind, variant, case, training=True, lengths=lengths, _poison=True)
            y, states, tape = split_output(kind, out)
            grads = backward(NAT, kind, tape, up)
            results.append((y, states, grads))
    finally:
        fastrnn.set_num_threads(before)
    y0, s0, g0 = results[0]
    for y, s, g in results[1:]:
        np.testing.assert_array_equal(y, y0)
        for key in s0:
            np.testing.assert_array_equal(s[key], s0[key])
        assert_same_grads(g, g0)


@pytest.mark.parametrize("only", ["bias_ih", "bias_hh"])
@pytest.mark.parametrize(("kind", "variant"), VARIANTS, ids=VARIANT_IDS)
def test_one_bias_and_threaded_bias_sums(kind, variant, only, rng):
    # Either bias alone (the other None): the backward computes the two bias gradients
    # from one set of sums when both exist, so each alone must still be right. With two
    # threads, H = 130 leaves a block split by rows between them, whose columns are summed
    # after the reverse loop rather than inside it: the bits must not change.
    T, N, I, H = 20, 40, 9, 130
    case = random_case(kind, T, N, I, H, np.float64, rng)
    case["bias_hh" if only == "bias_ih" else "bias_ih"] = None
    up = random_upstream(kind, T, N, H, np.float64, rng)
    _, _, tape_w = split_output(kind, _call(REF, kind, variant, case, training=True))
    want = backward(REF, kind, tape_w, up)
    before = fastrnn.get_num_threads()
    got = []
    try:
        for n in (1, 2):
            fastrnn.set_num_threads(n)
            _, _, tape = split_output(kind, _call(NAT, kind, variant, case, training=True))
            got.append(backward(NAT, kind, tape, up, _poison=True))
    finally:
        fastrnn.set_num_threads(before)
    for key, w in want.items():
        if w is None:
            assert got[0][key] is None and got[1][key] is None, key
            continue
        assert_allclose_named(f"grad {key}", got[0][key], w, **TOL64)
        np.testing.assert_array_equal(got[1][key], got[0][key])
    assert want[only] is not None


def test_concurrent_python_threads(rng):
    cases = [random_case(k, 6, 4, 5, 40, np.float64, rng) for k in ("lstm", "gru", "rnn")]
    kinds = ["lstm", "gru", "rnn"]
    want = [split_output(k, getattr(NAT, k)(**c))[0] for k, c in zip(kinds, cases)]
    errors: list[BaseException] = []

    def work(i):
        try:
            for _ in range(20):
                y = split_output(kinds[i], getattr(NAT, kinds[i])(**cases[i]))[0]
                np.testing.assert_array_equal(y, want[i])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    pool = [threading.Thread(target=work, args=(i % 3,)) for i in range(6)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors


def test_non_contiguous_inputs_are_copied(rng):
    T, N, I, H = 4, 3, 5, 6
    case = random_case("lstm", T, N, I, H, np.float64, rng)
    y0, (h0, c0) = NAT.lstm(**case)
    nc = {}
    for k, v in case.items():
        big = np.zeros((*v.shape, 2), v.dtype)
        big[..., 0] = v
        nc[k] = big[..., 0]  # same values, strided view
        assert not nc[k].flags.c_contiguous
    nc["x"] = np.asfortranarray(case["x"])
    for v in nc.values():
        v.flags.writeable = False  # read-only inputs are fine: the kernels never write them
    y1, (h1, c1) = NAT.lstm(**nc)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(h1, h0)
    np.testing.assert_array_equal(c1, c0)


@pytest.mark.parametrize("threads", [2], indirect=True)  # each thread copies its share
@pytest.mark.parametrize(
    "kind,size",
    # weights of more than 1 MiB (the lstm cases), whose copies the kernel streams past the
    # caches; 64 rows or more in all (the last three) always pack their weights, so the
    # copies are taken beside a packing forward
    [
        ("gru", (3, 2, 4, 5)),
        ("lstm", (2, 3, 290, 300)),
        ("gru", (20, 4, 5, 7)),
        ("rnn", (9, 8, 33, 17)),
        ("lstm", (20, 4, 290, 300)),
    ],
)
def test_tape_is_independent_of_later_edits(kind, size, threads, rng):
    # Edits of the inputs, and of the outputs (the LSTM backward takes the last cell state
    # from the tape's own copy, never from the c_n handed back).
    T, N, I, H = size
    case = random_case(kind, T, N, I, H, np.float64, rng)
    up = random_upstream(kind, T, N, H, np.float64, rng)
    ref_tape = split_output(kind, getattr(REF, kind)(**case, training=True))[2]
    want = backward(REF, kind, ref_tape, up)
    y, states, tape = split_output(kind, getattr(NAT, kind)(**case, training=True, _poison=True))
    g0 = backward(NAT, kind, tape, up)
    case["weight_hh"] *= 2.0
    case["weight_ih"][::2] = np.nan
    case["x"][:] = 0.0
    y[:] = np.nan
    for state in states.values():
        state[:] = np.nan
    g1 = backward(NAT, kind, tape, up)
    for key in want:
        if want[key] is not None:
            np.testing.assert_array_equal(g1[key], g0[key])
            np.testing.assert_allclose(g0[key], want[key], **TOL64)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_empty_sequences(kind, rng):
    for T, N in ((0, 3), (2, 0)):
        case = random_case(kind, T, N, 4, 5, np.float32, rng)
        up = random_upstream(kind, T, N, 5, np.float32, rng)
        want = getattr(REF, kind)(**case, training=True)
        got = getattr(NAT, kind)(**case, training=True)
        yw, sw, tw = split_output(kind, want)
        yg, sg, tg = split_output(kind, got)
        assert yg.shape == yw.shape == (T, N, 5)
        for key in sw:
            np.testing.assert_array_equal(sg[key], sw[key])
        gw = backward(REF, kind, tw, up)
        gg = backward(NAT, kind, tg, up)
        assert list(gg) == list(gw)
        for key in gw:
            if gw[key] is not None:
                assert gg[key].shape == gw[key].shape
                np.testing.assert_array_equal(gg[key], gw[key])


def test_no_upstream_gradients_means_zero(rng):
    case = random_case("lstm", 3, 2, 4, 5, np.float64, rng)
    _, _, tape = NAT.lstm(**case, training=True)
    g = NAT.lstm_backward(tape, _poison=True)
    for key, v in g.items():
        assert not np.any(v), key


# ---- bad input ----------------------------------------------------------------------


def _lstm_case(rng, dtype=np.float32):
    return random_case("lstm", 3, 2, 4, 5, dtype, rng)


def test_bad_shapes_and_dtypes(rng):
    c = _lstm_case(rng)
    with pytest.raises(ValueError, match="weight_hh"):
        NAT.lstm(**{**c, "weight_hh": c["weight_hh"][:, :4]})
    with pytest.raises(ValueError, match="h0"):
        NAT.lstm(**{**c, "h0": c["h0"][:1]})
    with pytest.raises(ValueError, match="c0"):
        NAT.lstm(**{**c, "c0": c["c0"].T})
    with pytest.raises(ValueError, match="bias_ih"):
        NAT.lstm(**{**c, "bias_ih": c["bias_ih"][:-1]})
    with pytest.raises(ValueError, match="x"):
        NAT.lstm(**{**c, "x": c["x"][0]})
    with pytest.raises(TypeError, match="weight_ih"):
        NAT.lstm(**{**c, "weight_ih": c["weight_ih"].astype(np.float64)})
    with pytest.raises(TypeError, match="x"):
        NAT.lstm(**{**c, "x": c["x"].astype(np.int32)})
    with pytest.raises(ValueError, match="nonlinearity"):
        NAT.rnn(c["x"], None, c["weight_ih"][:5], c["weight_hh"][:5, :], nonlinearity="gelu")


def test_bad_lengths(rng):
    c = _lstm_case(rng)
    for bad in ([0, 1], [1, 4], [1]):
        with pytest.raises(ValueError, match="lengths"):
            NAT.lstm(**c, lengths=np.array(bad))
    with pytest.raises(TypeError, match="lengths"):
        NAT.lstm(**c, lengths=np.array([1.0, 2.0]))


def test_bad_backward_arguments(rng):
    c = _lstm_case(rng)
    _, _, tape = NAT.lstm(**c, training=True)
    with pytest.raises(ValueError, match="dy"):
        NAT.lstm_backward(tape, np.zeros((3, 2, 4), np.float32))
    with pytest.raises(TypeError, match="dh_n"):
        NAT.lstm_backward(tape, None, np.zeros((2, 5), np.float64))
    with pytest.raises(ValueError, match="tape"):
        NAT.gru_backward(tape)
    _, _, ref_tape = REF.lstm(**c, training=True)
    with pytest.raises(TypeError, match="tape"):
        NAT.lstm_backward(ref_tape)
    tape.data["gates"] = tape.data["gates"][:, :, :-1]
    with pytest.raises(ValueError):
        NAT.lstm_backward(tape)
    # the state after the last step, which the backward reads from the tape's own copy
    _, _, tape = NAT.lstm(**c, training=True)
    tape.data["clast"] = tape.data["clast"][:-1]
    with pytest.raises(ValueError, match=r"tape clast .*\(N, Hp\)"):
        NAT.lstm_backward(tape)
    _, _, tape = NAT.rnn(**random_case("rnn", 3, 2, 4, 5, np.float32, rng), training=True)
    tape.data["hlast"] = tape.data["hlast"][:, :-1]
    with pytest.raises(ValueError, match=r"tape hlast .*\(N, Hp\)"):
        NAT.rnn_backward(tape)


def test_huge_sizes_fail_cleanly():
    # Broadcast views: the sizes exist only on paper. The kernels' size arithmetic
    # must refuse them before allocating or copying anything.
    f = np.float32
    w_ih = np.zeros((64, 1), f)
    w_hh = np.zeros((64, 16), f)
    # T*N*I fits in 64 bits but T*N*4H does not.
    x = np.broadcast_to(np.zeros((1, 1, 1), f), (2**30, 2**30, 1))
    h0 = np.broadcast_to(np.zeros((1, 1), f), (2**30, 16))
    # The message names the arguments' sizes, then the first product that overflowed.
    want = (
        r"x of shape \(T, N, I\) = \(1073741824, 1073741824, 1\) with hidden size H = 16 "
        r"\(G = 4 gates\) is too large: .*size overflows 64-bit"
    )
    with pytest.raises(ValueError, match=want):
        NAT.lstm(x, h0, h0, w_ih, w_hh)
    # Representable but far too large to allocate.
    x = np.broadcast_to(np.zeros((1, 1, 1), f), (2**20, 2**20, 1))
    h0 = np.broadcast_to(np.zeros((1, 1), f), (2**20, 16))
    with pytest.raises((ValueError, MemoryError)):
        NAT.lstm(x, h0, h0, w_ih, w_hh)


# ---- PyTorch parity ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_torch_parity(kind, dtype, rng):
    torch = pytest.importorskip("torch")
    T, N, I, H = 6, 3, 5, 19
    case = random_case(kind, T, N, I, H, dtype, rng)
    up = random_upstream(kind, T, N, H, dtype, rng)
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    mod = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](I, H, dtype=tdt)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(mod, f"{name}_l0").copy_(torch.from_numpy(case[name]))
    x = torch.from_numpy(case["x"]).requires_grad_()
    h0 = torch.from_numpy(case["h0"])[None].clone().requires_grad_()
    if kind == "lstm":
        c0 = torch.from_numpy(case["c0"])[None].clone().requires_grad_()
        y, (hn, cn) = mod(x, (h0, c0))
        loss = (y * torch.from_numpy(up["dy"])).sum() + (hn[0] * torch.from_numpy(up["dh_n"])).sum()
        loss = loss + (cn[0] * torch.from_numpy(up["dc_n"])).sum()
    else:
        y, hn = mod(x, h0)
        loss = (y * torch.from_numpy(up["dy"])).sum() + (hn[0] * torch.from_numpy(up["dh_n"])).sum()
    loss.backward()
    out = getattr(NAT, kind)(**case, training=True)
    yg, sg, tape = split_output(kind, out)
    g = backward(NAT, kind, tape, up)
    tol = TOL64 if dtype == np.float64 else TOL32
    assert_allclose_named("y", yg, y.detach().numpy(), **tol)
    assert_allclose_named("h_n", sg["h_n"], hn[0].detach().numpy(), **tol)
    assert_allclose_named("grad x", g["x"], x.grad.numpy(), **tol)
    assert_allclose_named("grad h0", g["h0"], h0.grad[0].numpy(), **tol)
    if kind == "lstm":
        assert_allclose_named("c_n", sg["c_n"], cn[0].detach().numpy(), **tol)
        assert_allclose_named("grad c0", g["c0"], c0.grad[0].numpy(), **tol)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        want = getattr(mod, f"{name}_l0").grad.numpy()
        assert_allclose_named(f"grad {name}", g[name], want, **tol)


def test_functional_dispatches_to_native(rng):
    case = random_case("gru", 3, 2, 4, 5, np.float64, rng)
    y, _, tape = F.gru(**case, training=True)
    assert tape.backend == "native"
    y2, _ = NAT.gru(**case)
    np.testing.assert_array_equal(y, y2)
    g = F.gru_backward(tape, np.ones_like(y))
    assert set(g) == {"x", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"}
    y3, _ = F.gru(**case, backend="reference")
    assert_allclose_named("y", y, y3, **TOL64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_unpickled_arrays_are_accepted(dtype, rng):
    # An unpickled array's dtype equals NumPy's float32/float64 but is another object; the
    # bindings once compared dtypes by identity and rejected it ("got float32").
    case = random_case("lstm", 4, 3, 5, 6, dtype, rng)
    copied = {k: None if v is None else pickle.loads(pickle.dumps(v)) for k, v in case.items()}
    assert copied["x"].dtype is not np.dtype(dtype)
    want = F.lstm(**case, training=True)
    got = F.lstm(**copied, training=True)
    np.testing.assert_array_equal(got[0], want[0])
    up = pickle.loads(pickle.dumps(rng.standard_normal(want[0].shape).astype(dtype)))
    g_got, g_want = F.lstm_backward(got[2], up), F.lstm_backward(want[2], up)
    assert_same_grads(g_got, g_want)
    pw = F.pack_weights("lstm", copied["weight_ih"], copied["weight_hh"])
    unpacked = dict(copied, weight_ih=None, weight_hh=None)
    np.testing.assert_array_equal(F.lstm(**unpacked, packed=pw)[0], F.lstm(**case)[0])
    a, b = copied["weight_ih"], copied["x"][0].T.copy()
    np.testing.assert_array_equal(ops.matmul(a, b), ops.matmul(case["weight_ih"], b))
