"""The NumPy reference against finite differences and against itself.

Gradients: central differences in float64 of the scalar loss
``L = sum(y*dy) + sum(h_n*dh_n) (+ sum(c_n*dc_n))`` with random upstream gradients, for
every input of every cell and variant. Semantics: float32 vs float64, a per-step loop vs
one sequence call, ``lengths`` vs truncated sequences, ``reverse`` vs flipped time.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn import reference as R
from helpers import (
    VARIANT_IDS,
    VARIANTS,
    assert_allclose_named,
    assert_grads_close,
    backward,
    central_differences,
    random_case,
    random_lengths,
    random_upstream,
    scalar_loss,
    split_output,
)

FD_EPS = 1e-6  # central-difference step (float64)
FD_TOL = 1e-7  # max |fd - analytic| / max |fd| per tensor; observed <= ~5e-9
FD_MAX_ELEMENTS = 48  # check every element of smaller tensors, a random subset of larger


def _forward(kind, case, training=False, **kw):
    return getattr(R, kind)(**case, training=training, **kw)


def _draw_case(kind, kw, T, N, I, H, rng, bias=True, lengths=None, reverse=False,
               zero_state=False):  # fmt: skip
    """A float64 case; for relu, redrawn until no pre-activation is within 1e-3 of 0
    (the kink), so central differences never straddle it."""
    for _ in range(50):
        case = random_case(kind, T, N, I, H, np.float64, rng, bias=bias, zero_state=zero_state)
        if kw.get("nonlinearity") != "relu":
            return case
        _, _, tape = split_output(
            kind, _forward(kind, case, training=True, lengths=lengths, reverse=reverse, **kw)
        )
        if np.abs(tape.gates).min() > 1e-3:
            return case
    raise AssertionError("could not draw a relu case away from the kink")


def _fd_check(kind, kw, T, N, I, H, rng, *, bias=True, reverse=False, use_lengths=False,
              zero_state=False):  # fmt: skip
    lengths = random_lengths(T, N, rng) if use_lengths else None
    case = _draw_case(kind, kw, T, N, I, H, rng, bias=bias, lengths=lengths, reverse=reverse,
                      zero_state=zero_state)  # fmt: skip
    up = random_upstream(kind, T, N, H, np.float64, rng)
    opts = dict(kw, reverse=reverse, lengths=lengths)

    call_case = dict(case)
    if zero_state:  # forward gets None; the gradient is taken at zeros
        case["h0"] = np.zeros((N, H))
        if kind == "lstm":
            case["c0"] = np.zeros((N, H))
    _, _, tape = split_output(kind, _forward(kind, call_case, training=True, **opts))
    assert tape.backend == "reference" and tape.kind == kind
    grads = backward(R, kind, tape, up)

    expected_keys = {"x", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"}
    if kind == "lstm":
        expected_keys.add("c0")
    assert set(grads) == expected_keys

    def loss() -> float:
        return scalar_loss(kind, _forward(kind, case, **opts), up)

    for name, value in case.items():
        if value is None:
            assert grads[name] is None, f"{name}: gradient should be None without biases"
            continue
        analytic = grads[name]
        assert analytic.shape == value.shape and analytic.dtype == np.float64, name
        idx = np.arange(value.size)
        if value.size > FD_MAX_ELEMENTS:
            idx = rng.choice(value.size, FD_MAX_ELEMENTS, replace=False)
        numeric = central_differences(loss, value, idx, FD_EPS)  # perturbs the case
        got = analytic.reshape(-1)[idx]
        scale = max(np.abs(numeric).max(), 1e-3)
        err = np.abs(got - numeric).max() / scale
        assert err < FD_TOL, (
            f"{kind} {kw} d{name}: relative error {err:.2e} (T={T} N={N} I={I} H={H}, "
            f"bias={bias}, reverse={reverse}, lengths={lengths})"
        )


# (T, N, I, H, bias, reverse, use_lengths): a spread over odd sizes and every option,
# each combined with every variant below.
FD_SHAPES = [
    (1, 1, 1, 1, True, False, False),
    (3, 2, 3, 5, False, False, False),
    (7, 5, 8, 2, True, True, False),
    (3, 5, 1, 17, True, False, True),
    (7, 2, 3, 5, False, True, True),
]


@pytest.mark.parametrize(("kind", "kw"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize(
    ("T", "N", "I", "H", "bias", "reverse", "use_lengths"),
    FD_SHAPES,
    ids=["T1N1I1H1", "T3N2I3H5-nobias", "T7N5I8H2-rev", "T3N5I1H17-len", "T7N2I3H5-rev-len-nb"],
)
def test_gradients_match_finite_differences(kind, kw, T, N, I, H, bias, reverse, use_lengths,
                                            rng):  # fmt: skip
    _fd_check(kind, kw, T, N, I, H, rng, bias=bias, reverse=reverse, use_lengths=use_lengths)


@pytest.mark.parametrize(("kind", "kw"), VARIANTS, ids=VARIANT_IDS)
def test_gradients_with_default_zero_state(kind, kw, rng):
    """h0 (and c0) passed as None: the returned dh0 is the gradient at zeros."""
    _fd_check(kind, kw, 3, 2, 3, 5, rng, zero_state=True)


@pytest.mark.parametrize(("kind", "kw"), VARIANTS, ids=VARIANT_IDS)
def test_float32_forward_agrees_with_float64(kind, kw, rng):
    T, N, I, H = 7, 5, 8, 17
    case64 = random_case(kind, T, N, I, H, np.float64, rng)
    case32 = {k: None if v is None else v.astype(np.float32) for k, v in case64.items()}
    lengths = random_lengths(T, N, rng)
    up64 = random_upstream(kind, T, N, H, np.float64, rng)
    up32 = {k: v.astype(np.float32) for k, v in up64.items()}

    y64, s64, tape64 = split_output(kind, _forward(kind, case64, True, lengths=lengths, **kw))
    y32, s32, tape32 = split_output(kind, _forward(kind, case32, True, lengths=lengths, **kw))
    assert y32.dtype == np.float32
    # float32 rounding (6e-8) amplified by at most a few dozen operations per step and T
    # steps of recurrence stays well below 1e-5 for these unsaturated, O(1) values.
    assert_allclose_named("y", y32, y64, rtol=1e-5, atol=1e-6)
    for name in s64:
        assert s32[name].dtype == np.float32
        assert_allclose_named(name, s32[name], s64[name], rtol=1e-5, atol=1e-6)

    g64 = backward(R, kind, tape64, up64)
    g32 = backward(R, kind, tape32, up32)
    for name, g in g64.items():
        if g is None:
            assert g32[name] is None
            continue
        assert g32[name].dtype == np.float32, name
        # Gradients are sums over up to T*N = 35 rows of O(1) terms.
        assert_allclose_named(name, g32[name], g, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("kind", "kw"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_stepwise_loop_equals_sequence_call(kind, kw, reverse, rng):
    """T calls with T=1, carrying the state, equal one call (forward and backward)."""
    T, N, I, H = 7, 2, 3, 5
    case = random_case(kind, T, N, I, H, np.float64, rng)
    up = random_upstream(kind, T, N, H, np.float64, rng)
    y, states, tape = split_output(kind, _forward(kind, case, True, reverse=reverse, **kw))
    grads = backward(R, kind, tape, up)

    order = range(T - 1, -1, -1) if reverse else range(T)
    h, c = case["h0"], case.get("c0")
    ys = np.zeros_like(y)
    tapes = {}
    for t in order:
        step = dict(case, x=case["x"][t : t + 1], h0=h)
        if kind == "lstm":
            step["c0"] = c
        y_t, s_t, tapes[t] = split_output(kind, _forward(kind, step, True, **kw))
        ys[t] = y_t[0]
        h, c = s_t["h_n"], s_t.get("c_n")
    assert_allclose_named("y", ys, y, rtol=1e-13, atol=1e-15)
    assert_allclose_named("h_n", h, states["h_n"], rtol=1e-13, atol=1e-15)
    if kind == "lstm":
        assert_allclose_named("c_n", c, states["c_n"], rtol=1e-13, atol=1e-15)

    # Backward through the steps in the reverse of the processing order.
    dh, dc = up["dh_n"], up.get("dc_n")
    step_grads = {k: np.zeros_like(v) for k, v in grads.items() if k not in ("x", "h0", "c0")}
    dx = np.zeros_like(case["x"])
    for t in reversed(order):
        step_up = {"dy": up["dy"][t : t + 1], "dh_n": dh}
        if kind == "lstm":
            step_up["dc_n"] = dc
        g = backward(R, kind, tapes[t], step_up)
        dx[t] = g["x"][0]
        dh, dc = g["h0"], g.get("c0")
        for k in step_grads:
            step_grads[k] += g[k]
    assert_allclose_named("dx", dx, grads["x"], rtol=1e-12, atol=1e-14)
    assert_allclose_named("dh0", dh, grads["h0"], rtol=1e-12, atol=1e-14)
    if kind == "lstm":
        assert_allclose_named("dc0", dc, grads["c0"], rtol=1e-12, atol=1e-14)
    for k, v in step_grads.items():
        assert_allclose_named(k, v, grads[k], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("kind", "kw"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_lengths_equal_truncated_sequences(kind, kw, reverse, rng):
    """Outputs past each length are exactly 0; each sample's outputs, final state(s) and
    gradients equal those of its truncated sequence run alone (weight gradients sum)."""
    T, N, I, H = 7, 5, 3, 5
    case = random_case(kind, T, N, I, H, np.float64, rng)
    lengths = random_lengths(T, N, rng)
    up = random_upstream(kind, T, N, H, np.float64, rng)
    y, states, tape = split_output(
        kind, _forward(kind, case, True, reverse=reverse, lengths=lengths, **kw)
    )
    grads = backward(R, kind, tape, up)

    weight_sums = {k: np.zeros_like(v) for k, v in grads.items() if k.startswith(("w", "b"))}
    for n in range(N):
        L = int(lengths[n])
        assert np.all(y[L:, n] == 0.0), f"y past length {L} of sample {n} is not exactly 0"
        assert np.all(grads["x"][L:, n] == 0.0), f"dx past length of sample {n} is not 0"
        one = dict(case, x=case["x"][:L, n : n + 1], h0=case["h0"][n : n + 1])
        if kind == "lstm":
            one["c0"] = case["c0"][n : n + 1]
        y1, s1, tape1 = split_output(kind, _forward(kind, one, True, reverse=reverse, **kw))
        assert_allclose_named(f"y[:, {n}]", y[:L, n], y1[:, 0], rtol=1e-13, atol=1e-15)
        for name in states:
            assert_allclose_named(f"{name}[{n}]", states[name][n], s1[name][0], 1e-13, 1e-15)
        up1 = {"dy": up["dy"][:L, n : n + 1], "dh_n": up["dh_n"][n : n + 1]}
        if kind == "lstm":
            up1["dc_n"] = up["dc_n"][n : n + 1]
        g1 = backward(R, kind, tape1, up1)
        assert_allclose_named(f"dx[:, {n}]", grads["x"][:L, n], g1["x"][:, 0], 1e-12, 1e-14)
        for name in ("h0", "c0"):
            if name in grads:
                assert_allclose_named(f"d{name}[{n}]", grads[name][n], g1[name][0], 1e-12, 1e-14)
        for k in weight_sums:
            weight_sums[k] += g1[k]
    for k, v in weight_sums.items():
        assert_allclose_named(k, grads[k], v, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("kind", "kw"), VARIANTS, ids=VARIANT_IDS)
def test_reverse_equals_forward_on_flipped_time(kind, kw, rng):
    T, N, I, H = 7, 2, 3, 5
    case = random_case(kind, T, N, I, H, np.float64, rng)
    up = random_upstream(kind, T, N, H, np.float64, rng)
    y, states, tape = split_output(kind, _forward(kind, case, True, reverse=True, **kw))
    grads = backward(R, kind, tape, up)

    flipped = dict(case, x=case["x"][::-1].copy())
    up_f = dict(up, dy=up["dy"][::-1].copy())
    y_f, states_f, tape_f = split_output(kind, _forward(kind, flipped, True, **kw))
    grads_f = backward(R, kind, tape_f, up_f)
    assert_allclose_named("y", y, y_f[::-1], rtol=1e-13, atol=1e-15)
    for name in states:
        assert_allclose_named(name, states[name], states_f[name], rtol=1e-13, atol=1e-15)
    grads_f["x"] = grads_f["x"][::-1]
    assert_grads_close(grads, grads_f, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("kind", "kw"), VARIANTS, ids=VARIANT_IDS)
def test_missing_upstream_gradients_mean_zeros(kind, kw, rng):
    T, N, I, H = 3, 2, 3, 5
    case = random_case(kind, T, N, I, H, np.float64, rng)
    _, _, tape = split_output(kind, _forward(kind, case, True, **kw))
    fn = getattr(R, f"{kind}_backward")
    up = random_upstream(kind, T, N, H, np.float64, rng)
    zeros = {k: np.zeros_like(v) for k, v in up.items()}
    # Only dy given.
    assert_grads_close(fn(tape, dy=up["dy"]), backward(R, kind, tape, dict(zeros, dy=up["dy"])))
    # Only the final state gradient(s) given.
    only_state = dict(up, dy=zeros["dy"])
    kwargs = {k: v for k, v in only_state.items() if k != "dy"}
    assert_grads_close(fn(tape, **kwargs), backward(R, kind, tape, only_state))
    # Nothing given: every gradient is zero.
    for name, g in fn(tape).items():
        if g is not None:
            assert not np.any(g), name


@pytest.mark.parametrize(("kind", "kw"), VARIANTS, ids=VARIANT_IDS)
def test_inputs_are_not_modified(kind, kw, rng):
    T, N, I, H = 3, 2, 3, 5
    case = random_case(kind, T, N, I, H, np.float64, rng)
    before = {k: None if v is None else v.copy() for k, v in case.items()}
    lengths = random_lengths(T, N, rng)
    lengths_before = lengths.copy()
    up = random_upstream(kind, T, N, H, np.float64, rng)
    up_before = {k: v.copy() for k, v in up.items()}
    _, _, tape = split_output(kind, _forward(kind, case, True, lengths=lengths, **kw))
    backward(R, kind, tape, up)
    for k, v in case.items():
        if v is not None:
            assert np.array_equal(v, before[k]), k
    assert np.array_equal(lengths, lengths_before)
    for k, v in up.items():
        assert np.array_equal(v, up_before[k]), k


def test_training_flag_does_not_change_results(rng):
    for kind, kw in VARIANTS:
        case = random_case(kind, 3, 2, 3, 5, np.float64, rng)
        y0, s0, tape0 = split_output(kind, _forward(kind, case, **kw))
        y1, s1, tape1 = split_output(kind, _forward(kind, case, True, **kw))
        assert tape0 is None and tape1 is not None
        assert np.array_equal(y0, y1)
        for name in s0:
            assert np.array_equal(s0[name], s1[name])
