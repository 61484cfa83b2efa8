"""Cells: a Python loop over a cell equals the layer (forward and backward); cell API."""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn.cells import GRUCell, LSTMCell, RNNCell
from fastrnn.layers import GRU, LSTM, RNN, load_module

# Every layer test runs on both backends: the NumPy reference and the native kernels.
BACKENDS = ["reference", "native"]

T, N, I, H = 5, 3, 4, 3
TOL = dict(rtol=1e-12, atol=1e-13)

CASES = {
    "rnn_tanh": (RNN, RNNCell, {"nonlinearity": "tanh"}),
    "rnn_relu": (RNN, RNNCell, {"nonlinearity": "relu"}),
    "lstm": (LSTM, LSTMCell, {}),
    "gru": (GRU, GRUCell, {}),
    "gru_reset_before": (GRU, GRUCell, {"reset_after": False}),
}


def _cells_for(layer, cell_cls, extra, backend):
    """One cell per direction carrying the layer's parameters for layer 0."""
    cells = []
    for sfx in ("", "_reverse")[: layer.num_directions]:
        cell = cell_cls(I, H, bias=layer.bias, dtype="float64", backend=backend, **extra)
        cell.load_state_dict({k: layer.params[f"{k}_l0{sfx}"] for k in cell.params})
        cells.append(cell)
    return cells


def _add(a, b):
    if isinstance(a, tuple):
        return tuple(_add(u, v) for u, v in zip(a, b))
    return a + b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("bias", [True, False])
def test_layer_equals_cell_loop(backend, case, bias, rng):
    layer_cls, cell_cls, extra = CASES[case]
    layer = layer_cls(I, H, bias=bias, bidirectional=True, dtype="float64", seed=0,
                      backend=backend, **extra)  # fmt: skip
    cells = _cells_for(layer, cell_cls, extra, backend)
    lstm = case == "lstm"
    x = rng.uniform(-1, 1, (T, N, I))
    h0 = rng.uniform(-0.5, 0.5, (2, N, H))
    c0 = rng.uniform(-0.5, 0.5, (2, N, H))
    y, state_n, tape = layer.forward(x, (h0, c0) if lstm else h0)

    dy = rng.standard_normal((T, N, 2 * H))
    dh = rng.standard_normal((2, N, H))
    dc = rng.standard_normal((2, N, H))
    dx, dstate0 = layer.backward(tape, dy, (dh, dc) if lstm else dh)

    dx_loop = np.zeros_like(x)
    for d, cell in enumerate(cells):
        order = range(T - 1, -1, -1) if d else range(T)
        state = (h0[d], c0[d]) if lstm else h0[d]
        tapes = []
        for t in order:
            state, tp = cell.forward(x[t], state)
            tapes.append((t, tp))
            h = state[0] if lstm else state
            np.testing.assert_allclose(y[t, :, d * H : (d + 1) * H], h, **TOL)
        if lstm:
            np.testing.assert_allclose(state_n[0][d], state[0], **TOL)
            np.testing.assert_allclose(state_n[1][d], state[1], **TOL)
        else:
            np.testing.assert_allclose(state_n[d], state, **TOL)
        # backward through the loop: the state gradient gathers dy_t at each step
        g = (dh[d], dc[d]) if lstm else dh[d]
        for t, tp in reversed(tapes):
            dy_t = dy[t, :, d * H : (d + 1) * H]
            g_in = (g[0] + dy_t, g[1]) if lstm else g + dy_t
            dx_t, g = cell.backward(tp, g_in)
            dx_loop[t] += dx_t
        if lstm:
            np.testing.assert_allclose(dstate0[0][d], g[0], **TOL)
            np.testing.assert_allclose(dstate0[1][d], g[1], **TOL)
        else:
            np.testing.assert_allclose(dstate0[d], g, **TOL)
        sfx = "_l0" + ("_reverse" if d else "")
        for k, gk in cell.grads.items():
            np.testing.assert_allclose(layer.grads[k + sfx], gk, err_msg=k + sfx, **TOL)
    np.testing.assert_allclose(dx, dx_loop, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["rnn_tanh", "lstm", "gru"])
def test_cell_matches_torch_cell(backend, case, rng):
    torch = pytest.importorskip("torch")
    _, cell_cls, extra = CASES[case]
    theirs = {"rnn_tanh": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[
        case
    ](I, H, dtype=torch.float64)
    cell = cell_cls(I, H, dtype="float64", backend=backend, **extra)
    assert list(cell.state_dict()) == list(theirs.state_dict())
    cell.load_state_dict(theirs.state_dict())
    x = rng.uniform(-1, 1, (N, I))
    out = cell(x)
    ref = theirs(torch.from_numpy(x))
    if case == "lstm":
        np.testing.assert_allclose(out[0], ref[0].detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out[1], ref[1].detach().numpy(), rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["rnn_tanh", "lstm", "gru"])
def test_cell_unbatched_and_default_state(backend, case, rng):
    _, cell_cls, extra = CASES[case]
    cell = cell_cls(I, H, dtype="float64", backend=backend, seed=2, **extra)
    x = rng.standard_normal(I)
    s1 = cell(x)
    s2 = cell(x[None])
    h1, h2 = (s1[0], s2[0]) if case == "lstm" else (s1, s2)
    assert h1.shape == (H,)
    np.testing.assert_allclose(h1, h2[0], rtol=1e-14)
    zero = (np.zeros(H), np.zeros(H)) if case == "lstm" else np.zeros(H)
    np.testing.assert_array_equal(h1, (cell(x, zero)[0] if case == "lstm" else cell(x, zero)))
    s, tape = cell.forward(x)
    dx, ds = cell.backward(tape, s)
    assert dx.shape == (I,)
    assert (ds[0] if case == "lstm" else ds).shape == (H,)
    # gradients accumulate, zero_grad clears
    before = {k: v.copy() for k, v in cell.grads.items()}
    cell.backward(tape, s)
    for k in before:
        np.testing.assert_allclose(cell.grads[k], 2 * before[k])
    cell.zero_grad()
    assert not any(g.any() for g in cell.grads.values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_cell_save_load_and_float32(backend, tmp_path, rng):
    cell = GRUCell(I, H, reset_after=False, seed=5, backend=backend)
    assert cell.params["weight_ih"].dtype == np.float32
    path = tmp_path / "cell.npz"
    cell.save(path)
    again = load_module(path)
    assert isinstance(again, GRUCell) and again.config() == cell.config()
    x = rng.standard_normal((N, I)).astype(np.float32)
    np.testing.assert_array_equal(cell(x), again(x))
    assert cell(x).dtype == np.float32
    assert isinstance(GRUCell.from_file(path), GRUCell)
    with pytest.raises(ValueError, match="not a LSTMCell"):
        LSTMCell.from_file(path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cell_bad_inputs(backend):
    cell = LSTMCell(I, H, dtype="float64", backend=backend)
    x = np.zeros((N, I))
    with pytest.raises(ValueError, match=r"x: expected shape \(N, I\) with I = 4"):
        cell(np.zeros((N, I + 1)))
    with pytest.raises(ValueError, match=r"x: expected shape \(I,\)"):
        cell(np.zeros(I + 1))
    with pytest.raises(ValueError, match="x: expected shape"):
        cell(np.zeros((1, N, I)))
    with pytest.raises(TypeError, match="x: expected dtype float64"):
        cell(x.astype(np.float32))
    with pytest.raises(TypeError, match=r"state: expected a pair \(h, c\)"):
        cell(x, np.zeros((N, H)))
    with pytest.raises(ValueError, match=r"state\[1\] \(c\): expected shape \(N, H\) = \(3, 3\)"):
        cell(x, (np.zeros((N, H)), np.zeros((N, H + 1))))
    with pytest.raises(TypeError, match="state"):
        RNNCell(I, H, dtype="float64", backend=backend)(x, (np.zeros((N, H)),) * 2)
    with pytest.raises(ValueError, match="nonlinearity"):
        RNNCell(I, H, nonlinearity="gelu")
    with pytest.raises(ValueError, match="hidden_size"):
        GRUCell(I, 0)
    with pytest.raises(TypeError, match="tape"):
        cell.backward(None, None)
    _, tape = cell.forward(x)
    with pytest.raises(ValueError, match=r"dstate\[0\] \(h\)"):
        cell.backward(tape, (np.zeros((N + 1, H)), None))


@pytest.mark.parametrize("other_cls", [LSTMCell, RNNCell])
def test_backward_rejects_another_cells_tape(other_cls):
    # Another cell's tape holds activations of other weights: its gradients would be
    # silently wrong for this cell.
    rng = np.random.default_rng(13)
    cell = LSTMCell(3, 4, seed=1)
    other = other_cls(3, 4, seed=2)
    state, tape = other.forward(rng.standard_normal((2, 3)).astype(np.float32))
    ones = tuple(map(np.ones_like, state)) if isinstance(state, tuple) else np.ones_like(state)
    before = {k: v.copy() for k, v in cell.grads.items()}
    with pytest.raises(ValueError, match="tape from this cell's forward"):
        cell.backward(tape, ones)
    assert all(np.array_equal(cell.grads[k], v) for k, v in before.items())
    other.backward(tape, ones)
    assert any(v.any() for v in other.grads.values())
