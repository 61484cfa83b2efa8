"""Losses: values, finite-difference gradients (float64), masks, reductions, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn.losses import (
    MSELoss,
    SoftmaxCrossEntropy,
    mask_from_lengths,
    mse,
    softmax_cross_entropy,
)


def fd_grad(f, x, eps=1e-6):
    """Central finite differences of scalar f at x (float64)."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = f(x)
        x[i] = old - eps
        fm = f(x)
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


MASKS = ["none", "bool", "float", "lengths"]


def _mask(kind, rng, T, N):
    if kind == "none":
        return {}
    if kind == "bool":
        m = rng.random((T, N)) < 0.6
        m[0, 0] = True
        return {"mask": m}
    if kind == "float":
        return {"mask": rng.random((T, N))}
    return {"lengths": np.array([T, 1, T - 1][:N])}


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("kind", MASKS)
def test_cross_entropy_gradient_fd(rng, reduction, kind):
    T, N, C = 4, 3, 5
    logits = rng.standard_normal((T, N, C))
    targets = rng.integers(0, C, (T, N))
    kw = _mask(kind, rng, T, N)
    _loss, grad = softmax_cross_entropy(logits, targets, reduction=reduction, **kw)
    assert grad.shape == logits.shape and grad.dtype == np.float64
    num = fd_grad(lambda z: softmax_cross_entropy(z, targets, reduction=reduction, **kw)[0], logits)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


def test_cross_entropy_value_matches_formula(rng):
    logits = rng.standard_normal((6, 4))
    targets = rng.integers(0, 4, 6)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expect = -np.log(p[np.arange(6), targets])
    assert softmax_cross_entropy(logits, targets)[0] == pytest.approx(expect.sum(), rel=1e-12)
    assert softmax_cross_entropy(logits, targets, reduction="mean")[0] == pytest.approx(
        expect.mean(), rel=1e-12
    )


def test_cross_entropy_matches_torch(rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((5, 3, 7))
    targets = rng.integers(0, 7, (5, 3))
    loss, grad = softmax_cross_entropy(logits, targets, reduction="mean")
    z = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(z.reshape(-1, 7), torch.tensor(targets).reshape(-1))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_large_vocabulary_against_float64(rng, dtype):
    """Logits over 1 MiB (their gradient comes from fastrnn's buffer cache and is
    computed in place): loss and gradient against a float64 softmax, with a mask, for
    two calls in a row (the first gradient must survive the second call)."""
    logits = (3 * rng.standard_normal((7, 5, 9001))).astype(dtype)
    targets = rng.integers(0, 9001, (7, 5))
    mask = rng.uniform(0, 1, (7, 5)) * (rng.uniform(0, 1, (7, 5)) > 0.2)
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    per = -np.log(np.take_along_axis(p, targets[..., None], -1)[..., 0])
    onehot = np.zeros_like(p)
    np.put_along_axis(onehot, targets[..., None], 1.0, -1)
    want_grad = (p - onehot) * mask[..., None] / mask.sum()
    tol = 1e-12 if dtype == np.float64 else 2e-6  # float32: a few ulp of each quantity
    loss, grad = softmax_cross_entropy(logits, targets, mask=mask, reduction="mean")
    _, other = softmax_cross_entropy(-logits, targets, mask=mask, reduction="mean")
    assert grad.dtype == dtype and grad.shape == logits.shape
    assert loss == pytest.approx((per * mask).sum() / mask.sum(), rel=tol)
    np.testing.assert_allclose(grad, want_grad, rtol=0, atol=tol * np.abs(want_grad).max())
    assert not np.shares_memory(grad, other)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [-1e30, 1e30, 0.0]], dtype=np.float32)
    loss, grad = softmax_cross_entropy(logits, np.array([0, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx(2e30, rel=1e-6)
    assert grad.dtype == np.float32


def test_cross_entropy_masked_positions_ignore_padding_targets(rng):
    logits = rng.standard_normal((3, 2, 4))
    targets = np.array([[1, 2], [3, -1], [-1, -1]])
    lengths = np.array([2, 1])
    loss, grad = softmax_cross_entropy(logits, targets, lengths=lengths, reduction="mean")
    assert np.all(grad[2] == 0) and np.all(grad[1, 1] == 0)
    l_sum, _ = softmax_cross_entropy(logits[:2, 0], targets[:2, 0])
    l_one, _ = softmax_cross_entropy(logits[0, 1], targets[0, 1])
    assert loss == pytest.approx((l_sum + l_one) / 3, rel=1e-12)


def test_mean_with_empty_mask_is_zero(rng):
    logits = rng.standard_normal((2, 2, 3))
    loss, grad = softmax_cross_entropy(
        logits, np.zeros((2, 2), int), mask=np.zeros((2, 2)), reduction="mean"
    )
    assert loss == 0.0 and not grad.any()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("kind", MASKS)
def test_mse_gradient_fd(rng, reduction, kind):
    T, N, F = 4, 3, 2
    pred = rng.standard_normal((T, N, F))
    target = rng.standard_normal((T, N, F))
    kw = _mask(kind, rng, T, N)
    _loss, grad = mse(pred, target, reduction=reduction, **kw)
    num = fd_grad(lambda z: mse(z, target, reduction=reduction, **kw)[0], pred)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


def test_mse_mean_counts_feature_elements(rng):
    pred = rng.standard_normal((3, 2, 4))
    target = rng.standard_normal((3, 2, 4))
    mask = np.array([[1, 0], [1, 1], [0, 0]], bool)
    loss, _ = mse(pred, target, mask=mask, reduction="mean")
    sel = (pred - target)[mask]
    assert loss == pytest.approx(np.mean(sel**2), rel=1e-12)
    assert mse(pred, target, reduction="mean")[0] == pytest.approx(
        np.mean((pred - target) ** 2), rel=1e-12
    )


def test_class_wrappers(rng):
    logits = rng.standard_normal((3, 2, 4))
    t = rng.integers(0, 4, (3, 2))
    assert (
        SoftmaxCrossEntropy("mean")(logits, t)[0]
        == softmax_cross_entropy(logits, t, None, "mean")[0]
    )
    assert MSELoss()(logits, logits * 2)[0] == mse(logits, logits * 2)[0]


def test_mask_from_lengths_wants_an_integer_T():
    for bad in (2.5, True, "2"):
        with pytest.raises(TypeError, match="T must be an integer, got"):
            mask_from_lengths([1, 2], bad)
    with pytest.raises(ValueError, match="T must be an integer >= 0, got -1"):
        mask_from_lengths([1, 2], -1)
    for T in (np.int64(2), np.array(2)):  # NumPy integers and 0-d arrays are integers
        assert mask_from_lengths([1, 2], T).shape == (2, 2)


def test_mask_from_lengths():
    m = mask_from_lengths([2, 0, 3], 3)
    assert m.shape == (3, 3)
    np.testing.assert_array_equal(m[:, 0], [True, True, False])
    assert not m[:, 1].any() and m[:, 2].all()
    assert mask_from_lengths([1, 2], 2, batch_first=True).shape == (2, 2)
    with pytest.raises(ValueError, match="lengths"):
        mask_from_lengths([4], 3)


def test_bad_input():
    logits = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match="targets must have shape"):
        softmax_cross_entropy(logits, np.zeros((3, 2), int))
    with pytest.raises(TypeError, match="targets must be an integer"):
        softmax_cross_entropy(logits, np.zeros((2, 3)))
    with pytest.raises(IndexError, match=r"\[0, 4\)"):
        softmax_cross_entropy(logits, np.full((2, 3), 4))
    with pytest.raises(ValueError, match="reduction"):
        softmax_cross_entropy(logits, np.zeros((2, 3), int), reduction="avg")
    with pytest.raises(ValueError, match="mask must have shape"):
        softmax_cross_entropy(logits, np.zeros((2, 3), int), mask=np.ones((3, 2)))
    with pytest.raises(TypeError, match="logits"):
        softmax_cross_entropy(np.zeros((2, 3), int), np.zeros(2, int))
    with pytest.raises(ValueError, match="target must have shape"):
        mse(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="either mask or lengths"):
        mse(np.zeros((2, 3)), np.zeros((2, 3)), mask=np.ones((2, 3)), lengths=[1, 1, 1])
    with pytest.raises(ValueError, match="lengths must have shape"):
        mse(np.zeros((2, 3)), np.zeros((2, 3)), lengths=[1, 1])


def test_losses_want_float32_or_float64():
    # float16's "mean" divisor overflowed past 65504 elements: a zero gradient, silently.
    x = np.ones(70000, np.float16)
    with pytest.raises(TypeError, match="pred must be a float32 or float64 array"):
        mse(x, np.zeros_like(x), reduction="mean")
    with pytest.raises(TypeError, match="logits must be a float32 or float64 array"):
        softmax_cross_entropy(x.reshape(-1, 7), np.zeros(10000, np.int64), reduction="mean")
    loss, grad = mse(x.astype(np.float32), np.zeros(70000, np.float16), reduction="mean")
    assert loss == 1.0 and np.allclose(grad, 2 / 70000)


@pytest.mark.parametrize("bad", [np.array(["1.5"] * 3), np.array([None] * 3), np.ones(3, complex)])
def test_mse_target_must_be_real_numbers(bad):
    with pytest.raises(TypeError, match="target must be a real numeric array"):
        mse(np.zeros(3), bad)
