"""Linear, Embedding, Sequential: finite-difference gradients, protocol, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn.modules import Embedding, Linear, Recurrent, Sequential
from helpers import central_differences

BACKEND = "native"


@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3), (3,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients_fd(rng, shape, bias):
    lin = Linear(3, 4, bias=bias, dtype="float64", seed=1)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((*shape[:-1], 4))

    def loss():
        return float(np.sum(lin(x) * w))

    y, tape = lin.forward(x)
    assert y.shape == (*shape[:-1], 4)
    np.testing.assert_allclose(y, x @ lin.params["weight"].T + lin.params.get("bias", 0))
    dx = lin.backward(tape, w)
    np.testing.assert_allclose(dx, central_differences(loss, x), rtol=1e-6, atol=1e-9)
    for name in lin.params:
        np.testing.assert_allclose(
            lin.grads[name], central_differences(loss, lin.params[name]), rtol=1e-6, atol=1e-9
        )
    # accumulation
    lin.backward(tape, w)
    np.testing.assert_allclose(
        lin.grads["weight"],
        2 * central_differences(loss, lin.params["weight"]),
        rtol=1e-6,
        atol=1e-9,
    )
    lin.zero_grad()
    assert not lin.grads["weight"].any()


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-4)])
def test_linear_products_any_layout_and_threads(rng, dtype, tol):
    """The products run in fastrnn's GEMM: sizes that leave partial register tiles and
    split between threads, inputs that are views (copied once) or empty, the same bits for
    1 and 2 threads. float32 vs float64 products of the same float32 inputs: sums of up
    to 517 rounded terms, typically off by ~sqrt(517) * 2**-24 of their scale; 1e-4 still
    catches any wrong index or layout (errors of order 1)."""
    import fastrnn

    lin = Linear(131, 517, dtype=dtype, seed=3)
    w64 = lin.params["weight"].astype(np.float64)
    b64 = lin.params["bias"].astype(np.float64)
    wide = rng.uniform(-1, 1, (2, 37, 262)).astype(dtype)
    x = wide[..., ::2]  # not contiguous along the features
    dy = rng.uniform(-1, 1, (2, 37, 517)).astype(dtype)
    before = fastrnn.get_num_threads()
    got = {}
    try:
        for threads in (1, 2):
            fastrnn.set_num_threads(threads)
            lin.zero_grad()
            y, tape = lin.forward(x)
            dx = lin.backward(tape, dy)
            got[threads] = (y, dx, lin.grads["weight"].copy(), lin.grads["bias"].copy())
    finally:
        fastrnn.set_num_threads(before)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    want = (
        x64 @ w64.T + b64,
        dy64 @ w64,
        dy64.reshape(-1, 517).T @ x64.reshape(-1, 131),
        dy64.sum(axis=(0, 1)),
    )
    for g, w in zip(got[1], want):
        assert g.dtype == np.dtype(dtype) and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=0, atol=tol * max(1.0, np.abs(w).max()))
    for one, two in zip(got[1], got[2]):
        np.testing.assert_array_equal(one, two)
    empty, tape = lin.forward(np.zeros((0, 4, 131), dtype))
    assert empty.shape == (0, 4, 517)
    assert lin.backward(tape, np.zeros((0, 4, 517), dtype)).shape == (0, 4, 131)


def test_linear_init_and_protocol():
    lin = Linear(16, 8, seed=0)
    assert lin.params["weight"].shape == (8, 16) and lin.params["bias"].shape == (8,)
    assert lin.params["weight"].dtype == np.float32
    assert np.abs(lin.params["weight"]).max() <= 0.25
    np.testing.assert_array_equal(Linear(16, 8, seed=0).params["weight"], lin.params["weight"])
    sd = lin.state_dict()
    other = Linear(16, 8, seed=1)
    other.load_state_dict(sd)
    np.testing.assert_array_equal(other.params["bias"], lin.params["bias"])
    sd["weight"][...] = 0  # a copy
    assert lin.params["weight"].any()
    assert lin.num_parameters() == 8 * 16 + 8
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({"weight": sd["weight"]})
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict({"weight": np.zeros((16, 8)), "bias": sd["bias"]})


def test_linear_bad_input():
    lin = Linear(3, 2)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        lin(np.zeros((4, 2), np.float32))
    with pytest.raises(TypeError, match="float32"):
        lin(np.zeros((4, 3), int))
    with pytest.raises(TypeError, match="dtype float32"):
        lin(np.zeros((4, 3)))  # float64 into a float32 module: no silent cast
    _, tape = lin.forward(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="dy must have shape"):
        lin.backward(tape, np.zeros((4, 3), np.float32))
    with pytest.raises(TypeError, match="dy must have dtype"):
        lin.backward(tape, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="tape is None"):
        lin.backward(None, np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="in_features"):
        Linear(0, 2)
    with pytest.raises(TypeError, match="dtype"):
        Linear(2, 2, dtype="int32")


def test_embedding_forward_backward_fd(rng):
    emb = Embedding(6, 3, dtype="float64", seed=2)
    idx = np.array([[0, 5, 2], [2, 2, 1]])  # repeated indices must add up
    w = rng.standard_normal((2, 3, 3))
    y, tape = emb.forward(idx)
    np.testing.assert_array_equal(y, emb.params["weight"][idx])
    assert emb.backward(tape, w) is None
    num = central_differences(lambda: float(np.sum(emb(idx) * w)), emb.params["weight"])
    np.testing.assert_allclose(emb.grads["weight"], num, rtol=1e-6, atol=1e-9)
    assert not emb.grads["weight"][[3, 4]].any()


def test_embedding_padding_idx(rng):
    emb = Embedding(4, 2, padding_idx=0, seed=0)
    assert not emb.params["weight"][0].any()
    _, tape = emb.forward(np.array([0, 1, 0]))
    emb.backward(tape, np.ones((3, 2), np.float32))
    assert not emb.grads["weight"][0].any() and emb.grads["weight"][1].all()


def test_embedding_bad_input():
    emb = Embedding(5, 2)
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        emb(np.array([1, 5]))
    with pytest.raises(IndexError, match="-1"):
        emb(np.array([-1, 0]))
    with pytest.raises(TypeError, match="integer"):
        emb(np.array([0.0, 1.0]))
    _, tape = emb.forward(np.array([1, 2]))
    with pytest.raises(ValueError, match="dy must have shape"):
        emb.backward(tape, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="padding_idx"):
        Embedding(5, 2, padding_idx=5)
    for bad in (1.5, True):  # NumPy's IndexError, or row 1 taken for True, before
        with pytest.raises(TypeError, match="padding_idx must be an integer"):
            Embedding(5, 2, padding_idx=bad)
    assert Embedding(5, 2, padding_idx=np.int64(4)).padding_idx == 4
    assert Embedding(5, 2, padding_idx=np.array(3)).padding_idx == 3


class Tanh:
    """A parameter-free module written to the Sequential protocol."""

    params: dict = {}  # noqa: RUF012
    grads: dict = {}  # noqa: RUF012

    def zero_grad(self):
        pass

    def load_state_dict(self, d):
        pass

    def forward(self, x, training=True):
        y = np.tanh(x)
        return y, y

    def backward(self, tape, dy):
        return dy * (1 - tape**2)


def test_sequential_matches_manual_composition(rng):
    model = Sequential(
        Embedding(7, 4, dtype="float64", seed=0),
        Linear(4, 5, dtype="float64", seed=1),
        Tanh(),
        Linear(5, 3, dtype="float64", seed=2),
    )
    emb, l1, _, l2 = model.modules
    idx = rng.integers(0, 7, (4, 2))
    dy = rng.standard_normal((4, 2, 3))
    y, tape = model.forward(idx)
    assert model.backward(tape, dy) is None  # embedding first: no input gradient

    e_ref = emb.params["weight"][idx]
    a = np.tanh(e_ref @ l1.params["weight"].T + l1.params["bias"])
    y_ref = a @ l2.params["weight"].T + l2.params["bias"]
    np.testing.assert_allclose(y, y_ref, rtol=1e-12)
    np.testing.assert_allclose(model(idx), y_ref, rtol=1e-12)
    da = (dy @ l2.params["weight"]) * (1 - a**2)
    np.testing.assert_allclose(model.grads["3.weight"], dy.reshape(-1, 3).T @ a.reshape(-1, 5))
    np.testing.assert_allclose(model.grads["1.bias"], da.reshape(-1, 5).sum(0))
    de = da @ l1.params["weight"]
    ref = np.zeros((7, 4))
    np.add.at(ref, idx.reshape(-1), de.reshape(-1, 4))
    np.testing.assert_allclose(model.grads["0.weight"], ref, rtol=1e-12)

    assert sorted(model.params) == ["0.weight", "1.bias", "1.weight", "3.bias", "3.weight"]
    assert model.params["1.weight"] is l1.params["weight"]
    sd = model.state_dict()
    model.zero_grad()
    assert not any(g.any() for g in model.grads.values())
    fresh = Sequential(
        Embedding(7, 4, dtype="float64"),
        Linear(4, 5, dtype="float64"),
        Tanh(),
        Linear(5, 3, dtype="float64"),
    )
    fresh.load_state_dict(sd)
    np.testing.assert_allclose(fresh(idx), y_ref, rtol=1e-12)


def test_sequential_with_recurrent_layer(rng):
    layers = pytest.importorskip("fastrnn.layers")
    lstm = layers.LSTM(3, 4, dtype="float64", seed=0, backend=BACKEND)
    head = Linear(4, 2, dtype="float64", seed=1)
    model = Sequential(Recurrent(lstm), head)
    x = rng.standard_normal((5, 2, 3))
    dy = rng.standard_normal((5, 2, 2))
    y, tape = model.forward(x)
    dx = model.backward(tape, dy)

    lstm2 = layers.LSTM(3, 4, dtype="float64", seed=0, backend=BACKEND)
    h, _, t1 = lstm2.forward(x)
    np.testing.assert_allclose(y, h @ head.params["weight"].T + head.params["bias"], rtol=1e-12)
    dx2, _ = lstm2.backward(t1, dy @ head.params["weight"])
    np.testing.assert_allclose(dx, dx2, rtol=1e-10)
    for k in lstm2.grads:
        np.testing.assert_allclose(model.grads[f"0.{k}"], lstm2.grads[k], rtol=1e-10)
    # a bare layer is wrapped automatically
    assert isinstance(Sequential(lstm2, head)[0], Recurrent)


def test_sequential_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        Sequential()
    with pytest.raises(TypeError, match="forward"):
        Sequential(object())
    model = Sequential(Linear(2, 2))
    with pytest.raises(ValueError, match="tape"):
        model.backward([], np.zeros(2))
