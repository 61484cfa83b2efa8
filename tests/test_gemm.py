"""The packed GEMM (fastrnn.ops.matmul, the private gemm binding and PackedB).

Reference: float64 NumPy products of the same (float32 or float64) inputs.

Tolerances are rigorous error bounds, so no case can fail by bad luck. A dot product of
length k summed in any order (with or without FMA) has
    |fl(s) - s| <= gamma_k * sum_p |a_ip| |b_pj|,   gamma_k = k u / (1 - k u),
u = eps / 2 the unit round-off. The kernel applies alpha once per KC block of k and
beta once, which adds a few more roundings of quantities of the same size. So we allow
    (k + 8) * eps * (|alpha| sum|a||b| + |beta| |c0|)
per element: ~1e-13 relative for float64 at k = 1000 (below the ~1e-12 asked for), and
k * 1.2e-7 relative for float32, i.e. scaled by k * eps as rounding error grows.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import _core
from fastrnn._ops_gemm import PackedB
from fastrnn.ops import matmul

DTYPES = [np.float64, np.float32]

# (M, N, K): a spread of odd sizes around the register tiles (MR up to 14, NR 4..32)
# and the cache blocks (KC = 256), not the full cube. N = 40 ends a group of two
# panels with a half (one-vector) panel.
SHAPES = [
    (1, 1, 1),
    (2, 3, 7),
    (3, 17, 2),
    (7, 31, 33),
    (7, 40, 33),
    (17, 65, 129),
    (33, 257, 31),
    (65, 7, 1000),
    (129, 33, 65),
    (257, 129, 17),
    (1000, 17, 65),
    (31, 1000, 257),
]


def _op(x: np.ndarray, t: bool) -> np.ndarray:
    return x.T if t else x


def _make(rng, m, n, k, dtype, ta=False, tb=False):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return a, b


def _check(got, a, b, ta, tb, alpha=1.0, beta=0.0, c0=None):
    """Assert got == alpha op(a) op(b) + beta c0 within the bound in the module docstring."""
    a64 = _op(a, ta).astype(np.float64)
    b64 = _op(b, tb).astype(np.float64)
    ref = alpha * (a64 @ b64)
    scale = abs(alpha) * (np.abs(a64) @ np.abs(b64))
    if beta != 0.0:
        ref = ref + beta * c0.astype(np.float64)
        scale = scale + abs(beta) * np.abs(c0.astype(np.float64))
    k = a64.shape[1]
    tol = (k + 8) * np.finfo(got.dtype).eps * scale + np.finfo(got.dtype).tiny
    assert got.shape == ref.shape
    assert np.all(np.isfinite(got)), "unwritten (NaN) or overflowed elements in the result"
    bad = np.abs(got.astype(np.float64) - ref) > tol
    assert not bad.any(), f"{bad.sum()} elements off; worst {np.max(np.abs(got - ref) / tol)} x tol"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("tb", [False, True], ids=["b", "bT"])
@pytest.mark.parametrize("ta", [False, True], ids=["a", "aT"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_matmul_matches_numpy(isa, rng, dtype, ta, tb, shape):
    m, n, k = shape
    a, b = _make(rng, m, n, k, dtype, ta, tb)
    out = np.full((m, n), np.nan, dtype=dtype)
    got = matmul(a, b, transpose_a=ta, transpose_b=tb, out=out)
    assert got is out
    _check(got, a, b, ta, tb)
    fresh = matmul(a, b, transpose_a=ta, transpose_b=tb)
    assert fresh.dtype == dtype and fresh.flags.c_contiguous
    np.testing.assert_array_equal(fresh, got)


@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 0.0), (-0.75, 0.0), (1.0, 1.0), (0.5, -2.0)])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_alpha_beta(isa, rng, dtype, alpha, beta):
    # k = 600 spans three KC blocks (alpha applied per block, beta once).
    for m, n, k, ta, tb in [(37, 45, 600, False, True), (5, 70, 3, True, False)]:
        a, b = _make(rng, m, n, k, dtype, ta, tb)
        c0 = rng.standard_normal((m, n)).astype(dtype)
        # beta == 0 must not read C: poison it.
        out = np.full((m, n), np.nan, dtype=dtype) if beta == 0.0 else c0.copy()
        _core.gemm(a, b, ta, tb, out, alpha, beta)
        _check(out, a, b, ta, tb, alpha, beta, c0)
        pb = PackedB(b, transpose_b=tb)
        out2 = np.full((m, n), np.nan, dtype=dtype) if beta == 0.0 else c0.copy()
        pb.matmul(a, out2, transpose_a=ta, alpha=alpha, beta=beta)
        np.testing.assert_array_equal(out2, out)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_k_zero(isa, dtype):
    a = np.empty((4, 0), dtype=dtype)
    b = np.empty((0, 6), dtype=dtype)
    out = np.full((4, 6), np.nan, dtype=dtype)
    np.testing.assert_array_equal(matmul(a, b, out=out), np.zeros((4, 6)))
    c0 = np.ones((4, 6), dtype=dtype)
    _core.gemm(a, b, False, False, c0, 1.0, 3.0)
    np.testing.assert_array_equal(c0, np.full((4, 6), 3.0))
    assert matmul(np.empty((0, 3), dtype), np.empty((3, 5), dtype)).shape == (0, 5)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_packed_b_reuse(isa, rng, dtype):
    k, n = 300, 133
    for tb in (False, True):
        _, b = _make(rng, 1, n, k, dtype, tb=tb)
        pb = PackedB(b, transpose_b=tb)
        assert (pb.k, pb.n, pb.isa) == (k, n, isa)
        for m, ta in [(1, False), (5, True), (64, False), (200, True)]:
            a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
            got = pb.matmul(a, np.full((m, n), np.nan, dtype=dtype), transpose_a=ta)
            _check(got, a, b, ta, tb)
            # Same blocking, same sums: bitwise equal to the unpacked path.
            np.testing.assert_array_equal(got, matmul(a, b, transpose_a=ta, transpose_b=tb))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_packed_column_ranges_and_epilogue(isa, threads, rng, dtype):
    k, n = 270, 3 * 37 + 5
    _, b = _make(rng, 1, n, k, dtype)
    pb = PackedB(b)
    p = pb.panel
    ranges = [(0, n), (0, p), (p, n), (2 * p, min(n, 5 * p + 3)), (n, n)]
    for m in (1, 6, 70, 300):
        a = rng.standard_normal((m, k)).astype(dtype)
        for j0, j1 in ranges:
            sentinel = dtype(7.0)
            out = np.full((m, n), sentinel, dtype=dtype)
            out[:, j0:j1] = np.nan
            tiles, snapshot, counts = pb.record_tiles(a, out, j0=j0, j1=j1)
            # Only the requested columns are written.
            assert np.all(out[:, :j0] == sentinel) and np.all(out[:, j1:] == sentinel)
            _check(out[:, j0:j1], a, b[:, j0:j1], False, False)
            # The epilogue covered every element of the range exactly once ...
            expect = np.zeros((m, n), dtype=np.int32)
            expect[:, j0:j1] = 1
            np.testing.assert_array_equal(counts, expect)
            # ... and saw each tile finished (all of k accumulated).
            np.testing.assert_array_equal(snapshot[:, j0:j1], out[:, j0:j1])
            for row0, rows, col0, cols in tiles:
                assert col0 % p == 0 and rows >= 1 and cols >= 1
                assert 0 <= row0 and row0 + rows <= m and j0 <= col0 and col0 + cols <= j1
        # Column ranges computed separately (as threads owning panels do) agree
        # bitwise with the whole product.
        full = pb.matmul(a)
        pieces = np.full((m, n), np.nan, dtype=dtype)
        for j0, j1 in [(0, p), (p, 3 * p), (3 * p, n)]:
            pb.matmul(a, pieces, j0=j0, j1=j1)
        np.testing.assert_array_equal(pieces, full)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_threads_bitwise_equal(isa, threads, rng, dtype):
    cases = [(300, 200, 300, False, False), (5, 700, 300, True, True), (150, 90, 700, True, False)]
    for m, n, k, ta, tb in cases:
        a, b = _make(rng, m, n, k, dtype, ta, tb)
        got = matmul(a, b, transpose_a=ta, transpose_b=tb)
        pb = PackedB(b, transpose_b=tb)
        got_packed = pb.matmul(a, transpose_a=ta)
        before = fastrnn.get_num_threads()
        fastrnn.set_num_threads(1)
        try:
            one = matmul(a, b, transpose_a=ta, transpose_b=tb)
            one_packed = pb.matmul(a, transpose_a=ta)
        finally:
            fastrnn.set_num_threads(before)
        assert np.array_equal(got, one)
        assert np.array_equal(got_packed, one_packed)
        _check(got, a, b, ta, tb)


def test_concurrent_python_threads(rng):
    jobs = []
    for i in range(4):
        dtype = DTYPES[i % 2]
        m, n, k = 40 + 17 * i, 90 - 11 * i, 150 + 31 * i
        a, b = _make(rng, m, n, k, dtype)
        jobs.append((a, b))
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            a, b = jobs[i]
            pb = PackedB(b)
            results[i] = [matmul(a, b) if r % 2 else pb.matmul(a) for r in range(20)]
        except BaseException as e:  # reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    for i, (a, b) in enumerate(jobs):
        for got in results[i]:
            _check(got, a, b, False, False)


def test_any_strides(rng):
    base = rng.standard_normal((64, 64))
    b = rng.standard_normal((30, 25))
    views = {
        "column slice (row stride > row length)": base[:25, :30],
        "every other column": base[:25, ::2][:, :30],
        "negative strides": base[::-1, ::-1][:25, :30],
        "fortran order": np.asfortranarray(base[:25, :30]),
        "transposed view": base[:30, :25].T,
    }
    for a in views.values():
        got = matmul(a, b)
        _check(got, a, b, False, False)
        got_t = matmul(a.T, b, transpose_a=True)
        np.testing.assert_array_equal(got_t, got)
    pb = PackedB(base[::2, 1:26][:30])
    np.testing.assert_array_equal(
        pb.matmul(views["every other column"]),
        matmul(views["every other column"], base[::2, 1:26][:30]),
    )


def _f32(*shape):
    return np.zeros(shape, dtype=np.float32)


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((_f32(3), _f32(3, 2)), {}, ValueError, "a must be 2-D"),
        ((_f32(2, 3), _f32(3, 2, 1)), {}, ValueError, "b must be 2-D"),
        ((_f32(2, 3), np.zeros((3, 2))), {}, TypeError, "same dtype"),
        ((_f32(2, 3).astype(np.int32), _f32(3, 2)), {}, TypeError, "float32 or float64"),
        (([[1.0]], _f32(1, 1)), {}, TypeError, "a must be a numpy.ndarray"),
        (
            (_f32(2, 3), _f32(4, 2)),
            {},
            ValueError,
            r"inner dimensions differ: a has shape \(2, 3\)",
        ),
        ((_f32(2, 3), _f32(3, 2)), {"transpose_b": True}, ValueError, "inner dimensions"),
        (
            (_f32(2, 3), _f32(3, 2)),
            {"out": _f32(2, 3)},
            ValueError,
            r"out must have shape \(2, 2\)",
        ),
        ((_f32(2, 3), _f32(3, 2)), {"out": np.zeros((2, 2))}, TypeError, "out must have dtype"),
        ((_f32(2, 3), _f32(3, 2)), {"out": _f32(2, 4)[:, ::2]}, ValueError, "C-contiguous"),
        ((_f32(2, 3), _f32(3, 2)), {"out": [[0.0]]}, TypeError, "out must be a numpy.ndarray"),
        # flags are bools: 'no' or 0.0 would otherwise count by their truth value
        ((_f32(2, 2), _f32(2, 2)), {"transpose_a": "no"}, TypeError, "transpose_a: expected a"),
        ((_f32(2, 2), _f32(2, 2)), {"transpose_b": 0.0}, TypeError, "transpose_b: expected a"),
        ((_f32(2, 2), _f32(2, 2)), {"transpose_a": None}, TypeError, "transpose_a: expected a"),
    ],
)
def test_bad_arguments(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        matmul(*args, **kwargs)


def test_numpy_bool_flags_are_accepted():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 5))
    got = matmul(a, b, transpose_a=np.bool_(True), transpose_b=np.bool_(False))
    np.testing.assert_allclose(got, a.T @ b, rtol=1e-12, atol=1e-12)


def test_bad_out_readonly_and_aliased():
    a, b = _f32(4, 4), _f32(4, 4)
    ro = _f32(4, 4)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        matmul(a, b, out=ro)
    with pytest.raises(ValueError, match="overlap"):
        matmul(a, b, out=a)
    big = _f32(8, 4)
    with pytest.raises(ValueError, match="overlap"):
        matmul(big[:4], b, out=big[2:6])
    pb = PackedB(b)
    with pytest.raises(ValueError, match="overlap"):
        pb.matmul(a, out=a)
    with pytest.raises(TypeError, match="dtype"):
        pb.matmul(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="inner dimensions"):
        pb.matmul(_f32(4, 5))
    with pytest.raises(ValueError, match="panel"):
        pb.matmul(a, j0=1)


def test_huge_sizes_raise():
    # Views claiming 2**57 rows (no memory behind them is ever touched): the sizes
    # overflow 64-bit arithmetic or any allocation, and must raise, not crash.
    x = _f32(1, 8)
    huge = np.lib.stride_tricks.as_strided(x, shape=(2**57, 8), strides=(32, 4))
    with pytest.raises(ValueError, match="overflow"):
        _core.gemm(huge, huge, False, True, _f32(1, 2))
    for tb in (False, True):
        with pytest.raises((ValueError, MemoryError)):
            _core.PackedB(huge, tb)
