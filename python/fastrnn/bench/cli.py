"""``fastrnn-bench`` / ``python -m fastrnn.bench``: the command line.

Exit status: 0 when every timed backend passed its correctness check, 1 when any
backend FAILED CHECK or raised an error, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence

from fastrnn.bench.backends import Backend, all_backends
from fastrnn.bench.cases import MODES, Case, cases_from_toml, parse_case_spec
from fastrnn.bench.suites import SUITES, get_suite

DEFAULT_BACKENDS = ("native", "native-packed", "reference", "torch", "fastrnn.torch", "jax")
DEFAULT_MAX_TIME = 3.0


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _backend_list(text: str) -> list[str]:
    names = _csv_list(text)
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated backend names, got {text!r}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"backend(s) given more than once: {twice}")
    return names


def _int_at_least(text: str, lo: int, expected: str) -> int:
    """``int(text)`` if at least ``lo``, else an argparse error saying what was expected."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if v < lo:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {v}")
    return v


def _nonnegative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def _float_where(text: str, ok: Callable[[float], bool], expected: str) -> float:
    """``float(text)`` if ``ok`` of it, else an argparse error saying what was expected."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {v}")
    return v


_MAX_SECONDS = 86400.0  # a day: longer timings are typos (1e308 overflowed the timers)


def _seconds(text: str) -> float:
    return _float_where(
        text, lambda v: 0 < v <= _MAX_SECONDS, f"a positive number of seconds <= {_MAX_SECONDS:g}"
    )


def _nonnegative_seconds(text: str) -> float:
    return _float_where(
        text, lambda v: 0 <= v <= _MAX_SECONDS, f"a number of seconds in [0, {_MAX_SECONDS:g}]"
    )


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(_csv_list(text))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"modes must be comma-separated from {MODES}")
    return modes


def _case(text: str) -> Case:
    try:
        return parse_case_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastrnn-bench",
        description=(
            "Benchmark fastrnn's RNN/LSTM/GRU kernels against the NumPy reference, PyTorch\n"
            "and JAX. Every backend is checked against the reference on a small instance\n"
            "of each case before it is timed; one that disagrees is reported as FAILED\n"
            "CHECK, is not timed, and makes the exit status 1."
        ),
        epilog=(
            "examples:\n"
            "  fastrnn-bench                              # the quick suite\n"
            "  fastrnn-bench --suite standard --json out.json --plot out.png\n"
            "  fastrnn-bench --case lstm:T=100,N=32,I=256,H=256 --modes training\n"
            "  fastrnn-bench --config my_cases.toml --backends native,torch --threads 1\n"
            f"suites: {', '.join(SUITES)} (see --list)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("what to run")
    g.add_argument(
        "--suite",
        action="append",
        choices=sorted(SUITES),
        metavar="NAME",
        help=f"built-in suite, repeatable: {', '.join(SUITES)} (default: quick)",
    )
    g.add_argument(
        "--case",
        action="append",
        type=_case,
        metavar="SPEC",
        default=[],
        help="a case such as lstm:T=100,N=32,I=256,H=256 (cell lstm|gru|rnn; "
        "I defaults to H; optional modes=inference+training; lstm only: P=.. for a "
        "projection, peephole=1 for peepholes); repeatable",
    )
    g.add_argument(
        "--config",
        action="append",
        metavar="FILE.toml",
        default=[],
        help="TOML file of [[case]] tables (see docs/benchmarks.md); repeatable",
    )
    g.add_argument("--filter", metavar="TEXT", help="keep only cases whose label contains TEXT")
    g.add_argument(
        "--backends",
        type=_backend_list,
        metavar="LIST",
        help=f"comma-separated, from {', '.join(DEFAULT_BACKENDS)} (default: every one installed)",
    )
    g.add_argument(
        "--modes",
        type=_modes,
        metavar="LIST",
        help="comma-separated from inference,training,step; replaces each case's own modes",
    )
    g.add_argument("--list", action="store_true", help="list the suites and their cases, then exit")
    m = p.add_argument_group("how to measure")
    m.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="threads for every backend (default: fastrnn's default)",
    )
    m.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    m.add_argument(
        "--isa",
        choices=("generic", "avx2", "avx512"),
        help="SIMD target for fastrnn's kernels (default: the best this CPU has)",
    )
    m.add_argument(
        "--repeat",
        type=_positive_int,
        default=5,
        metavar="R",
        help="samples that must agree within 3%% before stopping early (default 5)",
    )
    m.add_argument(
        "--min-time",
        type=_seconds,
        default=0.02,
        metavar="S",
        help="minimum seconds per sample; short calls are batched (default 0.02)",
    )
    m.add_argument(
        "--max-time",
        type=_seconds,
        metavar="S",
        help="time budget per case, backend and mode (default: the suite's)",
    )
    m.add_argument(
        "--settle",
        type=_nonnegative_seconds,
        default=0.03,
        metavar="S",
        help="pause between samples of different backends, so that the thread pool of "
        "one is idle before the next is timed (default 0.03)",
    )
    m.add_argument(
        "--baseline",
        metavar="NAME",
        help="backend the speed-ups are relative to (default: torch if run, else reference)",
    )
    m.add_argument(
        "--reference-max-seconds",
        type=_seconds,
        default=2.0,
        metavar="S",
        help="skip the NumPy reference where one call is estimated to take longer (default 2)",
    )
    m.add_argument(
        "--gemm-size",
        type=_positive_int,
        default=2048,
        metavar="N",
        help="size of the square float32 matmul that measures the peak (default 2048)",
    )
    m.add_argument("--no-memory", action="store_true", help="do not measure peak memory")
    m.add_argument(
        "--seed", type=_nonnegative_int, default=0, help="seed for the random inputs (>= 0)"
    )
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", help="write header and results as JSON")
    o.add_argument("--csv", metavar="FILE", help="write results as CSV (header as # lines)")
    o.add_argument("--plot", metavar="FILE.png", help="bar chart of GFLOP/s (needs matplotlib)")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p  # fmt: skip


def collect_cases(args: argparse.Namespace) -> tuple[list[Case], list[str]]:
    """Cases from --suite, --case and --config (quick suite when none is given)."""
    cases: list[Case] = []
    suites = list(args.suite or [])
    for path in args.config:
        cases += cases_from_toml(path)
    cases += list(args.case)
    if not suites and not cases:
        suites = ["quick"]
    for name in suites:
        cases = list(get_suite(name).cases) + cases
    if args.filter:
        cases = [c for c in cases if args.filter in c.label]
    return cases, suites


def check_output_path(flag: str, path: str) -> None:
    """Refuse an output file that cannot be written before anything is measured."""
    where = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path!r}: is a directory")
    if not os.path.isdir(where):
        raise ValueError(f"{flag} {path!r}: directory {where!r} does not exist")
    target = path if os.path.exists(path) else where
    if not os.access(target, os.W_OK):
        raise ValueError(f"{flag} {path!r}: not writable")


def check_memory(cases: Sequence[Case], dtype: str) -> None:
    """Refuse a case whose inputs alone would not fit in this machine's memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return
    itemsize = 4 if dtype == "float32" else 8
    for c in cases:
        need = c.input_bytes(itemsize)
        if need > total:
            raise ValueError(
                f"case {c.label}: its {dtype} inputs alone take {need / 2**30:.1f} GiB, "
                f"more than this machine's {total / 2**30:.1f} GiB"
            )


def choose_backends(
    requested: Sequence[str] | None, registry: Mapping[str, Backend]
) -> tuple[list[Backend], dict[str, str]]:
    """The backends to run, and a status line for every one considered."""
    status: dict[str, str] = {}
    names = list(requested) if requested else [n for n in DEFAULT_BACKENDS if n in registry]
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; choose from {sorted(registry)}")
    chosen = []
    for n in names:
        why = registry[n].unavailable()
        status[n] = "available" if why is None else f"not available ({why})"
        if why is None:
            chosen.append(registry[n])
    return chosen, status


def list_suites() -> str:
    lines = []
    for s in SUITES.values():
        lines.append(f"{s.name}: {s.description} ({len(s.cases)} cases, {s.max_time:g} s budget)")
        for c in s.cases:
            note = f"  [{c.note}]" if c.note else ""
            lines.append(f"  {c.label:<44} {'+'.join(c.modes)}{note}")
    return "\n".join(lines)


def main(
    argv: Sequence[str] | None = None, *, registry: Mapping[str, Backend] | None = None
) -> int:
    """Run the command line; returns the exit status (see the module doc).

    ``registry`` replaces the known backends (name -> :class:`Backend`), for tests.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(list_suites())
        return 0
    from fastrnn.bench import report  # imports fastrnn (the built extension)

    try:
        cases, suites = collect_cases(args)
        if not cases:
            raise ValueError("no cases selected (check --filter)")
        check_memory(cases, args.dtype)
        for flag in ("json", "csv", "plot"):
            if getattr(args, flag):
                check_output_path(f"--{flag}", getattr(args, flag))
        registry = dict(registry) if registry is not None else all_backends()
        backends, status = choose_backends(args.backends, registry)
        if not backends:
            raise ValueError("none of the requested backends is available here")
        if args.plot:
            report.check_plot_available()
        if args.isa:
            import fastrnn

            supported = fastrnn.build_info()["targets_supported"]
            if args.isa not in supported:
                raise ValueError(f"--isa {args.isa}: this CPU/build supports {supported}")
    except (ValueError, ImportError) as exc:
        parser.error(str(exc))
    names = [b.name for b in backends]
    baseline = args.baseline
    if baseline is None:
        baseline = "torch" if "torch" in names else ("reference" if "reference" in names else None)
    elif baseline not in names:
        parser.error(f"--baseline {baseline!r} is not among the backends run: {names}")
    command = " ".join(["fastrnn-bench", *(sys.argv[1:] if argv is None else argv)])
    with _state_restored():
        return _run(args, cases, suites, backends, status, baseline, command)


@contextlib.contextmanager
def _state_restored() -> Iterator[None]:
    """Put fastrnn's SIMD target and thread count, and PyTorch's thread count, back
    afterwards (main() may be called from a longer-lived process such as a test run)."""
    import fastrnn

    before, isa_before = fastrnn.get_num_threads(), fastrnn.get_isa()
    torch = sys.modules.get("torch")
    torch_before = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        fastrnn.set_num_threads(before)
        fastrnn.set_isa(isa_before)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(torch_before or before)


def _run(args, cases, suites, backends, status, baseline, command) -> int:  # type: ignore[no-untyped-def]
    import fastrnn
    from fastrnn.bench import report
    from fastrnn.bench.measure import ALLOC_METHOD, TOLERANCE, gemm_peak, rss_method
    from fastrnn.bench.run import Options, run_benchmarks

    if args.isa:
        fastrnn.set_isa(args.isa)  # ValueError when this CPU cannot run it
    threads = args.threads or fastrnn.get_num_threads()
    notes = []
    fastrnn.set_num_threads(threads)
    for b in backends:
        note = b.set_threads(threads)
        if note:
            notes.append(f"{b.name}: {note}")
    max_time = args.max_time or (SUITES[suites[0]].max_time if suites else DEFAULT_MAX_TIME)
    progress = None if args.quiet else sys.stderr
    if progress:
        print(f"measuring GEMM peak (float32, {args.gemm_size}^3) ...", file=progress, flush=True)
    peak = gemm_peak(args.gemm_size)
    if peak.source == "numpy.matmul":
        notes.append("GEMM peak measured with numpy.matmul (its BLAS threads are not set here)")
    header = report.machine_header()
    header.update(
        command=command,
        threads=threads,
        dtype=args.dtype,
        suites=suites,
        baseline=baseline,
        gemm_peak_gflops=peak.gflops,
        gemm_peak_source=peak.source,
        gemm_peak_size=peak.size,
        gemm_peak_note=peak.note,
        numpy_gemm_gflops=peak.numpy_gflops or peak.gflops,
        memory_method=[] if args.no_memory else [ALLOC_METHOD, rss_method() or "rss+ n/a here"],
        timing={
            "repeat": args.repeat,
            "min_time": args.min_time,
            "max_time": max_time,
            "settle": args.settle,
        },
        tolerance=TOLERANCE[args.dtype],
        backends=status,
        notes=notes,
    )
    opts = Options(
        dtype=args.dtype,
        threads=threads,
        repeat=args.repeat,
        min_time=args.min_time,
        max_time=max_time,
        settle=args.settle,
        reference_max_seconds=args.reference_max_seconds,
        measure_memory=not args.no_memory,
        seed=args.seed,
        baseline=baseline,
        modes=args.modes,
        peak_gflops=peak.gflops,
    )
    results = run_benchmarks(cases, backends, opts, header, progress=progress)
    print(report.format_table(results))
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(report.to_json(results))
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            fh.write(report.to_csv(results))
    if args.plot:
        report.write_plot(results, args.plot)
    if results.failed:
        print("fastrnn-bench: some backends FAILED CHECK or raised errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
