"""Gradient-norm diagnostics: definition (vs autograd), decay on a contracting RNN, plotting."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from fastrnn.diagnostics import gradient_norms, plot_gradient_norms

BACKEND = "native"


def _layers():
    return pytest.importorskip("fastrnn.layers")


def test_returns_one_norm_per_step_and_keeps_grads(rng):
    layers = _layers()
    lstm = layers.LSTM(3, 4, dtype="float64", seed=0, backend=BACKEND)
    for g in lstm.grads.values():
        g[...] = 1.5
    x = rng.standard_normal((6, 2, 3))
    g_last = rng.standard_normal((2, 4))
    norms = gradient_norms(lstm, x, dy_last=g_last)
    assert norms.shape == (6,) and norms.dtype == np.float64
    assert np.all(norms > 0)
    assert norms[-1] == pytest.approx(np.linalg.norm(g_last))
    assert all(np.all(g == 1.5) for g in lstm.grads.values())
    # a loss function instead of an explicit gradient
    n2 = gradient_norms(lstm, x, dy_last=lambda y: (float(np.sum(y * g_last)), g_last))
    np.testing.assert_allclose(n2, norms)
    # with the cell state included the norm can only grow (and equals it at the last step)
    nc = gradient_norms(lstm, x, dy_last=g_last, cell_state=True)
    assert np.all(nc >= norms) and nc[-1] == norms[-1] and np.any(nc[:-1] > norms[:-1])


def test_vanilla_rnn_with_small_weights_decays_back_in_time(rng):
    layers = _layers()
    rnn = layers.RNN(3, 8, dtype="float64", seed=0, backend=BACKEND)
    for k, p in rnn.params.items():
        if k.startswith("weight_hh"):
            p *= 0.3
    norms = gradient_norms(rnn, rng.standard_normal((20, 2, 3)))
    assert np.all(np.diff(norms) > 0), norms  # strictly smaller going back in time
    assert norms[0] < 1e-4 * norms[-1]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_matches_autograd_definition(rng, cell):
    torch = pytest.importorskip("torch")
    layers = _layers()
    H, I, T, N = 4, 3, 7, 2
    cls = {"rnn": layers.RNN, "lstm": layers.LSTM, "gru": layers.GRU}[cell]
    layer = cls(I, H, dtype="float64", seed=1, backend=BACKEND)
    x = rng.standard_normal((T, N, I))
    h0 = rng.standard_normal((1, N, H)) * 0.5
    state = (h0, h0 * 0.3) if cell == "lstm" else h0
    g = rng.standard_normal((N, H))
    norms = gradient_norms(layer, x, state=state, dy_last=g)

    p = {k: torch.tensor(v, requires_grad=True) for k, v in layer.params.items()}
    wi, wh, bi, bh = p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"]
    h = torch.tensor(h0[0])
    c = torch.tensor(h0[0] * 0.3)
    hs, cs = [], []
    for t in range(T):
        xt = torch.tensor(x[t])
        gi, gh = xt @ wi.T + bi, h @ wh.T + bh
        if cell == "rnn":
            h = torch.tanh(gi + gh)
        elif cell == "lstm":
            i, f, gg, o = (gi + gh).split(H, dim=1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
            h = torch.sigmoid(o) * torch.tanh(c_new)
            # the carried copy of c_t: its gradient is dL/dc_t with h_t held fixed
            c = c_new.clone()
            c.retain_grad()
            cs.append(c)
        else:
            r = torch.sigmoid(gi[:, :H] + gh[:, :H])
            z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
            n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
            h = (1 - z) * n + z * h
        h.retain_grad()
        hs.append(h)
    (h * torch.tensor(g)).sum().backward()
    ref = np.array([np.linalg.norm(hh.grad.numpy()) for hh in hs])
    np.testing.assert_allclose(norms, ref, rtol=1e-10)
    if cell == "lstm":
        both = gradient_norms(layer, x, state=state, dy_last=g, cell_state=True)
        dc = [np.zeros((N, H)) if cc.grad is None else cc.grad.numpy() for cc in cs]
        ref_c = np.sqrt(ref**2 + np.array([np.sum(d**2) for d in dc]))
        np.testing.assert_allclose(both, ref_c, rtol=1e-10)


def test_bad_input(rng):
    layers = _layers()
    rnn = layers.RNN(3, 4, dtype="float64", seed=0, backend=BACKEND)
    with pytest.raises(ValueError, match=r"\(T, N, input_size\)"):
        gradient_norms(rnn, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="dy_last must have shape"):
        gradient_norms(rnn, np.zeros((4, 2, 3)), dy_last=np.ones((2, 5)))

    class Bidir:
        bidirectional = True

    with pytest.raises(ValueError, match="unidirectional"):
        gradient_norms(Bidir(), np.zeros((4, 2, 3)))
    with pytest.raises(TypeError, match="recurrent layer"):
        gradient_norms(object(), np.zeros((4, 2, 3)))


def test_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"fastrnn\[plot\]"):
        plot_gradient_norms(np.ones(3), str(tmp_path / "g.png"))


def test_plot_writes_file(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_gradient_norms({"a": np.arange(1, 5.0), "b": np.ones(4)}, str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").stat().st_size > 0
    assert path.endswith("g.png")
