"""``python -m fastrnn``: build facts, then each native kernel family against the reference.

Exits non-zero when a check fails, so it doubles as a smoke test on a new machine (and under a
CPU emulator, see tests/test_portability.py).
"""

from __future__ import annotations

import argparse

import numpy as np

import fastrnn


def _print_header() -> dict:
    info = fastrnn.build_info()
    print(f"fastrnn {info['version']} ({info['compiler']})")
    print(f"  SIMD targets compiled : {', '.join(info['targets_compiled'])}")
    print(f"  SIMD target in use    : {info['isa']} ({info['isa_reason']})")
    print(f"  OpenMP                : {'on' if info['openmp'] else 'off'}")
    print(f"  threads               : {info['num_threads']} of {info['available_cpus']} CPUs")
    return info


def _checks() -> list[tuple[str, bool, str]]:
    """(name, passed, detail) for each kernel family that is built."""
    results: list[tuple[str, bool, str]] = []
    rng = np.random.default_rng(0)
    try:
        from fastrnn import ops

        a = rng.standard_normal((37, 29))
        b = rng.standard_normal((29, 41))
        err = float(np.max(np.abs(ops.matmul(a, b) - a @ b)))
        results.append(("matmul float64", err < 1e-12, f"max abs error {err:.1e}"))
    except NotImplementedError:
        pass
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastrnn", description=__doc__)
    parser.add_argument("--expect-isa", help="fail unless this SIMD target is the one in use")
    args = parser.parse_args(argv)
    info = _print_header()
    ok = True
    if args.expect_isa and info["isa"] != args.expect_isa:
        print(f"  expected SIMD target {args.expect_isa}, got {info['isa']}")
        ok = False
    for name, passed, detail in _checks():
        print(f"  {'ok  ' if passed else 'FAIL'} {name}: {detail}")
        ok = ok and passed
    print("self-check passed" if ok else "self-check FAILED")
    return 0 if ok else 1
