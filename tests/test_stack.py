"""The multi-layer stack engine: composition, dropout semantics, finite-difference gradients."""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn import functional
from fastrnn._stack import param_names, param_shapes, stack_backward, stack_forward
from fastrnn.init import init_recurrent

# Every layer test runs on both backends: the NumPy reference and the native kernels.
BACKENDS = ["reference", "native"]
MODES = ["rnn", "lstm", "gru"]
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _params(mode, I, H, L, bidirectional, bias, rng, dtype="float64"):
    shapes = param_shapes(mode, I, H, L, bidirectional, bias)
    return init_recurrent(shapes, gates=GATES[mode], hidden_size=H, rng=rng, dtype=dtype)


def _layer(mode, inp, params, k, d, state, lengths, backend):
    """One layer/direction through the functional API (the stack's building block)."""
    sfx = f"l{k}" + ("_reverse" if d else "")
    args = [params[f"weight_ih_{sfx}"], params[f"weight_hh_{sfx}"]]
    args += [params.get(f"bias_ih_{sfx}"), params.get(f"bias_hh_{sfx}")]
    kw = dict(reverse=bool(d), lengths=lengths, backend=backend)
    if mode == "lstm":
        y, (h, c) = functional.lstm(inp, state[0], state[1], *args, **kw)
        return y, h, c
    fn = functional.gru if mode == "gru" else functional.rnn
    y, h = fn(inp, state, *args, **kw)
    return y, h, None


def test_param_names_follow_torch_order():
    assert param_names(2, bidirectional=True, bias=False) == [
        "weight_ih_l0", "weight_hh_l0", "weight_ih_l0_reverse", "weight_hh_l0_reverse",
        "weight_ih_l1", "weight_hh_l1", "weight_ih_l1_reverse", "weight_hh_l1_reverse",
    ]  # fmt: skip
    shapes = param_shapes("lstm", 5, 3, 2, bidirectional=True)
    assert shapes["weight_ih_l0"] == (12, 5)
    assert shapes["weight_ih_l1_reverse"] == (12, 6)
    assert shapes["weight_hh_l1"] == (12, 3)
    assert shapes["bias_hh_l0_reverse"] == (12,)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_stack_equals_manual_composition_with_dropout_masks(backend, mode, rng):
    """y and states are layer-by-layer functional calls; masks only on inner inputs."""
    T, N, I, H, L, D, p = 4, 3, 5, 3, 3, 2, 0.4
    params = _params(mode, I, H, L, True, True, rng)
    x = rng.standard_normal((T, N, I))
    h0 = rng.standard_normal((L * D, N, H)) * 0.5
    c0 = rng.standard_normal((L * D, N, H)) * 0.5
    state = (h0, c0) if mode == "lstm" else h0
    lengths = np.array([4, 1, 3])
    y, state_n, tape = stack_forward(
        mode, x, params, num_layers=L, hidden_size=H, bidirectional=True, state=state,
        lengths=lengths, dropout=p, rng=np.random.default_rng(0), training=True, backend=backend,
    )  # fmt: skip
    assert tape.masks[0] is None
    inp = x
    hs, cs = [], []
    for k in range(L):
        if k > 0:
            mask = tape.masks[k]
            assert mask.shape == (T, N, D * H)
            assert set(np.unique(mask)) <= {0.0, 1.0 / (1.0 - p)}
            inp = inp * mask
        outs = []
        for d in range(D):
            row = k * D + d
            st = (h0[row], c0[row]) if mode == "lstm" else h0[row]
            yd, h, c = _layer(mode, inp, params, k, d, st, lengths, backend)
            outs.append(yd)
            hs.append(h)
            cs.append(c)
        inp = np.concatenate(outs, axis=2)
    np.testing.assert_allclose(y, inp, rtol=1e-13, atol=1e-14)
    h_n = state_n[0] if mode == "lstm" else state_n
    np.testing.assert_allclose(h_n, np.stack(hs), rtol=1e-13, atol=1e-14)
    if mode == "lstm":
        np.testing.assert_allclose(state_n[1], np.stack(cs), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_masks_seeded_scaled_and_off_in_inference(backend, rng):
    T, N, I, H, L, p = 20, 10, 4, 8, 2, 0.3
    params = _params("gru", I, H, L, False, True, rng)
    x = rng.standard_normal((T, N, I))
    kw = dict(num_layers=L, hidden_size=H, dropout=p, backend=backend)

    def run(seed, training):
        return stack_forward("gru", x, params, rng=np.random.default_rng(seed),
                             training=training, **kw)  # fmt: skip

    y1, _, t1 = run(7, True)
    y2, _, t2 = run(7, True)
    _, _, t3 = run(8, True)
    np.testing.assert_array_equal(y1, y2)  # reproducible with the same seed
    np.testing.assert_array_equal(t1.masks[1], t2.masks[1])
    assert not np.array_equal(t1.masks[1], t3.masks[1])
    mask = t1.masks[1]
    kept = mask != 0
    np.testing.assert_allclose(mask[kept], 1.0 / (1.0 - p))
    assert abs(kept.mean() - (1 - p)) < 0.06  # 1600 draws: ~5 standard deviations
    # inference: no dropout, no tape, and the same as training with p = 0
    y_inf, _, tape = run(7, False)
    assert tape is None
    y_nodrop, _, _ = stack_forward("gru", x, params, training=True,
                                   **{**kw, "dropout": 0.0})  # fmt: skip
    np.testing.assert_allclose(y_inf, y_nodrop, rtol=1e-14, atol=1e-15)
    assert not np.allclose(y1, y_inf)
    # a single layer never drops anything (no input of a layer >= 1 exists)
    p1 = _params("gru", I, H, 1, False, True, rng)
    ya, _, ta = stack_forward(
        "gru", x, p1, num_layers=1, hidden_size=H, dropout=0.9, rng=np.random.default_rng(0),
        training=True, backend=backend,
    )  # fmt: skip
    yb, _, _ = stack_forward("gru", x, p1, num_layers=1, hidden_size=H, backend=backend)
    assert ta.masks == [None]
    np.testing.assert_allclose(ya, yb, rtol=1e-14, atol=1e-15)
    # p = 1 drops every inner input
    _, _, tz = stack_forward(
        "gru", x, params, rng=np.random.default_rng(0), training=True, **{**kw, "dropout": 1.0}
    )
    assert not tz.masks[1].any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_gradients_by_finite_differences_with_fixed_masks(backend, mode, rng):
    """Every gradient of the stack (dropout on, bidirectional, lengths) vs central differences."""
    T, N, I, H, L, D = 3, 2, 3, 2, 2, 2
    params = _params(mode, I, H, L, True, True, rng)
    x = rng.standard_normal((T, N, I))
    h0 = rng.standard_normal((L * D, N, H)) * 0.5
    c0 = rng.standard_normal((L * D, N, H)) * 0.5
    lengths = np.array([3, 2])
    dy = rng.standard_normal((T, N, D * H))
    dh = rng.standard_normal((L * D, N, H))
    dc = rng.standard_normal((L * D, N, H))

    def loss(x, params, h0, c0):
        state = (h0, c0) if mode == "lstm" else h0
        y, s, _ = stack_forward(
            mode, x, params, num_layers=L, hidden_size=H, bidirectional=True, state=state,
            lengths=lengths, dropout=0.5, rng=np.random.default_rng(123), training=True,
            backend=backend,
        )  # fmt: skip
        out = np.sum(y * dy)
        if mode == "lstm":
            return out + np.sum(s[0] * dh) + np.sum(s[1] * dc)
        return out + np.sum(s * dh)

    state = (h0, c0) if mode == "lstm" else h0
    _, _, tape = stack_forward(
        mode, x, params, num_layers=L, hidden_size=H, bidirectional=True, state=state,
        lengths=lengths, dropout=0.5, rng=np.random.default_rng(123), training=True,
        backend=backend,
    )  # fmt: skip
    assert tape.masks[1] is not None and (tape.masks[1] == 0).any()
    dx, dstate0, grads = stack_backward(tape, dy, (dh, dc) if mode == "lstm" else dh)
    assert list(grads) == list(params)

    eps = 1e-6

    def numeric(arr, call):
        g = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            lp = call()
            arr[idx] = old - eps
            lm = call()
            arr[idx] = old
            g[idx] = (lp - lm) / (2 * eps)
        return g

    def call():
        return loss(x, params, h0, c0)

    tol = dict(rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dx, numeric(x, call), **tol)
    dh0 = dstate0[0] if mode == "lstm" else dstate0
    np.testing.assert_allclose(dh0, numeric(h0, call), **tol)
    if mode == "lstm":
        np.testing.assert_allclose(dstate0[1], numeric(c0, call), **tol)
    for name in ("weight_ih_l1", "weight_hh_l0_reverse", "bias_ih_l1_reverse", "bias_hh_l0"):
        np.testing.assert_allclose(grads[name], numeric(params[name], call), err_msg=name, **tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_defaults_and_no_state(backend, rng):
    T, N, I, H, L = 3, 2, 3, 4, 2
    params = _params("lstm", I, H, L, False, False, rng)
    x = rng.standard_normal((T, N, I))
    y, (h, c), tape = stack_forward("lstm", x, params, num_layers=L, hidden_size=H,
                                    training=True, backend=backend)  # fmt: skip
    assert y.shape == (T, N, H) and h.shape == c.shape == (L, N, H)
    dx, (dh0, dc0), grads = stack_backward(tape)
    assert not dx.any() and not dh0.any() and not dc0.any()
    assert set(grads) == set(params) and not any(g.any() for g in grads.values())
    # only dc_n given
    dx, (dh0, dc0), grads = stack_backward(tape, None, (None, np.ones((L, N, H))))
    assert dx.shape == (T, N, I) and dc0.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_stack_bad_inputs(backend, rng):
    T, N, I, H, L = 3, 2, 3, 4, 2
    params = _params("rnn", I, H, L, False, True, rng)
    x = rng.standard_normal((T, N, I))
    kw = dict(num_layers=L, hidden_size=H, backend=backend)
    with pytest.raises(ValueError, match="mode"):
        stack_forward("elman", x, params, **kw)
    with pytest.raises(ValueError, match=r"x: expected a 3-D"):
        stack_forward("rnn", x[0], params, **kw)
    with pytest.raises(TypeError, match="x: expected dtype"):
        stack_forward("rnn", x.astype(np.int64), params, **kw)
    with pytest.raises(TypeError, match=r"params\['weight_ih_l0'\].*float64"):
        stack_forward("rnn", x, {k: v.astype(np.float32) for k, v in params.items()}, **kw)
    with pytest.raises(ValueError, match="missing 'weight_hh_l1'"):
        stack_forward("rnn", x, {k: v for k, v in params.items() if k != "weight_hh_l1"}, **kw)
    with pytest.raises(ValueError, match=r"weight_ih_l1.*\(4, 4\)"):
        stack_forward("rnn", x, {**params, "weight_ih_l1": np.zeros((4, 3))}, **kw)
    with pytest.raises(ValueError, match=r"state: expected shape \(L\*D, N, H\)"):
        stack_forward("rnn", x, params, state=np.zeros((1, N, H)), **kw)
    with pytest.raises(TypeError, match="state"):
        stack_forward("rnn", x, params, state=(np.zeros((L, N, H)),) * 2, **kw)
    with pytest.raises(ValueError, match=r"lengths: every value must be in \[1, T\]"):
        stack_forward("rnn", x, params, lengths=[1, 4], **kw)
    with pytest.raises(ValueError, match=r"lengths: every value"):
        stack_forward("rnn", x, params, lengths=[0, 1], **kw)
    with pytest.raises(ValueError, match=r"lengths: expected shape \(N,\)"):
        stack_forward("rnn", x, params, lengths=[1, 1, 1], **kw)
    with pytest.raises(TypeError, match="lengths"):
        stack_forward("rnn", x, params, lengths=[1.0, 2.0], **kw)
    with pytest.raises(ValueError, match="dropout"):
        stack_forward("rnn", x, params, dropout=1.5, **kw)
    with pytest.raises(ValueError, match="num_layers"):
        stack_forward("rnn", x, params, num_layers=0, hidden_size=H)
    _, _, tape = stack_forward("rnn", x, params, training=True, **kw)
    with pytest.raises(ValueError, match=r"dy: expected shape \(T, N, D\*H\)"):
        stack_backward(tape, np.zeros((T, N, 2 * H)))
    with pytest.raises(TypeError, match="tape"):
        stack_backward(object())
