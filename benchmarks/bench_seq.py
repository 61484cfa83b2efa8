"""Sequence-kernel benchmark: fastrnn native vs the NumPy reference vs torch.nn.

Run:  python benchmarks/bench_seq.py [--quick] [--threads 2] [--repeats 7] [--dtype float32]

For each case (cell, T, N, I, H) and mode (inference; training = forward + backward) it
prints the median wall time in ms, GFLOP/s (forward counts 2*T*N*G*H*(I+H) flops,
training 3x that) and the speed-up of fastrnn over the reference and over torch.nn at
the same thread count. Results are checked against the reference before timing.
A script, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# Same thread count for every peer: must be set before NumPy/torch load their pools.
_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--threads", type=int, default=2)
_THREADS = _pre.parse_known_args()[0].threads
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(_THREADS)

import numpy as np  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn import _native as NAT  # noqa: E402
from fastrnn import reference as REF  # noqa: E402

G = {"rnn": 1, "lstm": 4, "gru": 3}

SUITE = [
    *[(k, 100, 64, 256, 256) for k in ("lstm", "gru", "rnn")],
    *[(k, 100, 1, 256, 256) for k in ("lstm", "gru", "rnn")],
    *[(k, 1000, 8, 64, 64) for k in ("lstm", "gru", "rnn")],
    ("lstm", 100, 64, 512, 512),
    ("lstm", 50, 16, 1024, 1024),
    ("lstm", 25, 16, 512, 512),
    ("lstm", 200, 32, 128, 128),
    ("gru", 200, 32, 128, 128),
]
QUICK = [("lstm", 100, 64, 256, 256), ("gru", 100, 1, 256, 256), ("rnn", 1000, 8, 64, 64)]


def median_ms(fn, repeats: int, min_time: float = 0.0) -> float:
    fn()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_time and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def make_case(kind, T, N, I, H, dtype, rng):
    g = G[kind]
    s = 1.0 / np.sqrt(H)
    case = {
        "x": rng.uniform(-1, 1, (T, N, I)).astype(dtype),
        "h0": rng.uniform(-0.5, 0.5, (N, H)).astype(dtype),
        "weight_ih": rng.uniform(-s, s, (g * H, I)).astype(dtype),
        "weight_hh": rng.uniform(-s, s, (g * H, H)).astype(dtype),
        "bias_ih": rng.uniform(-s, s, (g * H,)).astype(dtype),
        "bias_hh": rng.uniform(-s, s, (g * H,)).astype(dtype),
    }
    if kind == "lstm":
        case["c0"] = rng.uniform(-0.5, 0.5, (N, H)).astype(dtype)
    return case


def fastrnn_fns(module, kind, case, dy):
    fwd = getattr(module, kind)
    bwd = getattr(module, f"{kind}_backward")

    def infer():
        return fwd(**case)

    def train():
        _, _, tape = fwd(**case, training=True)
        return bwd(tape, dy)

    return infer, train


def torch_fns(torch, kind, case, dy):
    I = case["x"].shape[2]
    H = case["h0"].shape[1]
    dt = torch.float32 if case["x"].dtype == np.float32 else torch.float64
    mod = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](I, H, dtype=dt)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(mod, f"{name}_l0").copy_(torch.from_numpy(case[name]))
    x = torch.from_numpy(case["x"])
    h0 = torch.from_numpy(case["h0"])[None]
    state = (h0, torch.from_numpy(case["c0"])[None]) if kind == "lstm" else h0
    tdy = torch.from_numpy(dy)

    def infer():
        with torch.inference_mode():
            return mod(x, state)

    def train():
        xr = x.detach().requires_grad_()
        y, _ = mod(xr, state)
        y.backward(tdy)
        mod.zero_grad(set_to_none=True)

    return infer, train


def check(kind, case, dy) -> float:
    """Max relative difference of native vs reference (y and every gradient)."""
    out_n = getattr(NAT, kind)(**case, training=True)
    out_r = getattr(REF, kind)(**case, training=True)
    g_n = getattr(NAT, f"{kind}_backward")(out_n[2], dy)
    g_r = getattr(REF, f"{kind}_backward")(out_r[2], dy)
    worst = float(np.max(np.abs(out_n[0] - out_r[0])) / max(1e-30, np.max(np.abs(out_r[0]))))
    for k, v in g_r.items():
        if v is not None:
            d = np.max(np.abs(g_n[k] - v)) / max(1e-30, float(np.max(np.abs(v))))
            worst = max(worst, float(d))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few cases only")
    ap.add_argument("--threads", type=int, default=_THREADS)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--no-reference", action="store_true", help="skip the (slow) reference")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--only", default=None, help="run cases of this cell kind only")
    args = ap.parse_args(argv)

    fastrnn.set_num_threads(args.threads)
    torch = None
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            torch = None
    info = fastrnn.build_info()
    print(
        f"fastrnn {info['version']}  isa={info['isa']}  threads={args.threads}  "
        f"dtype={args.dtype}  torch={getattr(torch, '__version__', 'none')}"
    )
    hdr = (
        f"{'case':<28}{'mode':<7}{'fastrnn ms':>11}{'GF/s':>7}{'ref ms':>10}{'x ref':>7}"
        f"{'torch ms':>10}{'x torch':>8}  check"
    )
    print(hdr)
    print("-" * len(hdr))
    rng = np.random.default_rng(0)
    dtype = np.dtype(args.dtype)
    cases = QUICK if args.quick else SUITE
    if args.only:
        cases = [c for c in cases if c[0] == args.only]
    for kind, T, N, I, H in cases:
        case = make_case(kind, T, N, I, H, dtype, rng)
        dy = rng.standard_normal((T, N, H)).astype(dtype)
        err = check(kind, case, dy)
        flops = 2.0 * T * N * G[kind] * H * (I + H)
        fn_n = fastrnn_fns(NAT, kind, case, dy)
        fn_r = fastrnn_fns(REF, kind, case, dy)
        fn_t = torch_fns(torch, kind, case, dy) if torch is not None else None
        for m, mode in enumerate(("infer", "train")):
            ms = median_ms(fn_n[m], args.repeats, min_time=0.3)
            gf = flops * (1 if m == 0 else 3) / (ms * 1e6)
            ref_ms = float("nan") if args.no_reference else median_ms(fn_r[m], 1)
            t_ms = median_ms(fn_t[m], args.repeats, min_time=0.3) if fn_t else float("nan")
            name = f"{kind} T={T} N={N} I={I} H={H}"
            print(
                f"{name:<28}{mode:<7}{ms:>11.2f}{gf:>7.1f}{ref_ms:>10.1f}{ref_ms / ms:>7.1f}"
                f"{t_ms:>10.2f}{t_ms / ms:>8.2f}  {err:.1e}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
