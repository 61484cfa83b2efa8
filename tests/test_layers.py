"""Layer API: params/grads protocol, state dicts, files, shapes, dropout, init, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn import init as frinit
from fastrnn.layers import GRU, LSTM, RNN, load_module

# Every layer test runs on both backends: the NumPy reference and the native kernels.
BACKENDS = ["reference", "native"]

T, N, I, H = 4, 3, 5, 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_params_grads_protocol_and_accumulation(backend, rng):
    m = LSTM(I, H, 2, bidirectional=True, dtype="float64", seed=0, backend=backend)
    assert list(m.params) == list(m.grads)
    assert len(m.params) == 16
    for k, v in m.params.items():
        assert m.grads[k].shape == v.shape and not m.grads[k].any()
        assert v.flags.c_contiguous and v.dtype == np.float64
    x = rng.standard_normal((T, N, I))
    y, _, tape = m.forward(x)
    dy = rng.standard_normal(y.shape)
    m.backward(tape, dy)
    first = {k: v.copy() for k, v in m.grads.items()}
    assert all(v.any() for v in first.values())
    m.backward(tape, dy)
    for k, v in first.items():
        np.testing.assert_allclose(m.grads[k], 2 * v, rtol=1e-14)
    ids = {k: id(v) for k, v in m.grads.items()}
    m.zero_grad()
    assert all(not v.any() for v in m.grads.values())
    assert ids == {k: id(v) for k, v in m.grads.items()}


def test_state_dict_copies_and_load_is_in_place():
    m = GRU(I, H, 2, seed=0, backend="reference")
    sd = m.state_dict()
    sd["weight_hh_l1"][...] = 7.0
    assert not (m.params["weight_hh_l1"] == 7.0).any()
    ref = m.params["weight_hh_l1"]
    m.load_state_dict(sd)
    assert m.params["weight_hh_l1"] is ref and (ref == 7.0).all()
    # float64 and integer values are cast to the layer's dtype
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    sd["bias_ih_l0"] = np.arange(9)
    m.load_state_dict(sd)
    assert m.params["bias_ih_l0"].dtype == np.float32
    np.testing.assert_array_equal(m.params["bias_ih_l0"], np.arange(9))


def test_load_state_dict_errors_name_the_key():
    m = RNN(I, H, 2, seed=0, backend="reference")
    sd = m.state_dict()
    bad = dict(sd, weight_ih_l1=np.zeros((H, H + 1)))
    with pytest.raises(ValueError, match=r"'weight_ih_l1' expected shape \(3, 3\), got \(3, 4\)"):
        m.load_state_dict(bad)
    assert not (m.params["weight_ih_l0"] == 0).all()  # nothing changed
    missing = {k: v for k, v in sd.items() if k != "bias_hh_l1"}
    with pytest.raises(ValueError, match=r"missing keys \['bias_hh_l1'\]"):
        m.load_state_dict(missing)
    m.load_state_dict(missing, strict=False)
    with pytest.raises(ValueError, match=r"unexpected keys \['weight_ih_l2'\]"):
        m.load_state_dict(dict(sd, weight_ih_l2=np.zeros((H, H))))
    m.load_state_dict(dict(sd, weight_ih_l2=np.zeros((H, H))), strict=False)
    with pytest.raises(TypeError, match="'bias_ih_l0' must hold real numbers"):
        m.load_state_dict(dict(sd, bias_ih_l0=np.zeros(H, complex)))
    with pytest.raises(TypeError, match="mapping"):
        m.load_state_dict([1, 2])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_save_and_load_npz(backend, cls, tmp_path, rng):
    m = cls(I, H, 2, bidirectional=True, batch_first=True, dropout=0.25, seed=4,
            init="orthogonal", backend=backend)  # fmt: skip
    path = tmp_path / "m.npz"
    m.save(path)
    built = cls.from_file(path)
    assert type(built) is cls and built.config() == m.config()
    for k, v in m.params.items():
        np.testing.assert_array_equal(built.params[k], v)
    assert type(load_module(path)) is cls
    other = cls(I, H, 2, bidirectional=True, batch_first=True, backend=backend)
    other.load(path)
    x = rng.standard_normal((N, T, I)).astype(np.float32)
    np.testing.assert_array_equal(m(x)[0], other(x)[0])
    with pytest.raises(ValueError, match="missing keys"):
        cls(I, H, 1, backend=backend).load(path)
    wrong = RNN if cls is not RNN else GRU
    with pytest.raises(ValueError, match=f"not a {wrong.__name__}"):
        wrong.from_file(path)
    np.savez(tmp_path / "plain.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a fastrnn module file"):
        load_module(tmp_path / "plain.npz")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_batch_first_and_unbatched_are_views_of_time_major(backend, cls, rng):
    tm = cls(I, H, 2, bidirectional=True, dtype="float64", seed=1, backend=backend)
    bf = cls(I, H, 2, bidirectional=True, batch_first=True, dtype="float64", backend=backend)
    bf.load_state_dict(tm.state_dict())
    x = rng.standard_normal((T, N, I))
    lengths = np.array([2, 4, 3])
    y, s, tape = tm.forward(x, lengths=lengths)
    yb, sb, tapeb = bf.forward(x.transpose(1, 0, 2), lengths=lengths)
    assert yb.shape == (N, T, 2 * H)
    np.testing.assert_array_equal(yb, y.transpose(1, 0, 2))
    hs, hsb = (s[0], sb[0]) if cls is LSTM else (s, sb)
    np.testing.assert_array_equal(hs, hsb)
    dy = rng.standard_normal(y.shape)
    dx, _ = tm.backward(tape, dy)
    dxb, _ = bf.backward(tapeb, dy.transpose(1, 0, 2))
    assert dxb.shape == (N, T, I)
    np.testing.assert_allclose(dxb, dx.transpose(1, 0, 2), rtol=1e-14, atol=1e-15)
    # unbatched (T, I) == batched with N = 1, states (L*D, H)
    yu, su, tapeu = tm.forward(x[:, 0])
    y1, _ = tm(x[:, :1])
    assert yu.shape == (T, 2 * H)
    np.testing.assert_allclose(yu, y1[:, 0], rtol=1e-14, atol=1e-15)
    hu = su[0] if cls is LSTM else su
    assert hu.shape == (4, H)
    dxu, dsu = tm.backward(tapeu, np.ones_like(yu), su)
    assert dxu.shape == (T, I)
    assert (dsu[0] if cls is LSTM else dsu).shape == (4, H)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_in_layers(backend, rng):
    x = rng.standard_normal((T, N, I)).astype(np.float32)
    a = GRU(I, H, 3, dropout=0.5, seed=11, backend=backend)
    b = GRU(I, H, 3, dropout=0.5, seed=11, backend=backend)
    ya, _ = a(x)
    np.testing.assert_array_equal(ya, a(x)[0])  # inference: deterministic, no dropout
    y_eval, _, _ = a.forward(x, training=False)
    np.testing.assert_array_equal(ya, y_eval)
    y_train_a, _, tape_a = a.forward(x)
    y_train_b, _, _ = b.forward(x)
    np.testing.assert_array_equal(y_train_a, y_train_b)  # same seed, same masks
    assert not np.allclose(y_train_a, ya)
    masks = tape_a.stack.masks
    assert masks[0] is None and masks[1] is not None and masks[2] is not None
    assert set(np.unique(masks[1])) <= {0.0, 2.0}
    y_again, _, _ = a.forward(x)  # the layer's generator moves on: new masks
    assert not np.array_equal(y_again, y_train_a)


def test_init_schemes(rng):
    m = LSTM(I, 8, 2, seed=0, backend="reference")
    k = 1 / np.sqrt(8)
    for v in m.params.values():
        assert np.abs(v).max() <= k
    m2 = LSTM(I, 8, 2, seed=0, backend="reference")
    for k2 in m.params:
        np.testing.assert_array_equal(m.params[k2], m2.params[k2])
    m3 = LSTM(I, 8, 2, seed=1, backend="reference")
    assert not np.array_equal(m.params["weight_hh_l0"], m3.params["weight_hh_l0"])
    o = LSTM(I, 8, 1, bias=True, init="orthogonal", dtype="float64", seed=0, backend="reference")
    whh = o.params["weight_hh_l0"]
    for g in range(4):
        blk = whh[g * 8 : (g + 1) * 8]
        np.testing.assert_allclose(blk @ blk.T, np.eye(8), atol=1e-12)
    assert not o.params["bias_ih_l0"].any()
    xv = GRU(I, 8, 1, init="xavier", seed=0, backend="reference")
    bound = np.sqrt(6 / (I + 8))
    assert np.abs(xv.params["weight_ih_l0"]).max() <= bound
    assert not xv.params["bias_hh_l0"].any()
    q = frinit.orthogonal(rng, (3, 6))
    np.testing.assert_allclose(q @ q.T, np.eye(3), atol=1e-12)
    with pytest.raises(ValueError, match="init"):
        frinit.init_recurrent({"weight_ih": (3, 3)}, gates=1, hidden_size=3, scheme="he")


def test_float32_layer_close_to_float64(rng):
    m64 = LSTM(I, H, 2, bidirectional=True, dtype="float64", seed=0, backend="reference")
    m32 = LSTM(I, H, 2, bidirectional=True, seed=0, backend="reference")
    m32.load_state_dict(m64.state_dict())
    x = rng.standard_normal((T, N, I))
    y64, _ = m64(x)
    y32, (h32, c32) = m32(x.astype(np.float32))
    assert y32.dtype == h32.dtype == c32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_bad_inputs(backend):
    m = LSTM(I, H, 2, dtype="float64", backend=backend)
    x = np.zeros((T, N, I))
    with pytest.raises(ValueError, match=r"x: expected shape \(T, N, I\) with I = 5"):
        m(np.zeros((T, N, I + 1)))
    with pytest.raises(ValueError, match=r"x: expected shape \(T, I\)"):
        m(np.zeros((T, I + 1)))
    with pytest.raises(ValueError, match="x: expected a 3-D"):
        m(np.zeros(I))
    with pytest.raises(TypeError, match="x: expected dtype float64"):
        m(x.astype(np.float32))
    with pytest.raises(ValueError, match=r"lengths: every value must be in \[1, T\] = \[1, 4\]"):
        m(x, lengths=[1, 5, 2])
    with pytest.raises(ValueError, match="lengths: every value"):
        m(x, lengths=[1, 0, 2])
    with pytest.raises(ValueError, match=r"lengths: expected shape \(N,\) = \(3,\)"):
        m(x, lengths=[[1, 2, 3]])
    with pytest.raises(TypeError, match="lengths: expected a 1-D integer array"):
        m(x, lengths=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="lengths: only allowed with batched"):
        m(x[:, 0], lengths=[2])
    with pytest.raises(TypeError, match=r"state: expected a pair \(h, c\)"):
        m(x, np.zeros((2, N, H)))
    with pytest.raises(ValueError, match=r"state\[0\] \(h\): expected shape \(L\*D, N, H\)"):
        m(x, (np.zeros((1, N, H)), np.zeros((2, N, H))))
    with pytest.raises(TypeError, match=r"state\[1\] \(c\): expected dtype float64"):
        m(x, (np.zeros((2, N, H)), np.zeros((2, N, H), np.float32)))
    with pytest.raises(TypeError, match="state: expected an array"):
        GRU(I, H, dtype="float64", backend=backend)(x, (np.zeros((1, N, H)),) * 2)
    _, _, tape = m.forward(x)
    with pytest.raises(ValueError, match=r"dy: expected y's shape \(4, 3, 3\)"):
        m.backward(tape, np.zeros((T, N, 2 * H)))
    with pytest.raises(ValueError, match="dstate"):
        m.backward(tape, None, (np.zeros((2, N, H + 1)), None))
    with pytest.raises(TypeError, match="tape"):
        m.backward("tape")
    bad_args = [
        (dict(hidden_size=0), ValueError, "hidden_size"),
        (dict(num_layers=1.5), TypeError, "num_layers"),
        (dict(dropout=1.5), ValueError, "dropout"),
        (dict(dropout="0.1"), TypeError, "dropout"),
        (dict(bias="yes"), TypeError, "bias"),
        (dict(dtype="int32"), ValueError, "dtype"),
        (dict(init="he"), ValueError, "init"),
        (dict(backend="cuda"), ValueError, "backend"),
        (dict(seed=-1), ValueError, "seed"),
    ]
    for kw, exc, word in bad_args:
        args = {"input_size": I, "hidden_size": H, "backend": backend, **kw}
        with pytest.raises(exc, match=word):
            LSTM(**args)
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(I, H, nonlinearity="gelu")
    with pytest.raises(TypeError):
        LSTM(I, H, nonlinearity="relu")  # not an LSTM option
    with pytest.raises(TypeError, match="reset_after"):
        GRU(I, H, reset_after="no")


@pytest.mark.parametrize("other_cls", [LSTM, GRU])
def test_backward_rejects_another_layers_tape(other_cls):
    # A tape holds the activations of the weights that recorded it: another layer's tape
    # (even one of the same class and sizes) would give gradients silently wrong for this
    # layer's weights, and one of another class failed deep inside NumPy.
    rng = np.random.default_rng(11)
    m = LSTM(3, 4, seed=1)
    other = other_cls(3, 4, seed=2)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    y, _, tape = other.forward(x)
    before = {k: v.copy() for k, v in m.grads.items()}
    with pytest.raises(ValueError, match="tape from this layer's forward"):
        m.backward(tape, np.ones_like(y))
    assert all(np.array_equal(m.grads[k], v) for k, v in before.items())
    other.backward(tape, np.ones_like(y))  # its own layer still takes it
    assert any(v.any() for v in other.grads.values())


def test_backward_rejects_a_copy_or_a_freed_layers_tape():
    import copy
    import gc

    rng = np.random.default_rng(12)
    m = GRU(3, 4, seed=1)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    y, _, tape = m.forward(x)
    twin = copy.deepcopy(m)
    with pytest.raises(ValueError, match="another layer"):
        twin.backward(tape, np.ones_like(y))
    _, _, orphan = GRU(3, 4, seed=3).forward(x)
    gc.collect()
    with pytest.raises(ValueError, match="another layer"):
        m.backward(orphan, np.ones_like(y))


@pytest.mark.parametrize("scheme", ["uniform", "xavier", "orthogonal"])
def test_init_recurrent_checks_its_arguments(scheme):
    def call(shapes, gates=4, hidden_size=5, dtype="float64"):
        return frinit.init_recurrent(
            shapes, gates=gates, hidden_size=hidden_size, scheme=scheme, dtype=dtype
        )

    got = call({"weight_ih_l0": (20, 3), "weight_hh_l0": (20, 5), "bias_ih_l0": (20,)})
    assert [a.shape for a in got.values()] == [(20, 3), (20, 5), (20,)]
    # rows not G*H: the gate-aware schemes returned fewer rows than asked, silently
    for bad in ({"weight_hh_l0": (10, 5)}, {"weight_ih": (5, 3)}, {"weight_ih": (20,)}):
        with pytest.raises(ValueError, match=r"must have shape \(G\*H, n\) = \(20, n\)"):
            call(bad)
    with pytest.raises(ValueError, match=r"bias_hh must have shape \(G\*H,\) = \(20,\)"):
        call({"bias_hh": (10,)})
    with pytest.raises(ValueError, match="unknown parameter name 'gamma'"):
        call({"gamma": (20,)})
    with pytest.raises(ValueError, match="hidden_size must be >= 1"):
        call({"bias": (0,)}, hidden_size=0)
    with pytest.raises(TypeError, match="gates must be an int"):
        call({"bias": (20,)}, gates=4.0)
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got int32"):
        call({"bias": (20,)}, dtype="int32")


def test_tapes_pickle_with_their_layer():
    import pickle

    from fastrnn.cells import LSTMCell

    rng = np.random.default_rng(14)
    m = LSTM(3, 4, seed=1)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    y, _, tape = m.forward(x)
    m2, tape2 = pickle.loads(pickle.dumps((m, tape)))  # a weak reference failed to pickle
    dx, _ = m.backward(tape, np.ones_like(y))
    dx2, _ = m2.backward(tape2, np.ones_like(y))
    np.testing.assert_array_equal(dx, dx2)
    assert all(np.array_equal(m.grads[k], m2.grads[k]) for k in m.grads)
    with pytest.raises(ValueError, match="another layer"):  # alone: no layer's tape
        m.backward(pickle.loads(pickle.dumps(tape)), np.ones_like(y))
    big = LSTM(3, 200, seed=3)  # alone, a tape does not carry its layer (0.65 MB here)
    _, _, big_tape = big.forward(x)
    assert len(pickle.dumps(big_tape)) < len(pickle.dumps(big_tape.stack)) + 1000
    cell = LSTMCell(3, 4, seed=2)
    (h, c), ctape = cell.forward(x[0])
    cell2, ctape2 = pickle.loads(pickle.dumps((cell, ctape)))
    got = cell2.backward(ctape2, (np.ones_like(h), np.ones_like(c)))[0]
    np.testing.assert_array_equal(got, cell.backward(ctape, (np.ones_like(h), np.ones_like(c)))[0])


@pytest.mark.parametrize("scheme", ["uniform", "xavier", "orthogonal"])
def test_init_of_the_projection(scheme, rng):
    H, P = 6, 4
    shapes = {"weight_ih_l0": (4 * H, 3), "weight_hh_l0": (4 * H, P), "weight_hr_l0": (P, H)}
    out = frinit.init_recurrent(shapes, gates=4, hidden_size=H, scheme=scheme, rng=rng)
    w = out["weight_hr_l0"]
    assert w.shape == (P, H) and w.dtype == np.float32 and w.flags.c_contiguous
    if scheme == "uniform":
        assert np.abs(w).max() <= 1 / np.sqrt(H) and w.std() > 0.1 / np.sqrt(H)
    elif scheme == "xavier":
        assert np.abs(w).max() <= np.sqrt(6 / (P + H)) and w.std() > 0
    else:  # orthonormal rows
        np.testing.assert_allclose(w @ w.T, np.eye(P), atol=1e-6)
    with pytest.raises(ValueError, match=r"weight_hr_l0 must have shape \(P, H\) = \(P, 6\)"):
        frinit.init_recurrent({"weight_hr_l0": (P, H + 1)}, gates=4, hidden_size=H, scheme=scheme)
