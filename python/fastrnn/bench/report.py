"""The run's header (machine, build, versions, GEMM peak) and its outputs: a terminal
table, JSON, CSV and an optional matplotlib plot."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import platform
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from fastrnn.bench.run import FAILED, OK, Results

PLOT_HINT = "--plot needs matplotlib: pip install 'fastrnn[plot]'"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what the platform module knows)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_header() -> dict[str, Any]:
    """Facts that do not depend on the run's options."""
    import numpy

    import fastrnn

    info = fastrnn.build_info()
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        available = os.cpu_count() or 1
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "available_cpus": available,
        "isa": info.get("isa"),
        "isa_reason": info.get("isa_reason"),
        "targets_compiled": list(info.get("targets_compiled", [])),
        "targets_supported": list(info.get("targets_supported", [])),
        "openmp": info.get("openmp"),
        "compiler": info.get("compiler"),
        "python": platform.python_version(),
        "versions": {
            "fastrnn": str(fastrnn.__version__),
            "numpy": numpy.__version__,
            "torch": package_version("torch"),
            "jax": package_version("jax"),
            "jaxlib": package_version("jaxlib"),
        },
    }


# --------------------------------------------------------------------------------------
# Terminal table
# --------------------------------------------------------------------------------------


def _num(v: float | None, kind: str = "g") -> str:
    if v is None:
        return "-"
    if kind == "pct":
        return f"{100 * v:.1f}"
    if kind == "x":
        return f"{v:.2f}x"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 0.01:
        return f"{v:.3f}"
    return f"{v:.2g}"


def header_lines(h: dict[str, Any]) -> list[str]:
    v = h.get("versions", {})
    vers = ", ".join(f"{k} {v[k]}" for k in v if v[k])
    peak = h.get("gemm_peak_gflops")
    lines = [
        f"fastrnn-bench  {h.get('date', '')}",
        f"  command     : {h.get('command', '')}",
        f"  CPU         : {h.get('cpu')} "
        f"({h.get('available_cpus')} of {h.get('cpus')} CPUs usable)",
        f"  ISA         : {h.get('isa')} in use;"
        f" compiled {', '.join(h.get('targets_compiled', []))};"
        f" supported {', '.join(h.get('targets_supported', []))}",
        f"  threads     : {h.get('threads')} (every backend)  OpenMP: {h.get('openmp')}",
        f"  versions    : python {h.get('python')}, {vers}",
        f"  dtype       : {h.get('dtype')}   baseline: {h.get('baseline') or '-'}",
    ]
    if peak:
        src = h.get("gemm_peak_source")
        size = h.get("gemm_peak_size")
        line = f"  GEMM peak   : {peak:.1f} GFLOP/s (float32 {size}^3, {src})"
        if h.get("gemm_peak_note"):
            line += f" - {h['gemm_peak_note']}"
        if h.get("numpy_gemm_gflops") and src != "numpy.matmul":
            line += f"; numpy.matmul {h['numpy_gemm_gflops']:.1f}"
        lines.append(line)
    for m in h.get("memory_method") or []:
        lines.append(f"  memory      : {m}")
    if h.get("timing"):
        t = h["timing"]
        lines.append(
            f"  timing      : warm-up, samples >= {t['min_time']:g} s, until {t['repeat']} "
            f"agree within 3% or {t['max_time']:g} s per case/backend/mode; backends of a "
            f"case interleaved sample by sample ({t.get('settle', 0):g} s pause between "
            "backends; the reference alone, after them); median per call"
        )
    for name, status in (h.get("backends") or {}).items():
        if status != "available":
            lines.append(f"  backend {name}: {status}")
    for note in h.get("notes", []):
        lines.append(f"  note        : {note}")
    return lines


def format_table(results: Results) -> str:
    """The header, one line per (case, mode, backend), then footnotes for case notes and
    for rows that were skipped or failed."""
    h = results.header
    base = h.get("baseline") or "baseline"
    cols = ["case", "mode", "backend", "median ms", "min ms", "spread%", "GFLOP/s",
            "%peak", f"vs {base}", "alloc MiB", "rss+ MiB", "status"]  # fmt: skip
    notes: list[str] = []
    body = []
    for r in results.rows:
        status = r["status"]
        if r["reason"]:
            notes.append(r["reason"])
            status = f"{status} [{len(notes)}]"
        label = r["case"]
        if r.get("note"):
            label += " *"
        body.append(
            [
                label,
                r["mode"],
                r["backend"],
                _num(r["median_ms"]),
                _num(r["min_ms"]),
                _num(r["spread"], "pct"),
                _num(r["gflops"]),
                _num(r["peak_fraction"], "pct"),
                _num(r["speedup"], "x"),
                _num(r["alloc_mib"]),
                _num(r["rss_mib"]),
                status,
            ]
        )
    widths = [max(len(c), *(len(row[i]) for row in body)) if body else len(c)
              for i, c in enumerate(cols)]  # fmt: skip
    right = set(range(3, 11))

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    out = [*header_lines(h), "", fmt(cols), fmt(["-" * w for w in widths])]
    prev = None
    for row, r in zip(body, results.rows):
        if prev is not None and r["case"] != prev:
            out.append("")
        prev = r["case"]
        out.append(fmt(row))
    case_notes = {}
    for r in results.rows:
        if r.get("note"):
            case_notes[r["case"]] = r["note"]
    if case_notes:
        out.append("")
        out += [f"* {label}: {note}" for label, note in case_notes.items()]
    if notes:
        out.append("")
        out += [f"[{i + 1}] {n}" for i, n in enumerate(notes)]
    n_ok = sum(r["status"] == OK for r in results.rows)
    n_fail = sum(r["status"] == FAILED for r in results.rows)
    out.append("")
    out.append(
        f"{n_ok} timed, {n_fail} failed check, "
        f"{len(results.rows) - n_ok - n_fail} skipped or errors, of {len(results.rows)}"
    )
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def to_json(results: Results) -> str:
    return json.dumps({"header": results.header, "results": results.rows}, indent=2) + "\n"


CSV_COLUMNS = (
    "case", "cell", "T", "N", "I", "H", "mode", "backend", "status", "median_ms", "min_ms",
    "max_ms", "spread", "samples", "calls_per_sample", "gflop", "gflops", "peak_fraction",
    "speedup", "alloc_mib", "rss_mib", "check_err", "note", "reason", "T_orig", "N_orig",
)  # fmt: skip


def to_csv(results: Results) -> str:
    """CSV with the header as leading ``# key: value`` comment lines."""
    buf = io.StringIO()
    for key, value in results.header.items():
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        buf.write(f"# {key}: {text}\n")
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in results.rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in CSV_COLUMNS})
    return buf.getvalue()


def check_plot_available() -> None:
    """Raise ImportError with :data:`PLOT_HINT` when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(PLOT_HINT) from exc


def write_plot(results: Results, path: str) -> None:
    """GFLOP/s per case (log scale), one panel per mode, bars per backend, the GEMM peak
    as a dashed line; rows not timed (skipped, failed) leave a gap."""
    check_plot_available()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results.rows if r["status"] == OK]
    modes = list(dict.fromkeys(r["mode"] for r in results.rows))
    backends = list(dict.fromkeys(r["backend"] for r in results.rows))
    n_cases = len(dict.fromkeys(r["case"] for r in results.rows))
    size = (max(12.0, 0.3 * n_cases * max(1, len(backends))), 3.8 * max(1, len(modes)))
    fig, axes = plt.subplots(len(modes) or 1, 1, figsize=size)
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    peak = results.header.get("gemm_peak_gflops")
    for ax, mode in zip(axes, modes):
        cases = list(dict.fromkeys(r["case"] for r in results.rows if r["mode"] == mode))
        width = 0.8 / max(1, len(backends))
        for j, b in enumerate(backends):
            vals = {r["case"]: r["gflops"] for r in rows if r["mode"] == mode and r["backend"] == b}
            xs = [i + j * width for i in range(len(cases))]
            ax.bar(xs, [vals.get(c, float("nan")) for c in cases], width, label=b)
        if peak:
            ax.axhline(peak, color="k", linestyle="--", linewidth=1, label="GEMM peak")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))])
        ax.set_xticklabels(cases, rotation=30, ha="right", fontsize=7)
        ax.set_yscale("log")  # latency cases and GEMM-bound cases differ by orders
        ax.set_ylabel("GFLOP/s (log)")
        h = results.header
        ax.set_title(f"{mode} ({h.get('dtype')}, {h.get('threads')} threads)")
        ax.legend(fontsize=7)
    fig.suptitle(f"fastrnn-bench on {results.header.get('cpu')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
