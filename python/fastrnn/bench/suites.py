"""Built-in benchmark suites: ``quick``, ``standard``, ``deepbench``, ``latency``, ``short``.

``deepbench`` holds the RNN shapes of Baidu's DeepBench (training set, server and
device inference sets; input size equals hidden size there). Shapes whose single timed
call would exceed :data:`DEEPBENCH_GFLOP_BUDGET` are scaled down (T first, not below
``min(T, 8)``, then N, allowing 10% over budget before touching N) so one case stays
well under a minute on 2 cores; the scaling is
written into the case's ``note`` and its ``meta`` (``T_orig``, ``N_orig``). Shapes that
become identical after scaling are run once, with the others named in the note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from fastrnn.bench.cases import Case


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    cases: tuple[Case, ...]
    max_time: float = 3.0  # default time budget (s) per case, backend and mode


# One timed call of a DeepBench case may do at most this much work (GFLOP): at a
# conservative 30 GFLOP/s on 2 cores that is under 7 s a call, so warm-up plus a few
# repeats stay under a minute per backend.
DEEPBENCH_GFLOP_BUDGET = 200.0

_SQUARE = ((100, 64, 256, 256), (100, 1, 256, 256), (1000, 8, 64, 64))

# (H, N, T, cell) in DeepBench's own order.
_DB_TRAINING = (
    *[(h, n, 50, "rnn") for h in (1760, 2048, 2560) for n in (16, 32, 64, 128)],
    *[(h, n, 25, "lstm") for h in (512, 1024, 2048, 4096) for n in (16, 32, 64, 128)],
    *[(1536, n, 50, "lstm") for n in (8, 16, 32)],
    *[(256, n, 150, "lstm") for n in (16, 32, 64)],
    *[(2816, 32, t, "gru") for t in (750, 375, 187)],
    *[(h, 32, t, "gru") for h in (2048, 1536, 2560) for t in (1500, 750, 375, 187)],
    (512, 32, 1, "gru"),
    (1024, 32, 1500, "gru"),
    (1024, 64, 1500, "gru"),
)
_DB_SERVER = (
    *[(h, n, 25, "lstm") for h in (512, 1024, 2048) for n in (1, 2, 4)],
    *[(1536, n, 50, "lstm") for n in (1, 2, 4)],
    *[(256, n, 150, "lstm") for n in (1, 2, 4)],
    *[
        (h, n, t, "gru")
        for h in (2816, 2048, 1536, 2560)
        for n in (1, 2, 4)
        for t in (1500, 750, 375, 187)
    ],
    *[(512, n, 1, "gru") for n in (1, 2, 4)],
    *[(1024, n, 1500, "gru") for n in (1, 2, 4)],
)
_DB_DEVICE = ((32, 1, 672, "rnn"), (64, 1, 96, "rnn"), (256, 1, 150, "lstm"))


def scale_to_budget(case: Case, mode: str, gflop_budget: float) -> Case:
    """Shrink T (not below ``min(T, 8)``), then N, until one call fits the budget."""
    if case.flops(mode) <= gflop_budget * 1e9:
        return case
    per_row_step = case.flops(mode) / (case.T * case.N)
    limit = gflop_budget * 1e9 / per_row_step  # allowed T * N
    t_min = min(case.T, 8)
    T = max(t_min, math.floor(limit / case.N))
    N = case.N
    if T * N > 1.1 * limit:  # up to 10% over budget rather than an odd batch size
        N = max(1, math.floor(limit / T))
    changes = []
    if T != case.T:
        changes.append(f"T {case.T}->{T}")
    if N != case.N:
        changes.append(f"N {case.N}->{N}")
    note = "scaled " + ", ".join(changes) + f" (budget {gflop_budget:g} GFLOP/call)"
    meta = dict(case.meta, T_orig=case.T, N_orig=case.N)
    return replace(case, T=T, N=N, note=note, meta=meta)


def _deepbench() -> tuple[Case, ...]:
    out: list[Case] = []
    seen: dict[tuple, int] = {}
    sets = (
        ("train", _DB_TRAINING, "training"),
        ("server", _DB_SERVER, "inference"),
        ("device", _DB_DEVICE, "inference"),
    )
    for tag, rows, mode in sets:
        for H, N, T, cell in rows:
            name = f"db-{tag} {cell} H={H},N={N},T={T}"
            base = Case(cell, T, N, H, H, modes=(mode,), name=name, meta={"deepbench": tag})
            case = scale_to_budget(base, mode, DEEPBENCH_GFLOP_BUDGET)
            if case.note:
                case = replace(case, name=name + "*")
            key = (case.cell, case.T, case.N, case.I, case.H, case.modes)
            if key in seen:
                k = seen[key]
                prev = out[k]
                extra = f"also stands for db-{tag} H={H},N={N},T={T}"
                out[k] = replace(prev, note=f"{prev.note}; {extra}" if prev.note else extra)
                continue
            seen[key] = len(out)
            out.append(case)
    return tuple(out)


def _standard() -> tuple[Case, ...]:
    cases = [Case(cell, *shape) for shape in _SQUARE for cell in ("lstm", "gru", "rnn")]
    cases += [Case("lstm", *s) for s in ((100, 64, 512, 512), (50, 16, 1024, 1024))]
    cases += [Case("lstm", 25, 16, 512, 512)]
    cases += [Case(cell, 200, 32, 128, 128) for cell in ("lstm", "gru")]
    return tuple(cases)


def _quick() -> tuple[Case, ...]:
    return (
        Case("lstm", 50, 16, 128, 128),
        Case("gru", 50, 16, 128, 128),
        Case("rnn", 50, 16, 128, 128),
        Case("lstm", 20, 1, 64, 128, modes=("step",)),
    )


def _latency() -> tuple[Case, ...]:
    return tuple(
        Case(cell, 100, 1, h, h, modes=("step", "inference"))
        for h in (128, 512)
        for cell in ("lstm", "gru", "rnn")
    )


# (cell, T, N, I=H): few rows in all, or few rows per step. The kernels choose per shape
# whether to pack the weights (docs/kernels.md, forward 5-7): dot products (T*N up
# to 8), transposed products over a few steps (up to 64 rows with large weights), or the
# packed tiles (more steps, whatever the row count). A shape on the wrong side of those
# choices runs 2-3x slower, so this suite has cases on each side.
_SHORT = (
    ("lstm", 1, 8, 512),
    ("lstm", 4, 16, 512),
    ("lstm", 2, 32, 1024),
    ("lstm", 20, 1, 512),
    ("lstm", 12, 4, 1024),
    ("gru", 8, 4, 512),
    ("gru", 2, 24, 768),
    ("rnn", 16, 1, 1024),
    ("rnn", 3, 16, 1024),
)


def _short() -> tuple[Case, ...]:
    return tuple(
        Case(cell, t, n, h, h, modes=("inference", "training")) for cell, t, n, h in _SHORT
    )


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("quick", "a handful of small cases; under a minute in total", _quick(), 0.4),
        Suite("standard", "the project's reference set of shapes", _standard(), 3.0),
        Suite("deepbench", "Baidu DeepBench RNN training/inference shapes", _deepbench(), 4.0),
        Suite("latency", "batch 1: one step at a time and whole sequences", _latency(), 1.0),
        Suite("short", "short sequences and small batches, packed or not", _short(), 1.0),
    )
}


def get_suite(name: str) -> Suite:
    """The built-in suite called ``name``; ``ValueError`` lists the choices otherwise."""
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"suite must be one of {sorted(SUITES)}, got {name!r}") from None
