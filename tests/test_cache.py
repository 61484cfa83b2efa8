"""The buffer cache behind large outputs, tapes and workspaces (csrc/bindings/pool.cpp).

Arrays of 1 MiB and more come from blocks that earlier calls released. These tests check
that reused blocks never leak old values into results (every call is compared with the
reference after a call on other inputs has filled the same blocks), that arrays still in
use are never handed out again, and the cache controls.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fastrnn
from fastrnn import functional as F
from helpers import assert_allclose_named, random_case, random_upstream, split_output

# y is T*N*H*8 bytes = 1.06 MiB and the gate tape 4x that: every big array is cached.
T, N, I, H = 8, 64, 40, 260
TOL64 = {"rtol": 1e-11, "atol": 1e-12}


@pytest.fixture(autouse=True)
def default_limit():
    limit = fastrnn.cache_info()["limit"]
    fastrnn.empty_cache()
    yield
    fastrnn.set_cache_limit(limit)


def run(kind: str, seed: int, backend: str) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    case = random_case(kind, T, N, I, H, np.float64, rng)
    y, states, tape = split_output(kind, getattr(F, kind)(**case, training=True, backend=backend))
    up = random_upstream(kind, T, N, H, np.float64, rng)
    grads = getattr(F, kind + "_backward")(tape, **up)
    return {"y": y, **states}, grads


def check_same(kind: str, got: tuple[dict, dict], want: tuple[dict, dict]) -> None:
    assert set(got[0]) == set(want[0])
    for name, w in want[0].items():
        assert_allclose_named(f"{kind} {name}", got[0][name], w, **TOL64)
    assert set(got[1]) == set(want[1])
    for name, w in want[1].items():
        if w is not None:
            assert_allclose_named(f"{kind} {name}", got[1][name], w, **TOL64)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_reused_blocks_give_the_reference_results(kind: str) -> None:
    for seed in (1, 2, 3):
        got = run(kind, seed, "native")
        check_same(kind, got, run(kind, seed, "reference"))
        assert fastrnn.cache_info()["bytes"] > 0 or seed == 1
        del got


def test_steady_state_needs_no_new_memory() -> None:
    run("lstm", 1, "native")
    first = fastrnn.cache_info()
    assert first["blocks"] >= 4 and first["bytes"] >= 4 * T * N * H * 8
    for seed in (2, 3):
        run("lstm", seed, "native")
        assert fastrnn.cache_info() == first


def test_arrays_in_use_are_not_reused() -> None:
    rng = np.random.default_rng(0)
    case = random_case("gru", T, N, I, H, np.float64, rng)
    y1 = F.gru(**case)[0]
    keep = y1.copy()
    y2 = F.gru(**{**case, "x": case["x"][::-1].copy()})[0]
    assert y1.ctypes.data != y2.ctypes.data
    fastrnn.empty_cache()
    np.testing.assert_array_equal(y1, keep)
    assert y1.flags.c_contiguous and y1.flags.writeable


def test_empty_cache_and_limit() -> None:
    run("rnn", 1, "native")
    held = fastrnn.cache_info()["bytes"]
    assert held > 0
    assert fastrnn.empty_cache() == held
    assert fastrnn.cache_info()["bytes"] == 0 and fastrnn.empty_cache() == 0
    run("rnn", 1, "native")
    fastrnn.set_cache_limit(1)  # below every block: all freed, nothing kept afterwards
    assert fastrnn.cache_info() == {"bytes": 0, "blocks": 0, "limit": 1, "in_use": 0}
    got = run("rnn", 2, "native")
    assert fastrnn.cache_info()["bytes"] == 0
    check_same("rnn", got, run("rnn", 2, "reference"))


# What an LSTM training forward keeps alive, in float64, from the cache (the arrays of 1 MiB
# and more): y, the tape's hprev, cprev, tanh(c) and gates (4 segments), and the tape's
# private copy of weight_hh (its copies of x and weight_ih are smaller: NumPy's). The tape's
# rows and gate segments are HP apart: H rounded up to whole 64-byte lines (seq.h).
HP = 264
LSTM_TRAIN_BLOCKS = [T * N * H * 8] + [T * N * HP * 8] * 3 + [T * N * 4 * HP * 8, 4 * H * H * 8]
LSTM_TRAIN_BYTES = sum(LSTM_TRAIN_BLOCKS)
# A cached block handed out may be up to a quarter + 2 MiB larger than asked (pool.cpp).
LSTM_TRAIN_MAX = sum(b + b // 4 + (2 << 20) for b in LSTM_TRAIN_BLOCKS)


def lstm_training_forward(seed: int) -> tuple:
    case = random_case("lstm", T, N, I, H, np.float64, np.random.default_rng(seed))
    return F.lstm(**case, training=True)


@pytest.mark.parametrize("cached", [False, True])
def test_blocks_in_use_are_counted(cached: bool) -> None:
    if cached:  # the second call's blocks all come from the cache
        lstm_training_forward(1)
        assert fastrnn.cache_info()["bytes"] >= LSTM_TRAIN_BYTES
    before = fastrnn.cache_info()["in_use"]
    out = lstm_training_forward(2)
    live = fastrnn.cache_info()["in_use"] - before
    assert LSTM_TRAIN_BYTES <= live <= LSTM_TRAIN_MAX
    del out
    assert fastrnn.cache_info()["in_use"] == before


@pytest.mark.parametrize("cached", [False, True])
def test_tracemalloc_sees_blocks_in_use(cached: bool) -> None:
    # Memory measurements (the benchmark's "alloc" column among them) rely on this: the
    # cache's blocks must show up like the NumPy arrays they stand in for.
    if cached:
        lstm_training_forward(1)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = lstm_training_forward(2)
        held = tracemalloc.get_traced_memory()[0] - base
        assert held >= LSTM_TRAIN_BYTES
        del out
        assert tracemalloc.get_traced_memory()[0] - base < 0.05 * LSTM_TRAIN_BYTES
    finally:
        tracemalloc.stop()


def test_benchmark_memory_includes_cached_blocks() -> None:
    from fastrnn.bench.measure import memory_peaks

    lstm_training_forward(1)  # fills the cache
    alloc, _ = memory_peaks(lambda: lstm_training_forward(2))
    assert alloc is not None and alloc >= LSTM_TRAIN_BYTES / 2**20


@pytest.mark.parametrize("bad", [-1, 2**63])
def test_set_cache_limit_range(bad: int) -> None:
    with pytest.raises(ValueError, match=r"nbytes must be in \[0, 2\*\*63\)"):
        fastrnn.set_cache_limit(bad)


@pytest.mark.parametrize("bad", [1.5, True, "1"])
def test_set_cache_limit_type(bad: object) -> None:
    with pytest.raises(TypeError, match="nbytes must be an int"):
        fastrnn.set_cache_limit(bad)  # type: ignore[arg-type]


def test_empty_and_matmul_outputs_come_from_the_cache() -> None:
    from fastrnn import ops
    from fastrnn._runtime import _empty

    base = fastrnn.cache_info()["in_use"]
    big = (300, 1000)  # 1.2 MB as float32, 2.4 MB as float64
    for dtype in (np.float32, np.float64):
        a = _empty(big, np.dtype(dtype))
        assert a.shape == big and a.dtype == dtype and a.flags.c_contiguous
        assert a.flags.writeable and fastrnn.cache_info()["in_use"] >= base + a.nbytes
        del a
    assert fastrnn.cache_info()["in_use"] == base
    small = _empty((3, 4), np.dtype(np.float32))  # below 1 MiB: plain NumPy memory
    assert small.shape == (3, 4) and fastrnn.cache_info()["in_use"] == base
    half = _empty(big, np.dtype(np.float16))  # a dtype the kernels never make
    assert half.dtype == np.float16 and fastrnn.cache_info()["in_use"] == base
    assert _empty((0, 7), np.dtype(np.float64)).shape == (0, 7)
    with pytest.raises(ValueError, match="negative"):
        _empty((2, -1), np.dtype(np.float32))

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 50)).astype(np.float32)
    w = rng.standard_normal((1000, 50)).astype(np.float32)
    first = ops.matmul(x, w, transpose_b=True)
    assert fastrnn.cache_info()["in_use"] >= base + first.nbytes
    kept = first.copy()
    second = ops.matmul(2 * x, w, transpose_b=True)  # while `first` is alive: other memory
    np.testing.assert_array_equal(first, kept)
    np.testing.assert_allclose(second, 2 * kept, rtol=1e-6, atol=1e-5)
