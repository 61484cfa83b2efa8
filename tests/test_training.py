"""Truncated BPTT: chunking, state carried across chunks, gradients cut at chunk starts."""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn.training import chunk_bounds, detach_state, truncated_bptt

BACKEND = "native"


def test_chunk_bounds_cover_the_stream():
    assert list(chunk_bounds(10, 4)) == [(0, 4), (4, 8), (8, 10)]
    assert list(chunk_bounds(3, 5)) == [(0, 3)]
    with pytest.raises(ValueError, match="k"):
        list(chunk_bounds(3, 0))


def test_state_is_carried_and_detached():
    x = np.arange(10.0)[:, None, None] * np.ones((1, 2, 1))
    targets = np.arange(10)[:, None] * np.ones((1, 2), int)
    seen = []
    returned = []

    def step(xc, yc, state):
        seen.append((xc.copy(), yc.copy(), state))
        new = (state if state is not None else np.zeros(2)) + xc[:, :, 0].sum(0)
        returned.append(new)
        return float(xc.sum()), new

    res = truncated_bptt(x, 4, step, targets=targets)
    assert res.bounds == [(0, 4), (4, 8), (8, 10)]
    assert res.losses == [12.0, 44.0, 34.0]
    assert seen[0][2] is None
    np.testing.assert_array_equal(seen[1][2], [6.0, 6.0])  # sum of 0..3
    np.testing.assert_array_equal(seen[2][2], [28.0, 28.0])
    assert seen[1][2] is not returned[0]  # a copy, not the array the step returned
    np.testing.assert_array_equal(seen[2][1][:, 0], [8, 9])
    np.testing.assert_array_equal(res.state, [45.0, 45.0])


def test_detach_state_copies_tuples():
    h, c = np.ones(2), np.zeros(2)
    d = detach_state((h, c))
    assert isinstance(d, tuple) and d[0] is not h and d[1] is not c
    np.testing.assert_array_equal(d[0], h)
    assert detach_state(None) is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="targets"):
        truncated_bptt(np.zeros((4, 1)), 2, lambda *a: (0.0, None), targets=np.zeros(3))
    with pytest.raises(ValueError, match="x must be"):
        truncated_bptt(3.0, 2, lambda *a: (0.0, None))
    res = truncated_bptt([[1.0], [2.0], [3.0]], 2, lambda x, y, s: (float(np.sum(x)), None))
    assert res.losses == [3.0, 3.0]
    with pytest.raises(TypeError, match="callable"):
        truncated_bptt(np.zeros((4, 1)), 2, None)
    with pytest.raises(TypeError, match="loss, new_state"):
        truncated_bptt(np.zeros((4, 1)), 2, lambda *a: 0.0)


def _grads_with_tbptt(layer, x, dy, k):
    layer.zero_grad()
    states = []

    def step(xc, dyc, state):
        states.append(state)
        y, new_state, tape = layer.forward(xc, state)
        layer.backward(tape, dyc)
        return float(np.sum(y * dyc)), new_state

    res = truncated_bptt(x, k, step, targets=dy)
    return {n: g.copy() for n, g in layer.grads.items()}, res, states


def test_tbptt_with_lstm_carries_state_and_cuts_gradients(rng):
    layers = pytest.importorskip("fastrnn.layers")
    lstm = layers.LSTM(3, 4, dtype="float64", seed=0, backend=BACKEND)
    T = 9
    x = rng.standard_normal((T, 2, 3))
    dy = rng.standard_normal((T, 2, 4))

    # full BPTT
    lstm.zero_grad()
    y_full, s_full, tape = lstm.forward(x)
    lstm.backward(tape, dy)
    full = {n: g.copy() for n, g in lstm.grads.items()}

    # k >= T is full BPTT
    g_all, _, _ = _grads_with_tbptt(lstm, x, dy, T)
    for n in full:
        np.testing.assert_allclose(g_all[n], full[n], rtol=1e-12)

    # k < T: forward values are unchanged (state carried) ...
    g_tr, res, states = _grads_with_tbptt(lstm, x, dy, 4)
    assert sum(res.losses) == pytest.approx(float(np.sum(y_full * dy)), rel=1e-12)
    np.testing.assert_allclose(res.state[0], s_full[0], rtol=1e-12)
    _, s4, _ = lstm.forward(x[:4])
    np.testing.assert_allclose(states[1][0], s4[0], rtol=1e-12)
    # ... but the gradient is the truncated one: each chunk's backward alone
    lstm.zero_grad()
    state = None
    for s, e in [(0, 4), (4, 8), (8, 9)]:
        _, new_state, t = lstm.forward(x[s:e], state)
        lstm.backward(t, dy[s:e])
        state = new_state
    for n in full:
        np.testing.assert_allclose(g_tr[n], lstm.grads[n], rtol=1e-12)
    assert not np.allclose(g_tr["weight_hh_l0"], full["weight_hh_l0"])


def test_chunk_bounds_and_detach_state_check_their_arguments():
    with pytest.raises(TypeError, match=r"T_total must be an integer, got 5\.7"):
        list(chunk_bounds(5.7, 2))
    with pytest.raises(TypeError, match="state must be None, an array or a tuple/list"):
        detach_state({"h": np.ones(2)})  # became a 0-d object array
    assert list(chunk_bounds(np.int64(3), 2)) == [(0, 2), (2, 3)]
