"""The benchmark loop: check each backend against the reference, then time them together.

For every case and mode the float64 NumPy reference is computed once on a small
instance (same cell, I and H; tiny T and N). Each backend computes the same instance in
the benchmark's dtype; if any output (or, in training mode, any gradient) disagrees, the
backend is reported as ``FAILED CHECK`` for that case and mode and is not timed. The
backends that pass are prepared, then timed interleaved (see
:func:`~fastrnn.bench.measure.time_interleaved`), so that their speed ratios do not
depend on how the machine's load drifts between separate timing windows.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from fastrnn.bench.backends import Backend, make_params, reference_outputs
from fastrnn.bench.cases import Case
from fastrnn.bench.measure import TOLERANCE, Timing, compare, memory_peaks, time_interleaved

OK, FAILED, SKIPPED, ERROR = "ok", "FAILED CHECK", "skipped", "error"

# Rough speed of the NumPy reference, used only to decide what to skip.
_REF_GFLOPS = 20.0
_REF_STEP_OVERHEAD_S = 40e-6


def reference_seconds(case: Case, mode: str) -> float:
    """Estimated seconds for one call of the NumPy reference (deliberately pessimistic)."""
    steps = 1 if mode == "step" else case.T
    loops = 2 if mode == "training" else 1
    pointwise = loops * steps * case.N * case.gates * case.H * 6e-9
    return case.flops(mode) / (_REF_GFLOPS * 1e9) + loops * steps * _REF_STEP_OVERHEAD_S + pointwise


@dataclass
class Options:
    """How to run: dtype, threads, the timing budget (see :func:`time_interleaved`), when to
    skip the reference, memory on/off, input seed, the baseline backend, a modes override
    and the GEMM peak (GFLOP/s) that ``peak_fraction`` divides by."""

    dtype: str = "float32"
    threads: int | None = None
    repeat: int = 5
    min_time: float = 0.02
    max_time: float = 3.0
    settle: float = 0.03  # pause between samples of different backends (time_interleaved)
    # Pause before each case's timing: the check that precedes it (and the previous case's
    # reference) ran NumPy's BLAS, whose OpenBLAS workers spin for ~0.1 s (2**28 cycles)
    # before they sleep; the first samples would otherwise share the cores with them.
    blas_idle: float = 0.2
    reference_max_seconds: float = 2.0
    measure_memory: bool = True
    seed: int = 0
    baseline: str | None = None
    modes: tuple[str, ...] | None = None  # overrides each case's own modes
    peak_gflops: float | None = None


@dataclass
class Results:
    header: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r["status"] in (FAILED, ERROR) for r in self.rows)


def _row(case: Case, mode: str, backend: str, status: str, reason: str = "") -> dict[str, Any]:
    row = {"case": case.label, **case.to_dict(), "mode": mode, "backend": backend}
    row.pop("label", None)
    row.update(
        status=status,
        reason=reason,
        gflop=case.flops(mode) / 1e9,
        median_ms=None,
        min_ms=None,
        max_ms=None,
        spread=None,
        samples=None,
        calls_per_sample=None,
        gflops=None,
        peak_fraction=None,
        speedup=None,
        alloc_mib=None,
        rss_mib=None,
        check_err=None,
    )
    return row


def run_benchmarks(
    cases: Sequence[Case],
    backends: Sequence[Backend],
    opts: Options,
    header: dict[str, Any],
    progress: TextIO | None = sys.stderr,
) -> Results:
    """Check, then time, every (case, mode, backend). Rows keep that order."""
    res = Results(header)
    work = [(c, m) for c in cases for m in (opts.modes or c.modes)]
    total = len(work) * len(backends)
    for i, (case, mode) in enumerate(work):
        first = i * len(backends) + 1
        prefixes = [
            f"[{first + j}/{total}] {case.label} {mode} {b.name}" for j, b in enumerate(backends)
        ]
        rows = _run_case(case, mode, backends, opts, prefixes, progress)
        _add_speedups(rows, opts.baseline)
        res.rows.extend(rows)
    return res


def _run_case(
    case: Case,
    mode: str,
    backends: Sequence[Backend],
    opts: Options,
    prefixes: list[str],
    progress: TextIO | None,
) -> list[dict[str, Any]]:
    """One row per backend: check and prepare each, time the prepared ones together,
    then measure their memory one by one (each figure needs a call of its own)."""
    rows, fns = _check_and_prepare(case, mode, backends, opts, prefixes, progress)
    errors: dict[int, Exception] = {}
    budget = {"repeat": opts.repeat, "min_time": opts.min_time, "max_time": opts.max_time}
    together = {j: fn for j, fn in fns.items() if backends[j].interleave}
    time.sleep(opts.blas_idle)
    timings = time_interleaved(together, errors=errors, settle=opts.settle, **budget)
    for j, fn in fns.items():
        if j not in together:  # after the others, alone, once their pools have settled
            time.sleep(opts.settle)
            timings.update(time_interleaved({j: fn}, errors=errors, **budget))
    for j, fn in fns.items():
        b = backends[j]
        if j in errors:
            rows[j] = _error_row(case, mode, b.name, errors[j], prefixes[j], progress)
            continue
        alloc = rss = None
        try:
            if opts.measure_memory:
                alloc, rss = memory_peaks(fn, traced=b.traced_memory)
        except Exception as exc:
            rows[j] = _error_row(case, mode, b.name, exc, prefixes[j], progress)
            continue
        t = timings[j]
        gflops = _fill(rows[j], case.flops(mode), t, alloc, rss, opts.peak_gflops)
        _say(progress, f"{prefixes[j]}: {t.median * 1e3:.3f} ms, {gflops:.2f} GFLOP/s")
    return rows


def _check_and_prepare(
    case: Case,
    mode: str,
    backends: Sequence[Backend],
    opts: Options,
    prefixes: list[str],
    progress: TextIO | None,
) -> tuple[list[dict[str, Any]], dict[int, Callable[[], Any]]]:
    """A row for every backend (final unless the backend passed), and the prepared
    callables of those that passed the check, keyed by their position in ``backends``."""
    small = case.small()
    p_small = make_params(small, opts.dtype, opts.seed + 1)
    want = reference_outputs(small, mode, p_small)
    tol = TOLERANCE[opts.dtype]
    params = None  # the full-size inputs, made once and only when some backend needs them
    rows: list[dict[str, Any]] = []
    fns: dict[int, Callable[[], Any]] = {}
    for j, b in enumerate(backends):
        prefix = prefixes[j]
        if b.name == "reference" and reference_seconds(case, mode) > opts.reference_max_seconds:
            est = reference_seconds(case, mode)
            why = (
                f"reference too slow here (est. {est:.1f} s/call > "
                f"--reference-max-seconds {opts.reference_max_seconds:g})"
            )
            rows.append(_row(case, mode, b.name, SKIPPED, why))
            _say(progress, f"{prefix}: skipped ({why})")
            continue
        try:
            got = b.compute(small, mode, p_small)
        except NotImplementedError as exc:
            rows.append(_row(case, mode, b.name, SKIPPED, f"not implemented: {exc}"))
            _say(progress, f"{prefix}: skipped (not implemented)")
            continue
        except Exception as exc:
            rows.append(_error_row(case, mode, b.name, exc, prefix, progress))
            continue
        chk = compare(got, want, tol)
        if not chk.ok:
            row = _row(case, mode, b.name, FAILED, chk.detail)
            row["check_err"] = chk.max_err
            rows.append(row)
            _say(progress, f"{prefix}: FAILED CHECK ({chk.detail})")
            continue
        if params is None:
            params = make_params(case, opts.dtype, opts.seed)
        try:
            fns[j] = b.prepare(case, mode, params)
        except Exception as exc:
            rows.append(_error_row(case, mode, b.name, exc, prefix, progress))
            continue
        row = _row(case, mode, b.name, OK)
        row["check_err"] = chk.max_err
        rows.append(row)
    return rows, fns


def _fill(
    row: dict[str, Any],
    flops: float,
    t: Timing,
    alloc: float | None,
    rss: float | None,
    peak_gflops: float | None,
) -> float:
    """Put the timing and memory figures into an OK row; returns its GFLOP/s."""
    gflops = flops / t.median / 1e9
    row.update(
        median_ms=t.median * 1e3,
        min_ms=t.min * 1e3,
        max_ms=t.max * 1e3,
        spread=t.spread,
        samples=t.samples,
        calls_per_sample=t.calls_per_sample,
        gflops=gflops,
        peak_fraction=gflops / peak_gflops if peak_gflops else None,
        alloc_mib=alloc,
        rss_mib=rss,
    )
    return gflops


def _error_row(
    case: Case, mode: str, backend: str, exc: Exception, prefix: str, progress: TextIO | None
) -> dict[str, Any]:
    why = f"{type(exc).__name__}: {exc}"
    _say(progress, f"{prefix}: ERROR {why}")
    return _row(case, mode, backend, ERROR, why)


def _add_speedups(rows: list[dict[str, Any]], baseline: str | None) -> None:
    base = next((r for r in rows if r["backend"] == baseline), None)
    if base is not None and base["median_ms"]:
        for r in rows:
            if r["median_ms"]:
                r["speedup"] = base["median_ms"] / r["median_ms"]


def _say(stream: TextIO | None, text: str) -> None:
    if stream is not None:
        print(text, file=stream, flush=True)
