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


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    return float(np.max(np.abs(got - want))) / scale if want.size else 0.0


def _seq_check(kind: str, rng: np.random.Generator) -> tuple[str, bool, str]:
    """One native forward + backward against the reference, float64, odd sizes."""
    from fastrnn import functional, reference

    T, N, I, H = 5, 3, 7, 11
    G = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    x = rng.standard_normal((T, N, I))
    w = [rng.uniform(-0.3, 0.3, s) for s in [(G * H, I), (G * H, H), (G * H,), (G * H,)]]
    h0 = rng.standard_normal((N, H)) * 0.5
    args = (x, h0, h0.copy(), *w) if kind == "lstm" else (x, h0, *w)
    dy = rng.standard_normal((T, N, H))
    worst = 0.0
    results: list[tuple[np.ndarray, object, dict]] = []
    for impl in (functional, reference):
        fwd = getattr(impl, kind)
        y, state, tape = fwd(*args, training=True)
        grads = getattr(functional, f"{kind}_backward")(tape, dy)
        results.append((y, state, grads))
    (y1, s1, g1), (y2, s2, g2) = results
    worst = max(worst, _rel_err(y1, y2))
    states1, states2 = (s1, s2) if kind == "lstm" else ((s1,), (s2,))  # (h_n, c_n) or h_n
    for got, want in zip(states1, states2):
        worst = max(worst, _rel_err(got, want))
    for key, want in g2.items():
        if want is not None:
            worst = max(worst, _rel_err(g1[key], want))
    return (f"{kind} forward+backward float64", worst < 1e-10, f"max rel error {worst:.1e}")


def _proj_check(rng: np.random.Generator) -> tuple[str, bool, str]:
    """The LSTM with a projection (its own kernel) against the reference, float64."""
    from fastrnn import functional, reference

    T, N, I, H, P = 5, 3, 7, 11, 4
    x = rng.standard_normal((T, N, I))
    w = [rng.uniform(-0.3, 0.3, s) for s in [(4 * H, I), (4 * H, P), (4 * H,), (4 * H,)]]
    w_hr = rng.uniform(-0.3, 0.3, (P, H))
    h0, c0 = rng.standard_normal((N, P)) * 0.5, rng.standard_normal((N, H)) * 0.5
    dy = rng.standard_normal((T, N, P))
    results = []
    for impl in (functional, reference):
        y, (h, c), tape = impl.lstm(x, h0, c0, *w, weight_hr=w_hr, training=True)
        results.append((y, h, c, impl.lstm_backward(tape, dy)))
    (y1, h1, c1, g1), (y2, h2, c2, g2) = results
    worst = max(_rel_err(y1, y2), _rel_err(h1, h2), _rel_err(c1, c2))
    for key, want in g2.items():
        worst = max(worst, _rel_err(g1[key], want))
    return ("lstm with projection float64", worst < 1e-10, f"max rel error {worst:.1e}")


def _checks() -> list[tuple[str, bool, str]]:
    """(name, passed, detail) for each native kernel family."""
    from fastrnn import ops

    rng = np.random.default_rng(0)
    results: list[tuple[str, bool, str]] = []
    a = rng.standard_normal((37, 29))
    b = rng.standard_normal((29, 41))
    err = _rel_err(ops.matmul(a, b), a @ b)
    results.append(("matmul float64", err < 1e-12, f"max rel error {err:.1e}"))
    z = np.linspace(-20, 20, 1001)
    for name, want in [("exp", np.exp(z)), ("tanh", np.tanh(z)), ("sigmoid", 1 / (1 + np.exp(-z)))]:
        got = getattr(ops, name)(z)
        e = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-300)))
        results.append((f"{name} float64", e < 1e-14, f"max rel error {e:.1e}"))
    for kind in ("rnn", "lstm", "gru"):
        results.append(_seq_check(kind, rng))
    results.append(_proj_check(rng))
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
