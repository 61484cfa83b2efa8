"""The benchmark runner: parsing, suites, reports, the correctness gate, a tiny run.

No test here asserts a speed; the runs are tiny and time-boxed.
"""

from __future__ import annotations

import csv
import importlib.machinery
import importlib.util
import io
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from fastrnn.bench import cli
from fastrnn.bench.backends import (
    FunctionalBackend,
    JaxBackend,
    TorchBackend,
    all_backends,
    make_params,
    reference_outputs,
)
from fastrnn.bench.cases import Case, cases_from_toml, parse_case_spec
from fastrnn.bench.measure import compare, time_callable, time_interleaved
from fastrnn.bench.report import format_table, to_csv, to_json
from fastrnn.bench.run import ERROR, FAILED, OK, SKIPPED, Options, Results, run_benchmarks
from fastrnn.bench.suites import DEEPBENCH_GFLOP_BUDGET, SUITES, get_suite, scale_to_budget

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_JAX = importlib.util.find_spec("jax") is not None
FAST = ["--max-time", "0.05", "--min-time", "0.001", "--repeat", "2", "--gemm-size", "64", "-q"]

# --------------------------------------------------------------------------------------
# Case specs and TOML
# --------------------------------------------------------------------------------------


def test_case_spec_parses_all_fields():
    c = parse_case_spec("lstm:T=100,N=32,I=256,H=128")
    assert (c.cell, c.T, c.N, c.I, c.H) == ("lstm", 100, 32, 256, 128)
    assert c.modes == ("inference", "training")
    c = parse_case_spec("GRU: T=5, N=1, H=7, modes=step+training")
    assert (c.cell, c.I, c.H, c.modes) == ("gru", 7, 7, ("step", "training"))


@pytest.mark.parametrize(
    "spec, match",
    [
        ("lstm", "expected 'cell:"),
        ("cnn:T=1,N=1,H=1", "cell must be one of"),
        ("lstm:T=0,N=1,H=1", "T must be a positive integer"),
        ("lstm:T=x,N=1,H=1", "T must be a positive integer"),
        ("lstm:T=1,N=1", "missing H"),
        ("lstm:T=1,N=1,H=1,Q=3", "unknown key 'Q'"),
        ("lstm:T=1,N=1,H=1,H=2", "H given twice"),
        ("lstm:T=1,N=1,H=1,modes=fly", "modes must be"),
        ("lstm:T=1,N=1 H=1", "must be a positive integer"),
        # np.sqrt of an int past 64 bits raised TypeError inside the run
        ("lstm:T=1,N=1,H=99999999999999999999999", r"H must be a positive integer <= 2147483647"),
    ],
)
def test_case_spec_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_case_spec(spec)


def test_bad_case_on_command_line_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--case", "lstm:T=1,N=1"])
    assert exc.value.code == 2
    assert "missing H" in capsys.readouterr().err


def test_toml_config(tmp_path):
    f = tmp_path / "cases.toml"
    f.write_text(
        'modes = ["inference"]\n'
        '[[case]]\ncell = "lstm"\nT = 10\nN = 2\nI = 3\nH = 4\nname = "mine"\n'
        '[[case]]\ncell = "rnn"\nT = 5\nN = 1\nH = 6\nmodes = ["step", "training"]\n'
    )
    a, b = cases_from_toml(f)
    assert (a.cell, a.T, a.N, a.I, a.H, a.modes, a.label) == (
        "lstm", 10, 2, 3, 4, ("inference",), "mine")  # fmt: skip
    assert (b.cell, b.I, b.H, b.modes) == ("rnn", 6, 6, ("step", "training"))


@pytest.mark.parametrize(
    "text, match",
    [
        ('[[case]]\ncell = "lstm"\nT = 1\nN = 1\n', "missing H"),
        ('[[case]]\ncell = "lstm"\nT = 1\nN = 1\nH = 2\nspeed = 3\n', "unknown keys"),
        ('[[case]]\ncell = "lstm"\nT = -1\nN = 1\nH = 2\n', "T must be a positive int"),
        ('[[case]]\ncell = "lstm"\nT = 1\nN = 1\nH = 2\nmodes = ["x"]\n', "modes must be"),
        ('[[case]]\ncell = "tcn"\nT = 1\nN = 1\nH = 2\n', "cell must be one of"),
        ("cell = 'lstm'\n", "unknown top-level keys"),
        ("modes = []\n", "modes must be"),
        ("[[case]\n", "invalid TOML"),
        ("", "expected one or more"),
        # not tables: TypeError from set() before
        ("case = [1, 2]\n", "case #1: expected a \\[\\[case\\]\\] table, got 1"),
        ("case = [[1]]\n", "case #1: expected a \\[\\[case\\]\\] table, got \\[1\\]"),
        (
            '[[case]]\ncell = "lstm"\nT = 1\nN = 1\nI = 2\nH = 4294967296\n',
            "H must be a positive int <=",
        ),
    ],
)
def test_toml_config_errors(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        cases_from_toml(f)


def test_example_config_in_the_repository_parses():
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "benchmarks" / "suites" / "example.toml"
    if not example.exists():
        pytest.skip("not run from a source checkout")
    cases = cases_from_toml(example)
    assert len(cases) == 4 and cases[1].label == "speech-like GRU"
    assert (cases[3].P, cases[3].peephole) == (128, True)


def test_non_utf8_config_is_a_usage_error_naming_the_file(tmp_path, capsys):
    f = tmp_path / "latin1.toml"
    f.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(SystemExit) as exc:
        cli.main(["--config", str(f)])
    assert exc.value.code == 2
    assert "latin1.toml" in capsys.readouterr().err


def test_missing_config_file_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--config", str(tmp_path / "nope.toml")])
    assert exc.value.code == 2
    assert "cannot read" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# Arguments and suites
# --------------------------------------------------------------------------------------


def test_argument_parsing():
    args = cli.build_parser().parse_args(
        ["--suite", "standard", "--modes", "training,step", "--threads", "1",
         "--backends", "native,torch", "--dtype", "float64", "--repeat", "3"]
    )  # fmt: skip
    assert args.suite == ["standard"]
    assert args.modes == ("training", "step")
    assert args.threads == 1 and args.repeat == 3 and args.dtype == "float64"
    assert args.backends == ["native", "torch"]
    cases, suites = cli.collect_cases(cli.build_parser().parse_args([]))
    assert suites == ["quick"] and cases == list(SUITES["quick"].cases)
    assert cli.build_parser().parse_args([]).settle == 0.03
    assert cli.build_parser().parse_args(["--settle", "0"]).settle == 0.0


@pytest.mark.parametrize(
    "argv",
    [
        ["--threads", "0"],
        ["--modes", "fast"],
        ["--suite", "huge"],
        ["--dtype", "float16"],
        ["--min-time", "-1"],
        ["--settle", "-0.1"],
        ["--settle", "inf"],
        ["--settle", "soon"],
        ["--backends", "nonesuch"],
        ["--backends", "reference", "--baseline", "torch"],
        ["--filter", "no-such-case"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # let through before, then a traceback (or every row failing) at run time
        (["--seed", "-1"], "expected an integer >= 0, got -1"),
        (["--min-time", "inf"], "a positive number of seconds <= 86400, got inf"),
        (["--min-time", "1e308"], "a positive number of seconds <= 86400, got 1e+308"),
        (["--max-time", "nan"], "a positive number of seconds <= 86400, got nan"),
        (["--backends", ","], "expected comma-separated backend names, got ','"),
        (["--backends", "native,native"], "given more than once: ['native']"),
        (["--case", "lstm:T=1,N=1,H=1000000"], "inputs alone take"),
        (["--json", "/nonexistent-dir/x.json"], "directory '/nonexistent-dir' does not exist"),
        (["--csv", "/"], "--csv '/': is a directory"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_unwritable_output_is_refused_before_measuring(tmp_path, capsys):
    # A results file under a regular file: nothing can create it (whoever runs this).
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exc:
        cli.main(["--case", "rnn:T=1,N=1,H=2", "--csv", str(blocker / "out.csv")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "measuring" not in err


def test_standard_suite_has_the_listed_shapes():
    got = {(c.cell, c.T, c.N, c.I, c.H) for c in get_suite("standard").cases}
    for shape in [(100, 64, 256, 256), (100, 1, 256, 256), (1000, 8, 64, 64)]:
        for cell in ("lstm", "gru", "rnn"):
            assert (cell, *shape) in got
    for shape in [(100, 64, 512, 512), (50, 16, 1024, 1024), (25, 16, 512, 512)]:
        assert ("lstm", *shape) in got
    assert ("lstm", 200, 32, 128, 128) in got and ("gru", 200, 32, 128, 128) in got


def test_deepbench_suite_fits_budget_and_records_scaling():
    cases = get_suite("deepbench").cases
    assert {c.cell for c in cases} == {"lstm", "gru", "rnn"}
    assert {c.meta["deepbench"] for c in cases} == {"train", "server", "device"}
    scaled = [c for c in cases if "T_orig" in c.meta]
    assert scaled, "the largest DeepBench shapes must be scaled"
    for c in cases:
        assert c.I == c.H
        assert c.flops(c.modes[0]) <= 1.1 * DEEPBENCH_GFLOP_BUDGET * 1e9
    for c in scaled:
        assert "scaled" in c.note and c.name.endswith("*")
        assert (c.T, c.N) != (c.meta["T_orig"], c.meta["N_orig"])
    # An unscaled DeepBench shape stays as published.
    assert any(c.cell == "lstm" and (c.H, c.N, c.T) == (512, 16, 25) for c in cases)
    assert len({c.label for c in cases}) == len(cases)


def test_scale_to_budget_prefers_T_then_N():
    c = Case("lstm", 1000, 64, 1024, 1024, modes=("training",))
    s = scale_to_budget(c, "training", 1.0)
    assert s.T == 8 and s.N < 64 and s.flops("training") <= 1.1e9
    assert "T 1000->8" in s.note and "N 64->" in s.note
    assert scale_to_budget(c, "training", 1e6) is c


def test_latency_and_quick_suites():
    for c in get_suite("latency").cases:
        assert c.N == 1 and "step" in c.modes and "inference" in c.modes
    assert any("step" in c.modes for c in get_suite("quick").cases)
    # short: both sides of the kernels' packing choices; a training call under 10 GFLOP
    # (a third of a second at 30 GFLOP/s) fits the suite's 1 s budget with repeats.
    short = get_suite("short").cases
    assert any(c.T * c.N <= 8 for c in short) and any(c.T * c.N > 16 for c in short)
    assert any(c.N == 1 and c.T >= 16 for c in short)
    assert all(c.flops("training") < 1e10 for c in short)


def test_flops_formula():
    c = Case("gru", 10, 2, 3, 4)
    fwd = 2 * 10 * 2 * 3 * 4 * (3 + 4)
    assert c.flops("inference") == fwd
    assert c.flops("training") == 3 * fwd
    assert c.flops("step") == fwd / 10
    p = Case("lstm", 10, 2, 3, 8, P=5)  # 4H(I+P) for the gates, HP for the projection
    assert p.flops("inference") == 2 * 10 * 2 * (4 * 8 * (3 + 5) + 8 * 5)


def test_projected_cases():
    c = parse_case_spec("lstm:T=7,N=3,I=5,H=8,P=4")
    assert (c.P, c.S) == (4, 4) and c.label == "lstm T=7,N=3,I=5,H=8,P=4"
    assert c.to_dict()["P"] == 4 and "P" not in Case("lstm", 1, 1, 1, 2).to_dict()
    assert c.small().P == 4
    for spec, match in (
        ("lstm:T=1,N=1,H=4,P=4", "0 <= P < H = 4"),
        ("gru:T=1,N=1,H=4,P=2", "only an lstm has a projection"),
        ("lstm:T=1,N=1,H=4,P=2,modes=step", "no step mode"),
        ("lstm:T=1,N=1,H=4,P=0", "P must be a positive integer"),
    ):
        with pytest.raises(ValueError, match=match):
            parse_case_spec(spec)


def test_peephole_cases(tmp_path):
    c = parse_case_spec("lstm:T=7,N=3,I=5,H=8,peephole=1,modes=inference+step")
    assert c.peephole and c.modes == ("inference", "step")
    assert c.label == "lstm T=7,N=3,I=5,H=8,peephole=1"
    assert parse_case_spec(c.cell + ":" + c.shape) == c.with_modes(("inference", "training"))
    assert c.to_dict()["peephole"] is True and "peephole" not in Case("lstm", 1, 1, 1, 2).to_dict()
    assert c.small().peephole
    assert not parse_case_spec("lstm:T=1,N=1,H=4,peephole=0").peephole
    both = parse_case_spec("lstm:T=1,N=1,H=4,P=2,peephole=true")
    assert (both.P, both.peephole, both.shape) == (2, True, "T=1,N=1,I=4,H=4,P=2,peephole=1")
    # 3 multiply-adds per unit and step on top of the gates; 3*H more input values
    plain = Case("lstm", 10, 2, 3, 8)
    peep = Case("lstm", 10, 2, 3, 8, peephole=True)
    assert peep.flops("inference") == plain.flops("inference") + 6 * 10 * 2 * 8
    assert peep.flops("training") == 3 * peep.flops("inference")
    assert peep.input_bytes(4) == plain.input_bytes(4) + 4 * 3 * 8
    f = tmp_path / "cases.toml"
    f.write_text('[[case]]\ncell = "lstm"\nT = 4\nN = 2\nH = 6\npeephole = true\n')
    (t,) = cases_from_toml(f)
    assert t.peephole and t.label == "lstm T=4,N=2,I=6,H=6,peephole=1"
    for spec, match in (
        ("gru:T=1,N=1,H=4,peephole=1", "only an lstm has peepholes, not gru"),
        ("lstm:T=1,N=1,H=4,peephole=yes", "peephole must be 1 or 0"),
        ("lstm:T=1,N=1,H=4,peephole=1,peephole=0", "peephole given twice"),
    ):
        with pytest.raises(ValueError, match=match):
            parse_case_spec(spec)
    for text, match in (
        ('cell = "rnn"\nT = 1\nN = 1\nH = 2\npeephole = true\n', "only an lstm has"),
        ('cell = "lstm"\nT = 1\nN = 1\nH = 2\npeephole = 1\n', "must be true or false"),
    ):
        f.write_text("[[case]]\n" + text)
        with pytest.raises(ValueError, match=match):
            cases_from_toml(f)


# --------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------


def _fake_results() -> Results:
    header = {"cpu": "Test CPU 9000", "threads": 2, "dtype": "float32", "baseline": "reference",
              "isa": "avx512", "targets_compiled": ["generic"], "targets_supported": ["generic"],
              "versions": {"numpy": "2.0"}, "gemm_peak_gflops": 100.0,
              "gemm_peak_source": "numpy.matmul", "gemm_peak_size": 64}  # fmt: skip
    res = Results(header)
    for k, case in enumerate([Case("lstm", 5, 2, 3, 4), Case("gru", 6, 1, 2, 2, note="scaled")]):
        for backend, status in (("reference", OK), ("bad", FAILED), ("slow", SKIPPED)):
            row = {"case": case.label, **case.to_dict(), "mode": "inference", "backend": backend,
                   "status": status, "reason": "" if status == OK else f"why {backend}",
                   "median_ms": 1.5 + k if status == OK else None, "min_ms": 1.0,
                   "gflops": 2.0, "peak_fraction": 0.02, "speedup": 1.0, "spread": 0.01,
                   "alloc_mib": 0.5, "rss_mib": None}  # fmt: skip
            res.rows.append(row)
    return res


def test_table_json_csv_contain_every_case_and_the_header():
    res = _fake_results()
    table = format_table(res)
    assert "Test CPU 9000" in table and "GEMM peak" in table and "avx512" in table
    for r in res.rows:
        assert r["case"] in table
    assert "FAILED CHECK [" in table and "why bad" in table and "* gru T=6" in table
    data = json.loads(to_json(res))
    assert data["header"]["cpu"] == "Test CPU 9000"
    assert [r["case"] for r in data["results"]] == [r["case"] for r in res.rows]
    text = to_csv(res)
    assert "# cpu: Test CPU 9000" in text
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    assert {r["case"] for r in rows} == {r["case"] for r in res.rows}
    assert rows[1]["status"] == FAILED and rows[1]["median_ms"] == ""


def test_plot_needs_matplotlib(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--case", "rnn:T=2,N=1,H=2", "--plot", "x.png", *FAST])
    assert exc.value.code == 2
    assert "fastrnn[plot]" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="no matplotlib")
def test_plot_is_written(tmp_path):
    from fastrnn.bench.report import write_plot

    out = tmp_path / "p.png"
    write_plot(_fake_results(), str(out))
    assert out.read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------------------
# Measurement and the correctness gate
# --------------------------------------------------------------------------------------


def test_time_callable_batches_short_calls():
    t = time_callable(lambda: None, repeat=3, min_time=0.002, max_time=0.05)
    assert t.samples >= 1 and t.calls_per_sample > 1
    assert 0 < t.min <= t.median <= t.max


class FakeClock:
    """A clock that only the fake callables move: each call logs its name and advances
    the time by its next cost, so timings are exact and call orders can be checked."""

    def __init__(self) -> None:
        self.now, self.log = 0.0, []

    def __call__(self) -> float:
        return self.now

    def fn(self, name, costs, fail_on_call=None):
        costs, calls = itertools.cycle(costs), itertools.count(1)

        def call():
            if next(calls) == fail_on_call:
                raise RuntimeError(f"{name} boom")
            self.log.append(name)
            self.now += next(costs)

        return call


# Calls of 1 s or more, samples of at least 0.5 s: one call per sample, one log entry each.
FAKE = {"repeat": 3, "min_time": 0.5, "stable_spread": 0.03}
NOISY = (1.0, 2.0, 3.0)  # never 3 samples within 3 %


def test_time_interleaved_alternates_and_rotates():
    clock = FakeClock()
    fns = {k: clock.fn(k, [1.0]) for k in "abc"}
    got = time_interleaved(fns, max_time=100, clock=clock, **FAKE)
    warm_up, rounds = clock.log[:3], clock.log[3:]
    assert warm_up == ["a", "b", "c"]
    assert rounds == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert list(got) == ["a", "b", "c"]
    for t in got.values():
        assert (t.samples, t.calls_per_sample, t.median, t.spread) == (3, 1, 1.0, 0.0)


def test_time_interleaved_stops_a_fn_once_stable():
    clock = FakeClock()
    fns = {"steady": clock.fn("steady", [1.0]), "noisy": clock.fn("noisy", NOISY)}
    got = time_interleaved(fns, max_time=100, clock=clock, **FAKE)
    assert got["steady"].samples == 3
    assert got["noisy"].samples == 4 * 3  # the cap
    last_steady = max(i for i, name in enumerate(clock.log) if name == "steady")
    # Rounds: steady noisy | noisy steady | steady noisy, then noisy alone.
    assert clock.log[last_steady + 1 :] == ["noisy"] * (12 - 2)


def test_time_interleaved_respects_the_budget():
    clock = FakeClock()
    fns = {k: clock.fn(k, NOISY) for k in "ab"}
    got = time_interleaved(fns, max_time=2.5, clock=clock, **FAKE)
    sampled = sum(sum(t.per_call) for t in got.values())
    assert 5.0 <= sampled <= 5.0 + max(NOISY)  # budget 2 x 2.5 s, overrun by one sample
    assert all(t.samples < 4 * 3 for t in got.values())
    # A budget spent by the first sample still leaves every fn one sample.
    clock = FakeClock()
    fns = {k: clock.fn(k, NOISY) for k in "abc"}
    got = time_interleaved(fns, max_time=0.01, clock=clock, **FAKE)
    assert [t.samples for t in got.values()] == [1, 1, 1]


def test_time_interleaved_drops_a_fn_that_raises():
    clock = FakeClock()
    fns = {
        "ok": clock.fn("ok", NOISY),
        "late": clock.fn("late", [1.0], fail_on_call=3),  # in its second sample
        "early": clock.fn("early", [1.0], fail_on_call=1),  # in the warm-up
    }
    errors = {}
    got = time_interleaved(fns, max_time=100, clock=clock, errors=errors, **FAKE)
    assert list(got) == ["ok"] and got["ok"].samples == 4 * 3
    assert sorted(errors) == ["early", "late"] and "late boom" in str(errors["late"])
    assert clock.log.count("late") == 2
    with pytest.raises(RuntimeError, match="late boom"):  # without errors=, it propagates
        clock = FakeClock()
        time_interleaved({"late": clock.fn("late", [1.0], fail_on_call=3)}, clock=clock, **FAKE)


def test_time_interleaved_settles_between_different_fns_outside_the_budget():
    clock = FakeClock()
    slept = []

    def sleep(seconds):
        slept.append(len(clock.log))  # where in the call log the pause fell
        clock.now += seconds  # a pause the budget must not count

    fns = {"a": clock.fn("a", [1.0]), "b": clock.fn("b", [1.0])}
    time_interleaved(fns, max_time=100, clock=clock, settle=7.0, sleep=sleep, **FAKE)
    # Warm-ups a b, then rounds a b | b a | a b: a pause before every sample that follows
    # the other fn's call, none between two calls of the same fn.
    assert clock.log == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert slept == [2, 3, 5, 7]
    clock, slept = FakeClock(), []
    fns = {k: clock.fn(k, NOISY) for k in "ab"}
    got = time_interleaved(fns, max_time=2.5, clock=clock, settle=7.0, sleep=sleep, **FAKE)
    sampled = sum(sum(t.per_call) for t in got.values())
    assert 5.0 <= sampled <= 5.0 + max(NOISY)
    assert len(slept) >= 2
    # One fn: nothing to settle from.
    clock, slept = FakeClock(), []
    time_interleaved({"a": clock.fn("a", [1.0])}, clock=clock, settle=7.0, sleep=sleep, **FAKE)
    assert slept == []


class Logged(FunctionalBackend):
    """A functional backend whose prepared callable logs its name on every call."""

    def __init__(self, which: str, log: list) -> None:
        super().__init__(which)
        self.log = log

    def prepare(self, case, mode, p):
        fn = super().prepare(case, mode, p)

        def logged():
            self.log.append(self.name)
            return fn()

        return logged


def test_reference_is_timed_alone_after_the_interleaved_backends():
    log: list[str] = []
    backends = [Logged("reference", log), Logged("native", log)]
    assert [b.interleave for b in backends] == [False, True]
    opts = Options(repeat=2, min_time=0.001, max_time=0.05, measure_memory=False, settle=0.0)
    res = run_benchmarks([Case("rnn", 2, 1, 3, 3)], backends, opts, {})
    assert all(r["status"] == OK for r in res.rows)
    # Per mode: every native call (warm-up and samples), then every reference call.
    runs = [name for name, _ in itertools.groupby(log)]
    assert runs == ["native", "reference", "native", "reference"]


def test_memory_peaks_see_a_numpy_allocation():
    from fastrnn.bench.measure import memory_peaks

    alloc, rss = memory_peaks(lambda: np.ones(2**20).sum())  # 8 MiB, touched
    assert 7.9 <= alloc < 20
    if rss is not None:  # Linux with /proc/self/clear_refs
        assert rss >= 4
    alloc, _ = memory_peaks(lambda: None, traced=False)
    assert alloc is None


def test_gemm_peak_falls_back_to_numpy_and_says_so(monkeypatch):
    import fastrnn.ops
    from fastrnn.bench.measure import gemm_peak

    def not_built(a, b):
        raise NotImplementedError("not yet")

    monkeypatch.setattr(fastrnn.ops, "matmul", not_built)
    peak = gemm_peak(64, repeat=1)
    assert peak.source == "numpy.matmul" and "NotImplementedError" in peak.note
    assert peak.gflops > 0
    monkeypatch.setattr(fastrnn.ops, "matmul", lambda a, b: np.matmul(a, b))
    peak = gemm_peak(64, repeat=1)
    assert peak.source == "fastrnn.ops.matmul" and peak.numpy_gflops > 0
    monkeypatch.setattr(fastrnn.ops, "matmul", lambda a, b: np.matmul(a, b) + 1)
    peak = gemm_peak(64, repeat=1)
    assert peak.source == "numpy.matmul" and "wrong" in peak.note


def test_gemm_peak_times_fastrnn_before_numpy(monkeypatch):
    """NumPy's BLAS workers keep spinning after a product: fastrnn's GEMM is timed first."""
    import fastrnn.ops
    from fastrnn.bench import measure

    calls = []
    monkeypatch.setattr(fastrnn.ops, "matmul", lambda a, b: calls.append("fastrnn") or a @ b)
    real = np.matmul
    monkeypatch.setattr(measure.np, "matmul", lambda a, b: calls.append("numpy") or real(a, b))
    measure.gemm_peak(8, repeat=2)
    assert calls.count("fastrnn") >= 3 and calls.count("numpy") == 3
    assert "fastrnn" not in calls[calls.index("numpy") :]


def test_compare_flags_shape_nan_and_error():
    want = {"y": np.ones((2, 3)), "h_n": np.ones(3)}
    assert compare({"y": np.ones((2, 3)), "h_n": np.ones(3)}, want, 1e-6).ok
    assert "missing" in compare({"y": np.ones((2, 3))}, want, 1e-6).detail
    assert "shape" in compare({"y": np.ones((3, 2)), "h_n": np.ones(3)}, want, 1e-6).detail
    bad = {"y": np.full((2, 3), np.nan), "h_n": np.ones(3)}
    assert "NaN" in compare(bad, want, 1e-6).detail
    off = compare({"y": np.ones((2, 3)) + 1e-3, "h_n": np.ones(3)}, want, 1e-6)
    assert not off.ok and off.max_err == pytest.approx(1e-3)


class WrongBackend(FunctionalBackend):
    """The reference with a deliberate error: outputs (inference/step) or one gradient."""

    def __init__(self, name: str, where: str) -> None:
        super().__init__("reference")
        self.name, self.where, self.prepared = name, where, 0

    def compute(self, case, mode, p):
        out = super().compute(case, mode, p)
        if self.where == "y":
            out["y"] = out["y"] * 1.1
        elif mode == "training":
            out["d_weight_hh"] = out["d_weight_hh"] * 1.1
        return out

    def prepare(self, case, mode, p):
        self.prepared += 1
        return super().prepare(case, mode, p)


def test_wrong_backend_is_flagged_not_timed_and_exit_code_nonzero(tmp_path, capsys):
    wrong_out, wrong_grad = WrongBackend("wrong-y", "y"), WrongBackend("wrong-grad", "grad")
    registry = {**all_backends(), "wrong-y": wrong_out, "wrong-grad": wrong_grad}
    out = tmp_path / "r.json"
    code = cli.main(
        ["--case", "lstm:T=3,N=2,I=3,H=4", "--modes", "inference,training",
         "--backends", "reference,wrong-y,wrong-grad", "--json", str(out), *FAST],
        registry=registry,
    )  # fmt: skip
    assert code == 1
    assert wrong_out.prepared == 0
    rows = {(r["backend"], r["mode"]): r for r in json.loads(out.read_text())["results"]}
    assert rows["wrong-y", "inference"]["status"] == FAILED
    assert rows["wrong-y", "inference"]["median_ms"] is None
    assert "d_weight_hh" in rows["wrong-grad", "training"]["reason"]
    assert rows["wrong-grad", "inference"]["status"] == OK  # its outputs are right
    assert wrong_grad.prepared == 1  # timed only where it passed
    assert rows["reference", "training"]["status"] == OK
    assert "FAILED CHECK" in capsys.readouterr().out


class RaisingBackend(FunctionalBackend):
    def __init__(self, name: str, exc: type[Exception]) -> None:
        super().__init__("reference")
        self.name, self.exc = name, exc

    def compute(self, case, mode, p):
        raise self.exc("boom")


@pytest.mark.parametrize(
    "exc, status, code", [(NotImplementedError, "skipped", 0), (RuntimeError, "error", 1)]
)
def test_backend_exceptions(exc, status, code, tmp_path):
    registry = {**all_backends(), "raiser": RaisingBackend("raiser", exc)}
    out = tmp_path / "r.json"
    argv = ["--case", "rnn:T=2,N=1,H=3", "--modes", "inference", "--json", str(out), *FAST]
    assert cli.main([*argv, "--backends", "reference,raiser"], registry=registry) == code
    rows = {r["backend"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["raiser"]["status"] == status and "boom" in rows["raiser"]["reason"]
    assert rows["reference"]["status"] == OK


class FailsWhenTimed(FunctionalBackend):
    """Passes the check, but its prepared callable raises from its second call on."""

    def __init__(self, name: str) -> None:
        super().__init__("reference")
        self.name = name

    def prepare(self, case, mode, p):
        fn, calls = super().prepare(case, mode, p), itertools.count(1)

        def flaky():
            if next(calls) >= 2:
                raise RuntimeError("boom in timing")
            return fn()

        return flaky


def test_backend_failing_while_timed_gets_an_error_row_and_the_others_are_timed():
    backends = [
        FunctionalBackend("reference"),
        FailsWhenTimed("flaky"),
        FunctionalBackend("native"),
    ]
    progress = io.StringIO()
    opts = Options(repeat=2, min_time=0.001, max_time=0.05, baseline="reference")
    res = run_benchmarks([Case("rnn", 2, 1, 3, 3)], backends, opts, {}, progress=progress)
    assert [(r["mode"], r["backend"]) for r in res.rows] == [
        (m, b) for m in ("inference", "training") for b in ("reference", "flaky", "native")
    ]
    assert len({tuple(r) for r in res.rows}) == 1  # same keys, same order, in every row
    for r in res.rows:
        if r["backend"] == "flaky":
            assert r["status"] == ERROR and "boom in timing" in r["reason"]
            assert r["median_ms"] is None
        else:
            assert r["status"] == OK and r["median_ms"] > 0 and r["samples"] >= 1
            assert r["speedup"] > 0
    text = progress.getvalue()
    assert "[2/6] rnn T=2" in text and "flaky: ERROR RuntimeError: boom in timing" in text
    assert "[3/6]" in text and "GFLOP/s" in text
    assert res.failed


def test_reference_is_skipped_when_too_slow():
    res = run_benchmarks(
        [Case("lstm", 4, 2, 3, 5)],
        [FunctionalBackend("reference")],
        Options(reference_max_seconds=1e-9, max_time=0.01),
        {},
        progress=None,
    )
    assert [r["status"] for r in res.rows] == [SKIPPED, SKIPPED]
    assert "reference too slow" in res.rows[0]["reason"] and not res.failed


# --------------------------------------------------------------------------------------
# Backend adapters agree with the reference; a tiny run end to end
# --------------------------------------------------------------------------------------

ADAPTERS = [
    pytest.param(TorchBackend, marks=pytest.mark.skipif(not HAVE_TORCH, reason="no torch")),
    pytest.param(JaxBackend, marks=pytest.mark.skipif(not HAVE_JAX, reason="no jax")),
]


@pytest.mark.parametrize("backend_cls", ADAPTERS)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_peer_backends_match_reference(backend_cls, cell):
    b = backend_cls()
    for mode in ("inference", "training", "step"):
        case = Case(cell, 3, 2, 3, 4)
        p = make_params(case, "float32", seed=3)
        got = b.compute(case, mode, p)
        chk = compare(got, reference_outputs(case, mode, p), 2e-3)
        assert chk.ok, (mode, chk.detail)
        fn = b.prepare(case, mode, p)
        fn()
        fn()


def test_fastrnn_torch_backend_absent_or_used(monkeypatch):
    """Absent while fastrnn.torch does not exist; used (here faked with torch.nn, no
    cell classes, so step mode runs the sequence module with T = 1) when it does."""
    from fastrnn.bench.backends import FastrnnTorchBackend

    if importlib.util.find_spec("fastrnn.torch") is None:
        _, status = cli.choose_backends(["reference", "fastrnn.torch"], all_backends())
        assert status["fastrnn.torch"].startswith("not available")
    if not HAVE_TORCH:
        pytest.skip("no torch")
    import types

    import torch

    fake = types.ModuleType("fastrnn.torch")
    fake.__spec__ = importlib.machinery.ModuleSpec("fastrnn.torch", None)
    fake.LSTM, fake.GRU, fake.RNN = torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN
    monkeypatch.setitem(sys.modules, "fastrnn.torch", fake)
    b = FastrnnTorchBackend()
    assert b.unavailable() is None
    case = Case("lstm", 3, 2, 3, 4)
    p = make_params(case, "float32", seed=5)
    for mode in ("inference", "training", "step"):
        chk = compare(b.compute(case, mode, p), reference_outputs(case, mode, p), 2e-3)
        assert chk.ok, (mode, chk.detail)
        b.prepare(case, mode, p)()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_packed_backend_matches_native_bitwise(cell):
    # native-packed times the same computation as native, with the weights laid out before.
    from fastrnn.bench.backends import FunctionalBackend, PackedNativeBackend

    for mode in ("inference", "training", "step"):
        case = Case(cell, 5, 3, 7, 37)
        p = make_params(case, "float32", seed=4)
        got = PackedNativeBackend().compute(case, mode, p)
        want = FunctionalBackend("native").compute(case, mode, p)
        assert sorted(got) == sorted(want)
        for k, v in want.items():
            np.testing.assert_array_equal(got[k], v, err_msg=f"{mode} {k}")
        PackedNativeBackend().prepare(case, mode, p)()


def test_projected_case_on_every_backend(capsys):
    # Every backend with a projection is checked against the reference and timed; JAX,
    # which has none, is skipped with the reason.
    names = ["reference", "native", "native-packed"]
    if HAVE_TORCH:
        names += ["torch", "fastrnn.torch"]
    if HAVE_JAX:
        names.append("jax")
    argv = ["--case", "lstm:T=4,N=3,I=5,H=9,P=4", "--backends", ",".join(names)]
    code = cli.main([*argv, "--threads", "1", *FAST])
    table = capsys.readouterr().out
    assert code == 0, table
    rows = [line for line in table.splitlines() if line.startswith("lstm T=4,N=3,I=5,H=9,P=4")]
    assert len(rows) == 2 * len(names), table
    for line in rows:
        status = line.split()[-2] if line.split()[-1].startswith("[") else line.split()[-1]
        assert status == ("skipped" if " jax " in line else "ok"), line


@pytest.mark.parametrize(
    "spec", ["lstm:T=4,N=3,I=5,H=9,peephole=1", "lstm:T=4,N=3,I=5,H=9,P=4,peephole=1"]
)
def test_peephole_case_on_every_backend(spec, tmp_path, capsys):
    # The fastrnn backends are checked against the reference (d_weight_peephole included)
    # and timed in every mode; PyTorch and JAX, which have no peepholes, are skipped.
    case = parse_case_spec(spec)
    modes = ("inference", "training") if case.P else ("inference", "training", "step")
    p = make_params(case.small(), "float32", seed=1)
    want = reference_outputs(case.small(), "training", p)
    assert want["d_weight_peephole"].shape == (3 * 9,)
    got = FunctionalBackend("native").compute(case.small(), "training", p)
    assert compare(got, want, 1e-4).ok
    got["d_weight_peephole"] = got["d_weight_peephole"] * 1.1
    assert "d_weight_peephole" in compare(got, want, 1e-4).detail
    names = ["reference", "native", "native-packed"]
    fastrnn_names = set(names)
    if HAVE_TORCH:
        names += ["torch", "fastrnn.torch"]
    if HAVE_JAX:
        names.append("jax")
    out = tmp_path / "r.json"
    argv = ["--case", spec, "--modes", ",".join(modes), "--backends", ",".join(names)]
    code = cli.main([*argv, "--threads", "1", "--json", str(out), *FAST])
    table = capsys.readouterr().out
    assert code == 0, table
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == len(modes) * len(names)
    assert {r["case"] for r in rows} == {case.label} and all(r["peephole"] for r in rows)
    for r in rows:
        if r["backend"] in fastrnn_names:
            assert r["status"] == OK and r["median_ms"] > 0, r
        else:
            assert r["status"] == SKIPPED and "not implemented: " in r["reason"], r
            assert "no peephole" in r["reason"] or "no LSTM projection" in r["reason"], r
    assert sum(line.startswith(case.label) for line in table.splitlines()) == len(rows)


def test_packed_backend_matches_native_bitwise_with_a_projection():
    from fastrnn.bench.backends import FunctionalBackend, PackedNativeBackend

    for mode in ("inference", "training"):
        case = Case("lstm", 5, 3, 7, 37, P=11)
        p = make_params(case, "float32", seed=4)
        got = PackedNativeBackend().compute(case, mode, p)
        want = FunctionalBackend("native").compute(case, mode, p)
        assert sorted(got) == sorted(want) and want["y"].shape == (5, 3, 11)
        for k, v in want.items():
            np.testing.assert_array_equal(got[k], v, err_msg=f"{mode} {k}")


def test_tiny_run_end_to_end(tmp_path, capsys):
    names = ["reference", "native", "native-packed"]
    if HAVE_TORCH and importlib.util.find_spec("fastrnn.torch") is not None:
        names.append("fastrnn.torch")
    backends = ",".join(names)
    specs = ["lstm:T=3,N=2,I=3,H=4", "gru:T=4,N=1,I=2,H=3", "rnn:T=2,N=3,I=5,H=2"]
    j, c = tmp_path / "r.json", tmp_path / "r.csv"
    argv = [x for s in specs for x in ("--case", s)]
    argv += ["--modes", "inference,training,step", "--backends", backends, "--threads", "1"]
    argv += ["--isa", "generic"]
    import fastrnn

    threads_before, isa_before = fastrnn.get_num_threads(), fastrnn.get_isa()
    code = cli.main([*argv, "--json", str(j), "--csv", str(c), *FAST])
    table = capsys.readouterr().out
    assert code == 0, table
    assert fastrnn.get_num_threads() == threads_before and fastrnn.get_isa() == isa_before
    data = json.loads(j.read_text())
    labels = {parse_case_spec(s).label for s in specs}
    assert {r["case"] for r in data["results"]} == labels
    n_backends = len(backends.split(","))
    assert len(data["results"]) == 3 * 3 * n_backends
    for r in data["results"]:
        assert r["status"] == OK and r["median_ms"] > 0 and r["gflops"] > 0
    for label in labels:
        assert label in table and label in c.read_text()
    h = data["header"]
    assert h["command"].startswith("fastrnn-bench --case lstm:T=3")
    assert h["threads"] == 1 and h["isa"] == "generic" and h["cpu"] and h["versions"]["numpy"]
    assert h["gemm_peak_gflops"] > 0 and h["gemm_peak_source"]


def test_module_help_and_list():
    for args in (["--help"], ["--list"]):
        proc = subprocess.run(
            [sys.executable, "-m", "fastrnn.bench", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert ("usage: fastrnn-bench" in proc.stdout) == (args == ["--help"])
    assert "deepbench" in proc.stdout and "db-train" in proc.stdout
