"""The NumPy reference against torch.nn.RNN / LSTM / GRU with the same weights.

Outputs, final states and every gradient (input, h0, c0, all parameters) of the loss
``L = sum(y*dy) + sum(h_n*dh_n) (+ sum(c_n*dc_n))``. The reverse direction is the
``_reverse`` half of a bidirectional torch module (the forward half gets zero upstream
gradients, so it contributes nothing to dx or dh0); ``lengths`` go through
``pack_padded_sequence(..., enforce_sorted=False)``. Torch's GRU is ``reset_after=True``.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn import reference as R
from helpers import (
    assert_allclose_named,
    backward,
    random_case,
    random_lengths,
    random_upstream,
    split_output,
)

torch = pytest.importorskip("torch")

VARIANTS = [
    ("rnn", {"nonlinearity": "tanh"}),
    ("rnn", {"nonlinearity": "relu"}),
    ("lstm", {}),
    ("gru", {}),
]
VARIANT_IDS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]  # sigmoid: see the last test

# float64: both sides do the same operations in a different order; differences are a
# few ulps of O(1) values, far below 1e-10.
TOL64 = {"rtol": 1e-10, "atol": 1e-12}
# float32: each side rounds every operation to 2^-24 ~ 6e-8 in its own order; over T <= 7
# recurrent steps and sums of up to T*N = 35 rows of O(1) terms the two drift apart by at
# most ~100 ulps, so 2e-5 relative (with an absolute floor for values near 0) is ample
# yet still catches any real formula error (those show up at 1e-2 or worse).
TOL32 = {"rtol": 2e-5, "atol": 2e-6}


def _torch_module(kind, kw, I, H, bias, bidirectional, dtype):
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    extra = {"nonlinearity": kw["nonlinearity"]} if kind == "rnn" else {}
    return cls(I, H, bias=bias, bidirectional=bidirectional, dtype=dtype, **extra)


def _run_torch(kind, kw, case, up, reverse, lengths):
    """Torch's outputs and gradients for one direction, as NumPy float arrays."""
    x = case["x"]
    T, N, I = x.shape
    H = case["weight_hh"].shape[1]
    dt = torch.float64 if x.dtype == np.float64 else torch.float32
    bias = case["bias_ih"] is not None
    module = _torch_module(kind, kw, I, H, bias, reverse, dt)
    suffix = "_l0_reverse" if reverse else "_l0"
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(suffix):
                p.copy_(torch.from_numpy(case[name[: -len(suffix)]]))
            else:  # the unused forward half of a bidirectional module
                p.copy_(torch.from_numpy(np.asarray(np.random.default_rng(0).uniform(
                    -0.3, 0.3, tuple(p.shape)), x.dtype)))  # fmt: skip
    d = 2 if reverse else 1
    side = slice(H, 2 * H) if reverse else slice(0, H)

    def state(a):
        s = np.zeros((d, N, H), x.dtype)
        s[d - 1] = a
        return torch.tensor(s, requires_grad=True)

    xt = torch.tensor(x, requires_grad=True)
    h0 = state(case["h0"])
    c0 = state(case["c0"]) if kind == "lstm" else None
    inp = xt
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.tensor(lengths), enforce_sorted=False
        )
    out, st = module(inp, (h0, c0) if kind == "lstm" else h0)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    h_n = st[0] if kind == "lstm" else st
    loss = (out[:, :, side] * torch.from_numpy(up["dy"])).sum()
    loss = loss + (h_n[d - 1] * torch.from_numpy(up["dh_n"])).sum()
    if kind == "lstm":
        loss = loss + (st[1][d - 1] * torch.from_numpy(up["dc_n"])).sum()
    loss.backward()

    params = dict(module.named_parameters())
    res = {
        "y": out[:, :, side].detach().numpy(),
        "h_n": h_n[d - 1].detach().numpy(),
        "grad x": xt.grad.numpy(),
        "grad h0": h0.grad[d - 1].numpy(),
    }
    if kind == "lstm":
        res["c_n"] = st[1][d - 1].detach().numpy()
        res["grad c0"] = c0.grad[d - 1].numpy()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        if name + suffix in params:
            res[f"grad {name}"] = params[name + suffix].grad.numpy()
    return res


def _run_reference(kind, kw, case, up, reverse, lengths):
    out = getattr(R, kind)(**case, reverse=reverse, lengths=lengths, training=True, **kw)
    y, states, tape = split_output(kind, out)
    grads = backward(R, kind, tape, up)
    res = {"y": y, **states}
    for name, g in grads.items():
        if g is not None:
            res[f"grad {name}"] = g
    return res


def _compare(kind, kw, dtype, T, N, I, H, bias, reverse, use_lengths, rng, tol):
    case = random_case(kind, T, N, I, H, dtype, rng, bias=bias)
    up = random_upstream(kind, T, N, H, dtype, rng)
    lengths = random_lengths(T, N, rng) if use_lengths else None
    want = _run_torch(kind, kw, case, up, reverse, lengths)
    got = _run_reference(kind, kw, case, up, reverse, lengths)
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == np.dtype(dtype), name
        assert_allclose_named(f"{kind} {name}", got[name], want[name], **tol)


CASES = [
    # T, N, I, H, bias, reverse, lengths
    (1, 1, 1, 1, True, False, False),
    (7, 5, 8, 17, True, False, False),
    (3, 2, 3, 5, False, False, False),
    (7, 5, 3, 5, True, True, False),
    (7, 5, 8, 17, True, False, True),
    (7, 5, 3, 2, False, True, True),
]
CASE_IDS = ["T1N1I1H1", "T7N5I8H17", "nobias", "reverse", "lengths", "reverse-lengths-nobias"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("kind", "kw"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize(
    ("T", "N", "I", "H", "bias", "reverse", "use_lengths"), CASES, ids=CASE_IDS
)
def test_matches_torch_float64(kind, kw, T, N, I, H, bias, reverse, use_lengths, rng):
    _compare(kind, kw, np.float64, T, N, I, H, bias, reverse, use_lengths, rng, TOL64)


@pytest.mark.parametrize(("kind", "kw"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize(("reverse", "use_lengths"), [(False, False), (True, True)],
                         ids=["fwd", "reverse-lengths"])  # fmt: skip
def test_matches_torch_float32(kind, kw, reverse, use_lengths, rng):
    _compare(kind, kw, np.float32, 7, 5, 8, 17, True, reverse, use_lengths, rng, TOL32)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_sigmoid_rnn_matches_torch_autograd(reverse, rng):
    """torch.nn.RNN has no sigmoid; compare with the same recurrence written in torch ops
    (autograd gives the gradients), with lengths."""
    T, N, I, H = 7, 5, 3, 5
    case = random_case("rnn", T, N, I, H, np.float64, rng)
    up = random_upstream("rnn", T, N, H, np.float64, rng)
    lengths = random_lengths(T, N, rng)
    tens = {k: torch.tensor(v, requires_grad=True) for k, v in case.items()}
    active = torch.tensor(np.arange(T)[:, None] < lengths[None, :])[:, :, None]
    h = tens["h0"]
    ys = [None] * T
    for t in range(T - 1, -1, -1) if reverse else range(T):
        a = tens["x"][t] @ tens["weight_ih"].T + tens["bias_ih"]
        a = a + h @ tens["weight_hh"].T + tens["bias_hh"]
        h_new = torch.sigmoid(a)
        ys[t] = torch.where(active[t], h_new, torch.zeros_like(h_new))
        h = torch.where(active[t], h_new, h)
    y = torch.stack(ys)
    loss = (y * torch.from_numpy(up["dy"])).sum() + (h * torch.from_numpy(up["dh_n"])).sum()
    loss.backward()
    got = _run_reference("rnn", {"nonlinearity": "sigmoid"}, case, up, reverse, lengths)
    assert_allclose_named("y", got["y"], y.detach().numpy(), **TOL64)
    assert_allclose_named("h_n", got["h_n"], h.detach().numpy(), **TOL64)
    for name, t in tens.items():
        assert_allclose_named(f"grad {name}", got[f"grad {name}"], t.grad.numpy(), **TOL64)
