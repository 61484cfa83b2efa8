"""Packed weights (fastrnn.functional.pack_weights): a forward given them matches the same
forward without them bit for bit, for every cell and variant, both dtypes, every SIMD
target the CPU has, 1 and 2 threads, inference and training (and the backward of that
training tape), on odd sizes that pack and sizes that never pack (few rows); the snapshot
does not follow later edits of the weights; misuse is a clear error. The NumPy layers'
pack_weights(): bitwise the same, their layouts really read, their weights guarded against
changes (in-place edits, optimizers), reloaded by load_state_dict, reached through
containers."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import fastrnn
from fastrnn import _native as NAT
from fastrnn import functional as F
from fastrnn import layers, modules, optim, seq2seq
from fastrnn import reference as REF
from helpers import (
    VARIANT_IDS,
    VARIANTS,
    assert_allclose_named,
    assert_same_grads,
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
                assert_same_grads(g1, g0)
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
    with pytest.raises(TypeError, match="reset_after: expected a bool"):
        F.gru(**args, weight_ih=None, weight_hh=None, reset_after="yes", packed=pw)
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


# ------------------------------------------------------------------ NumPy layers and modules
LAYER_CLASSES = {"rnn": layers.RNN, "lstm": layers.LSTM, "gru": layers.GRU}


def _layer(kind, variant, dtype, backend="native", seed=0, **kw):
    return LAYER_CLASSES[kind](
        19, 37, num_layers=2, bidirectional=True, dtype=dtype, seed=seed, backend=backend,
        **variant, **kw,
    )  # fmt: skip


def _state(kind, state):
    return state if kind == "lstm" else (state,)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("kind", "variant"), VARIANTS, ids=VARIANT_IDS)
def test_packed_layer_is_bitwise_the_plain_one(kind, variant, dtype, rng):
    # Two layers of two directions each, inference and training (forward, backward and the
    # parameter gradients), at a size whose forward packs: bit for bit with and without.
    T, N = 5, 7
    assert packs_weights(kind, (T, N, 19, 37), dtype) and packs_weights(kind, (T, N, 74, 37), dtype)
    plain, fast = _layer(kind, variant, dtype), _layer(kind, variant, dtype)
    fast.pack_weights()
    assert fast.weights_packed and not plain.weights_packed
    assert set(fast._packed) == {"l0", "l0_reverse", "l1", "l1_reverse"}
    x = rng.standard_normal((T, N, 19)).astype(dtype)
    lengths = random_lengths(T, N, rng)
    y0, s0 = plain(x, lengths=lengths)
    y1, s1 = fast(x, lengths=lengths)
    np.testing.assert_array_equal(y1, y0)
    for a, b in zip(_state(kind, s1), _state(kind, s0)):
        np.testing.assert_array_equal(a, b)
    dy = rng.standard_normal(y0.shape).astype(dtype)
    grads = []
    for m in (plain, fast):
        _, _, tape = m.forward(x, lengths=lengths)
        dx, _ = m.backward(tape, dy)
        grads.append((dx, m.grads))
    np.testing.assert_array_equal(grads[1][0], grads[0][0])
    assert_same_grads(grads[1][1], grads[0][1])


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_packed_layer_reads_its_layout(kind, rng):
    # Each layer and direction's layout swapped for that of doubled weights: the packed
    # layer must then compute what a plain layer with doubled weights does.
    variant = {"nonlinearity": "tanh"} if kind == "rnn" else {}
    fast, doubled = _layer(kind, variant, np.float32), _layer(kind, variant, np.float32)
    fast.pack_weights()
    for sfx, pw in fast._packed.items():
        pw._data = F.pack_weights(kind, pw.weight_ih * 2, pw.weight_hh * 2)._data
        for name in ("weight_ih", "weight_hh"):
            doubled.params[f"{name}_{sfx}"] *= 2
    x = rng.standard_normal((5, 7, 19)).astype(np.float32)
    np.testing.assert_array_equal(fast(x)[0], doubled(x)[0])
    assert not np.array_equal(fast(x)[0], _layer(kind, variant, np.float32)(x)[0])


def test_packed_layer_cannot_change_under_its_layout(rng):
    m = _layer("lstm", {}, np.float32)
    x = rng.standard_normal((5, 7, 19)).astype(np.float32)
    m.pack_weights()
    with pytest.raises(ValueError, match="read-only"):
        m.params["weight_hh_l1"][0, 0] = 1.0
    # an optimizer checks every parameter before it changes any: the Linear first in the
    # chain keeps its weights
    head = modules.Linear(5, 19, seed=0)
    model = modules.Sequential(head, m)
    before = {k: v.copy() for k, v in model.params.items()}
    for k in model.grads:
        model.grads[k][...] = 1.0
    for opt in (optim.SGD(model, lr=0.1), optim.Adam(model, lr=0.1)):
        with pytest.raises(ValueError, match=r"weight_ih_l0.*unpack_weights\(\)"):
            opt.step()
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    # unpacked: writable arrays of the same values; training works again
    y_packed = m(x)[0]
    model.unpack_weights()
    assert not m.weights_packed and not model.weights_packed
    assert all(v.flags.writeable for v in m.params.values())
    np.testing.assert_array_equal(m(x)[0], y_packed)
    optim.SGD(model, lr=0.1).step()
    assert not np.array_equal(m(x)[0], y_packed)


def test_packed_layer_load_state_dict_lays_out_the_new_weights(rng):
    m, plain = _layer("gru", {}, np.float32), _layer("gru", {}, np.float32)
    x = rng.standard_normal((5, 7, 19)).astype(np.float32)
    m.pack_weights()
    new = {k: v * 1.5 for k, v in plain.state_dict().items()}
    m.load_state_dict(new)
    plain.load_state_dict(new)
    assert m.weights_packed and not m.params["weight_ih_l0"].flags.writeable
    np.testing.assert_array_equal(m(x)[0], plain(x)[0])
    # a failed load changes nothing and leaves the layer packed
    bad = dict(new, weight_hh_l0=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="weight_hh_l0"):
        m.load_state_dict(bad)
    assert m.weights_packed
    np.testing.assert_array_equal(m(x)[0], plain(x)[0])


def test_packed_layer_with_a_replaced_weight_runs_it_unpacked(rng):
    m, plain = _layer("lstm", {}, np.float32), _layer("lstm", {}, np.float32)
    x = rng.standard_normal((5, 7, 19)).astype(np.float32)
    m.pack_weights()
    w = rng.standard_normal(m.params["weight_hh_l0"].shape).astype(np.float32) * 0.1
    m.params["weight_hh_l0"] = w
    plain.params["weight_hh_l0"] = w.copy()
    np.testing.assert_array_equal(m(x)[0], plain(x)[0])
    m.unpack_weights()
    assert m.params["weight_hh_l0"] is w  # the caller's array stays


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_of_packed_weights_are_laid_out_again(how, rng):
    # A copied array is writable: a copy that kept the old layout could drift from its
    # weights. Copies of PackedWeights and of packed layers are packed afresh instead.
    clone = copy.deepcopy if how == "deepcopy" else lambda o: pickle.loads(pickle.dumps(o))
    case = random_case("lstm", 5, 7, 19, 37, np.float32, rng)
    pw = F.pack_weights("lstm", case["weight_ih"], case["weight_hh"])
    pw2 = clone(pw)
    assert not pw2.weight_ih.flags.writeable and not pw2.weight_hh.flags.writeable
    args = {k: v for k, v in case.items() if k not in ("weight_ih", "weight_hh")}
    y = F.lstm(**args, weight_ih=None, weight_hh=None, packed=pw)[0]
    np.testing.assert_array_equal(F.lstm(**args, weight_ih=None, weight_hh=None, packed=pw2)[0], y)
    m = _layer("gru", {}, np.float32)
    m.pack_weights()
    m2 = clone(m)
    assert m2.weights_packed and set(m2._packed) == set(m._packed)
    for sfx, p2 in m2._packed.items():
        assert m2.params[f"weight_ih_{sfx}"] is p2.weight_ih and not p2.weight_ih.flags.writeable
    x = rng.standard_normal((5, 7, 19)).astype(np.float32)
    np.testing.assert_array_equal(m2(x)[0], m(x)[0])
    with pytest.raises(ValueError, match="read-only"):
        m2.params["weight_hh_l0"][...] = 0.0
    plain = clone(_layer("gru", {}, np.float32))
    assert not plain.weights_packed and plain.params["weight_ih_l0"].flags.writeable


def test_pack_weights_reaches_every_layer_of_a_container(rng):
    enc, dec = layers.LSTM(3, 8, seed=0), layers.GRU(8, 4, seed=1)
    model = modules.Sequential(enc, modules.Linear(8, 8, seed=2), dec)
    assert not model.weights_packed
    model.pack_weights()
    assert enc.weights_packed and dec.weights_packed and model.weights_packed
    assert not modules.Linear(2, 2).weights_packed
    x = rng.standard_normal((6, 4, 3)).astype(np.float32)
    y = model(x)
    sd = {k: v * 0.5 for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    assert enc.weights_packed and dec.weights_packed
    model.unpack_weights()
    y_half = model(x)
    model.load_state_dict({k: v * 2 for k, v in sd.items()})
    np.testing.assert_array_equal(model(x), y)
    assert not np.array_equal(y_half, y)
    s2s = seq2seq.Seq2Seq(5, 6, 7, cell="lstm", seed=0)
    s2s.pack_weights()
    assert s2s.encoder.weights_packed and s2s.decoder.weights_packed


@pytest.mark.parametrize(("kind", "variant"), VARIANTS[2:5], ids=VARIANT_IDS[2:5])
def test_packed_reference_layer_ignores_the_layout(kind, variant, rng):
    m, plain = _layer(kind, variant, np.float64, "reference"), _layer(kind, variant, np.float64)
    x = rng.standard_normal((4, 3, 19))
    m.pack_weights()
    assert_allclose_named("y", m(x)[0], plain(x)[0], rtol=1e-11, atol=1e-12)
