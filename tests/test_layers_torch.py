"""fastrnn.RNN/LSTM/GRU against torch.nn in float64: outputs, states and every gradient."""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn import _stack
from fastrnn.layers import GRU, LSTM, RNN

torch = pytest.importorskip("torch")

# Every layer test runs on both backends: the NumPy reference and the native kernels.
BACKENDS = ["reference", "native"]

T, N, I, H, L = 5, 3, 4, 3, 2
TOL = dict(rtol=1e-9, atol=1e-10)

CASES = {
    "rnn_tanh": (RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (LSTM, torch.nn.LSTM, {}),
    "gru": (GRU, torch.nn.GRU, {}),
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pair(case, backend, *, bias=True, batch_first=False, bidirectional=True, num_layers=L):
    ours_cls, theirs_cls, extra = CASES[case]
    kw = dict(num_layers=num_layers, bias=bias, batch_first=batch_first)
    kw.update(bidirectional=bidirectional, **extra)
    theirs = theirs_cls(I, H, dtype=torch.float64, **kw)
    ours = ours_cls(I, H, dtype="float64", backend=backend, seed=1, **kw)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _run_torch(theirs, x, state, lengths, batch_first):
    """torch forward; with lengths through pack_padded_sequence(enforce_sorted=False)."""
    if lengths is None:
        y, s = theirs(x, state)
        return y, s
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, torch.as_tensor(lengths), batch_first=batch_first, enforce_sorted=False
    )
    out, s = theirs(packed, state)
    y, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    return y, s


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_torch(backend, case, with_lengths, batch_first, bias, rng):
    ours, theirs = _pair(case, backend, bias=bias, batch_first=batch_first)
    D = 2
    lstm = case == "lstm"
    x = rng.uniform(-1, 1, (N, T, I) if batch_first else (T, N, I))
    h0 = rng.uniform(-0.5, 0.5, (L * D, N, H))
    c0 = rng.uniform(-0.5, 0.5, (L * D, N, H))
    lengths = np.array([T, 2, 4]) if with_lengths else None
    state = (h0, c0) if lstm else h0

    # forward
    y, state_n, tape = ours.forward(x, state, lengths=lengths)
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    yt, st = _run_torch(theirs, xt, (h0t, c0t) if lstm else h0t, lengths, batch_first)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)
    if lstm:
        np.testing.assert_allclose(state_n[0], st[0].detach().numpy(), **TOL)
        np.testing.assert_allclose(state_n[1], st[1].detach().numpy(), **TOL)
    else:
        np.testing.assert_allclose(state_n, st.detach().numpy(), **TOL)

    # inference call gives the same result
    y2, _ = ours(x, state, lengths=lengths)
    np.testing.assert_array_equal(y, y2)

    # backward of L = sum(y*dy) + sum(h_n*dh_n) (+ sum(c_n*dc_n))
    dy = rng.standard_normal(y.shape)
    dh = rng.standard_normal((L * D, N, H))
    dc = rng.standard_normal((L * D, N, H))
    if lengths is not None:  # padded positions are not outputs in torch
        valid = np.arange(T)[:, None] < lengths[None, :]  # (T, N)
        dy = dy * (valid.T[:, :, None] if batch_first else valid[:, :, None])
    dx, dstate0 = ours.backward(tape, dy, (dh, dc) if lstm else dh)
    loss = (yt * torch.from_numpy(dy)).sum()
    if lstm:
        loss = loss + (st[0] * torch.from_numpy(dh)).sum() + (st[1] * torch.from_numpy(dc)).sum()
    else:
        loss = loss + (st * torch.from_numpy(dh)).sum()
    loss.backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
    if lstm:
        np.testing.assert_allclose(dstate0[0], h0t.grad.numpy(), **TOL)
        np.testing.assert_allclose(dstate0[1], c0t.grad.numpy(), **TOL)
    else:
        np.testing.assert_allclose(dstate0, h0t.grad.numpy(), **TOL)
    theirs_grads = {k: p.grad.numpy() for k, p in theirs.named_parameters()}
    assert list(ours.grads) == list(theirs_grads)
    for k, g in theirs_grads.items():
        np.testing.assert_allclose(ours.grads[k], g, err_msg=k, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_unbatched_and_default_state_match_torch(backend, case, rng):
    ours, theirs = _pair(case, backend, num_layers=1, bidirectional=False)
    x = rng.uniform(-1, 1, (T, I))
    y, s = ours(x)
    yt, st = theirs(torch.from_numpy(x))
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)
    h, ht = (s[0], st[0]) if case == "lstm" else (s, st)
    assert h.shape == (1, H)
    np.testing.assert_allclose(h, ht.detach().numpy(), **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_round_trip_with_torch(backend, case, rng):
    ours_cls, theirs_cls, extra = CASES[case]
    ours = ours_cls(I, H, L, bidirectional=True, dtype="float64", seed=3, backend=backend, **extra)
    theirs = theirs_cls(I, H, L, bidirectional=True, dtype=torch.float64, **extra)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    # fastrnn -> torch
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = rng.uniform(-1, 1, (T, N, I))
    y, _ = ours(x)
    yt, _ = theirs(torch.from_numpy(x))
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)
    # torch -> fastrnn (float32 layer: values cast)
    theirs2 = theirs_cls(I, H, L, bidirectional=True, dtype=torch.float64, **extra)
    ours32 = ours_cls(I, H, L, bidirectional=True, backend=backend, **extra)
    ours32.load_state_dict(theirs2.state_dict())
    for k, v in theirs2.state_dict().items():
        assert ours32.params[k].dtype == np.float32
        np.testing.assert_array_equal(ours32.params[k], v.numpy().astype(np.float32))


def test_load_from_named_parameters_and_seed_types():
    theirs = torch.nn.GRU(I, H, 2, dtype=torch.float64)
    ours = GRU(I, H, 2, dtype="float64", seed=np.int64(3), backend="reference")
    assert ours.config()["seed"] == 3 and type(ours.config()["seed"]) is int
    ours.load_state_dict(dict(theirs.named_parameters()))  # tensors that require grad
    for k, v in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.params[k], v.numpy())


P = 2  # proj_size of the projected LSTM cases (P < H)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported:UserWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_lstm_with_projection_matches_torch(backend, with_lengths, batch_first, rng):
    kw = dict(num_layers=L, bidirectional=True, batch_first=batch_first, proj_size=P)
    theirs = torch.nn.LSTM(I, H, dtype=torch.float64, **kw)
    ours = LSTM(I, H, dtype="float64", backend=backend, seed=1, **kw)
    assert ours.params.keys() == dict(theirs.named_parameters()).keys()
    ours.load_state_dict(theirs.state_dict())
    xs = (N, T, I) if batch_first else (T, N, I)
    x = rng.standard_normal(xs)
    h0, c0 = rng.standard_normal((2 * L, N, P)), rng.standard_normal((2 * L, N, H))
    lengths = np.array([T, 2, 4]) if with_lengths else None
    y, (h, c), tape = ours.forward(x, (h0, c0), lengths=lengths)
    xt = torch.tensor(x, requires_grad=True)
    h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (h0, c0))
    yt, (ht, ct) = _run_torch(theirs, xt, (h0t, c0t), lengths, batch_first)
    assert y.shape == tuple(yt.shape) == (*xs[:2], 2 * P)
    for got, want in ((y, yt), (h, ht), (c, ct)):
        np.testing.assert_allclose(got, want.detach().numpy(), **TOL)
    dy, dh, dc = (rng.standard_normal(a.shape) for a in (y, h, c))
    dx, (dh0, dc0) = ours.backward(tape, dy, (dh, dc))
    loss = (yt * torch.tensor(dy)).sum() + (ht * torch.tensor(dh)).sum()
    (loss + (ct * torch.tensor(dc)).sum()).backward()
    for got, want in ((dx, xt), (dh0, h0t), (dc0, c0t)):
        np.testing.assert_allclose(got, want.grad.numpy(), **TOL)
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(ours.grads[name], p.grad.numpy(), err_msg=name, **TOL)


def test_lstm_projection_config_and_errors(tmp_path):
    ours = LSTM(I, H, proj_size=P, num_layers=2, seed=3)
    assert ours.config()["proj_size"] == P
    assert ours.params["weight_hr_l1"].shape == (P, H)
    assert ours.params["weight_ih_l1"].shape == (4 * H, P)
    ours.save(tmp_path / "m.npz")
    again = LSTM.from_file(tmp_path / "m.npz")
    assert again.proj_size == P
    x = np.ones((T, N, I), np.float32)
    np.testing.assert_array_equal(again(x)[0], ours(x)[0])
    ours.pack_weights()  # the three weights become read-only snapshots: the same results
    assert not ours.params["weight_hr_l0"].flags.writeable
    np.testing.assert_array_equal(ours(x)[0], again(x)[0])
    ours.unpack_weights()
    ours.params["weight_hr_l1"] += 0.5  # writable again, and used
    assert not np.array_equal(ours(x)[0], again(x)[0])
    with pytest.raises(ValueError, match=r"proj_size: expected 0 or 1 <= proj_size < hidden_size"):
        LSTM(I, H, proj_size=H)
    with pytest.raises(ValueError, match="proj_size: only lstm has a projection"):
        _stack.check_proj_size("gru", 1, H)
    with pytest.raises(TypeError, match="proj_size: expected an int"):
        LSTM(I, H, proj_size=1.5)
    with pytest.raises(ValueError, match=r"state\[0\] \(h\): expected shape \(L\*D, N, P\)"):
        ours(x, (np.zeros((2, N, H), np.float32), np.zeros((2, N, H), np.float32)))
