"""fastrnn.torch against torch.nn: outputs, states, every gradient, fallbacks, conversion.

Sizes are tiny because the tests run the NumPy reference backend (switch BACKEND to
"native" to run the same checks against the C++ kernels).
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastrnn._stack")

from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import fastrnn  # noqa: E402
import fastrnn.torch as ft  # noqa: E402
from helpers import call_without_warning  # noqa: E402

BACKEND = "native"

MODES = ["rnn_tanh", "rnn_relu", "lstm", "gru"]

# float64 runs the same math as PyTorch in the same precision: only rounding differs.
TOL64 = {"rtol": 1e-9, "atol": 1e-11}
# float32: sums of a few dozen products of O(1) terms through ≤ 2 layers and ≤ 6 steps;
# float32 eps is 1.2e-7, so differences of order 1e-6 are rounding order, not a bug.
TOL32 = {"rtol": 2e-5, "atol": 2e-6}


@pytest.fixture(autouse=True)
def _setup():
    before = ft._BACKEND
    ft._BACKEND = BACKEND
    ft._reset_fallback_warnings()
    torch.manual_seed(1234)
    try:
        yield
    finally:
        ft._BACKEND = before


def make_pair(mode, input_size=4, hidden_size=5, dtype=torch.float64, **kw):
    """A fastrnn.torch module and a torch.nn module with the same weights."""
    if mode.startswith("rnn"):
        kw["nonlinearity"] = mode.split("_")[1]
        fast_cls, ref_cls = ft.RNN, torch.nn.RNN
    elif mode == "lstm":
        fast_cls, ref_cls = ft.LSTM, torch.nn.LSTM
    else:
        fast_cls, ref_cls = ft.GRU, torch.nn.GRU
    fast = fast_cls(input_size, hidden_size, dtype=dtype, **kw)
    ref = ref_cls(input_size, hidden_size, dtype=dtype, **kw)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def make_state(mode, module, n, dtype, unbatched=False):
    d = 2 if module.bidirectional else 1
    shape = (module.num_layers * d, module.hidden_size) if unbatched else None
    shape = shape or (module.num_layers * d, n, module.hidden_size)
    h = (0.5 * torch.randn(shape, dtype=dtype)).requires_grad_()
    if mode == "lstm":
        return (h, (0.5 * torch.randn(shape, dtype=dtype)).requires_grad_())
    return h


def flat(out):
    """All tensors in a module's result, in order (PackedSequence -> its data)."""
    y, hidden = out
    if isinstance(y, torch.nn.utils.rnn.PackedSequence):
        y = y.data
    return [y, *(hidden if isinstance(hidden, tuple) else (hidden,))]


def run(module, x, hx, weights):
    """Forward, a weighted-sum loss over every output, backward; returns values and grads."""
    outs = flat(module(x, hx))
    loss = sum((o * w).sum() for o, w in zip(outs, weights))
    data = x.data if isinstance(x, torch.nn.utils.rnn.PackedSequence) else x
    leaves = [data, *(hx if isinstance(hx, tuple) else (hx,))]
    leaves = [t for t in leaves if t is not None]
    params = list(module.parameters())
    grads = torch.autograd.grad(loss, leaves + params)
    return [o.detach() for o in outs], list(grads)


def assert_outputs_match(got, want, tol):
    """Lists of output tensors: same count, shapes, dtypes and values (within tol)."""
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol)


def assert_parity(fast, ref, x, hx, tol):
    """Same outputs and same gradients for input, states and every parameter."""
    probe = flat(ref(x, hx))
    weights = [torch.randn_like(o) for o in probe]
    outs_f, grads_f = run(fast, x, hx, weights)
    outs_r, grads_r = run(ref, x, hx, weights)
    names = ["input", "states..."] + [n for n, _ in fast.named_parameters()]
    assert_outputs_match(outs_f, outs_r, tol)
    assert len(grads_f) == len(grads_r)
    for k, (a, b) in enumerate(zip(grads_f, grads_r)):
        assert a.shape == b.shape, names[min(k, len(names) - 1)]
        torch.testing.assert_close(a, b, **tol)


CONFIGS = [
    {"num_layers": 1},
    {"num_layers": 2, "bidirectional": True},
    {"num_layers": 2, "batch_first": True, "bias": False},
    {"num_layers": 1, "bidirectional": True, "batch_first": True},
]


def config_id(cfg):
    return "-".join(f"{k}={v}" for k, v in cfg.items())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_parity_float64(mode, cfg):
    fast, ref = make_pair(mode, **cfg)
    t, n = 6, 3
    shape = (n, t, 4) if cfg.get("batch_first") else (t, n, 4)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    assert_parity(fast, ref, x, make_state(mode, fast, n, torch.float64), TOL64)
    # hx omitted: zeros, no gradient for it
    assert_parity(fast, ref, x, None, TOL64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity_under_each_isa_and_thread_count(isa, threads, dtype):
    """fastrnn.torch runs with torch's thread count: set both for the native kernels."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for mode in ("lstm", "gru"):
            fast, ref = make_pair(mode, dtype=dtype, num_layers=2, bidirectional=True)
            x = torch.randn(5, 3, 4, dtype=dtype, requires_grad=True)
            tol = TOL64 if dtype == torch.float64 else TOL32
            assert_parity(fast, ref, x, make_state(mode, fast, 3, dtype), tol)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_parity_float32(mode):
    fast, ref = make_pair(mode, dtype=torch.float32, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, 4, requires_grad=True)
    assert_parity(fast, ref, x, make_state(mode, fast, 3, torch.float32), TOL32)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_relu"])
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_sequence(mode, enforce_sorted):
    fast, ref = make_pair(mode, num_layers=2, bidirectional=True)
    lengths = [6, 4, 4, 1] if enforce_sorted else [3, 6, 1, 4]
    x = torch.randn(6, 4, 4, dtype=torch.float64, requires_grad=True)
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)
    hx = make_state(mode, fast, 4, torch.float64)
    y, _ = fast(packed, hx)
    assert isinstance(y, torch.nn.utils.rnn.PackedSequence)
    y_ref, _ = ref(packed, hx)
    assert torch.equal(y.batch_sizes, y_ref.batch_sizes)
    if enforce_sorted:
        assert y.sorted_indices is None and y.unsorted_indices is None
    else:
        assert torch.equal(y.sorted_indices, y_ref.sorted_indices)
        assert torch.equal(y.unsorted_indices, y_ref.unsorted_indices)
    assert_parity(fast, ref, packed, hx, TOL64)
    assert_parity(fast, ref, packed, None, TOL64)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_unbatched(mode, batch_first):
    fast, ref = make_pair(mode, num_layers=2, batch_first=batch_first)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    hx = make_state(mode, fast, 1, torch.float64, unbatched=True)
    out = fast(x, hx)
    assert out[0].shape == (5, 5)
    assert_parity(fast, ref, x, hx, TOL64)
    assert_parity(fast, ref, x, None, TOL64)


def test_batch_first_output_layout_matches_torch():
    fast, ref = make_pair("gru", batch_first=True)
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    y, _ = fast(x)
    y_ref, _ = ref(x)
    assert y.shape == y_ref.shape and y.stride() == y_ref.stride()


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_gradcheck(mode):
    fast, _ = make_pair(mode, input_size=2, hidden_size=2, num_layers=2, bidirectional=True)
    names = [n for n, _ in fast.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in fast.parameters()]
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    hx = make_state(mode, fast, 2, torch.float64)
    states = list(hx) if isinstance(hx, tuple) else [hx]

    def f(x, *rest):
        st, ps = rest[: len(states)], rest[len(states) :]
        state = tuple(st) if mode == "lstm" else st[0]
        out = torch.func.functional_call(fast, dict(zip(names, ps)), (x, state))
        return tuple(flat(out))

    assert torch.autograd.gradcheck(f, (x, *states, *params))


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_parameter_views_follow_every_kind_of_update(grad):
    """The NumPy views of the parameters are kept between calls (torch.py, _param_arrays):
    an in-place update, a new ``.data``, a dtype change, other tensors through
    ``functional_call`` and a loaded state_dict must each show in the very next call."""
    fast, ref = make_pair("lstm", num_layers=2, bidirectional=True)
    x = torch.randn(3, 2, 4, dtype=torch.float64)

    def check():
        with torch.set_grad_enabled(grad):
            assert_outputs_match(flat(fast(x)), flat(ref(x)), TOL64)

    check()
    with torch.no_grad():  # an optimizer step
        for p, q in zip(fast.parameters(), ref.parameters()):
            p.mul_(0.5).add_(0.1)
            q.mul_(0.5).add_(0.1)
    check()
    for p, q in zip(fast.parameters(), ref.parameters()):  # new storage, same Parameter
        new = torch.randn_like(p)
        p.data, q.data = new, new.clone()
    check()
    state = {k: torch.randn_like(v) for k, v in fast.state_dict().items()}
    fast.load_state_dict(state)
    ref.load_state_dict(state)
    check()
    fast.float()
    ref.float()
    x = x.float()
    with torch.set_grad_enabled(grad):
        assert_outputs_match(flat(fast(x)), flat(ref(x)), {"rtol": 1e-5, "atol": 1e-6})
    other = {k: torch.randn_like(v) for k, v in fast.named_parameters()}
    with torch.set_grad_enabled(grad):
        got = flat(torch.func.functional_call(fast, other, (x,)))
        want = flat(torch.func.functional_call(ref, other, (x,)))
        assert_outputs_match(got, want, {"rtol": 1e-5, "atol": 1e-6})
        # and back to the module's own parameters
        assert_outputs_match(flat(fast(x)), flat(ref(x)), {"rtol": 1e-5, "atol": 1e-6})


def test_gradcheck_packed():
    fast, _ = make_pair("lstm", input_size=2, hidden_size=2, bidirectional=True)
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)

    def f(x):
        packed = pack_padded_sequence(x, torch.tensor([2, 4, 1]), enforce_sorted=False)
        return tuple(flat(fast(packed)))

    assert torch.autograd.gradcheck(f, (x,))


def test_gradcheck_with_dropout():
    """Masks come from torch's generator: a fixed seed makes the function deterministic."""
    fast = ft.GRU(2, 3, num_layers=3, dropout=0.4, dtype=torch.float64)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)

    def f(x):
        torch.manual_seed(11)
        return fast(x)[0]

    with torch.no_grad():
        assert not torch.allclose(f(x), fast.eval()(x)[0])
    fast.train()
    assert torch.autograd.gradcheck(f, (x,))


def test_double_backward_falls_back_to_torch():
    fast, ref = make_pair("gru", input_size=2, hidden_size=3)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    with pytest.warns(ft.FastRNNFallbackWarning, match="double backward"):
        (gx,) = torch.autograd.grad(fast(x)[0].pow(2).sum(), x, create_graph=True)
    (gx_ref,) = torch.autograd.grad(ref(x)[0].pow(2).sum(), x, create_graph=True)
    torch.testing.assert_close(gx, gx_ref, **TOL64)
    (ggx,) = torch.autograd.grad(gx.sum(), x)
    (ggx_ref,) = torch.autograd.grad(gx_ref.sum(), x)
    torch.testing.assert_close(ggx, ggx_ref, **TOL64)
    h0 = torch.randn(1, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, h: fast(x, h)[1], (x, h0))


def test_double_backward_packed_lstm():
    fast, ref = make_pair("lstm", input_size=2, hidden_size=3, num_layers=2, bidirectional=True)
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    hx = make_state("lstm", fast, 3, torch.float64)
    results = []
    for m in (fast, ref):
        packed = pack_padded_sequence(x, torch.tensor([2, 4, 3]), enforce_sorted=False)
        y, (h, c) = m(packed, hx)
        loss = y.data.pow(2).sum() + h.pow(2).sum() + c.sum()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ft.FastRNNFallbackWarning)
            g = torch.autograd.grad(loss, [x, *hx], create_graph=True)
        gg = torch.autograd.grad(sum(t.pow(2).sum() for t in g), [x, *hx, *m.parameters()])
        results.append([*g, *gg])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **TOL64)


def test_double_backward_with_dropout_raises():
    fast, _ = make_pair("lstm", input_size=2, hidden_size=3, num_layers=2, dropout=0.5)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(fast(x)[0].sum(), x, create_graph=True)


@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.3])  # 0: the native stack's own backward
def test_checkpoint(use_reentrant, dropout):
    fast, _ = make_pair("lstm", num_layers=2, dropout=dropout)
    x = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    params = list(fast.parameters())

    def fn(x):  # reentrant checkpointing only sees top-level tensors
        return tuple(flat(fast(x)))

    def loss_of(out):
        return out[0].sum() + out[2].pow(2).sum()

    def grads(out):
        for t in [x, *params]:
            t.grad = None
        loss_of(out).backward()
        return [t.grad.clone() for t in [x, *params]]

    torch.manual_seed(7)
    plain = grads(fn(x))
    torch.manual_seed(7)
    ckpt = grads(torch.utils.checkpoint.checkpoint(fn, x, use_reentrant=use_reentrant))
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_dropout_training_and_eval():
    fast, ref = make_pair("gru", num_layers=2, dropout=0.5)
    x = torch.randn(4, 3, 4, dtype=torch.float64)
    fast.eval()
    y_eval, _ = fast(x)
    torch.testing.assert_close(y_eval, ref.eval()(x)[0], **TOL64)
    fast.train()
    torch.manual_seed(3)
    y1, _ = fast(x)
    torch.manual_seed(3)
    with torch.no_grad():  # dropout still applies in training mode, as in torch.nn
        y2, _ = fast(x)
    torch.testing.assert_close(y1.detach(), y2, rtol=0, atol=0)
    assert not torch.allclose(y1, y_eval)
    torch.manual_seed(4)
    y3, _ = fast(x)
    assert not torch.allclose(y1, y3)


@pytest.mark.parametrize("ctx", ["no_grad", "inference_mode", "eval"])
def test_inference_paths(ctx):
    fast, ref = make_pair("lstm", num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=ctx == "eval")
    if ctx == "eval":
        fast.eval()
        ref.eval()
        cm = torch.enable_grad()
    else:
        cm = getattr(torch, ctx)()
    with cm:
        y, (h, c) = fast(x)
        y_ref, (h_ref, c_ref) = ref(x)
    assert y.requires_grad == (ctx == "eval")
    for a, b in [(y, y_ref), (h, h_ref), (c, c_ref)]:
        torch.testing.assert_close(a.detach(), b.detach(), **TOL64)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_no_grad_parity_float64(mode, cfg):
    # Without autograd the layers run straight through the kernel binding (torch.py,
    # _native_stack), without the stack's Python-side checks: same results.
    fast, ref = make_pair(mode, **cfg)
    t, n = 5, 4
    shape = (n, t, 4) if cfg.get("batch_first") else (t, n, 4)
    x = torch.randn(shape, dtype=torch.float64)
    for hx in (make_state(mode, fast, n, torch.float64), None):
        with torch.no_grad():
            assert_outputs_match(flat(fast(x, hx)), flat(ref(x, hx)), TOL64)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["time-major", "batch_first", "packed", "unbatched"])
def test_no_grad_without_hx_matches_torch_and_outputs_are_separate(mode, layout):
    """Without autograd and without hx the zero states never become tensors (the engine
    takes None); the results still match torch.nn's and share no memory."""
    fast, ref = make_pair(
        mode, num_layers=2, bidirectional=True, batch_first=layout == "batch_first"
    )
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    if layout == "packed":
        x = pack_padded_sequence(x, torch.tensor([6, 2, 4]), enforce_sorted=False)
    elif layout == "unbatched":
        x = x[:, 0]
    with torch.no_grad():
        y, hidden = fast(x)
        y_ref, hidden_ref = ref(x)
    if layout == "packed":
        y, y_ref = y.data, y_ref.data
    states = hidden if isinstance(hidden, tuple) else (hidden,)
    states_ref = hidden_ref if isinstance(hidden_ref, tuple) else (hidden_ref,)
    for a, b in zip((y, *states), (y_ref, *states_ref)):
        torch.testing.assert_close(a, b, **TOL64)
    arrays = [t.numpy() for t in (y, *states)]
    for i, a in enumerate(arrays):
        for b in arrays[i + 1 :]:
            assert not np.shares_memory(a, b)


def test_nothing_requires_grad_gives_plain_tensors():
    fast, _ = make_pair("rnn_tanh")
    fast.requires_grad_(False)
    y, h = fast(torch.randn(4, 2, 4, dtype=torch.float64))
    assert y.grad_fn is None and not y.requires_grad and h.grad_fn is None


def test_only_weights_require_grad():
    fast, ref = make_pair("gru", num_layers=2)
    x = torch.randn(4, 2, 4, dtype=torch.float64)
    g = torch.autograd.grad(fast(x)[0].sum(), list(fast.parameters()))
    g_ref = torch.autograd.grad(ref(x)[0].sum(), list(ref.parameters()))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, **TOL64)


class Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(11, 4)
        self.rnn = torch.nn.LSTM(4, 6, num_layers=2, batch_first=True, bidirectional=True)
        self.head = torch.nn.Sequential(torch.nn.Linear(12, 5), torch.nn.Tanh())
        self.gru = torch.nn.GRU(5, 3)

    def forward(self, tokens):
        y, _ = self.rnn(self.emb(tokens))
        y, _ = self.gru(self.head(y))
        return y


def test_convert_and_train():
    model = Tagger().double()
    ref = copy.deepcopy(model)
    model.eval()
    fast_model = ft.convert(model)
    assert fast_model is model and not model.training
    assert type(model.rnn) is ft.LSTM and type(model.gru) is ft.GRU
    assert type(model.head[0]) is torch.nn.Linear
    model.train()
    tokens = torch.randint(0, 11, (3, 5))
    target = torch.randn(3, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(model(tokens), ref(tokens), **TOL64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1)
    losses, losses_ref = [], []
    for _ in range(3):
        for m, o, acc in [(model, opt, losses), (ref, opt_ref, losses_ref)]:
            o.zero_grad()
            loss = torch.nn.functional.mse_loss(m(tokens), target)
            loss.backward()
            o.step()
            acc.append(loss.item())
    np.testing.assert_allclose(losses, losses_ref, rtol=1e-9)
    assert losses[-1] < losses[0]
    for (n, a), (_, b) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(a, b, **TOL64, msg=n)
    ft.revert(model)
    assert type(model.rnn) is torch.nn.LSTM and type(model.gru) is torch.nn.GRU


def test_convert_not_inplace_and_subclasses():
    class MyLSTM(torch.nn.LSTM):
        pass

    model = torch.nn.Sequential(torch.nn.RNN(3, 4), MyLSTM(4, 4))
    out = ft.convert(model, inplace=False)
    assert out is not model and type(model[0]) is torch.nn.RNN
    assert type(out[0]) is ft.RNN and type(out[1]) is MyLSTM
    back = ft.revert(out, inplace=False)
    assert type(back[0]) is torch.nn.RNN and type(out[0]) is ft.RNN
    with pytest.raises(TypeError, match="model"):
        ft.convert("not a module")


def test_module_surface_matches_torch():
    kw = {"num_layers": 2, "bidirectional": True, "batch_first": True, "bias": False}
    for mode in MODES:
        fast, ref = make_pair(mode, dropout=0.25, **kw)
        assert repr(fast) == repr(ref)
        assert [n for n, _ in fast.named_parameters()] == [n for n, _ in ref.named_parameters()]
        assert list(fast.state_dict()) == list(ref.state_dict())
        assert fast._flat_weights_names == ref._flat_weights_names
        assert fast.flatten_parameters() is None
    # default initialisation: same distribution and the same draws under a seed
    torch.manual_seed(5)
    a = ft.LSTM(3, 7)
    torch.manual_seed(5)
    b = torch.nn.LSTM(3, 7)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert isinstance(a, torch.nn.LSTM) and isinstance(ft.GRU(2, 2), torch.nn.GRU)


def test_state_dict_round_trip():
    _, ref = make_pair("lstm", num_layers=2, bidirectional=True)
    other = ft.LSTM(4, 5, num_layers=2, bidirectional=True, dtype=torch.float64)
    other.load_state_dict(ref.state_dict())
    back = torch.nn.LSTM(4, 5, num_layers=2, bidirectional=True, dtype=torch.float64)
    back.load_state_dict(other.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]) and torch.equal(v, back.state_dict()[k])
    restored = pickle.loads(pickle.dumps(other))
    assert type(restored) is ft.LSTM
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    torch.testing.assert_close(restored(x)[0], ref(x)[0], **TOL64)


def _no_fallback_warning(fn):
    return call_without_warning(ft.FastRNNFallbackWarning, fn)


def _proj_state(fast, n, dtype):
    d = 2 if fast.bidirectional else 1
    h = 0.5 * torch.randn(fast.num_layers * d, n, fast.proj_size, dtype=dtype)
    c = 0.5 * torch.randn(fast.num_layers * d, n, fast.hidden_size, dtype=dtype)
    return (h.requires_grad_(), c.requires_grad_())


# torch.nn.LSTM warns on every call with proj_size that oneDNN does not take it.
_TORCH_PROJ_WARNING = "ignore:LSTM with projections is not supported:UserWarning"


@pytest.mark.filterwarnings(_TORCH_PROJ_WARNING)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_proj_size_parity(cfg, dtype):
    # proj_size < hidden_size <= 256 runs on fastrnn (functional.lstm's weight_hr): no
    # fallback warning, torch.nn's outputs and gradients.
    fast, ref = make_pair("lstm", hidden_size=7, proj_size=3, dtype=dtype, **cfg)
    t, n = 6, 3
    shape = (n, t, 4) if cfg.get("batch_first") else (t, n, 4)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    tol = TOL64 if dtype == torch.float64 else TOL32
    _no_fallback_warning(lambda: assert_parity(fast, ref, x, _proj_state(fast, n, dtype), tol))
    _no_fallback_warning(lambda: assert_parity(fast, ref, x, None, tol))
    with torch.no_grad():
        got, want = fast(x), ref(x)
    assert_outputs_match(flat(got), flat(want), tol)


@pytest.mark.filterwarnings(_TORCH_PROJ_WARNING)
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_proj_size_packed_sequence_and_unbatched(enforce_sorted):
    fast, ref = make_pair("lstm", hidden_size=6, proj_size=2, num_layers=2, bidirectional=True)
    x = torch.randn(5, 4, 4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 4, 2, 1] if enforce_sorted else [2, 5, 1, 4])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    assert_parity(fast, ref, packed, _proj_state(fast, 4, torch.float64), TOL64)
    xu = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    h, c = _proj_state(fast, 1, torch.float64)
    hu, cu = (s[:, 0].detach().requires_grad_() for s in (h, c))
    assert_parity(fast, ref, xu, (hu, cu), TOL64)


@pytest.mark.filterwarnings(_TORCH_PROJ_WARNING)
def test_proj_size_gradcheck_and_dropout():
    fast, _ = make_pair("lstm", hidden_size=5, proj_size=2, num_layers=2)
    x = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    h0, c0 = _proj_state(fast, 2, torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: fast(a, (b, c))[0], (x, h0, c0))
    # dropout between layers (training): the Python stack path, same shapes, eval = torch
    drop, ref = make_pair("lstm", hidden_size=5, proj_size=2, num_layers=2, dropout=0.5)
    y, (h, c) = drop(x)
    y.sum().backward()
    assert y.shape == (3, 2, 2) and h.shape == (2, 2, 2) and c.shape == (2, 2, 5)
    assert all(p.grad is not None for p in drop.parameters())
    drop.eval()
    ref.eval()
    with torch.no_grad():
        assert_outputs_match(flat(drop(x)), flat(ref(x)), TOL64)


@pytest.mark.filterwarnings(_TORCH_PROJ_WARNING)
def test_proj_size_pack_weights():
    # Inference under pack_weights(): bitwise the unpacked results, laid out again after an
    # in-place change of any of the three weights (their version counters move).
    fast, _ = make_pair("lstm", hidden_size=40, proj_size=9, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        want = fast(x)[0]
        fast.pack_weights()
        torch.testing.assert_close(fast(x)[0], want, rtol=0, atol=0)
        fast.weight_hr_l1_reverse.mul_(0.5)
        changed = fast(x)[0]
        fast.unpack_weights()
        torch.testing.assert_close(fast(x)[0], changed, rtol=0, atol=0)
    assert not torch.equal(changed, want)


@pytest.mark.filterwarnings(_TORCH_PROJ_WARNING)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_proj_size_larger_sizes(dtype, isa, threads):
    # Several unit and output blocks on every target (H = 70, P = 37), each thread count.
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast, ref = make_pair("lstm", input_size=9, hidden_size=70, proj_size=37, dtype=dtype)
        x = torch.randn(4, 5, 9, dtype=dtype, requires_grad=True)
        tol = TOL64 if dtype == torch.float64 else TOL32
        _no_fallback_warning(lambda: assert_parity(fast, ref, x, _proj_state(fast, 5, dtype), tol))
    finally:
        torch.set_num_threads(before)


def test_fallback_dtype():
    fast, ref = make_pair("gru", dtype=torch.bfloat16)
    x = torch.randn(4, 2, 4, dtype=torch.bfloat16)
    with pytest.warns(ft.FastRNNFallbackWarning, match="bfloat16"):
        y, _ = fast(x)
    _no_fallback_warning(lambda: fast(x))
    torch.testing.assert_close(y, ref(x)[0], rtol=0, atol=0)


def test_fallback_device():
    fast = ft.LSTM(4, 5, device="meta")
    x = torch.randn(3, 2, 4, device="meta")
    with pytest.warns(ft.FastRNNFallbackWarning, match="CPU"):
        y, (h, _) = fast(x)
    assert y.device.type == "meta" and y.shape == (3, 2, 5) and h.shape == (1, 2, 5)
    _no_fallback_warning(lambda: fast(x))
    ft._reset_fallback_warnings()
    cpu = ft.GRU(4, 5)
    with pytest.warns(ft.FastRNNFallbackWarning, match="CPU"), pytest.raises(RuntimeError):
        cpu(torch.randn(3, 2, 4), torch.zeros(1, 2, 5, device="meta"))


def test_fallback_autocast():
    fast, ref = make_pair("rnn_tanh", dtype=torch.float32)
    x = torch.randn(4, 2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.warns(ft.FastRNNFallbackWarning, match="autocast"):
            y, _ = fast(x)
        y_ref, _ = ref(x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)


def test_empty_batch_like_torch():
    fast, ref = make_pair("lstm")
    x = torch.randn(3, 0, 4, dtype=torch.float64)
    y, (h, c) = _no_fallback_warning(lambda: fast(x))
    y_ref, (h_ref, c_ref) = ref(x)
    assert y.shape == y_ref.shape and h.shape == h_ref.shape and c.shape == c_ref.shape


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_fallback_torchscript():
    fast, ref = make_pair("gru", dtype=torch.float32)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), fast)
    x = torch.randn(3, 2, 4)
    y = model(x)[0]
    with pytest.warns(ft.FastRNNFallbackWarning, match="TorchScript"):
        scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x)[0], y, **TOL32)
    assert model[1].weight_ih_l0 is fast.weight_ih_l0
    with pytest.warns(ft.FastRNNFallbackWarning, match="tracing"):
        traced = torch.jit.trace(fast, (x,))
    torch.testing.assert_close(traced(x)[0], ref(x)[0], **TOL32)


def test_torch_compile(monkeypatch):
    """Compiled models run the fastrnn modules eagerly (a graph break), with gradients."""
    calls = []
    run_stack = ft._run_stack
    monkeypatch.setattr(ft, "_run_stack", lambda *a, **k: calls.append(1) or run_stack(*a, **k))
    fast, ref = make_pair("lstm", dtype=torch.float32)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), fast)
    compiled = torch.compile(model, backend="eager")
    x = torch.randn(5, 2, 4, requires_grad=True)
    y = compiled(x)[0]
    y_ref = ref(model[0](x))[0]
    torch.testing.assert_close(y, y_ref, **TOL32)
    (g,) = torch.autograd.grad(y.sum(), x)
    (g_ref,) = torch.autograd.grad(y_ref.sum(), x)
    torch.testing.assert_close(g, g_ref, **TOL32)
    assert calls


def test_import_error_names_the_extra():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import fastrnn.torch\nexcept ImportError as e:\n    print(e)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert "pip install fastrnn[torch]" in out.stdout


def test_no_warning_on_the_fast_path():
    fast, _ = make_pair("lstm")
    _no_fallback_warning(lambda: fast(torch.randn(3, 2, 4, dtype=torch.float64)))


BAD_CALLS = {
    "4-D input": lambda: (torch.randn(2, 3, 2, 4), None),
    "1-D input": lambda: (torch.randn(4), None),
    "empty sequence": lambda: (torch.randn(0, 2, 4), None),
    "wrong input_size": lambda: (torch.randn(3, 2, 7), None),
    "wrong dtype": lambda: (torch.randn(3, 2, 4, dtype=torch.float32), None),
    "hx wrong batch": lambda: (torch.randn(3, 2, 4), "h:1,5,5"),
    "hx wrong hidden": lambda: (torch.randn(3, 2, 4), "h:1,2,6"),
    "hx 2-D for batched": lambda: (torch.randn(3, 2, 4), "h:2,5"),
    "hx 3-D for unbatched": lambda: (torch.randn(3, 4), "h:1,1,5"),
    "hx wrong dtype": lambda: (torch.randn(3, 2, 4), "hf:1,2,5"),
}
SAME_MESSAGE = set(BAD_CALLS) - {"empty sequence", "wrong dtype", "hx wrong dtype"}


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_raises_like_torch(mode, case):
    fast, ref = make_pair(mode)
    x, spec = BAD_CALLS[case]()
    if x.dtype == torch.float32 and case != "wrong dtype":
        x = x.double()
    hx = None
    if spec is not None:
        kind, dims = spec.split(":")
        shape = tuple(int(d) for d in dims.split(","))
        dtype = torch.float32 if kind == "hf" else torch.float64
        hx = torch.zeros(shape, dtype=dtype)
        if mode == "lstm":
            hx = (hx, hx.clone())
    with pytest.raises(Exception) as want:
        ref(x, hx)
    with pytest.raises(want.type) as got:
        fast(x, hx)
    if case in SAME_MESSAGE:  # checks torch.nn makes before any kernel runs
        assert str(got.value) == str(want.value)


def test_threads_follow_torch_and_are_restored():
    fast, _ = make_pair("gru")
    before = fastrnn.get_num_threads()
    torch_before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        fast(torch.randn(3, 2, 4, dtype=torch.float64))
    finally:
        torch.set_num_threads(torch_before)
    assert fastrnn.get_num_threads() == before


def test_import_fastrnn_does_not_import_torch():
    code = "import sys, fastrnn; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_in_place_changes_to_outputs_do_not_change_gradients(mode):
    """As with torch.nn, outputs may be modified in place when backward does not need them:
    the engine's tape must not share memory with the returned tensors."""
    fast, _ = make_pair(mode, num_layers=2, bidirectional=True)
    x = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)

    def grads(modify):
        y, hidden = fast(x)
        states = hidden if isinstance(hidden, tuple) else (hidden,)
        loss = y.sum() + sum(s.sum() for s in states)
        if modify:
            with torch.no_grad():
                for t in (y, *states):
                    t.mul_(3.0)
        return torch.autograd.grad(loss, [x, *fast.parameters()])

    for a, b in zip(grads(False), grads(True)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_results_never_alias_each_other_or_the_inputs():
    a = np.arange(6.0)
    given = np.ones(3)
    t1, t2, t3, none = ft._tensors([a, a, given[:2], None], torch.float64, [given])
    assert none is None
    t1.mul_(2)
    t3.zero_()
    assert torch.equal(t2, torch.arange(6.0, dtype=torch.float64))
    assert np.all(given == 1) and np.all(a == 2 * np.arange(6.0))  # t1 is a's memory


@pytest.mark.parametrize("what", ["input", "weight_hh_l0", "weight_ih_l1"])
def test_in_place_changes_to_inputs_before_backward_raise(what):
    """The tape keeps the input and parameters without copying them (the tensors are saved
    for backward instead): an in-place edit between forward and backward must make PyTorch
    raise, as with torch.nn, rather than give gradients of the edited values."""
    fast, _ = make_pair("lstm", num_layers=2)
    x = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    inp = x * 1.0  # a non-leaf input, so that it may be edited in place
    y, _ = fast(inp)
    target = inp if what == "input" else getattr(fast, what)
    with torch.no_grad():
        target.add_(0.5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
def test_pack_weights_same_bits_and_follows_updates(mode):
    # pack_weights(): inference reuses the layout with the same bits as without it, and lays
    # the weights out again after an in-place update or a replaced parameter.
    torch.manual_seed(3)
    m = getattr(ft, mode)(23, 37, num_layers=2, bidirectional=True)
    x = torch.randn(6, 9, 23)
    with torch.no_grad():
        plain = m(x)[0]
        m.pack_weights()
        packed = m(x)[0]
        again = m(x)[0]
        torch.testing.assert_close(packed, plain, rtol=0, atol=0)
        torch.testing.assert_close(again, plain, rtol=0, atol=0)
        assert len(ft._PACKED[m]) == 4  # two layers, two directions
        m.weight_hh_l1_reverse.mul_(0.5)  # in place: its version counter moves
        got = m(x)[0]
        m.unpack_weights()
        torch.testing.assert_close(got, m(x)[0], rtol=0, atol=0)
        assert not torch.equal(got, plain)
        m.pack_weights()
        m(x)
        m.weight_ih_l0 = torch.nn.Parameter(m.weight_ih_l0.detach() * 2)  # replaced
        got = m(x)[0]
        m.unpack_weights()
        torch.testing.assert_close(got, m(x)[0], rtol=0, atol=0)
        assert m not in ft._PACKED
    # with autograd the packed layout is not used, and results stay torch.nn's
    m.pack_weights()
    y = m(x)[0]
    ref = getattr(torch.nn, mode)(23, 37, num_layers=2, bidirectional=True)
    ref.load_state_dict(m.state_dict())
    torch.testing.assert_close(y, ref(x)[0], rtol=1e-5, atol=1e-5)


def test_pack_weights_on_a_cell():
    torch.manual_seed(4)
    cell = ft.LSTMCell(19, 70)
    x, h, c = torch.randn(40, 19), torch.randn(40, 70), torch.randn(40, 70)
    with torch.no_grad():
        want = cell(x, (h, c))
        cell.pack_weights()
        got = cell(x, (h, c))
        assert "l0" in ft._PACKED[cell]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


_FORK_DROPIN = r"""
import os, sys, time, warnings
import torch
import fastrnn.torch as ft

torch.set_num_threads(2)
m = ft.LSTM(16, 24)
x = torch.randn(7, 3, 16)
with torch.no_grad():
    want = m(x)[0]  # threaded: fastrnn follows torch's 2 threads
    torch.mm(torch.randn(300, 300), torch.randn(300, 300))
pid = os.fork()
if pid == 0:
    code = 1
    try:
        warnings.simplefilter("error")  # the drop-in must not warn about threads here
        with torch.no_grad():
            code = 0 if torch.equal(m(x)[0], want) else 2
    finally:
        os._exit(code)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(os.waitstatus_to_exitcode(status))
    time.sleep(0.05)
os.kill(pid, 9)
sys.exit(3)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork: POSIX only")
def test_forked_child_runs_the_dropin_on_one_thread_without_a_warning():
    # After threaded torch work (whose libgomp serves fastrnn too) a child's first call
    # hung; then the drop-in's own thread handling warned on every call in the child.
    done = subprocess.run(
        [sys.executable, "-c", _FORK_DROPIN], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, (done.returncode, done.stderr)
