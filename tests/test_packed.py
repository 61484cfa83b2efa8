"""Packed weights (fastrnn.functional.pack_weights): a forward given them matches the same
forward without them bit for bit, for every cell and variant, both dtypes, every SIMD
target the CPU has, 1 and 2 threads, inference and training (and the backward of that
training tape), on odd sizes that pack and sizes that never pack (few rows); the snapshot
does not follow later edits of the weights; misuse is a clear error."""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import _native as NAT
from fastrnn import functional as F
from fastrnn import reference as REF
from helpers import (
    VARIANT_IDS,
    VARIANTS,
    assert_allclose_named,
    backward,
    packs_weights,
    random_case,
    random_lengths,
    random_upstream,
    split_output,
)

# (T, N, I, H): rows enough to pack (a short last block on every target: H = 17, 37, 100,
# 130), and (1, 1, 3, 1) / (2, 3, 201, 99), which the forward computes without packing
# (Geo::direct, Geo::thin): the packed layout is then unused and must not matter.
SIZES = [
    (7, 5, 4, 17),
    (3, 7, 251, 37),
    (4, 33, 9, 100),
    (9, 5, 6, 130),
    (1, 1, 3, 1),
    (2, 3, 201, 99),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("kind", "variant"), VARIANTS, ids=VARIANT_IDS)
def test_packed_forward_is_bitwise_the_plain_one(kind, variant, dtype, isa, threads, rng):
    packs = []
    for i, size in enumerate(SIZES):
        T, N, I, H = size
        case = random_case(kind, T, N, I, H, dtype, rng, bias=i % 2 == 0)
        kw = dict(variant, reverse=i % 3 == 1)
        if i % 2:
            kw["lengths"] = random_lengths(T, N, rng)
        pw = F.pack_weights(kind, case["weight_ih"], case["weight_hh"], **_gru_kw(variant))
        packed_case = dict(case, weight_ih=pw.weight_ih, weight_hh=pw.weight_hh)
        packs.append(packs_weights(kind, size, dtype))
        for training in (False, True):
            plain = getattr(NAT, kind)(**case, **kw, training=training, _poison=True)
            fast = getattr(NAT, kind)(
                **packed_case, **kw, training=training, _poison=True, _packed=pw
            )
            y0, s0, tape0 = split_output(kind, plain)
            y1, s1, tape1 = split_output(kind, fast)
            np.testing.assert_array_equal(y1, y0)
            for key in s0:
                np.testing.assert_array_equal(s1[key], s0[key], err_msg=key)
            if training:
                # the tape keeps the read-only snapshot instead of a copy of the weights
                assert tape1.data["weight_ih"] is pw.weight_ih
                up = random_upstream(kind, T, N, H, dtype, rng)
                g0 = backward(NAT, kind, tape0, up, _poison=True)
                g1 = backward(NAT, kind, tape1, up, _poison=True)
                for key, v in g0.items():
                    if v is None:
                        assert g1[key] is None, key
                    else:
                        np.testing.assert_array_equal(g1[key], v, err_msg=f"grad {key}")
    assert any(packs) and not all(packs)  # both kinds of size really ran


def _gru_kw(variant):
    return {"reset_after": variant["reset_after"]} if "reset_after" in variant else {}


@pytest.mark.parametrize(("kind", "variant"), VARIANTS, ids=VARIANT_IDS)
def test_packed_forward_matches_reference(kind, variant, rng):
    # The public API end to end, float64 against the reference (the same tolerance as
    # test_native's), and the reference backend given packed weights.
    T, N, I, H = 6, 9, 23, 45
    case = random_case(kind, T, N, I, H, np.float64, rng)
    pw = F.pack_weights(kind, case["weight_ih"], case["weight_hh"], **_gru_kw(variant))
    args = {k: v for k, v in case.items() if k not in ("weight_ih", "weight_hh")}
    want = getattr(REF, kind)(**case, **variant)
    for backend in ("native", "reference"):
        got = getattr(F, kind)(
            **args, weight_ih=None, weight_hh=None, **variant, packed=pw, backend=backend
        )
        y_w, s_w, _ = split_output(kind, want)
        y_g, s_g, _ = split_output(kind, got)
        assert_allclose_named("y", y_g, y_w, rtol=1e-11, atol=1e-12)
        for key in s_w:
            assert_allclose_named(key, s_g[key], s_w[key], rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_kernel_reads_the_packed_layout(kind, rng):
    # The bitwise test above cannot fail if the kernels ignored the packed layout; here the
    # layout of other weights is swapped in, so the outputs must change where it is used.
    T, N, I, H = 5, 7, 19, 37
    assert packs_weights(kind, (T, N, I, H), np.float32)
    case = random_case(kind, T, N, I, H, np.float32, rng)
    pw = F.pack_weights(kind, case["weight_ih"], case["weight_hh"])
    other = F.pack_weights(kind, case["weight_ih"] * 2, case["weight_hh"] * 2)
    base = dict(case, weight_ih=pw.weight_ih, weight_hh=pw.weight_hh)
    y0 = getattr(NAT, kind)(**base, _packed=pw)[0]
    pw._data = other._data
    y1 = getattr(NAT, kind)(**base, _packed=pw)[0]
    assert not np.array_equal(y0, y1)
    scaled = dict(case, weight_ih=case["weight_ih"] * 2, weight_hh=case["weight_hh"] * 2)
    np.testing.assert_array_equal(y1, getattr(NAT, kind)(**scaled)[0])


def test_snapshot_ignores_later_edits(rng):
    case = random_case("lstm", 8, 6, 10, 33, np.float32, rng)
    w_ih, w_hh = case["weight_ih"], case["weight_hh"]
    before = F.lstm(**case)
    pw = F.pack_weights("lstm", w_ih, w_hh)
    w_ih *= 3  # the caller's arrays, not the snapshot
    w_hh[:] = 0
    args = {k: v for k, v in case.items() if k not in ("weight_ih", "weight_hh")}
    after = F.lstm(**args, weight_ih=None, weight_hh=None, packed=pw)
    np.testing.assert_array_equal(after[0], before[0])
    for w in (pw.weight_ih, pw.weight_hh):
        assert not w.flags.writeable
        with pytest.raises(ValueError):
            w.setflags(write=True)
        with pytest.raises(ValueError):
            w[0, 0] = 1


def test_pack_accepts_any_layout_and_reports_itself(rng):
    case = random_case("gru", 4, 3, 12, 20, np.float64, rng)
    w_ih = np.asfortranarray(case["weight_ih"])
    w_hh = case["weight_hh"][:, ::-1].copy()[:, ::-1]  # negative strides
    pw = F.pack_weights("gru", w_ih, w_hh, reset_after=False)
    assert pw.weight_ih.flags.c_contiguous and pw.weight_hh.flags.c_contiguous
    assert (pw.kind, pw.reset_after, pw.input_size, pw.hidden_size) == ("gru", False, 12, 20)
    assert pw.dtype == np.float64 and pw.nbytes > w_ih.nbytes + w_hh.nbytes
    assert "reset_after=False" in repr(pw) and "hidden_size=20" in repr(pw)
    args = {k: v for k, v in case.items() if k not in ("weight_ih", "weight_hh")}
    got = F.gru(
        **args, weight_ih=pw.weight_ih, weight_hh=pw.weight_hh, reset_after=False, packed=pw
    )
    want = F.gru(**case, reset_after=False)
    np.testing.assert_array_equal(got[0], want[0])


def test_packed_under_another_target(rng):
    # Packed for one target, called under another: still right (the call lays the weights
    # out itself), and bitwise that target's plain result.
    isas = list(fastrnn._core.supported_isas())
    case = random_case("lstm", 6, 8, 30, 40, np.float32, rng)
    before = fastrnn.get_isa()
    try:
        for first in isas:
            fastrnn.set_isa(first)
            pw = F.pack_weights("lstm", case["weight_ih"], case["weight_hh"])
            for second in isas:
                fastrnn.set_isa(second)
                args = {k: v for k, v in case.items() if k not in ("weight_ih", "weight_hh")}
                got = F.lstm(**args, weight_ih=None, weight_hh=None, packed=pw)
                np.testing.assert_array_equal(got[0], F.lstm(**case)[0])
    finally:
        fastrnn.set_isa(before)


def test_packed_misuse_is_a_clear_error(rng):
    case = random_case("gru", 3, 2, 5, 7, np.float32, rng)
    args = {k: v for k, v in case.items() if k not in ("weight_ih", "weight_hh")}
    pw = F.pack_weights("gru", case["weight_ih"], case["weight_hh"])
    with pytest.raises(ValueError, match=r"weight_ih: with packed=, pass packed.weight_ih"):
        F.gru(**case, packed=pw)  # the caller's arrays, which may have changed since
    with pytest.raises(ValueError, match=r"packed: packed for gru\(\), not lstm\(\)"):
        F.lstm(case["x"], None, None, None, None, packed=pw)
    with pytest.raises(ValueError, match="packed: packed with reset_after=True"):
        F.gru(**args, weight_ih=None, weight_hh=None, reset_after=False, packed=pw)
    with pytest.raises(TypeError, match="packed: expected None or a PackedWeights"):
        F.gru(**case, packed=pw._data)
    x64 = case["x"].astype(np.float64)
    with pytest.raises(TypeError, match="dtype"):
        F.gru(x64, None, None, None, packed=pw)
    with pytest.raises(ValueError, match=r"h0: expected shape \(N, H\) = \(2, 7\)"):
        F.gru(case["x"], np.zeros((2, 8), np.float32), None, None, packed=pw)


def test_pack_weights_checks_its_arguments():
    w = np.zeros((12, 5), np.float32)
    h = np.zeros((12, 3), np.float32)
    F.pack_weights("lstm", w, h)
    with pytest.raises(ValueError, match="kind"):
        F.pack_weights("lstmx", w, h)
    with pytest.raises(TypeError, match=r"weight_ih: expected a numpy\.ndarray, got list"):
        F.pack_weights("lstm", [[0.0]], h)
    with pytest.raises(TypeError, match="weight_hh: expected dtype float32 or float64, got int64"):
        F.pack_weights("lstm", w, h.astype(np.int64))
    with pytest.raises(TypeError, match=r"weight_hh: expected dtype float32 \(that of weight_ih"):
        F.pack_weights("lstm", w, h.astype(np.float64))
    with pytest.raises(ValueError, match=r"weight_ih: expected shape \(G\*H, I\) with G=4"):
        F.pack_weights("lstm", np.zeros((10, 5), np.float32), h)
    with pytest.raises(ValueError, match=r"weight_hh: expected shape \(G\*H, H\) = \(12, 3\)"):
        F.pack_weights("lstm", w, np.zeros((12, 4), np.float32))
    with pytest.raises(ValueError, match=r"weight_hh: expected shape \(G\*H, H\)"):
        F.pack_weights("lstm", w, np.zeros(12, np.float32))
    with pytest.raises(TypeError, match="reset_after"):
        F.pack_weights("gru", np.zeros((9, 5), np.float32), h[:9], reset_after="yes")


def test_binding_rejects_a_wrong_packed_array(rng):
    # The kernel reads the packed array blindly: its size and alignment are checked first.
    case = random_case("lstm", 4, 5, 6, 33, np.float32, rng)
    pw = F.pack_weights("lstm", case["weight_ih"], case["weight_hh"])
    args = ("lstm", case["x"], case["h0"], case["c0"], pw.weight_ih, pw.weight_hh, None, None)
    args += (None, "tanh", True, False, False)
    n = pw._data.size
    with pytest.raises(
        ValueError, match=rf"packed weights must have shape \(packed_size,\) = \({n},\)"
    ):
        fastrnn._core.seq_forward(*args, packed=pw._data[:-16], packed_isa=pw._isa)
    with pytest.raises(TypeError, match="packed weights must have dtype float32"):
        fastrnn._core.seq_forward(*args, packed=pw._data.astype(np.float64), packed_isa=pw._isa)
    shifted = np.empty(n + 1, np.float32)[1:]
    shifted[:] = pw._data
    assert shifted.ctypes.data % 64 != 0
    with pytest.raises(ValueError, match="packed weights must be 64-byte aligned"):
        fastrnn._core.seq_forward(*args, packed=shifted, packed_isa=pw._isa)
