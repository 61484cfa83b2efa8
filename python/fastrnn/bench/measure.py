"""Timing, peak memory, GEMM peak and the correctness gate.

Timing: one warm-up call, then calls are grouped into samples of at least
``min_time`` seconds each (so microsecond-sized steps are timed in batches), and
samples are taken until ``repeat`` of them agree within ``stable_spread`` (relative
inter-quartile range) or the ``max_time`` budget is spent. Reported per call: median,
min, max, spread.

The backends of one case are timed together, interleaved: each round takes one sample
of every callable still being timed, in an order that rotates from round to round. On a
shared machine the load drifts over seconds; timed one after another, two backends
would see different machine states and their ratio would drift with it, whereas
interleaved samples share the same conditions, so the ratios stay steady even when the
absolute times do not.

Memory, two figures from one extra call:

- ``alloc``: the ``tracemalloc`` peak: everything NumPy and Python allocate during the
  call (exact, but blind to C++ ``new``/``malloc``, PyTorch and XLA buffers); shown only
  for backends whose memory comes from NumPy or from fastrnn's buffer cache (which
  reports the blocks it hands out to ``tracemalloc``).
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

K = TypeVar("K")
T = TypeVar("T")
Clock = Callable[[], float]


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


def _calls_per_sample(fn: Callable[[], Any], min_time: float, clock: Clock) -> int:
    """Warm ``fn`` up, then choose how many calls make a sample of at least ``min_time``."""
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
    return calls


def _sample(fn: Callable[[], Any], calls: int, clock: Clock) -> float:
    """Seconds per call, averaged over one sample of ``calls`` calls."""
    s = clock()
    for _ in range(calls):
        fn()
    return (clock() - s) / calls


def _done(per_call: list[float], repeat: int, stable_spread: float) -> bool:
    """Stable (the last ``repeat`` samples agree), or enough samples taken anyway."""
    n = len(per_call)
    if n >= repeat and _quartile_spread(per_call[-repeat:]) <= stable_spread:
        return True
    return n >= 4 * repeat


def _timing(per_call: list[float], calls: int) -> Timing:
    return Timing(
        median=statistics.median(per_call),
        min=min(per_call),
        max=max(per_call),
        spread=_quartile_spread(per_call),
        samples=len(per_call),
        calls_per_sample=calls,
        per_call=per_call,
    )


def _attempt(
    errors: dict[K, Exception] | None, key: K, f: Callable[..., T], *args: Any
) -> T | None:
    """``f(*args)``; if it raises and ``errors`` is given, the exception goes there
    under ``key`` and the result is None."""
    try:
        return f(*args)
    except Exception as exc:
        if errors is None:
            raise
        errors[key] = exc
        return None


def _rotated(keys: list[K], shift: int) -> list[K]:
    shift %= len(keys)
    return keys[shift:] + keys[:shift]


def time_interleaved(
    fns: Mapping[K, Callable[[], Any]],
    *,
    repeat: int = 5,
    min_time: float = 0.02,
    max_time: float = 3.0,
    stable_spread: float = 0.03,
    clock: Clock = time.perf_counter,
    errors: dict[K, Exception] | None = None,
    settle: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[K, Timing]:
    """Time every callable in ``fns``, interleaved (see the module doc).

    A callable stops being sampled once its last ``repeat`` samples agree within
    ``stable_spread``, or after ``4 * repeat`` samples; all stop once
    ``max_time * len(fns)`` seconds have gone into sampling, but only after each has at
    least one sample. Returns a ``Timing`` per key, in the order of ``fns``.

    ``settle``: seconds to ``sleep`` before a sample whenever the call before it was
    another callable's (not counted in the budget). Thread pools keep their workers
    spinning for a while after a parallel region (GNU OpenMP for up to ~20 ms on a
    recent x86 CPU), and a sample taken meanwhile would share the cores with them.

    Without ``errors``, an exception from a callable propagates. With it, a callable
    that raises is dropped and its exception stored in ``errors`` under its key; the
    others go on, and the result leaves that key out.
    """
    calls: dict[K, int] = {}
    for key, fn in fns.items():
        n = _attempt(errors, key, _calls_per_sample, fn, min_time, clock)
        if n is not None:
            calls[key] = n
    per_call: dict[K, list[float]] = {key: [] for key in calls}
    budget = max_time * len(fns)
    spent = 0.0
    active, rnd = list(calls), 0
    last: K | None = list(fns)[-1] if len(fns) > 1 else None  # the last warm-up
    while active:
        # The order rotates each round, so that no callable always runs first or always
        # follows the same other one (inheriting its cache and thread-pool state).
        for key in _rotated(active, rnd):
            if settle > 0 and last is not None and last != key:
                sleep(settle)
            last = key
            start = clock()
            t = _attempt(errors, key, _sample, fns[key], calls[key], clock)
            spent += clock() - start
            if t is None:
                del per_call[key]
            else:
                per_call[key].append(t)
            if spent >= budget and all(per_call.values()):
                return {k: _timing(v, calls[k]) for k, v in per_call.items()}
        active = [
            k for k in active if k in per_call and not _done(per_call[k], repeat, stable_spread)
        ]
        rnd += 1
    return {k: _timing(v, calls[k]) for k, v in per_call.items()}


def time_callable(
    fn: Callable[[], Any],
    *,
    repeat: int = 5,
    min_time: float = 0.02,
    max_time: float = 3.0,
    stable_spread: float = 0.03,
    clock: Clock = time.perf_counter,
) -> Timing:
    """Time ``fn`` alone (see the module doc). Always at least one sample after the warm-up."""
    return time_interleaved(
        {0: fn},
        repeat=repeat,
        min_time=min_time,
        max_time=max_time,
        stable_spread=stable_spread,
        clock=clock,
    )[0]


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
    NumPy's figure is measured in both cases for comparison, last: OpenBLAS leaves its
    workers spinning for ~0.1 s after each product, and fastrnn's GEMM measured in that
    window ran at about half its speed.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    try:
        from fastrnn.ops import matmul

        gf = _best_gflops(lambda: matmul(a, b), n, repeat)
        good = np.allclose(matmul(a, b), a @ b, rtol=1e-3, atol=1e-2 * np.sqrt(n))
    except (ImportError, AttributeError, NotImplementedError) as exc:
        gf, good, why = 0.0, False, f"fastrnn.ops.matmul unavailable ({type(exc).__name__})"
    else:
        why = "" if good else "fastrnn.ops.matmul gave wrong results"
    np_gf = _best_gflops(lambda: np.matmul(a, b), n, repeat)
    if not good:
        return GemmPeak(np_gf, "numpy.matmul", n, why)
    return GemmPeak(gf, "fastrnn.ops.matmul", n, numpy_gflops=np_gf)


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
