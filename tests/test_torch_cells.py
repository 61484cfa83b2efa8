"""fastrnn.torch.RNNCell / LSTMCell / GRUCell against torch.nn's cells.

One step through the native sequence kernels (torch.py, _cell_forward): outputs and
every gradient (input, states, parameters), batched and unbatched, with and without
initial states and biases; errors, fallbacks, double backward, conversion, and a short
decoding loop trained with an optimizer.
"""

from __future__ import annotations

import copy
import itertools

import pytest

torch = pytest.importorskip("torch")

import fastrnn.torch as ft  # noqa: E402
from helpers import call_without_warning  # noqa: E402

TOL64 = {"rtol": 1e-9, "atol": 1e-11}
# float32: one step, sums of I + H <= 40 products of O(1) terms: a few ulps of 6e-8.
TOL32 = {"rtol": 2e-5, "atol": 2e-6}

# (name, constructor keywords): every nonlinearity, with and without bias
CELLS = [
    ("RNNCell", {"nonlinearity": "tanh"}),
    ("RNNCell", {"nonlinearity": "relu", "bias": False}),
    ("LSTMCell", {}),
    ("LSTMCell", {"bias": False}),
    ("GRUCell", {}),
    ("GRUCell", {"bias": False}),
]
CELL_IDS = ["rnn-tanh", "rnn-relu-nobias", "lstm", "lstm-nobias", "gru", "gru-nobias"]


@pytest.fixture(autouse=True)
def _setup():
    ft._reset_fallback_warnings()
    torch.manual_seed(4321)


def make_pair(name, kw, input_size=5, hidden_size=7, dtype=torch.float64):
    fast = getattr(ft, name)(input_size, hidden_size, dtype=dtype, **kw)
    ref = getattr(torch.nn, name)(input_size, hidden_size, dtype=dtype, **kw)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def make_state(name, shape, dtype):
    def one():
        return (0.5 * torch.randn(shape, dtype=dtype)).requires_grad_()

    return (one(), one()) if name == "LSTMCell" else one()


def as_list(out):
    return list(out) if isinstance(out, tuple) else [out]


def no_fallback(fn):
    return call_without_warning(ft.FastRNNFallbackWarning, fn)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("name", "kw"), CELLS, ids=CELL_IDS)
def test_outputs_and_gradients_match_torch(name, kw, dtype, monkeypatch):
    tol = TOL64 if dtype == torch.float64 else TOL32
    fast, ref = make_pair(name, kw, dtype=dtype)
    runs = []  # fastrnn's engine, not PyTorch's cell, must compute every result below
    engine = ft._run_stack
    monkeypatch.setattr(ft, "_run_stack", lambda *a, **k: runs.append(1) or engine(*a, **k))
    for batched, with_state in itertools.product([True, False], [True, False]):
        x_shape, h_shape = ((3, 5), (3, 7)) if batched else ((5,), (7,))
        x = torch.randn(x_shape, dtype=dtype, requires_grad=True)
        hx = make_state(name, h_shape, dtype) if with_state else None
        before = len(runs)
        out_f = as_list(no_fallback(lambda x=x, hx=hx: fast(x, hx)))
        assert len(runs) == before + 1
        out_r = as_list(ref(x, hx))
        assert len(out_f) == len(out_r)
        for a, b in zip(out_f, out_r):
            assert a.shape == b.shape and a.dtype == b.dtype
            torch.testing.assert_close(a, b, **tol)
        weights = [torch.randn_like(o) for o in out_r]
        leaves = [x, *(as_list(hx) if hx is not None else [])]
        grads = []
        for module, outs in ((fast, out_f), (ref, out_r)):
            loss = sum((o * w).sum() for o, w in zip(outs, weights))
            grads.append(torch.autograd.grad(loss, leaves + list(module.parameters())))
        names = ["input", "states..."] + [n for n, _ in fast.named_parameters()]
        for k, (a, b) in enumerate(zip(*grads)):
            torch.testing.assert_close(a, b, **tol, msg=f"{names[min(k, 1)]} {k}")


@pytest.mark.parametrize(("name", "kw"), CELLS, ids=CELL_IDS)
def test_without_autograd_results_carry_no_graph(name, kw, monkeypatch):
    # Without autograd a step goes straight to the kernel (torch.py, _cell_step).
    fast, ref = make_pair(name, kw)
    steps = []
    step = ft._cell_step
    monkeypatch.setattr(ft, "_cell_step", lambda *a: steps.append(1) or step(*a))
    x = torch.randn(4, 5, dtype=torch.float64)
    hx = make_state(name, (4, 7), torch.float64)
    with torch.no_grad():
        got, want = as_list(fast(x, hx)), as_list(ref(x, hx))
    for a, b in zip(got, want):
        assert a.grad_fn is None and not a.requires_grad
        torch.testing.assert_close(a, b, **TOL64)
    with torch.inference_mode():
        for a, b in zip(as_list(fast(x)), as_list(ref(x))):
            torch.testing.assert_close(a, b, **TOL64)
        # unbatched, and results that share no memory with each other or the inputs
        x1, h1 = x[1], (tuple(s[1] for s in hx) if isinstance(hx, tuple) else hx[1])
        got = as_list(fast(x1, h1))
        for a, b in zip(got, as_list(ref(x1, h1))):
            torch.testing.assert_close(a, b, **TOL64)
        before = [t.clone() for t in (x1, *as_list(h1), *got)]
        got[0].add_(1.0)  # in place, as a caller may: nothing else may change
        after = [x1, *as_list(h1), *got]
        assert torch.equal(after[-len(got)], before[-len(got)] + 1.0)
        for a, b in zip(after, before):
            if a is not got[0]:
                assert torch.equal(a, b)
    assert len(steps) == 3


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_gradcheck(name):
    fast, _ = make_pair(name, {}, input_size=3, hidden_size=2)
    names = [n for n, _ in fast.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in fast.parameters()]
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    states = as_list(make_state(name, (2, 2), torch.float64))

    def f(x, *rest):
        st, ps = rest[: len(states)], rest[len(states) :]
        hx = tuple(st) if name == "LSTMCell" else st[0]
        return tuple(as_list(torch.func.functional_call(fast, dict(zip(names, ps)), (x, hx))))

    assert torch.autograd.gradcheck(f, (x, *states, *params))


@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_checkpoint_gives_the_same_gradients(name, use_reentrant):
    # Non-reentrant checkpointing lets each saved tensor be unpacked once per backward.
    fast, _ = make_pair(name, {})
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    state = make_state(name, (3, 7), torch.float64)
    leaves = [x, *as_list(state), *fast.parameters()]

    def loss(step):
        for t in leaves:
            t.grad = None
        sum(o.pow(2).sum() for o in as_list(step(x, state))).backward()
        return [t.grad.clone() for t in leaves]

    plain = loss(fast)
    ckpt = loss(
        lambda x, s: torch.utils.checkpoint.checkpoint(fast, x, s, use_reentrant=use_reentrant)
    )
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_double_backward_recomputes_with_torch():
    fast, _ = make_pair("GRUCell", {}, input_size=2, hidden_size=3)
    x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    with pytest.warns(ft.FastRNNFallbackWarning, match="double backward"):
        assert torch.autograd.gradgradcheck(lambda x: fast(x), (x,))


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_bad_arguments_raise_like_torch(name):
    fast, ref = make_pair(name, {})
    h = torch.zeros(3, 7, dtype=torch.float64)
    good_hx = (h, h) if name == "LSTMCell" else h
    bad_h = torch.zeros(3, 6, dtype=torch.float64)
    bad = [
        (torch.randn(2, 3, 5, dtype=torch.float64), None),  # 3-D input
        (torch.randn(3, 4, dtype=torch.float64), None),  # wrong input size
        (torch.randn(3, 5, dtype=torch.float64), (bad_h, h) if name == "LSTMCell" else bad_h),
        (torch.randn(3, 5, dtype=torch.float32), good_hx),  # dtype differs from weights
    ]
    if name == "LSTMCell":
        bad.append((torch.randn(3, 5, dtype=torch.float64), h))  # not a pair
    for x, hx in bad:
        with pytest.raises((RuntimeError, ValueError, TypeError)) as want:
            ref(x, hx)
        with pytest.raises(want.type):
            fast(x, hx)


def test_fallback_dtype_warns_once_and_matches_torch():
    fast, ref = make_pair("LSTMCell", {}, dtype=torch.bfloat16)
    x = torch.randn(3, 5, dtype=torch.bfloat16)
    with pytest.warns(ft.FastRNNFallbackWarning, match="bfloat16"):
        got = fast(x)
    for a, b in zip(got, ref(x)):
        torch.testing.assert_close(a, b)
    no_fallback(lambda: fast(x))  # once per reason


def test_convert_swaps_cells_and_a_decoder_trains_like_torch():
    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = torch.nn.LSTMCell(4, 6)
            self.gru = torch.nn.GRUCell(6, 5)
            self.out = torch.nn.Linear(5, 4)

        def forward(self, x0, steps):
            h = c = g = None
            x, ys = x0, []
            for _ in range(steps):  # feeds its own output back, as in decoding
                h, c = self.cell(x, None if h is None else (h, c))
                g = self.gru(h, g)
                x = torch.tanh(self.out(g))
                ys.append(x)
            return torch.stack(ys)

    ref = Decoder().double()
    model = ft.convert(copy.deepcopy(ref))
    assert type(model.cell) is ft.LSTMCell and type(model.gru) is ft.GRUCell
    assert type(ft.revert(model, inplace=False).cell) is torch.nn.LSTMCell
    x0 = torch.randn(3, 4, dtype=torch.float64)
    target = torch.randn(6, 3, 4, dtype=torch.float64)
    losses = {}
    for key, m in (("fast", model), ("ref", ref)):
        opt = torch.optim.Adam(m.parameters(), lr=0.05)
        losses[key] = []
        for _ in range(4):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x0, 6), target)
            loss.backward()
            opt.step()
            losses[key].append(loss.item())
    assert losses["fast"] == pytest.approx(losses["ref"], rel=1e-9)
    assert losses["fast"][-1] < losses["fast"][0]
    for (n, a), (_, b) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(a, b, **TOL64, msg=n)


def test_torch_compile_runs_the_cells_eagerly(monkeypatch):
    """A compiled model runs fastrnn's cells eagerly (a graph break), with gradients."""
    calls = []
    run_stack = ft._run_stack
    monkeypatch.setattr(ft, "_run_stack", lambda *a, **k: calls.append(1) or run_stack(*a, **k))
    fast, ref = make_pair("GRUCell", {}, input_size=4, hidden_size=3, dtype=torch.float32)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), fast)
    x = torch.randn(2, 4, requires_grad=True)
    y = no_fallback(lambda: torch.compile(model, backend="eager")(x))
    y_ref = ref(model[0](x))
    torch.testing.assert_close(y, y_ref, **TOL32)
    (g,) = torch.autograd.grad(y.sum(), x)
    (g_ref,) = torch.autograd.grad(y_ref.sum(), x)
    torch.testing.assert_close(g, g_ref, **TOL32)
    assert calls


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated
def test_torch_jit_script_uses_the_torch_cell():
    fast, ref = make_pair("LSTMCell", {}, dtype=torch.float32)
    x = torch.randn(2, 5)
    with pytest.warns(ft.FastRNNFallbackWarning, match="TorchScript"):
        scripted = torch.jit.script(fast)
    for a, b in zip(scripted(x), ref(x)):
        torch.testing.assert_close(a, b, **TOL32)
