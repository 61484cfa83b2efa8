"""Bad input to the reference raises the documented exception naming the argument;
zero-length sequences and NaN/inf behave as documented."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fastrnn import reference as R
from helpers import random_case, random_upstream, split_output

KINDS = ["rnn", "lstm", "gru"]
T, N, I, H = 3, 2, 4, 5


def _case(kind, rng, dtype=np.float64, bias=True):
    return random_case(kind, T, N, I, H, dtype, rng, bias=bias)


def _call(kind, case, **kw):
    return getattr(R, kind)(**case, **kw)


def _gdesc(kind):
    return {"rnn": "H", "lstm": "4*H", "gru": "3*H"}[kind]


def _G(kind):
    return R.GATES[kind]


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("kind", KINDS)
def test_x_must_be_3d(kind, rng):
    case = _case(kind, rng)
    case["x"] = case["x"][0]
    with pytest.raises(ValueError, match=r"^x: expected a 3-D array of shape \(T, N, I\)"):
        _call(kind, case)


@pytest.mark.parametrize("kind", KINDS)
def test_weight_ih_inconsistent_with_x(kind, rng):
    case = _case(kind, rng)
    case["weight_ih"] = case["weight_ih"][:, :-1]
    with pytest.raises(ValueError, match=r"^weight_ih: expected shape .*I = 4"):
        _call(kind, case)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_weight_ih_rows_not_a_multiple_of_gates(kind, rng):
    case = _case(kind, rng)
    case["weight_ih"] = case["weight_ih"][:-1]
    with pytest.raises(
        ValueError, match=rf"^weight_ih: expected shape \({re.escape(_gdesc(kind))}"
    ):
        _call(kind, case)


def test_weight_hh_message_names_symbolic_and_actual_shape(rng):
    case = random_case("lstm", T, N, I, 17, np.float64, rng)
    case["weight_hh"] = case["weight_hh"][:, :16]
    expected = "weight_hh: expected shape (4*H, H) = (68, 17), got (68, 16)"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        R.lstm(**case)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("name", "bad_shape"),
    [
        ("weight_hh", lambda G: (G * H, H + 1)),
        ("weight_hh", lambda G: (G * H + 1, H)),
        ("bias_ih", lambda G: (G * H + 1,)),
        ("bias_hh", lambda G: (G * H, 1)),
        ("h0", lambda G: (N + 1, H)),
        ("h0", lambda G: (N, H, 1)),
    ],
)
def test_parameter_and_state_shapes(kind, name, bad_shape, rng):
    case = _case(kind, rng)
    case[name] = np.zeros(bad_shape(_G(kind)))
    with pytest.raises(ValueError, match=rf"^{name}: expected shape \("):
        _call(kind, case)


@pytest.mark.parametrize("bad_shape", [(N, H + 1), (H,), (N + 1, H)])
def test_c0_shape(bad_shape, rng):
    case = _case("lstm", rng)
    case["c0"] = np.zeros(bad_shape)
    with pytest.raises(ValueError, match=r"^c0: expected shape \(N, H\) = \(2, 5\)"):
        R.lstm(**case)


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex128, np.bool_])
def test_x_must_be_float32_or_float64(kind, dtype, rng):
    case = _case(kind, rng)
    case["x"] = case["x"].astype(dtype)
    with pytest.raises(TypeError, match=r"^x: expected dtype float32 or float64"):
        _call(kind, case)


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        (kind, name)
        for kind in KINDS
        for name in ("h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh")
        if name != "c0" or kind == "lstm"
    ],
)
def test_mixed_dtypes_name_the_argument(kind, name, rng):
    case = _case(kind, rng)
    case[name] = case[name].astype(np.float32)
    with pytest.raises(TypeError, match=rf"^{name}: expected dtype float64 \(the dtype of x\)"):
        _call(kind, case)


@pytest.mark.parametrize("name", ["weight_ih", "h0", "bias_hh"])
def test_integer_parameters_are_type_errors(name, rng):
    case = _case("gru", rng)
    case[name] = np.zeros(case[name].shape, dtype=np.int32)
    with pytest.raises(TypeError, match=rf"^{name}: expected dtype float32 or float64"):
        R.gru(**case)


# ----------------------------------------------------------------------------- lengths


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("lengths", "message"),
    [
        (np.array([[1, 2]]), r"^lengths: expected shape \(N,\) = \(2,\), got \(1, 2\)"),
        (np.array([1, 2, 3]), r"^lengths: expected shape \(N,\) = \(2,\), got \(3,\)"),
        (np.array(2), r"^lengths: expected shape \(N,\)"),
        (np.array([0, 2]), r"^lengths: every value must satisfy 1 <= lengths\[n\] <= T = 3"),
        (np.array([1, 4]), r"^lengths: every value must satisfy 1 <= lengths\[n\] <= T = 3, got 4"),
        (np.array([-1, 2]), r"^lengths: every value must satisfy"),
    ],
)
def test_bad_lengths_are_value_errors(kind, lengths, message, rng):
    with pytest.raises(ValueError, match=message):
        _call(kind, _case(kind, rng), lengths=lengths)


@pytest.mark.parametrize("lengths", [np.array([1.0, 2.0]), np.array([True, True]), ["a", "b"]])
def test_non_integer_lengths_are_type_errors(lengths, rng):
    with pytest.raises(TypeError, match=r"^lengths: expected an integer array of shape \(N,\)"):
        R.lstm(**_case("lstm", rng), lengths=lengths)


def test_lengths_accepts_python_ints_and_any_integer_dtype(rng):
    case = _case("rnn", rng)
    y_list, _ = R.rnn(**case, lengths=[3, 1])
    y_u8, _ = R.rnn(**case, lengths=np.array([3, 1], dtype=np.uint8))
    assert np.array_equal(y_list, y_u8)
    assert np.all(y_list[1:, 1] == 0)


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize("nonlinearity", ["Tanh", "softmax", "", None, 1])
def test_unknown_nonlinearity(nonlinearity, rng):
    with pytest.raises(ValueError, match=r"^nonlinearity: expected one of \('tanh', 'relu'"):
        R.rnn(**_case("rnn", rng), nonlinearity=nonlinearity)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flag", ["reverse", "training"])
def test_flags_must_be_bool(kind, flag, rng):
    with pytest.raises(TypeError, match=rf"^{flag}: expected a bool"):
        _call(kind, _case(kind, rng), **{flag: "yes"})


def test_reset_after_must_be_bool(rng):
    with pytest.raises(TypeError, match=r"^reset_after: expected a bool"):
        R.gru(**_case("gru", rng), reset_after=1)


@pytest.mark.parametrize(
    ("kind", "kwarg"),
    [("rnn", "bogus"), ("lstm", "nonlinearity"), ("gru", "nonlinearity"), ("rnn", "reset_after")],
)
def test_unknown_keyword_arguments(kind, kwarg, rng):
    with pytest.raises(TypeError, match=kwarg):
        _call(kind, _case(kind, rng), **{kwarg: "tanh"})


@pytest.mark.parametrize("kind", KINDS)
def test_options_are_keyword_only(kind, rng):
    case = _case(kind, rng)
    args = [case.pop(k) for k in ("x", "h0", "c0", "weight_ih", "weight_hh") if k in case]
    args += [case.pop("bias_ih"), case.pop("bias_hh")]
    with pytest.raises(TypeError):
        getattr(R, kind)(*args, False)


# ----------------------------------------------------------------------------- backward


def _tape(kind, rng, dtype=np.float64, bias=True, **kw):
    case = random_case(kind, T, N, I, H, dtype, rng, bias=bias)
    return split_output(kind, _call(kind, case, training=True, **kw))[2]


BAD_UPSTREAM = [
    ("dy", np.zeros((T, N, H + 1)), ValueError, r"^dy: expected shape \(T, N, H\) = \(3, 2, 5"),
    ("dy", np.zeros((N, H)), ValueError, r"^dy: expected shape"),
    ("dy", np.zeros((T, N, H), np.float32), TypeError, r"^dy: expected dtype float64"),
    ("dh_n", np.zeros((N, H + 1)), ValueError, r"^dh_n: expected shape \(N, H\) = \(2, 5\)"),
    ("dh_n", np.zeros((N, H), np.int64), TypeError, r"^dh_n: expected dtype float32 or"),
    ("dc_n", np.zeros((H,)), ValueError, r"^dc_n: expected shape \(N, H\)"),
    ("dc_n", np.zeros((N, H), np.float32), TypeError, r"^dc_n: expected dtype float64"),
]


@pytest.mark.parametrize(
    ("kind", "name", "bad", "exc", "message"),
    [(kind, *bad) for kind in KINDS for bad in BAD_UPSTREAM if bad[0] != "dc_n" or kind == "lstm"],
)
def test_bad_upstream_gradients(kind, name, bad, exc, message, rng):
    fn = getattr(R, f"{kind}_backward")
    with pytest.raises(exc, match=message):
        fn(_tape(kind, rng), **{name: bad})


def test_backward_checks_the_tape(rng):
    with pytest.raises(TypeError, match=r"^tape: expected a fastrnn.reference.Tape"):
        R.lstm_backward({"kind": "lstm"})
    with pytest.raises(ValueError, match=r"^tape: expected a tape from gru\(\), got one from rnn"):
        R.gru_backward(_tape("rnn", rng))


# ----------------------------------------------------------------------------- T == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("given_state", [True, False], ids=["h0", "h0-None"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_zero_length_sequence(kind, given_state, bias, rng):
    case = random_case(kind, 0, N, I, H, np.float32, rng, bias=bias, zero_state=not given_state)
    y, states, tape = split_output(kind, _call(kind, case, training=True))
    assert y.shape == (0, N, H) and y.dtype == np.float32
    for name, init in (("h_n", "h0"), ("c_n", "c0")):
        if name not in states:
            continue
        want = case[init] if given_state else np.zeros((N, H), np.float32)
        assert states[name].dtype == np.float32
        assert np.array_equal(states[name], want)
        assert states[name] is not case[init]  # a copy, not the caller's array
    # The result without training is the same.
    y2, states2, _ = split_output(kind, _call(kind, case))
    assert y2.shape == (0, N, H) and np.array_equal(states2["h_n"], states["h_n"])

    up = random_upstream(kind, 0, N, H, np.float32, rng)
    fn = getattr(R, f"{kind}_backward")
    grads = fn(tape, *up.values())
    assert grads["x"].shape == (0, N, I) and grads["x"].dtype == np.float32
    assert np.array_equal(grads["h0"], up["dh_n"])
    if kind == "lstm":
        assert np.array_equal(grads["c0"], up["dc_n"])
    G = _G(kind)
    assert np.array_equal(grads["weight_ih"], np.zeros((G * H, I), np.float32))
    assert np.array_equal(grads["weight_hh"], np.zeros((G * H, H), np.float32))
    for name in ("bias_ih", "bias_hh"):
        if bias:
            assert np.array_equal(grads[name], np.zeros(G * H, np.float32))
        else:
            assert grads[name] is None


def test_zero_length_with_lengths_is_rejected(rng):
    case = random_case("rnn", 0, N, I, H, np.float64, rng)
    with pytest.raises(ValueError, match=r"^lengths: every value must satisfy .* T = 0"):
        R.rnn(**case, lengths=np.array([1, 1]))


def test_empty_batch(rng):
    case = random_case("lstm", T, 0, I, H, np.float64, rng)
    y, (h, c), tape = R.lstm(**case, lengths=np.zeros(0, np.int64), training=True)
    assert y.shape == (T, 0, H) and h.shape == c.shape == (0, H)
    grads = R.lstm_backward(tape)
    assert grads["x"].shape == (T, 0, I)
    assert not np.any(grads["weight_hh"])


# ----------------------------------------------------------------------------- NaN/inf


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_nan_in_x_propagates_along_its_sample_only(kind, reverse, rng):
    # pyproject turns warnings into errors, so this also checks that no RuntimeWarning
    # is emitted on the way.
    case = _case(kind, rng)
    case["x"][1, 0, 2] = np.nan
    y, states, tape = split_output(kind, _call(kind, case, reverse=reverse, training=True))
    touched = slice(1, None) if not reverse else slice(0, 2)
    untouched = slice(0, 1) if not reverse else slice(2, None)
    assert np.all(np.isnan(y[touched, 0]))
    assert np.all(np.isfinite(y[untouched, 0]))
    assert np.all(np.isfinite(y[:, 1]))
    assert np.all(np.isnan(states["h_n"][0])) and np.all(np.isfinite(states["h_n"][1]))
    grads = getattr(R, f"{kind}_backward")(
        tape, *random_upstream(kind, T, N, H, np.float64, rng).values()
    )
    assert np.isnan(grads["weight_ih"]).any()  # fmt: skip


@pytest.mark.parametrize(("kind", "kw"), [("rnn", {"nonlinearity": "relu"}), ("rnn", {}),
                                         ("lstm", {}), ("gru", {}),
                                         ("gru", {"reset_after": False})])  # fmt: skip
def test_inf_weights_and_nan_upstream_do_not_raise(kind, kw, rng):
    """inf saturates sigmoid/tanh like IEEE arithmetic says (relu passes it on); NaN
    upstream gradients reach the input gradients. No exception, no warning."""
    case = _case(kind, rng)
    case["weight_ih"][:, 0] = np.inf
    case["x"][:, :, 0] = 1.0
    y, _, tape = split_output(kind, _call(kind, case, training=True, **kw))
    if kw.get("nonlinearity") == "relu":
        assert np.isposinf(y).any()
    up = random_upstream(kind, T, N, H, np.float64, rng)
    up["dy"][0, 0, 0] = np.nan
    grads = getattr(R, f"{kind}_backward")(tape, *up.values())
    assert np.isnan(grads["x"][0, 0]).any()


def test_sigmoid_of_huge_inputs_is_exact_without_warnings(rng):
    case = _case("rnn", rng)
    case["x"][:] = 1e4
    case["weight_ih"][:] = -1.0
    y, h = R.rnn(**case, nonlinearity="sigmoid")
    assert np.all(y == 0.0) and np.all(h == 0.0)
