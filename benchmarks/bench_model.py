"""A whole model, not one kernel: a word-level LSTM language model built from fastrnn's
NumPy modules against the same model in PyTorch (when installed).

Model: ``Embedding(V, E) -> LSTM(E, H) -> Linear(H, V)``, softmax cross-entropy over all
T x N positions (mean), Adam. One training step is: zero the gradients, forward, loss,
backward, optimizer step; inference is the forward to the logits. Both libraries get the
same weights and tokens; their losses and gradients are compared before anything is
timed. Times come from the benchmark runner's ``time_interleaved``: the two libraries
alternated sample by sample with a pause between them (thread pools keep spinning for a
while after a call), medians once ``--repeat`` samples agree, ``--threads`` threads each.

This is the benchmark for what a NumPy user sees: the recurrent kernel is most of a
step, but the output layer, the loss and the optimizer count too, and so does anything
that slows the kernel down next to them (e.g. BLAS worker threads still spinning).

    python benchmarks/bench_model.py            # V=10000, E=H=256, T=35, N=32
    python benchmarks/bench_model.py --quick    # a small model, a few seconds
    python benchmarks/bench_model.py --hidden 512 --batch 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

import numpy as np

import fastrnn
from fastrnn import modules, optim
from fastrnn.bench.measure import time_interleaved
from fastrnn.layers import LSTM
from fastrnn.losses import softmax_cross_entropy

PAUSE_S = 0.2  # OpenBLAS (used by torch's CPU build only for some ops) spins ~0.1 s


def build_fastrnn(V: int, E: int, H: int, seed: int) -> modules.Sequential:
    return modules.Sequential(
        modules.Embedding(V, E, seed=seed),
        modules.Recurrent(LSTM(E, H, seed=seed + 1)),
        modules.Linear(H, V, seed=seed + 2),
    )


def fastrnn_steps(model: modules.Sequential, tokens: np.ndarray, targets: np.ndarray):
    opt = optim.Adam(model, lr=1e-3)

    def train() -> float:
        opt.zero_grad()
        logits, tape = model.forward(tokens, training=True)
        loss, dlogits = softmax_cross_entropy(logits, targets, reduction="mean")
        model.backward(tape, dlogits)
        opt.step()
        return loss

    def infer() -> np.ndarray:
        return model.forward(tokens, training=False)[0]

    return train, infer


def torch_steps(model: modules.Sequential, tokens: np.ndarray, targets: np.ndarray):
    import torch

    V, E = model.params["0.weight"].shape
    H = model.params["1.weight_hh_l0"].shape[1]

    class LM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(V, E)
            self.lstm = torch.nn.LSTM(E, H)
            self.out = torch.nn.Linear(H, V)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.lstm(self.emb(x))[0])

    lm = LM()
    with torch.no_grad():
        lm.emb.weight.copy_(torch.from_numpy(model.params["0.weight"]))
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(lm.lstm, name).copy_(torch.from_numpy(model.params["1." + name]))
        lm.out.weight.copy_(torch.from_numpy(model.params["2.weight"]))
        lm.out.bias.copy_(torch.from_numpy(model.params["2.bias"]))
    x = torch.from_numpy(tokens.astype(np.int64))
    y = torch.from_numpy(targets.astype(np.int64)).reshape(-1)
    opt = torch.optim.Adam(lm.parameters(), lr=1e-3)

    def train() -> float:
        opt.zero_grad(set_to_none=True)
        logits = lm(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y)
        loss.backward()
        opt.step()
        return loss.item()

    def infer() -> Any:
        with torch.no_grad():
            return lm(x)

    def grads() -> tuple[float, dict[str, np.ndarray]]:
        lm.zero_grad(set_to_none=True)
        logits = lm(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y)
        loss.backward()
        g = {
            "0.weight": lm.emb.weight.grad,
            "1.weight_hh_l0": lm.lstm.weight_hh_l0.grad,
            "2.weight": lm.out.weight.grad,
        }
        return loss.item(), {k: v.numpy().copy() for k, v in g.items()}

    return train, infer, grads


def check(model: modules.Sequential, tokens, targets, torch_grads) -> float:
    """Loss and three gradients (embedding, recurrent weights, output layer) of fastrnn
    against torch before any timing; returns the worst relative difference."""
    model.zero_grad()
    logits, tape = model.forward(tokens, training=True)
    loss, dlogits = softmax_cross_entropy(logits, targets, reduction="mean")
    model.backward(tape, dlogits)
    t_loss, t_grads = torch_grads()
    worst = abs(loss - t_loss) / max(abs(t_loss), 1e-30)
    for name, want in t_grads.items():
        got = model.grads[name]
        worst = max(worst, float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-30))
    model.zero_grad()
    if worst > 1e-3:
        raise AssertionError(f"fastrnn and torch disagree: relative difference {worst:.2e}")
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--embed", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--steps", type=int, default=35, help="sequence length T")
    ap.add_argument("--batch", type=int, default=32, help="batch size N")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="V=2000, E=H=64, T=20, N=8, 3 repeats")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.vocab, args.embed, args.hidden, args.steps, args.batch = 2000, 64, 64, 20, 8
        args.repeat = 3
    V, E, H, T, N = args.vocab, args.embed, args.hidden, args.steps, args.batch
    threads = args.threads or fastrnn.get_num_threads()
    fastrnn.set_num_threads(threads)

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, V, (T, N))
    targets = rng.integers(0, V, (T, N))
    model = build_fastrnn(V, E, H, seed=0)
    runs: dict[str, dict[str, Callable[[], Any]]] = {}
    f_train, f_infer = fastrnn_steps(model, tokens, targets)
    err = None
    try:
        import torch
    except ImportError:
        print("torch not installed: timing fastrnn alone", file=sys.stderr)
    else:
        torch.set_num_threads(threads)
        t_train, t_infer, t_grads = torch_steps(model, tokens, targets)
        err = check(model, tokens, targets, t_grads)
        runs["torch"] = {"training": t_train, "inference": t_infer}
    runs = {"fastrnn": {"training": f_train, "inference": f_infer}, **runs}

    print(f"LSTM language model V={V} E={E} H={H} T={T} N={N}, {threads} threads, float32")
    if err is not None:
        print(f"check: fastrnn vs torch, loss and gradients agree to {err:.1e} (relative)")
    rows = []
    for mode in ("training", "inference"):
        fns = {name: r[mode] for name, r in runs.items()}
        timings = time_interleaved(fns, repeat=args.repeat, min_time=0.05, settle=PAUSE_S)
        med = {name: 1e3 * t.median for name, t in timings.items()}
        for name, ms in med.items():
            ratio = med["torch"] / ms if "torch" in med else None
            rows.append({"mode": mode, "library": name, "median_ms": round(ms, 3),
                         "vs_torch": None if ratio is None else round(ratio, 3)})  # fmt: skip
            vs = f"{ratio:.2f}x" if ratio is not None else "-"
            print(f"  {mode:9s}  {name:8s}  {ms:9.2f} ms   vs torch {vs}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"V": V, "E": E, "H": H, "T": T, "N": N, "threads": threads,
                       "check_rel_err": err, "rows": rows}, fh, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
