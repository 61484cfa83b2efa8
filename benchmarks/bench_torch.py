"""fastrnn.torch against torch.nn on the standard suite: inference and a training step.

For each case (cell, T, N, I, H) both modules get the same float32 weights and input; the
outputs (and, for training, the input gradients) are compared before anything is timed.
Inference is one forward under ``torch.no_grad()``; training is a full step: zero the
gradients, forward, a loss over the outputs, ``loss.backward()``. Both run with the same
thread count (``--threads``, default ``torch.get_num_threads()``; fastrnn.torch follows
``torch.set_num_threads``). Reported times are medians over ``--repeat`` runs after one
warm-up, alternating the two libraries so that machine noise hits both alike.

    python benchmarks/bench_torch.py             # the whole suite
    python benchmarks/bench_torch.py --quick     # a small, fast subset
    python benchmarks/bench_torch.py --backend reference --quick   # the NumPy oracle
    python benchmarks/bench_torch.py --proj      # LSTMs with proj_size (P column)

torch.nn runs a projected LSTM (``proj_size > 0``) through its own per-step loop (oneDNN
does not take it); fastrnn.torch through fastrnn's projection kernel (csrc/seq/lstmp).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
import warnings
from typing import Any, Callable

import torch

import fastrnn
import fastrnn.torch as ft

# (cell, T, N, I, H)
SUITE: list[tuple[str, int, int, int, int]] = [
    *((c, 100, 64, 256, 256) for c in ("lstm", "gru", "rnn")),
    *((c, 100, 1, 256, 256) for c in ("lstm", "gru", "rnn")),
    *((c, 1000, 8, 64, 64) for c in ("lstm", "gru", "rnn")),
    ("lstm", 100, 64, 512, 512),
    ("lstm", 50, 16, 1024, 1024),
    ("lstm", 25, 16, 512, 512),
    ("lstm", 200, 32, 128, 128),
    ("gru", 200, 32, 128, 128),
]
# (cell, T, N, I, H, proj_size): P = H/4 .. H/2, batch 1 .. 64, H = 192 .. 1024.
PROJ_SUITE: list[tuple[str, int, int, int, int, int]] = [
    ("lstm", 100, 64, 256, 256, 128),
    ("lstm", 200, 8, 128, 256, 64),
    ("lstm", 100, 1, 256, 256, 96),
    ("lstm", 50, 32, 160, 192, 48),
    ("lstm", 30, 16, 512, 512, 256),
    ("lstm", 30, 32, 512, 1024, 256),
]
QUICK: list[tuple[str, int, int, int, int]] = [
    ("lstm", 20, 16, 64, 64),
    ("gru", 20, 16, 64, 64),
    ("rnn", 20, 16, 64, 64),
    ("lstm", 10, 1, 128, 128),
]
CLASSES = {
    "lstm": (torch.nn.LSTM, ft.LSTM),
    "gru": (torch.nn.GRU, ft.GRU),
    "rnn": (torch.nn.RNN, ft.RNN),
}


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def make_step(module: torch.nn.Module, x: torch.Tensor, training: bool) -> Callable[[], Any]:
    if not training:

        def infer() -> Any:
            with torch.no_grad():
                return module(x)

        return infer

    def train() -> Any:
        module.zero_grad(set_to_none=True)
        x.grad = None
        y, _ = module(x)
        loss = y.square().mean()
        loss.backward()
        return loss

    return train


def check(ref: torch.nn.Module, fast: torch.nn.Module, x: torch.Tensor, tol: float) -> float:
    """Largest output/gradient difference relative to the largest magnitude; raises if big."""
    results = []
    for m in (ref, fast):
        x.grad = None
        m.zero_grad(set_to_none=True)
        y, _ = m(x)
        y.square().mean().backward()
        results.append([y.detach(), x.grad.clone(), *(p.grad.clone() for p in m.parameters())])
    worst = 0.0
    for a, b in zip(*results):
        scale = max(float(a.abs().max()), 1e-30)
        worst = max(worst, float((a - b).abs().max()) / scale)
    if worst > tol:
        raise AssertionError(f"fastrnn.torch disagrees with torch.nn: relative error {worst:.2e}")
    return worst


def run_case(
    cell: str, T: int, N: int, I: int, H: int, repeat: int, P: int = 0
) -> list[dict[str, Any]]:
    ref_cls, fast_cls = CLASSES[cell]
    torch.manual_seed(0)
    kw = {"proj_size": P} if P else {}
    ref = ref_cls(I, H, **kw)
    fast = fast_cls(I, H, **kw)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(T, N, I, requires_grad=True)
    err = check(ref, fast, x, tol=1e-3)
    rows = []
    for training in (False, True):
        steps = {
            "torch.nn": make_step(ref, x, training),
            "fastrnn.torch": make_step(fast, x, training),
        }
        for fn in steps.values():  # warm-up
            fn()
        samples: dict[str, list[float]] = {k: [] for k in steps}
        for _ in range(repeat):
            for name, fn in steps.items():
                samples[name].append(median_ms(fn, 1))
        t_ref = statistics.median(samples["torch.nn"])
        t_fast = statistics.median(samples["fastrnn.torch"])
        rows.append(
            {
                "cell": cell,
                "T": T,
                "N": N,
                "I": I,
                "H": H,
                "P": P,
                "mode": "training" if training else "inference",
                "torch_ms": round(t_ref, 3),
                "fastrnn_ms": round(t_fast, 3),
                "speedup": round(t_ref / t_fast, 3),
                "max_rel_err": float(f"{err:.2e}"),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    # torch.nn.LSTM warns on every call with proj_size that oneDNN does not take it.
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small subset with small sizes")
    ap.add_argument("--threads", type=int, default=None, help="threads for both libraries")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs per case (median)")
    ap.add_argument("--backend", default=ft._BACKEND, choices=["native", "reference"])
    ap.add_argument("--cells", default="lstm,gru,rnn", help="comma-separated subset")
    ap.add_argument("--proj", action="store_true", help="the LSTM proj_size suite instead")
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    ap.add_argument("--csv", help="also write the rows as CSV to this file")
    args = ap.parse_args(argv)

    ft._BACKEND = args.backend
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    repeat = args.repeat or (3 if args.quick else 7)
    cells = set(args.cells.split(","))
    suite: list[tuple[Any, ...]] = list(QUICK if args.quick else SUITE)
    if args.proj:  # the quick variant: the first two, shortened
        suite = [(*c[:1], 10, *c[2:]) for c in PROJ_SUITE[:2]] if args.quick else PROJ_SUITE
    cases = [(*c, 0)[:6] for c in suite if c[0] in cells]
    info = fastrnn.build_info()
    print(
        f"# fastrnn {fastrnn.__version__} backend={args.backend} isa={info.get('isa')} "
        f"torch {torch.__version__} threads={torch.get_num_threads()} repeat={repeat}"
    )
    header = f"{'cell':5} {'T':>5} {'N':>4} {'I':>5} {'H':>5} {'P':>4} {'mode':10}"
    print(f"{header} {'torch ms':>10} {'fastrnn ms':>11} {'speedup':>8}")
    rows: list[dict[str, Any]] = []
    for cell, T, N, I, H, P in cases:
        for r in run_case(cell, T, N, I, H, repeat, P):
            rows.append(r)
            print(
                f"{cell:5} {T:5d} {N:4d} {I:5d} {H:5d} {P:4d} {r['mode']:10} "
                f"{r['torch_ms']:10.2f} {r['fastrnn_ms']:11.2f} {r['speedup']:8.2f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.csv and rows:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
