"""fastrnn.ops.exp / tanh / sigmoid against long-double NumPy, on every SIMD target."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from fastrnn import ops

FUNCTIONS = ("exp", "tanh", "sigmoid")
# Name for max_error -> how to call it.
VARIANTS = {
    "exp": ops.exp,
    "tanh": ops.tanh,
    "sigmoid": ops.sigmoid,
    "tanh_fast": functools.partial(ops.tanh, fast=True),
    "sigmoid_fast": functools.partial(ops.sigmoid, fast=True),
}
DTYPES = (np.float32, np.float64)
EXTENDED = np.finfo(np.longdouble).nmant >= 63  # x86 80-bit long double


def _ref(name: str, x: np.ndarray) -> np.ndarray:
    """The exact function value, to long-double precision (or float64 for float32 input)."""
    wide = np.longdouble if EXTENDED else np.float64
    xl = x.astype(wide)
    with np.errstate(over="ignore", under="ignore"):
        if name == "exp":
            return np.exp(xl)
        if name.startswith("tanh"):
            return np.tanh(xl)
        return 1 / (1 + np.exp(-xl))


def _ulp_errors(y: np.ndarray, ref: np.ndarray, dtype) -> np.ndarray:
    """|y - ref| in units of the spacing of dtype at the exact value ref."""
    fi = np.finfo(dtype)
    _, e = np.frexp(np.abs(ref))
    ulp = np.ldexp(np.ones_like(ref), e - (fi.nmant + 1))
    ulp = np.maximum(ulp, ref.dtype.type(fi.smallest_subnormal))
    return np.abs(y.astype(ref.dtype) - ref) / ulp


def _samples(dtype) -> np.ndarray:
    """Dense samples of the whole finite range, both signs, plus the interesting parts."""
    rng = np.random.default_rng(1234)
    fi = np.finfo(dtype)
    parts = []
    # Log-spaced magnitudes from the smallest denormal to the largest finite number.
    lo = np.log2(np.longdouble(fi.smallest_subnormal))
    hi = np.log2(np.longdouble(fi.max))
    mags = np.minimum(np.exp2(np.linspace(lo, hi, 60_000)), fi.max).astype(dtype)
    parts += [mags, -mags]
    # Uniform random bit patterns: every exponent, random mantissas.
    uint = np.uint32 if dtype == np.float32 else np.uint64
    bits = rng.integers(0, np.iinfo(uint).max, size=100_000, dtype=uint, endpoint=True)
    r = bits.view(dtype)
    parts.append(r[np.isfinite(r)])
    # Dense where the functions bend, and around the overflow/underflow thresholds.
    parts.append(np.linspace(-40, 40, 80_001, dtype=dtype))
    parts.append(rng.uniform(-1, 1, 50_000).astype(dtype))
    big = 88.8 if dtype == np.float32 else 709.9
    small = -104.0 if dtype == np.float32 else -745.2
    parts.append(np.linspace(big - 1, big, 5_001, dtype=dtype))
    parts.append(np.linspace(small, small + 20, 20_001, dtype=dtype))
    return np.concatenate(parts)


@functools.cache
def _case(name: str, dtype) -> tuple[np.ndarray, np.ndarray]:
    x = _samples(dtype)
    return x, _ref(name.replace("_fast", ""), x)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_max_error_over_whole_range(isa, name, dtype):
    if dtype == np.float64 and not EXTENDED:
        pytest.skip("needs an extended long double for a float64 reference")
    x, ref = _case(name.replace("_fast", ""), dtype)
    y = VARIANTS[name](x)
    assert y.dtype == dtype and y.shape == x.shape
    fi = np.finfo(dtype)
    overflow = np.abs(ref) > fi.max
    assert np.all(y[overflow] == np.inf)
    err = _ulp_errors(y[~overflow], ref[~overflow], dtype)
    worst = float(err.max())
    bound = ops.max_error(name, dtype)
    assert bound == ops.max_error(name, dtype, isa=isa)
    assert worst <= bound, (
        f"{name} {np.dtype(dtype).name} on {isa}: {worst:.3f} ulp at "
        f"x={x[~overflow][err.argmax()]!r} (bound {bound})"
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("variant", ["tanh", "tanh_fast"])
def test_tanh_relative_accuracy_near_zero(isa, variant, dtype):
    fi = np.finfo(dtype)
    x = np.exp2(np.linspace(np.log2(float(fi.smallest_normal)), -1, 20_000)).astype(dtype)
    x = np.concatenate([x, -x])
    y = VARIANTS[variant](x)
    rel = np.abs(y.astype(np.longdouble) - _ref("tanh", x)) / np.abs(_ref("tanh", x))
    assert float(rel.max()) <= ops.max_error(variant, dtype) * float(fi.eps)
    tiny = np.abs(x) < np.sqrt(float(fi.eps)) / 4
    np.testing.assert_array_equal(y[tiny], x[tiny])  # tanh(x) == x for tiny x


SPECIALS = {
    "exp": [(-np.inf, 0.0), (np.inf, np.inf), (0.0, 1.0), (-0.0, 1.0), (1e6, np.inf), (-1e6, 0.0)],
    "tanh": [(0.0, 0.0), (-0.0, -0.0), (np.inf, 1.0), (-np.inf, -1.0), (1e6, 1.0), (-1e6, -1.0)],
    "sigmoid": [(-np.inf, 0.0), (np.inf, 1.0), (0.0, 0.5), (-0.0, 0.5), (1e6, 1.0), (-1e6, 0.0)],
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_special_values_exact(isa, variant, dtype):
    name = variant.replace("_fast", "")
    fi = np.finfo(dtype)
    xs = [x for x, _ in SPECIALS[name]] + [np.nan, -np.nan, float(fi.max), -float(fi.max)]
    x = np.array(xs, dtype=dtype)
    y = VARIANTS[variant](x)
    want = np.array([w for _, w in SPECIALS[name]], dtype=dtype)
    k = len(want)
    np.testing.assert_array_equal(y[:k], want)
    np.testing.assert_array_equal(np.signbit(y[:k]), np.signbit(want))
    assert np.all(np.isnan(y[k : k + 2]))
    assert not np.any(np.isnan(y[k + 2 :]))  # no spurious NaN for huge |x|
    want_max = {"exp": [np.inf, 0.0], "tanh": [1.0, -1.0], "sigmoid": [1.0, 0.0]}[name]
    np.testing.assert_array_equal(y[k + 2 :], np.array(want_max, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_exp_denormal_results_and_underflow(isa, dtype):
    fi = np.finfo(dtype)
    lo = np.log(float(fi.smallest_normal))
    x = np.linspace(lo - 20, lo, 2001, dtype=dtype)
    y = ops.exp(x)
    ref = _ref("exp", x)
    err = np.abs(y.astype(ref.dtype) - ref) / ref.dtype.type(fi.smallest_subnormal)
    assert float(err.max()) <= 1.0  # within one denormal step, not flushed
    assert np.any((y > 0) & (y < fi.smallest_normal))
    assert ops.exp(np.array([np.log(float(fi.smallest_subnormal)) - 1], dtype=dtype))[0] == 0


SIZES = [0, 1, 3, 15, 16, 17, 33, 1000]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_vector_tail_sizes(isa, name, dtype, n, rng):
    fn = getattr(ops, name)
    x = rng.uniform(-12, 12, 1024).astype(dtype)
    full = fn(x)
    guard = np.full(n + 40, 12345.0, dtype=dtype)
    out = guard[:n]
    res = fn(x[:n], out=out)
    assert res is out
    np.testing.assert_array_equal(out, full[:n])  # tail lanes == full-vector lanes
    np.testing.assert_array_equal(guard[n:], 12345.0)  # nothing written past the end


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_in_place_and_overlap(isa, name, dtype, rng):
    fn = getattr(ops, name)
    x = rng.uniform(-5, 5, (7, 13)).astype(dtype)
    want = fn(x)
    y = x.copy()
    assert fn(y, out=y) is y
    np.testing.assert_array_equal(y, want)
    # Overlapping but not identical: computed from a copy of the input.
    buf = rng.uniform(-5, 5, 101).astype(dtype)
    want2 = fn(buf[:-1].copy())
    fn(buf[:-1], out=buf[1:])
    np.testing.assert_array_equal(buf[1:], want2)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_shapes_and_non_contiguous_input(isa, dtype, rng):
    x = rng.uniform(-3, 3, (4, 6, 10)).astype(dtype)
    want = ops.sigmoid(x.copy())
    assert ops.sigmoid(x).shape == (4, 6, 10)
    view = x[:, ::2, ::3]
    np.testing.assert_array_equal(ops.sigmoid(view), want[:, ::2, ::3])
    np.testing.assert_array_equal(ops.tanh(x.T), ops.tanh(x).T)
    s = ops.exp(np.array(1.0, dtype=dtype))
    assert s.shape == () and s.dtype == dtype
    assert ops.exp(np.zeros((0, 3), dtype=dtype)).shape == (0, 3)
    y = ops.tanh([0.5, -0.25])  # array-like of Python floats -> float64
    assert y.dtype == np.float64


def test_big_endian_input_is_converted():
    x = np.linspace(-3, 3, 9).astype(">f8")
    np.testing.assert_array_equal(ops.tanh(x), ops.tanh(x.astype(np.float64)))


def test_bad_arguments():
    x = np.zeros(5, dtype=np.float32)
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        ops.exp(np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        ops.tanh(np.zeros(3, dtype=np.float16))
    with pytest.raises(TypeError, match=r"out must have dtype float32"):
        ops.exp(x, out=np.zeros(5, dtype=np.float64))
    with pytest.raises(ValueError, match=r"out must have shape \(5,\)"):
        ops.sigmoid(x, out=np.zeros(6, dtype=np.float32))
    with pytest.raises(TypeError, match=r"out must be a numpy\.ndarray"):
        ops.exp(x, out=[0.0] * 5)
    ro = np.zeros(5, dtype=np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writable"):
        ops.tanh(x, out=ro)
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        ops.tanh(x, out=np.zeros(10, dtype=np.float32)[::2])
    with pytest.raises(ValueError, match="name must be one of"):
        ops.max_error("log", np.float32)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        ops.max_error("exp", np.int32)


def test_max_error_table():
    from fastrnn import _core

    isas = list(_core.supported_isas())
    for name in VARIANTS:
        for dt in ("float32", "float64"):
            per_isa = [ops.max_error(name, dt, isa=i) for i in isas]
            assert ops.MAX_ERROR_ULP[name][dt] == max(per_isa)
            assert ops.max_error(name, dt) in per_isa
            assert all(0.5 <= b <= 3 for b in per_isa)
    assert ops.max_error("exp", np.float32, isa="generic") == 1.0
    assert ops.max_error("tanh_fast", np.float64, isa="avx512" if "avx512" in isas else None) == 3
    with pytest.raises(ValueError, match="isa"):
        ops.max_error("exp", np.float32, isa="sse9")
