"""Optimizers against hand-computed steps and torch.optim; gradient clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastrnn import optim
from fastrnn.modules import Linear
from fastrnn.optim import SGD, Adam, clip_grad_norm, clip_grad_value


class Params:
    """Smallest module: one parameter array and its gradient."""

    def __init__(self, p, g):
        self.params = {"w": np.array(p, dtype=np.float64)}
        self.grads = {"w": np.array(g, dtype=np.float64)}

    def zero_grad(self):
        self.grads["w"][...] = 0


def test_sgd_plain_and_weight_decay_by_hand():
    m = Params([1.0, -2.0], [0.5, 1.0])
    SGD(m, lr=0.1, weight_decay=0.2).step()
    # g' = g + 0.2 p = [0.7, 0.6]
    np.testing.assert_allclose(m.params["w"], [1.0 - 0.07, -2.0 - 0.06])


def test_sgd_momentum_and_nesterov_by_hand():
    m = Params([1.0], [1.0])
    opt = SGD(m, lr=0.1, momentum=0.9)
    opt.step()  # b = 1 -> p = 0.9
    opt.step()  # b = 0.9 + 1 = 1.9 -> p = 0.9 - 0.19
    np.testing.assert_allclose(m.params["w"], [0.71])
    n = Params([1.0], [1.0])
    opt = SGD(n, lr=0.1, momentum=0.9, nesterov=True)
    opt.step()  # b = 1, d = 1 + 0.9 = 1.9 -> 0.81
    opt.step()  # b = 1.9, d = 1 + 1.71 = 2.71 -> 0.81 - 0.271
    np.testing.assert_allclose(n.params["w"], [0.539])


def test_adam_by_hand():
    m = Params([1.0], [2.0])
    opt = Adam(m, lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    opt.step()
    # t=1: m=0.2, v=0.04, mhat=2, vhat=4 -> p -= 0.1*2/(2+1e-8)
    np.testing.assert_allclose(m.params["w"], [1.0 - 0.1 * 2 / (2 + 1e-8)], rtol=1e-14)
    m.grads["w"][...] = -1.0
    opt.step()
    mm = 0.9 * 0.2 + 0.1 * -1.0
    vv = 0.99 * 0.04 + 0.01 * 1.0
    p1 = 1.0 - 0.1 * 2 / (2 + 1e-8)
    expect = p1 - 0.1 / (1 - 0.81) * mm / (math.sqrt(vv) / math.sqrt(1 - 0.99**2) + 1e-8)
    np.testing.assert_allclose(m.params["w"], [expect], rtol=1e-13)
    assert opt.state[(0, "w")]["step"] == 2


def _torch_compare(make_ours, make_torch, dtype, rtol):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    lin = Linear(5, 3, dtype=dtype, seed=0)
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in lin.params.items()}
    ours = make_ours(lin)
    theirs = make_torch(list(tparams.values()))
    for _ in range(6):
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in lin.params.items()}
        for k, g in grads.items():
            lin.grads[k][...] = g
            tparams[k].grad = torch.tensor(g.copy())
        ours.step()
        theirs.step()
    for k in lin.params:
        np.testing.assert_allclose(lin.params[k], tparams[k].detach().numpy(), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-6)])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"momentum": 0.9},
        {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
        {"momentum": 0.5, "dampening": 0.3},
    ],
)
def test_sgd_matches_torch(kw, dtype, rtol):
    torch = pytest.importorskip("torch")
    _torch_compare(
        lambda m: SGD(m, lr=0.05, **kw),
        lambda ps: torch.optim.SGD(ps, lr=0.05, **kw),
        dtype,
        rtol,
    )


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-6)])
@pytest.mark.parametrize("kw", [{}, {"betas": (0.8, 0.9), "eps": 1e-6, "weight_decay": 0.1}])
def test_adam_matches_torch(kw, dtype, rtol):
    torch = pytest.importorskip("torch")
    _torch_compare(
        lambda m: Adam(m, lr=0.01, **kw),
        lambda ps: torch.optim.Adam(ps, lr=0.01, **kw),
        dtype,
        rtol,
    )


def _adam_numpy(p, g, m, v, t, lr, b1, b2, eps, wd):
    """The update as NumPy array expressions (the rule in Adam's docstring)."""
    T = p.dtype.type
    d = g if not wd else g + T(wd) * p
    m *= T(b1)
    m += T(1.0 - b1) * d
    v *= T(b2)
    v += T(1.0 - b2) * d * d
    denom = np.sqrt(v) / T(math.sqrt(1.0 - b2**t)) + T(eps)
    p -= T(lr / (1.0 - b1**t)) * (m / denom)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wd", [0.0, 0.03])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("size", [1, 37, 300_001])  # the last one splits between threads
def test_fused_adam_equals_the_numpy_expressions_bitwise(dtype, wd, threads, size):
    import fastrnn

    rng = np.random.default_rng(size)
    mod = Params(rng.standard_normal(size), 0.0)
    mod.params["w"] = mod.params["w"].astype(dtype)
    mod.grads["w"] = np.zeros(size, dtype)
    p, m, v = mod.params["w"].copy(), np.zeros(size, dtype), np.zeros(size, dtype)
    opt = Adam(mod, lr=3e-2, betas=(0.8, 0.995), eps=1e-6, weight_decay=wd)
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(threads)
    try:
        for t in (1, 2, 3):
            g = (rng.standard_normal(size) * 10.0 ** rng.integers(-6, 2, size)).astype(dtype)
            mod.grads["w"][...] = g
            opt.step()
            _adam_numpy(p, g, m, v, t, 3e-2, 0.8, 0.995, 1e-6, wd)
            np.testing.assert_array_equal(mod.params["w"], p)
            np.testing.assert_array_equal(opt.state[(0, "w")]["exp_avg"], m)
            np.testing.assert_array_equal(opt.state[(0, "w")]["exp_avg_sq"], v)
        st = opt.state[(0, "w")]
        assert optim._fused_ok(mod.params["w"], mod.grads["w"], st["exp_avg"], st["exp_avg_sq"])
    finally:
        fastrnn.set_num_threads(before)


def test_adam_on_views_and_other_dtypes_takes_the_numpy_path():
    assert not optim._fused_ok(np.zeros((4, 4))[:, ::2], np.zeros((4, 2)))
    rng = np.random.default_rng(1)
    for p0 in (rng.standard_normal((6, 8))[:, ::2], rng.standard_normal(7).astype(np.float16)):
        mod = Params(0.0, 0.0)
        mod.params["w"], mod.grads["w"] = p0.copy() if p0.dtype == np.float16 else p0, p0 * 0.5
        p, m, v = mod.params["w"].copy(), np.zeros_like(p0), np.zeros_like(p0)
        opt = Adam(mod, lr=1e-2)
        opt.step()
        _adam_numpy(p, mod.grads["w"], m, v, 1, 1e-2, 0.9, 0.999, 1e-8, 0.0)
        np.testing.assert_array_equal(mod.params["w"], p)


def test_fused_adam_rejects_bad_arrays():
    from fastrnn import _core

    f = np.float32
    ok = [np.zeros(5, f) for _ in range(4)]
    scalars = (False, f(0), f(0.9), f(0.1), f(0.999), f(0.001), f(1.0), f(1e-8), f(1e-3))
    _core.adam_step(*ok, *scalars)
    with pytest.raises(TypeError, match="p: expected dtype"):
        _core.adam_step(np.zeros(5, np.int32), *ok[1:], *scalars)
    with pytest.raises(TypeError, match="m: dtype must match p"):
        _core.adam_step(ok[0], ok[1], np.zeros(5), ok[3], *scalars)
    with pytest.raises(ValueError, match="v: must have as many elements as p"):
        _core.adam_step(*ok[:3], np.zeros(6, f), *scalars)
    with pytest.raises(ValueError, match="g: must be C-contiguous"):
        _core.adam_step(ok[0], np.zeros(10, f)[::2], *ok[2:], *scalars)
    ro = np.zeros(5, f)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="m: read-only"):
        _core.adam_step(ok[0], ok[1], ro, ok[3], *scalars)
    with pytest.raises(ValueError, match="p and m overlap"):
        _core.adam_step(ok[0], ok[1], ok[0], ok[3], *scalars)


def test_optimizer_updates_in_place_and_zero_grad():
    lin = Linear(2, 2, seed=0)
    w = lin.params["weight"]
    lin.grads["weight"][...] = 1
    opt = SGD([lin], lr=0.5)
    before = w.copy()
    opt.step()
    assert lin.params["weight"] is w
    np.testing.assert_allclose(w, before - 0.5)
    opt.zero_grad()
    assert not lin.grads["weight"].any()


def test_shared_parameters_update_once():
    from fastrnn.modules import Sequential

    lin = Linear(2, 2, seed=0)
    model = Sequential(lin)
    lin.grads["weight"][...] = 1
    before = lin.params["weight"].copy()
    SGD([model, lin], lr=0.5).step()
    np.testing.assert_allclose(lin.params["weight"], before - 0.5)


def test_optimizer_state_dict_roundtrip():
    m = Params([1.0], [1.0])
    opt = Adam(m, lr=0.1)
    opt.step()
    sd = opt.state_dict()
    m2 = Params(m.params["w"], [1.0])
    opt2 = Adam(m2, lr=0.1)
    opt2.load_state_dict(sd)
    opt.step()
    opt2.step()
    np.testing.assert_array_equal(m.params["w"], m2.params["w"])


def test_clip_grad_norm_matches_definition():
    a = Params([0.0, 0.0], [3.0, 0.0])
    b = {"x": np.array([[4.0]])}
    total = clip_grad_norm([a, b], max_norm=1.0)
    assert total == pytest.approx(5.0)
    np.testing.assert_allclose(a.grads["w"], [3.0 / (5 + 1e-6), 0.0])
    np.testing.assert_allclose(b["x"], [[4.0 / (5 + 1e-6)]])
    # below the threshold: untouched, still returns the norm
    g = {"x": np.array([0.3, 0.4])}
    assert clip_grad_norm(g, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(g["x"], [0.3, 0.4])
    # inf norm
    g = {"x": np.array([-3.0, 1.0])}
    assert clip_grad_norm(g, 1.5, norm_type="inf") == 3.0
    np.testing.assert_allclose(g["x"], [-1.5 * 3 / (3 + 1e-6), 0.5 * 3 / (3 + 1e-6)])


def test_clip_grad_norm_matches_torch(rng):
    torch = pytest.importorskip("torch")
    gs = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    ts = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in gs]
    for t, g in zip(ts, gs):
        t.grad = torch.tensor(g.copy())
    ours = {str(i): g for i, g in enumerate(gs)}
    n1 = clip_grad_norm(ours, 0.7)
    n2 = torch.nn.utils.clip_grad_norm_(ts, 0.7)
    assert n1 == pytest.approx(n2.item(), rel=1e-12)
    for g, t in zip(gs, ts):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)


def test_clip_grad_value():
    m = Params([0, 0, 0], [-5.0, 0.2, 3.0])
    clip_grad_value(m, 1.0)
    np.testing.assert_array_equal(m.grads["w"], [-1.0, 0.2, 1.0])


def test_bad_arguments():
    m = Params([0.0], [0.0])
    with pytest.raises(ValueError, match="lr"):
        SGD(m, lr=-1)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(m, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        Adam(m, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="params"):
        Adam([object()])
    with pytest.raises(ValueError, match="non-empty"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(m, -1.0)
    with pytest.raises(ValueError, match="norm_type"):
        clip_grad_norm(m, 1.0, norm_type="l1")
    with pytest.raises(TypeError, match="modules"):
        clip_grad_norm([3], 1.0)
    with pytest.raises(ValueError, match="clip_value"):
        clip_grad_value(m, -1)
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm({"x": np.array([np.inf])}, 1.0, error_if_nonfinite=True)


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        # dampening outside [0, 1] (or NaN) turned the parameters to NaN from step 2
        (lambda m: SGD(m, lr=0.1, momentum=0.9, dampening=float("nan")), ValueError, "dampening"),
        (lambda m: SGD(m, lr=0.1, momentum=0.9, dampening=-0.5), ValueError, "dampening"),
        (lambda m: SGD(m, lr=0.1, momentum=0.9, dampening=1.5), ValueError, "<= 1.0"),
        (lambda m: SGD(m, lr="0.1"), TypeError, "lr must be a real number, got '0.1'"),
        (lambda m: SGD(m, lr=None), TypeError, "lr must be a real number, got NoneType"),
        (lambda m: SGD(m, lr=True), TypeError, "lr must be a real number, got True"),
        (lambda m: SGD(m, lr=1 + 2j), TypeError, "lr must be a real number"),
        (lambda m: SGD(m, lr=float("nan")), ValueError, "lr must be >= 0"),
        (lambda m: SGD(m, lr=0.1, momentum=0.5, nesterov="yes"), TypeError, "nesterov"),
        (lambda m: Adam(m, betas=0.9), TypeError, "betas must be a pair"),
        (lambda m: Adam(m, betas=(0.9, "x")), TypeError, r"betas\[1\] must be a real number"),
        (lambda m: Adam(m, betas=(-0.1, 0.9)), ValueError, r"betas\[0\] must be >= 0"),
        (lambda m: Adam(m, eps=-1e-8), ValueError, "eps must be >= 0"),
    ],
)
def test_hyperparameters_are_checked(make, exc, match):
    with pytest.raises(exc, match=match):
        make(Params([1.0], [1.0]))


def test_hyperparameters_take_any_real_number():
    from decimal import Decimal
    from fractions import Fraction

    for lr in (np.float32(0.5), np.array(0.5), Fraction(1, 2), Decimal("0.5"), 1):
        assert SGD(Params([1.0], [1.0]), lr=lr).lr == float(lr)


def test_sgd_dampening_at_its_bounds_matches_the_rule():
    for damp in (0.0, 1.0):
        m = Params([1.0], [1.0])
        opt = SGD(m, lr=0.5, momentum=0.9, dampening=damp)
        opt.step()  # buffer = g = 1 -> p = 0.5
        opt.step()  # buffer = 0.9 * 1 + (1 - damp) * 1
        np.testing.assert_allclose(m.params["w"], [0.5 - 0.5 * (0.9 + 1 - damp)])


def test_step_names_a_missing_gradient():
    m = Params([1.0], [1.0])
    del m.grads["w"]
    with pytest.raises(KeyError, match=r"grads has no entry for params\['w'\]"):
        SGD(m, lr=0.1).step()


def test_clipping_refuses_integer_gradients():
    # scaled in place by a coefficient cast to their dtype, they became zeros
    g = {"x": np.array([3, 4])}
    with pytest.raises(TypeError, match="gradient 'x' must be a float array, got dtype int"):
        clip_grad_norm(g, 1.0)
    with pytest.raises(TypeError, match="must be a float array"):
        clip_grad_value(g, 0.5)
    np.testing.assert_array_equal(g["x"], [3, 4])


def test_load_state_dict_checks_before_changing_anything():
    m = Params([1.0, 2.0], [1.0, 1.0])
    opt = Adam(m, lr=0.1)
    opt.step()
    good = opt.state_dict()
    key = (0, "w")
    bad_shape = {"state": {key: {**good["state"][key], "exp_avg": np.zeros(3)}}}
    bad_step = {"state": {key: {**good["state"][key], "step": -1}}}
    cases = [
        ({}, "a 'state' dict"),
        ({"state": {(1, "w"): {}}}, r"key \(1, 'w'\) names no parameter"),
        ({"state": {(0, "v"): {}}}, "names no parameter"),
        (bad_shape, r"has shape \(3,\), the parameter \(2,\)"),
        (bad_step, "'step'] must be an int >= 0"),
    ]
    for d, match in cases:
        with pytest.raises(ValueError, match=match):
            opt.load_state_dict(d)
        assert opt.state[key]["step"] == 1  # unchanged
    zero_d = {"state": {key: {**good["state"][key], "step": np.array(1)}}}
    with pytest.raises(ValueError, match="'step'] must be an int >= 0, got array"):
        opt.load_state_dict(zero_d)  # named as the step, not as a shape mismatch
    step_np = {"state": {(np.int64(0), "w"): {**good["state"][key], "step": np.int64(1)}}}
    opt.load_state_dict(step_np)  # ints that went through NumPy are fine
    opt.step()
    assert opt.state[key]["step"] == 2
