"""GEMM throughput: fastrnn's packed GEMM against numpy.matmul, in one run.

    python benchmarks/bench_gemm.py [--dtype float32|float64|both] [--repeats N]
                                    [--threads 1,2] [--isa avx512,...] [--json out.json]

Shapes (M x K) @ (K x N), float32 by default:
  * 2048 x 2048 x 2048 and (6400 x 512) @ (512 x 2048): ``fastrnn.ops.matmul`` (packs
    both operands on every call) against ``numpy.matmul``; (3200 x 400) @ (400 x 100)
    likewise: a narrow product whose last panel holds 4 columns;
  * (64 x 512) @ (512 x 2048) and (1 x 512) @ (512 x 2048) with B packed once and
    reused (``PackedB.matmul``), as the recurrent step of an RNN uses it, against
    ``numpy.matmul`` (which has no packed reuse).
Each row is measured under every SIMD target this CPU supports, with 1 and 2 threads.

Threads: fastrnn via ``fastrnn.set_num_threads``; NumPy's BLAS via ``threadpoolctl``
when it is installed. Without it, BLAS threads can only be set by environment
variables read when the BLAS loads, so each thread count runs in a child process
started with ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` set.

Method: results are checked against a float64 product before timing; ours and NumPy's
calls alternate in blocks, each after a pause that lets the other's threads go idle,
and each figure is the median of the repeats (the best is shown too;
GFLOP/s = 2 M N K / time). On a shared machine, compare the two columns of one run, not
runs with each other.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

SHAPES = [
    # (M, N, K, packed B reused)
    (2048, 2048, 2048, False),
    (6400, 2048, 512, False),
    (3200, 100, 400, False),  # an LSTM backward's dX at T*N = 3200, H = I = 100
    (64, 2048, 512, True),
    (1, 2048, 512, True),
]


def _time_pair(f_ours, f_ref, repeats: int, rounds: int = 5) -> tuple[float, float, float, float]:
    """Median and best time of each function over `repeats` calls each, in `rounds`
    alternating blocks, each after a pause: an OpenBLAS call leaves its worker threads
    spinning for ~0.1 s, which on a 2-core machine took a core from the next call and
    halved our 2-thread figures when calls alternated one by one (OpenMP's idle threads
    spin too, more briefly)."""
    t_ours, t_ref = [], []
    per_round = -(-repeats // rounds)
    for _ in range(rounds):
        time.sleep(0.15)
        f_ours()  # untimed: the first call after a pause wakes the threads
        for _ in range(per_round):
            t = time.perf_counter()
            f_ours()
            t_ours.append(time.perf_counter() - t)
        time.sleep(0.15)  # the same for NumPy after our OpenMP threads
        f_ref()
        for _ in range(per_round):
            t = time.perf_counter()
            f_ref()
            t_ref.append(time.perf_counter() - t)
    t_ours.sort()
    t_ref.sort()
    return t_ours[len(t_ours) // 2], t_ref[len(t_ref) // 2], t_ours[0], t_ref[0]


def _run(
    threads: int, dtypes: list[str], repeats: int, limiter: Any, isas: list[str] | None = None
) -> list[dict[str, Any]]:
    import numpy as np

    import fastrnn
    from fastrnn._ops_gemm import PackedB
    from fastrnn.ops import matmul

    rng = np.random.default_rng(0)
    rows = []
    fastrnn.set_num_threads(threads)
    isa_before = fastrnn.get_isa()
    try:
        for dtype in dtypes:
            for m, n, k, packed in SHAPES:
                a = rng.standard_normal((m, k)).astype(dtype)
                b = rng.standard_normal((k, n)).astype(dtype)
                out = np.empty((m, n), dtype=dtype)
                ref_out = np.empty((m, n), dtype=dtype)
                exact = a.astype(np.float64) @ b.astype(np.float64)
                scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
                flops = 2.0 * m * n * k
                reps = repeats if m * n * k > 10**8 else repeats * 20
                for isa in isas or fastrnn._core.supported_isas():
                    fastrnn.set_isa(isa)
                    if packed:
                        pb = PackedB(b)

                        def ours(pb=pb, a=a, out=out):
                            pb.matmul(a, out)
                    else:

                        def ours(a=a, b=b, out=out):
                            matmul(a, b, out=out)

                    def ref(a=a, b=b, ref_out=ref_out):
                        np.matmul(a, b, out=ref_out)

                    with limiter(threads):
                        ours()
                        err = float(np.max(np.abs(out - exact) / (scale + 1e-30)))
                        tol = (k + 8) * float(np.finfo(dtype).eps)
                        if not err <= tol:
                            raise RuntimeError(f"wrong result: {isa} {dtype} {(m, n, k)} {err}")
                        ref()
                        t_ours, t_ref, best_ours, best_ref = _time_pair(ours, ref, reps)
                    rows.append(
                        {
                            "dtype": dtype,
                            "m": m,
                            "n": n,
                            "k": k,
                            "packed_b_reused": packed,
                            "isa": isa,
                            "threads": threads,
                            "gflops_fastrnn": flops / t_ours / 1e9,
                            "gflops_numpy": flops / t_ref / 1e9,
                            "ratio": t_ref / t_ours,
                            "best_gflops_fastrnn": flops / best_ours / 1e9,
                            "best_gflops_numpy": flops / best_ref / 1e9,
                        }
                    )
                    print(_format(rows[-1]), flush=True)
    finally:
        fastrnn.set_isa(isa_before)
    return rows


def _format(r: dict[str, Any]) -> str:
    shape = f"({r['m']}x{r['k']})@({r['k']}x{r['n']})"
    kind = "packed B reused" if r["packed_b_reused"] else "matmul"
    return (
        f"{r['dtype']:8s} {shape:24s} {kind:16s} {r['isa']:8s} threads={r['threads']}  "
        f"fastrnn {r['gflops_fastrnn']:7.1f}  numpy {r['gflops_numpy']:7.1f} GFLOP/s  "
        f"ratio {r['ratio']:5.2f}  (best: {r['best_gflops_fastrnn']:6.1f} vs "
        f"{r['best_gflops_numpy']:6.1f})"
    )


def _limiter():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return lambda n: threadpool_limits(limits=n)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dtype", choices=["float32", "float64", "both"], default="float32")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per large case")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--isa", help="comma-separated SIMD targets (default: all supported)")
    p.add_argument("--json", help="write all rows to this file")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    isas = args.isa.split(",") if args.isa else None

    if args.child is not None:
        # Child process: BLAS threads were fixed by the environment before import.
        import contextlib

        rows = _run(args.child, dtypes, args.repeats, lambda n: contextlib.nullcontext(), isas)
        print("JSON:" + json.dumps(rows))
        return 0

    import fastrnn

    info = fastrnn.build_info()
    print(
        f"fastrnn {info['version']}, targets {info['targets_supported']}, cpus "
        f"{info['available_cpus']}"
    )
    limiter = _limiter()
    rows: list[dict[str, Any]] = []
    for nt in (int(t) for t in args.threads.split(",")):
        if limiter is not None:
            rows += _run(nt, dtypes, args.repeats, limiter, isas)
            continue
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(nt)
        cmd = [
            sys.executable,
            __file__,
            "--dtype",
            args.dtype,
            "--repeats",
            str(args.repeats),
            "--child",
            str(nt),
        ]
        if args.isa:
            cmd += ["--isa", args.isa]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        for line in res.stdout.splitlines():
            if line.startswith("JSON:"):
                rows += json.loads(line[5:])
            else:
                print(line, flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
