"""Peephole LSTMs in the multi-layer stack and in :class:`fastrnn.LSTM` (``peephole=True``).

Parameter names, order and shapes; the stack as layer-by-layer calls of
``functional.lstm(..., weight_peephole=...)``; the native layer against the reference one
(float64, odd sizes, forward and every gradient); the reference stack's gradients against
central finite differences; zero peepholes against a layer without them; config, files,
pickles and packed weights; initialisation; errors.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from fastrnn import _stack
from fastrnn import functional as F
from fastrnn import init as frinit
from fastrnn.layers import GRU, LSTM, RNN
from helpers import (
    assert_allclose_named,
    assert_same_grads,
    central_differences,
    packs_weights,
    random_lengths,
)

BACKENDS = ["reference", "native"]


def _names(L, D, bias=True, proj=False):
    """The expected parameter names, written out independently of param_names."""
    out = []
    for k in range(L):
        for sfx in ("", "_reverse")[:D]:
            out += [f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}"]
            if bias:
                out += [f"bias_ih_l{k}{sfx}", f"bias_hh_l{k}{sfx}"]
            if proj:
                out.append(f"weight_hr_l{k}{sfx}")
            out.append(f"weight_peephole_l{k}{sfx}")
    return out


def _layer(I, H, backend, *, L=2, seed=0, **kw):
    kw.setdefault("bidirectional", True)
    return LSTM(I, H, L, dtype="float64", seed=seed, backend=backend, peephole=True, **kw)


def _scale_peepholes(m, factor):
    """Peepholes large enough that dropping one changes every output noticeably."""
    for k, v in m.params.items():
        if k.startswith("weight_peephole"):
            v *= factor


# ---------------------------------------------------------------- names and shapes
def test_param_names_and_shapes():
    assert _stack.param_names(1, peephole=True) == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_peephole_l0",
    ]  # fmt: skip
    assert _stack.param_names(2, True, bias=False, peephole=True) == _names(2, 2, bias=False)
    assert _stack.param_names(2, True, proj=True, peephole=True) == _names(2, 2, proj=True)
    # without the peephole names: PyTorch's names in PyTorch's order
    with_peep = _stack.param_names(3, True, proj=True, peephole=True)
    no_peep = [n for n in with_peep if not n.startswith("weight_peephole")]
    assert no_peep == _stack.param_names(3, True, proj=True)
    shapes = _stack.param_shapes("lstm", 5, 7, 2, True, True, 3, peephole=True)
    assert list(shapes) == _names(2, 2, proj=True)
    for name, shape in shapes.items():
        if name.startswith("weight_peephole"):
            assert shape == (21,), name
    assert shapes["weight_ih_l1"] == (28, 6) and shapes["weight_hr_l1_reverse"] == (3, 7)
    assert list(_stack.param_shapes("lstm", 5, 7, 2, True)) == _stack.param_names(2, True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_params_grads_names_and_shapes(backend):
    m = _layer(4, 5, backend)
    assert list(m.params) == _names(2, 2) == list(m.grads)
    assert m.params["weight_peephole_l1_reverse"].shape == (15,)
    assert m.num_parameters() == LSTM(4, 5, 2, bidirectional=True).num_parameters() + 4 * 15
    plain = LSTM(4, 5, 2, bias=False, backend=backend, peephole=True)
    assert list(plain.params) == _names(2, 1, bias=False)
    assert list(RNN(4, 5).params) == _stack.param_names(1)  # untouched without the option


# ---------------------------------------------------------------- the stack
@pytest.mark.parametrize("backend", BACKENDS)
def test_stack_is_functional_calls_with_each_layers_peepholes(backend, rng):
    """Each layer and direction gets its own weight_peephole (wrong ones would differ)."""
    T, N, I, H, L, D = 5, 3, 4, 7, 2, 2
    shapes = _stack.param_shapes("lstm", I, H, L, True, peephole=True)
    params = frinit.init_recurrent(shapes, gates=4, hidden_size=H, rng=rng, dtype="float64")
    for k in params:
        if k.startswith("weight_peephole"):
            params[k] = rng.uniform(-1.0, 1.0, 3 * H)
    x = rng.standard_normal((T, N, I))
    h0, c0 = rng.standard_normal((2, L * D, N, H)) * 0.5
    lengths = random_lengths(T, N, rng)
    y, (h_n, c_n), tape = _stack.stack_forward(
        "lstm", x, params, num_layers=L, hidden_size=H, bidirectional=True, state=(h0, c0),
        lengths=lengths, training=True, backend=backend, peephole=True,
    )  # fmt: skip
    assert tape.peephole and not tape.proj_size
    inp = x
    for k in range(L):
        outs = []
        for d in range(D):
            sfx = f"l{k}" + ("_reverse" if d else "")
            yd, (h, c) = F.lstm(
                inp, h0[k * D + d], c0[k * D + d], params[f"weight_ih_{sfx}"],
                params[f"weight_hh_{sfx}"], params[f"bias_ih_{sfx}"], params[f"bias_hh_{sfx}"],
                reverse=bool(d), lengths=lengths, backend=backend,
                weight_peephole=params[f"weight_peephole_{sfx}"],
            )  # fmt: skip
            np.testing.assert_array_equal(h_n[k * D + d], h)
            np.testing.assert_array_equal(c_n[k * D + d], c)
            outs.append(yd)
        inp = np.concatenate(outs, axis=2)
    np.testing.assert_array_equal(y, inp)
    _, _, grads = _stack.stack_backward(tape, rng.standard_normal(y.shape))
    assert list(grads) == list(params)
    for k, g in grads.items():
        assert g.shape == params[k].shape and g.any(), k


@pytest.mark.parametrize("proj_size", [0, 1], ids=["plain", "proj"])
def test_reference_stack_gradients_match_finite_differences(proj_size, rng):
    """Every weight_peephole element (and samples of the other inputs) of a two-layer
    bidirectional reference stack, with dropout masks, lengths and an initial state."""
    T, N, I, H, L, D = 3, 2, 3, 2, 2, 2
    S = proj_size or H
    shapes = _stack.param_shapes("lstm", I, H, L, True, True, proj_size, peephole=True)
    params = {k: rng.uniform(-0.8, 0.8, s) for k, s in shapes.items()}
    x = rng.standard_normal((T, N, I))
    h0 = rng.standard_normal((L * D, N, S)) * 0.5
    c0 = rng.standard_normal((L * D, N, H)) * 0.5
    lengths = np.array([3, 2])
    dy = rng.standard_normal((T, N, D * S))
    dh = rng.standard_normal((L * D, N, S))
    dc = rng.standard_normal((L * D, N, H))
    kw = dict(
        num_layers=L, hidden_size=H, bidirectional=True, lengths=lengths, dropout=0.3,
        training=True, backend="reference", proj_size=proj_size, peephole=True,
    )  # fmt: skip

    def run():
        # the same seed: the same dropout masks in every call
        return _stack.stack_forward(
            "lstm", x, params, state=(h0, c0), rng=np.random.default_rng(5), **kw
        )

    _, _, tape = run()
    assert any(m is not None and not m.all() for m in tape.masks)
    dx, (dh0, dc0), grads = _stack.stack_backward(tape, dy, (dh, dc))
    assert list(grads) == list(shapes)

    def loss():
        y, (h_n, c_n), _ = run()
        return np.sum(y * dy) + np.sum(h_n * dh) + np.sum(c_n * dc)

    def check(name, arr, analytic, count=None):
        idx = np.arange(arr.size) if count is None else rng.choice(arr.size, count, False)
        numeric = central_differences(loss, arr, idx)
        got = analytic.reshape(-1)
        assert np.abs(numeric).max() > 1e-3, name  # the element matters at all
        assert_allclose_named(name, got[idx], numeric, rtol=1e-6, atol=1e-8)

    for name in shapes:
        if name.startswith("weight_peephole"):
            check(name, params[name], grads[name])  # every element
    for name in ("weight_ih_l1", "weight_hh_l0_reverse", "bias_hh_l1_reverse"):
        check(name, params[name], grads[name], count=4)
    if proj_size:
        check("weight_hr_l0", params["weight_hr_l0"], grads["weight_hr_l0"], count=2)
    check("x", x, dx, count=4)
    check("h0", h0, dh0, count=4)
    check("c0", c0, dc0, count=4)


# ---------------------------------------------------------------- native vs reference
@pytest.mark.parametrize(("T", "N", "I", "H"), [(5, 3, 7, 9), (4, 5, 3, 37), (1, 1, 1, 1)])
@pytest.mark.parametrize("packed", [False, True], ids=["plain", "packed"])
def test_native_layer_matches_reference(T, N, I, H, packed, rng):
    ref = _layer(I, H, "reference", dropout=0.25, seed=3)
    nat = _layer(I, H, "native", dropout=0.25, seed=3)
    _scale_peepholes(ref, 3.0)
    nat.load_state_dict(ref.state_dict())
    if packed:
        nat.pack_weights()
    x = rng.standard_normal((T, N, I))
    state = tuple(rng.standard_normal((2, 4, N, H)) * 0.5)
    lengths = random_lengths(T, N, rng)
    outs = [m.forward(x, state, lengths) for m in (ref, nat)]  # same seed: same masks
    (y_r, s_r, tape_r), (y_n, s_n, tape_n) = outs
    tol = dict(rtol=1e-10, atol=1e-12)
    assert_allclose_named("y", y_n, y_r, **tol)
    assert_allclose_named("h_n", s_n[0], s_r[0], **tol)
    assert_allclose_named("c_n", s_n[1], s_r[1], **tol)
    dy = rng.standard_normal(y_r.shape)
    dstate = tuple(rng.standard_normal((2, 4, N, H)))
    dx_r, ds_r = ref.backward(tape_r, dy, dstate)
    dx_n, ds_n = nat.backward(tape_n, dy, dstate)
    assert_allclose_named("dx", dx_n, dx_r, **tol)
    assert_allclose_named("dh0", ds_n[0], ds_r[0], **tol)
    assert_allclose_named("dc0", ds_n[1], ds_r[1], **tol)
    assert list(nat.grads) == list(ref.grads) == _names(2, 2)
    for name, g in ref.grads.items():
        assert g.shape == ref.params[name].shape and nat.grads[name].shape == g.shape, name
        if name.startswith("weight_peephole"):
            assert g.any(), name
        assert_allclose_named(f"grad {name}", nat.grads[name], g, **tol)


def test_packed_layer_is_bitwise_the_plain_one_and_reads_peepholes(rng):
    T, N, I, H = 5, 7, 19, 37
    assert packs_weights("lstm", (T, N, I, H), np.float64)
    plain, fast = _layer(I, H, "native"), _layer(I, H, "native")
    fast.pack_weights()
    assert fast.weights_packed
    x = rng.standard_normal((T, N, I))
    np.testing.assert_array_equal(fast(x)[0], plain(x)[0])
    dy = rng.standard_normal((T, N, 2 * H))
    for m in (plain, fast):
        _, _, tape = m.forward(x)
        m.backward(tape, dy)
    assert_same_grads(fast.grads, plain.grads)
    # the peepholes are not in the snapshot: they stay writable and are read every call
    p = fast.params["weight_peephole_l1_reverse"]
    assert p.flags.writeable
    p *= 0.5
    plain.params["weight_peephole_l1_reverse"] *= 0.5
    y = fast(x)[0]
    np.testing.assert_array_equal(y, plain(x)[0])
    assert not np.array_equal(y, _layer(I, H, "native")(x)[0])


# ---------------------------------------------------------------- zero peepholes
@pytest.mark.parametrize(
    ("backend", "proj_size"), [("reference", 0), ("native", 0), ("reference", 2), ("native", 2)]
)
def test_zero_peepholes_give_a_plain_lstm(backend, proj_size, rng):
    I, H = 4, 5
    plain = LSTM(I, H, 2, bidirectional=True, dtype="float64", seed=1, backend=backend,
                 proj_size=proj_size)  # fmt: skip
    peep = _layer(I, H, backend, seed=2, proj_size=proj_size)
    peep.load_state_dict(plain.state_dict(), strict=False)
    x = rng.standard_normal((6, 3, I))
    lengths = np.array([6, 2, 4])
    y_peep = peep(x, lengths=lengths)[0]
    assert not np.allclose(y_peep, plain(x, lengths=lengths)[0])  # the peepholes act
    for k, v in peep.params.items():
        if k.startswith("weight_peephole"):
            v[...] = 0.0
    (y0, s0, t0), (y1, s1, t1) = (m.forward(x, lengths=lengths) for m in (plain, peep))
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(s1[0], s0[0])
    np.testing.assert_array_equal(s1[1], s0[1])
    dy = rng.standard_normal(y0.shape)
    dx0, ds0 = plain.backward(t0, dy)
    dx1, ds1 = peep.backward(t1, dy)
    np.testing.assert_array_equal(dx1, dx0)
    np.testing.assert_array_equal(ds1[1], ds0[1])
    assert_same_grads({k: peep.grads[k] for k in plain.grads}, plain.grads)
    assert all(peep.grads[k].any() for k in peep.grads if k.startswith("weight_peephole"))


# ---------------------------------------------------------------- config, files, copies
@pytest.mark.parametrize("backend", BACKENDS)
def test_config_file_and_pickle_round_trips(backend, tmp_path, rng):
    m = LSTM(3, 5, 2, bidirectional=True, batch_first=True, peephole=True, seed=4,
             init="orthogonal", backend=backend)  # fmt: skip
    cfg = m.config()
    assert cfg["peephole"] is True and "proj_size" not in cfg
    assert "peephole" not in LSTM(3, 5).config()
    assert "peephole=True" in repr(m)
    built = LSTM(**cfg)
    assert built.config() == cfg and list(built.params) == list(m.params)
    assert all(built.params[k].shape == v.shape for k, v in m.params.items())
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    y = m(x)[0]
    path = tmp_path / "peep.npz"
    m.save(path)
    loaded = LSTM.from_file(path)
    assert loaded.config() == cfg
    np.testing.assert_array_equal(loaded(x)[0], y)
    with pytest.raises(ValueError, match="missing keys"):  # weights without peepholes
        LSTM(3, 5, 2, bidirectional=True, batch_first=True, backend=backend).load(path)
    m.pack_weights()
    for twin in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert twin.peephole and twin.weights_packed and twin.config() == cfg
        np.testing.assert_array_equal(twin(x)[0], y)
    # a layer pickled before peepholes existed has no such attribute: it has none
    old = LSTM(3, 5, seed=4, backend=backend)
    state = old.__getstate__()
    del state["peephole"]
    revived = LSTM.__new__(LSTM)
    revived.__setstate__(state)
    assert not revived.peephole and "peephole" not in revived.config()
    np.testing.assert_array_equal(revived(x[0])[0], old(x[0])[0])


def test_projection_with_peepholes_native_matches_reference(rng):
    ref = LSTM(4, 5, 2, proj_size=2, peephole=True, backend="reference", dtype="float64")
    nat = LSTM(4, 5, 2, proj_size=2, peephole=True, dtype="float64")
    nat.load_state_dict(ref.state_dict())
    assert list(nat.params) == list(ref.params) == _names(2, 1, proj=True)
    assert nat.config()["peephole"] is True and nat.config()["proj_size"] == 2
    x = rng.standard_normal((3, 2, 4))
    (y_r, _, t_r), (y_n, _, t_n) = ref.forward(x), nat.forward(x)
    assert y_n.shape == (3, 2, 2)
    assert_allclose_named("y", y_n, y_r, rtol=1e-10, atol=1e-12)
    dy = rng.standard_normal(y_r.shape)
    ref.backward(t_r, dy)
    nat.backward(t_n, dy)
    for name, g in ref.grads.items():
        assert g.any(), name
        assert_allclose_named(f"grad {name}", nat.grads[name], g, rtol=1e-10, atol=1e-12)
    assert LSTM(**nat.config()).config() == nat.config()


# ---------------------------------------------------------------- initialisation
@pytest.mark.parametrize("scheme", ["uniform", "xavier", "orthogonal"])
def test_peepholes_are_drawn_from_the_uniform_rule_under_every_scheme(scheme):
    H = 16
    m = LSTM(3, H, 2, bidirectional=True, peephole=True, init=scheme, seed=0)
    k = 1 / np.sqrt(H)
    for name, v in m.params.items():
        if name.startswith("weight_peephole"):
            assert v.shape == (3 * H,) and v.dtype == np.float32 and v.flags.c_contiguous
            assert np.abs(v).max() <= k and v.std() > 0.3 * k, name
    again = LSTM(3, H, 2, bidirectional=True, peephole=True, init=scheme, seed=0)
    assert_same_grads(again.params, m.params, what="param")  # seeded: reproducible
    with pytest.raises(ValueError, match=r"weight_peephole_l0 must have shape \(3\*H,\) = \(15,\)"):
        frinit.init_recurrent({"weight_peephole_l0": (20,)}, gates=4, hidden_size=5)


# ---------------------------------------------------------------- errors
def test_bad_peephole_arguments():
    for cls in (GRU, RNN):
        with pytest.raises(TypeError, match="peephole"):
            cls(3, 4, peephole=True)
    for bad in ("yes", 1, None):
        with pytest.raises(TypeError, match="peephole: expected a bool"):
            LSTM(3, 4, peephole=bad)
    assert LSTM(3, 4, peephole=np.bool_(True)).peephole is True
    with pytest.raises(ValueError, match="peephole: only lstm has peepholes"):
        _stack.param_shapes("gru", 3, 4, 1, peephole=True)
    with pytest.raises(TypeError, match="peephole: expected a bool"):
        _stack.param_shapes("lstm", 3, 4, 1, peephole="no")


def test_stack_rejects_mismatched_peephole_params(rng):
    I, H = 3, 4
    shapes = _stack.param_shapes("lstm", I, H, 1, peephole=True)
    params = frinit.init_recurrent(shapes, gates=4, hidden_size=H, rng=rng, dtype="float64")
    x = rng.standard_normal((2, 1, I))
    kw = dict(num_layers=1, hidden_size=H, backend="reference")
    with pytest.raises(ValueError, match="holds 'weight_peephole_l0' but peephole=False"):
        _stack.stack_forward("lstm", x, params, **kw)
    no_peep = {k: v for k, v in params.items() if not k.startswith("weight_peephole")}
    with pytest.raises(ValueError, match="missing 'weight_peephole_l0'"):
        _stack.stack_forward("lstm", x, no_peep, peephole=True, **kw)
    bad = dict(params, weight_peephole_l0=np.zeros(4 * H))
    with pytest.raises(ValueError, match=r"weight_peephole_l0.*\(12,\)"):
        _stack.stack_forward("lstm", x, bad, peephole=True, **kw)
    gru_shapes = _stack.param_shapes("gru", I, H, 1)
    gru = frinit.init_recurrent(gru_shapes, gates=3, hidden_size=H, dtype="float64")
    with pytest.raises(ValueError, match="only lstm has peepholes"):
        _stack.stack_forward("gru", x, gru, peephole=True, **kw)
    with pytest.raises(TypeError, match="peephole: expected a bool"):
        _stack.stack_forward("lstm", x, params, peephole=1, **kw)
