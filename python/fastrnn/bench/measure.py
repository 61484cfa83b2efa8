"""Timing, peak memory, GEMM peak and the correctness gate.

Timing: one warm-up call, then calls are grouped into samples of at least
``min_time`` seconds each (so microsecond-sized steps are timed in batches), and
samples are taken until ``repeat`` of them agree within ``stable_spread`` (relative
inter-quartile range) or the ``max_time`` budget is spent. Reported per call: median,
min, max, spread.

Memory, two figures from one extra call:

- ``alloc``: the ``tracemalloc`` peak: everything NumPy and Python allocate during the
  call (exact, but blind to C++ ``new``/``malloc``, PyTorch and XLA buffers); shown only
  for backends whose memory comes from NumPy.
- ``rss+``: the growth of the process's peak resident set during the call (Linux: the
  heap is trimmed, then the kernel's high-water mark is reset through
  ``/proc/self/clear_refs``), which sees every allocator but not memory an allocator had
  already cached from earlier calls.
"""

from __future__ import annotations

import math
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Timing:
    median: float
    min: float
    max: float
    spread: float  # (p75 - p25) / median over the samples
    samples: int
    calls_per_sample: int
    per_call: list[float] = field(default_factory=list)


def _quartile_spread(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    q = statistics.quantiles(xs, n=4, method="inclusive")
    med = statistics.median(xs)
    return (q[2] - q[0]) / med if med > 0 else 0.0


def time_callable(
    fn: Callable[[], Any],
    *,
    repeat: int = 5,
    min_time: float = 0.02,
    max_time: float = 3.0,
    stable_spread: float = 0.03,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Time ``fn`` (see the module doc). Always at least one sample after the warm-up."""
    t0 = clock()
    fn()  # warm-up (first-call costs: allocation, JIT compilation, packing)
    first = clock() - t0
    calls = 1 if first >= min_time else max(1, int(min_time / max(first, 1e-7)))
    if calls > 1:  # re-estimate with a short batch: the first call is often the slowest
        t1 = clock()
        for _ in range(min(calls, 1000)):
            fn()
        est = (clock() - t1) / min(calls, 1000)
        calls = max(1, math.ceil(min_time / max(est, 1e-7)))
    start = clock()
    per_call: list[float] = []
    while True:
        s = clock()
        for _ in range(calls):
            fn()
        per_call.append((clock() - s) / calls)
        n = len(per_call)
        if clock() - start >= max_time:
            break
        if n >= repeat and _quartile_spread(per_call[-repeat:]) <= stable_spread:
            break
        if n >= 4 * repeat:
            break
    return Timing(
        median=statistics.median(per_call),
        min=min(per_call),
        max=max(per_call),
        spread=_quartile_spread(per_call),
        samples=len(per_call),
        calls_per_sample=calls,
        per_call=per_call,
    )


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc), so reused memory counts as growth."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_method() -> str | None:
    """How :func:`memory_peaks` measures ``rss`` here, or None when it cannot."""
    if _status_kib("VmHWM") is not None and _reset_hwm():
        return (
            "rss+ = peak resident-set growth during one call, all allocators "
            "(heap trimmed, VmHWM reset via /proc/self/clear_refs)"
        )
    return None


def memory_peaks(fn: Callable[[], Any], traced: bool = True) -> tuple[float | None, float | None]:
    """One call of ``fn``: ``(alloc, rss)`` in MiB.

    ``alloc`` is the ``tracemalloc`` peak during the call (None unless ``traced``);
    ``rss`` the growth of the peak resident set (None where it cannot be measured).
    Both come from the same call, so a large case costs one extra call, not two.
    """
    trace = traced and not tracemalloc.is_tracing()
    _trim_heap()
    before = _status_kib("VmRSS")
    rss_ok = before is not None and _reset_hwm()
    if trace:
        tracemalloc.start()
    try:
        fn()
        alloc = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    finally:
        if trace:
            tracemalloc.stop()
    hwm = _status_kib("VmHWM") if rss_ok else None
    rss = max(0, hwm - before) / 1024.0 if hwm is not None and before is not None else None
    return alloc, rss


ALLOC_METHOD = "alloc = tracemalloc peak during one call: NumPy/Python allocations only"


# --------------------------------------------------------------------------------------
# GEMM peak
# --------------------------------------------------------------------------------------


@dataclass
class GemmPeak:
    gflops: float
    source: str  # "fastrnn.ops.matmul" or "numpy.matmul"
    size: int
    note: str = ""
    numpy_gflops: float | None = None


def _best_gflops(f: Callable[[], Any], n: int, repeat: int) -> float:
    f()
    best = min(_one(f) for _ in range(repeat))
    return 2.0 * n**3 / best / 1e9


def _one(f: Callable[[], Any]) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def gemm_peak(n: int = 2048, repeat: int = 3) -> GemmPeak:
    """float32 ``n x n`` by ``n x n`` matmul, best of ``repeat``: the machine's practical peak.

    Uses ``fastrnn.ops.matmul`` when it works; otherwise ``numpy.matmul`` (and says so).
    NumPy's figure is measured in both cases for comparison.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    np_gf = _best_gflops(lambda: np.matmul(a, b), n, repeat)
    try:
        from fastrnn.ops import matmul

        out = matmul(a, b)
        if not np.allclose(out, a @ b, rtol=1e-3, atol=1e-2 * np.sqrt(n)):
            return GemmPeak(np_gf, "numpy.matmul", n, "fastrnn.ops.matmul gave wrong results")
        gf = _best_gflops(lambda: matmul(a, b), n, repeat)
        return GemmPeak(gf, "fastrnn.ops.matmul", n, numpy_gflops=np_gf)
    except (ImportError, AttributeError, NotImplementedError) as exc:
        why = type(exc).__name__
        return GemmPeak(np_gf, "numpy.matmul", n, f"fastrnn.ops.matmul unavailable ({why})")


# --------------------------------------------------------------------------------------
# Correctness gate
# --------------------------------------------------------------------------------------

TOLERANCE = {"float32": 2e-3, "float64": 1e-7}


@dataclass
class Check:
    ok: bool
    max_err: float
    detail: str = ""


def compare(got: dict[str, np.ndarray], want: dict[str, np.ndarray], tol: float) -> Check:
    """Every reference output must be present, of the same shape, finite where the
    reference is, and within ``tol`` of it relative to the quantity's largest magnitude:
    ``max|got - want| <= tol * max(1, max|want|)`` (per quantity)."""
    worst, problems = 0.0, []
    for key, ref in want.items():
        if key not in got:
            problems.append(f"{key} missing")
            continue
        g = np.asarray(got[key], dtype=np.float64)
        if g.shape != ref.shape:
            problems.append(f"{key} shape {g.shape} != {ref.shape}")
            continue
        if not np.all(np.isfinite(g)):
            problems.append(f"{key} has NaN/inf")
            continue
        scale = max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
        err = float(np.max(np.abs(g - ref))) / scale if ref.size else 0.0
        worst = max(worst, err)
        if err > tol:
            problems.append(f"{key} rel err {err:.2e} > {tol:.0e}")
    return Check(not problems, worst, "; ".join(problems))
