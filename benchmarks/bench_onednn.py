"""fastrnn against oneDNN's own RNN primitives, called directly: LSTM, GRU and RNN.

PyTorch runs only its LSTM through oneDNN (its GRU and RNN are a loop of its own), and it
converts the weights on every call; this script times oneDNN's LSTM, linear-before-reset
GRU (PyTorch's GRU) and tanh RNN primitives with the weights converted once, as a program
using oneDNN itself would. It builds ``onednn_driver.cpp`` (next to this file) with the
C++ compiler against an installed oneDNN 3.x, e.g. the PyPI builds:

    pip install onednn-cpu-gomp onednn-devel-cpu-gomp
    python benchmarks/bench_onednn.py            # fastrnn-bench's standard suite, both modes
    python benchmarks/bench_onednn.py --suite quick --modes inference
    python benchmarks/bench_onednn.py --dnnl-root /opt/onednn   # include/ and lib/ there

For each case both libraries get the same float32 inputs and weights (PyTorch's layouts,
converted by the driver); before anything is timed, what each computes (outputs, final
states and, in training, every gradient) is compared with fastrnn's float64 reference.
Inference is one forward; training is a training forward and the backward with a random
upstream gradient on the outputs. Both use --threads threads (oneDNN through
OMP_NUM_THREADS). oneDNN runs in its own process: each round times --repeat runs of one
library and then of the other, and the reported time is the median over rounds of each
round's median. fastrnn is timed twice: as called plainly, laying its weights out in every
call, and with them laid out once beforehand (``F.pack_weights``), as the driver lays out
oneDNN's. Training also reports the forward and the backward apart (each run's forward
timed on its own, the backward being the rest of the run), for both libraries. GFLOP/s
counts 2*T*N*G*H*(I+H) for a forward and three times that for training, as fastrnn-bench
does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import fastrnn
from fastrnn import functional as F
from fastrnn.bench.cases import CELLS, Case
from fastrnn.bench.suites import SUITES

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "onednn_driver.cpp"


def find_dnnl(root: str | None) -> Path:
    """The directory whose include/ has oneapi/dnnl/dnnl.hpp and whose lib/ has libdnnl."""
    candidates = [Path(root)] if root else [Path(sys.prefix), Path("/usr/local"), Path("/usr")]
    for c in candidates:
        if (c / "include" / "oneapi" / "dnnl" / "dnnl.hpp").is_file() and any(
            (c / "lib").glob("libdnnl.so*")
        ):
            return c
    where = root or ", ".join(str(c) for c in candidates)
    raise SystemExit(
        f"oneDNN 3.x not found in {where} (include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so); "
        "install it with `pip install onednn-cpu-gomp onednn-devel-cpu-gomp` or pass --dnnl-root"
    )


def build_driver(dnnl: Path, cxx: str) -> Path:
    """Compiles the driver once per (source, oneDNN, compiler) into a cache directory."""
    key = hashlib.sha256(DRIVER.read_bytes() + str(dnnl).encode() + cxx.encode()).hexdigest()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fastrnn"
    exe = cache / f"onednn_driver-{key[:16]}"
    if exe.is_file():
        return exe
    cache.mkdir(parents=True, exist_ok=True)
    lib = dnnl / "lib"
    cmd = [
        cxx,
        "-O2",
        "-std=c++17",
        str(DRIVER),
        f"-I{dnnl / 'include'}",
        f"-L{lib}",
        "-ldnnl",
        f"-Wl,-rpath,{lib}",
        "-o",
        str(exe) + ".tmp",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"building the oneDNN driver failed:\n{' '.join(cmd)}\n{done.stderr}")
    os.replace(str(exe) + ".tmp", exe)
    return exe


def make_inputs(cell: str, T: int, N: int, I: int, H: int, seed: int) -> dict[str, np.ndarray]:
    """float32 inputs in PyTorch's layouts; weights uniform in +-1/sqrt(H) as torch.nn's."""
    rng = np.random.default_rng(seed)
    G, k = CELLS[cell], 1.0 / np.sqrt(H)

    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-k, k, shape).astype(np.float32)

    arrays = {"x": rng.standard_normal((T, N, I)).astype(np.float32)}
    arrays["h0"] = (0.5 * rng.standard_normal((N, H))).astype(np.float32)
    if cell == "lstm":
        arrays["c0"] = (0.5 * rng.standard_normal((N, H))).astype(np.float32)
    arrays.update(weight_ih=u(G * H, I), weight_hh=u(G * H, H), bias_ih=u(G * H), bias_hh=u(G * H))
    arrays["dy"] = rng.standard_normal((T, N, H)).astype(np.float32)
    return arrays


def state_args(cell: str, a: dict[str, np.ndarray]) -> tuple:
    return (a["h0"], a["c0"]) if cell == "lstm" else (a["h0"],)


def weights(a: dict[str, np.ndarray], packed: F.PackedWeights | None) -> tuple:
    """(w_ih, w_hh, b_ih, b_hh) for a call; with ``packed``, its read-only weights."""
    w = (a["weight_ih"], a["weight_hh"], a["bias_ih"], a["bias_hh"])
    return w if packed is None else (packed.weight_ih, packed.weight_hh, *w[2:])


def run_fastrnn(
    cell: str,
    a: dict[str, np.ndarray],
    training: bool,
    backend: str,
    packed: F.PackedWeights | None = None,
) -> list:
    """What the driver writes, in its order, from fastrnn (native or reference); with
    ``packed`` (these weights from ``F.pack_weights``) the forward reads that layout."""
    fwd, bwd = getattr(F, cell), getattr(F, f"{cell}_backward")
    w = weights(a, packed)
    out = fwd(a["x"], *state_args(cell, a), *w, training=training, backend=backend, packed=packed)
    y, state = out[0], out[1]
    arrays = [y, *(state if cell == "lstm" else (state,))]
    if training:
        g = bwd(out[2], a["dy"])
        arrays += [g["x"], g["h0"], *([g["c0"]] if cell == "lstm" else [])]
        arrays += [g["weight_ih"], g["weight_hh"], g["bias_ih"], g["bias_hh"]]
    return arrays


def time_fastrnn(
    cell: str, a: dict[str, np.ndarray], training: bool, packed: F.PackedWeights | None
) -> tuple[float, float]:
    """One run of the native kernels, timed as the driver times oneDNN's: (the whole run,
    the forward alone) in ms."""
    fwd, bwd = getattr(F, cell), getattr(F, f"{cell}_backward")
    w = weights(a, packed)
    t0 = time.perf_counter()
    out = fwd(a["x"], *state_args(cell, a), *w, training=training, packed=packed)
    t1 = time.perf_counter()
    if training:
        bwd(out[2], a["dy"])
    t2 = time.perf_counter()
    return 1e3 * (t2 - t0), 1e3 * (t1 - t0)


def parse_times(text: str) -> list[tuple[float, float]]:
    """The driver's output: one line per timed run, 'whole-run-ms forward-ms'."""
    runs = []
    for line in text.splitlines():
        if line.strip():
            total, forward = (float(v) for v in line.split())
            runs.append((total, forward))
    return runs


NAMES = {
    False: ["y", "h_n", "c_n"],
    True: ["y", "h_n", "c_n", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh"],
}


def names(cell: str, training: bool) -> list[str]:
    return [n for n in NAMES[training] if cell == "lstm" or n not in ("c_n", "dc0")]


def drive(
    exe: Path,
    cell: str,
    shape: tuple,
    training: bool,
    repeat: int,
    infile: Path,
    outfile: Path,
    threads: int,
) -> list[tuple[float, float]]:
    """Runs the driver; returns its per-run times in ms, (whole run, forward alone)."""
    mode = "training" if training else "inference"
    cmd = [str(exe), cell, *map(str, shape), mode, str(repeat), str(infile), str(outfile)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"oneDNN driver failed ({' '.join(cmd)}): {done.stderr.strip()}")
    return parse_times(done.stdout)


def check(cell: str, a: dict[str, np.ndarray], training: bool, got: dict[str, list]) -> float:
    """Largest error of each library against the float64 reference, relative to the
    largest magnitude of each array; raises when one is above 1e-3."""
    a64 = {k: v.astype(np.float64) for k, v in a.items()}
    want = run_fastrnn(cell, a64, training, "reference")
    worst = 0.0
    for lib, arrays in got.items():
        for name, w, g in zip(names(cell, training), want, arrays):
            scale = max(float(np.abs(w).max()), 1e-30)
            err = float(np.abs(np.asarray(g, np.float64) - w).max()) / scale
            if not err <= 1e-3:
                raise AssertionError(
                    f"{lib} {cell}: {name} differs from the reference by {err:.2e}"
                )
            worst = max(worst, err)
    return worst


def run_case(
    exe: Path, case: tuple, training: bool, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    cell, T, N, I, H = case
    a = make_inputs(cell, T, N, I, H, seed=0)
    infile, outfile = tmp / "in.bin", tmp / "out.bin"
    order = ["x", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    order += ["dy"] if training else []
    with open(infile, "wb") as f:
        for k in order:
            if k in a:
                f.write(np.ascontiguousarray(a[k]).tobytes())
    drive(exe, cell, (T, N, I, H), training, 1, infile, outfile, args.threads)
    flat = np.fromfile(outfile, np.float32)
    ours = run_fastrnn(cell, a, training, "native")
    theirs, at = [], 0
    for arr in ours:  # the driver writes the same arrays, same shapes, same order
        theirs.append(flat[at : at + arr.size].reshape(arr.shape))
        at += arr.size
    if at != flat.size:
        raise AssertionError(f"driver wrote {flat.size} values, expected {at}")
    err = check(cell, a, training, {"fastrnn": ours, "onednn": theirs})
    # fastrnn twice: laying the weights out in every call (as torch.nn does), and once
    # beforehand (F.pack_weights, outside the timing), as the driver does oneDNN's.
    packed = F.pack_weights(cell, a["weight_ih"], a["weight_hh"])
    for mine, other in zip(run_fastrnn(cell, a, training, "native", packed), ours):
        np.testing.assert_array_equal(mine, other)  # the same bits either way

    def once(lib: str) -> tuple[float, float]:
        return time_fastrnn(cell, a, training, packed if lib == "packed" else None)

    # NumPy's BLAS threads (the reference's products in check) spin for a while after their
    # last call, on the cores the timed runs need.
    time.sleep(0.5)
    once("fastrnn")
    libs = ("fastrnn", "packed", "onednn")
    # per library, per round: medians of the whole runs, of the forwards, of the backwards
    rounds: dict[str, list[tuple[float, float, float]]] = {lib: [] for lib in libs}
    for r in range(args.rounds):
        for lib in libs[r % 3 :] + libs[: r % 3]:
            if lib == "onednn":
                times = drive(
                    exe, cell, (T, N, I, H), training, args.repeat, infile, outfile, args.threads
                )
            else:
                times = [once(lib) for _ in range(args.repeat)]
            rounds[lib].append(
                (
                    statistics.median(t for t, _ in times),
                    statistics.median(f for _, f in times),
                    statistics.median(t - f for t, f in times),
                )
            )
    flops = Case(cell, T, N, I, H).flops("training" if training else "inference")
    ms = {lib: statistics.median(v[0] for v in rounds[lib]) for lib in libs}
    split = {}
    keys = {"fastrnn": "fastrnn", "packed": "fastrnn_packed", "onednn": "onednn"}
    if training:
        for lib, key in keys.items():
            split[f"{key}_forward_ms"] = statistics.median(v[1] for v in rounds[lib])
            split[f"{key}_backward_ms"] = statistics.median(v[2] for v in rounds[lib])
    return {
        **dict(zip(("cell", "T", "N", "I", "H"), case)),
        "mode": "training" if training else "inference",
        "threads": args.threads,
        "fastrnn_ms": ms["fastrnn"],
        "fastrnn_packed_ms": ms["packed"],
        "onednn_ms": ms["onednn"],
        "fastrnn_gflops": flops / ms["fastrnn"] / 1e6,
        "fastrnn_packed_gflops": flops / ms["packed"] / 1e6,
        "onednn_gflops": flops / ms["onednn"] / 1e6,
        "speedup": ms["onednn"] / ms["fastrnn"],
        "speedup_packed": ms["onednn"] / ms["packed"],
        "max_rel_err": err,
        **split,
    }


def split_line(r: dict[str, Any]) -> str:
    """A training row's forward and backward, each library's ms and the speed-ups."""
    parts = []
    for part in ("forward", "backward"):
        f, p, o = (r[f"{k}_{part}_ms"] for k in ("fastrnn", "fastrnn_packed", "onednn"))
        parts.append(
            f"{part} {f:.3f} / packed {p:.3f} / oneDNN {o:.3f} ms ({o / f:.2f}x / {o / p:.2f}x)"
        )
    return "; ".join(parts)


def parse_cases(text: str) -> list[tuple[str, int, int, int, int]]:
    """'lstm:100,64,256,256;gru:50,8,128,128' -> [(cell, T, N, I, H), ...]."""
    cases = []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        cell, _, dims = item.partition(":")
        values = [int(v) for v in dims.split(",")]
        if cell not in CELLS or len(values) != 4 or min(values) < 1:
            raise SystemExit(
                f"--cases: expected CELL:T,N,I,H with CELL in lstm/gru/rnn, got {item!r}"
            )
        cases.append((cell, *values))
    return cases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", default="standard", choices=sorted(SUITES), help="fastrnn-bench's")
    p.add_argument("--cases", help="CELL:T,N,I,H;... instead of a suite")
    p.add_argument("--modes", default="inference,training", help="inference, training or both")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=7, help="timed runs per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dnnl-root", help="oneDNN install prefix (default: this Python's, /usr)")
    p.add_argument("--cxx", default=os.environ.get("CXX") or shutil.which("c++") or "g++")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",")]
    if not modes or any(m not in ("inference", "training") for m in modes):
        raise SystemExit(f"--modes: inference and/or training, got {args.modes!r}")
    if args.threads < 1 or args.repeat < 1 or args.rounds < 1:
        raise SystemExit("--threads, --repeat and --rounds must be at least 1")
    if args.cases:
        cases = parse_cases(args.cases)
    else:  # one layer, one direction, I and H as the suite has them
        cases = [(c.cell, c.T, c.N, c.I, c.H) for c in SUITES[args.suite].cases]
    exe = build_driver(find_dnnl(args.dnnl_root), args.cxx)
    fastrnn.set_num_threads(args.threads)
    print(
        f"fastrnn {fastrnn.__version__} vs oneDNN, {args.threads} thread(s), float32; "
        "times are medians, speedup = oneDNN time / fastrnn time; fastrnn lays the weights "
        "out in every call, 'packed' once beforehand (F.pack_weights), as oneDNN's are"
    )
    results = []
    with tempfile.TemporaryDirectory() as d:
        for case in cases:
            for mode in modes:
                r = run_case(exe, case, mode == "training", args, Path(d))
                results.append(r)
                shape = "({T},{N},{I},{H})".format(**r)
                print(
                    f"{r['cell']:4} {shape:20} {mode:9}  fastrnn {r['fastrnn_ms']:9.3f} ms "
                    f"{r['fastrnn_gflops']:6.1f} GF/s   packed {r['fastrnn_packed_ms']:9.3f} ms "
                    f"  oneDNN {r['onednn_ms']:9.3f} ms {r['onednn_gflops']:6.1f} GF/s   "
                    f"{r['speedup']:5.2f}x / packed {r['speedup_packed']:5.2f}x",
                    flush=True,
                )
                if mode == "training":
                    print(f"{'':26}  {split_line(r)}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
