"""benchmarks/bench_onednn.py: its parsing, its check, and (with oneDNN installed) a run."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_onednn.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_onednn", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_onednn"] = module
    spec.loader.exec_module(module)
    return module


bo = _load()
PARTS = ("forward", "backward")


def test_parse_cases():
    assert bo.parse_cases("lstm:100,64,256,128; gru:5,1,3,7;") == [
        ("lstm", 100, 64, 256, 128),
        ("gru", 5, 1, 3, 7),
    ]
    for bad in ("lstmx:1,2,3,4", "rnn:1,2,3", "gru:1,0,3,4"):
        with pytest.raises(SystemExit, match="CELL:T,N,I,H"):
            bo.parse_cases(bad)


def test_parse_times():
    assert bo.parse_times("3.5 1.25\n\n4.0 4.0\n") == [(3.5, 1.25), (4.0, 4.0)]
    with pytest.raises(ValueError):
        bo.parse_times("3.5\n")  # a driver from before the forward column


@pytest.mark.parametrize("training", [False, True])
def test_time_fastrnn_times_the_forward_within_the_run(training):
    a = bo.make_inputs("lstm", 5, 3, 4, 6, seed=3)
    packed = bo.F.pack_weights("lstm", a["weight_ih"], a["weight_hh"])
    for p in (None, packed):
        total, forward = bo.time_fastrnn("lstm", a, training, p)
        assert 0 < forward <= total


def test_split_line_names_both_parts_and_their_ratios():
    r = {"fastrnn_forward_ms": 2.0, "fastrnn_packed_forward_ms": 1.0, "onednn_forward_ms": 3.0}
    r |= {"fastrnn_backward_ms": 4.0, "fastrnn_packed_backward_ms": 5.0, "onednn_backward_ms": 2.0}
    line = bo.split_line(r)
    assert "forward 2.000 / packed 1.000 / oneDNN 3.000 ms (1.50x / 3.00x)" in line
    assert "backward 4.000 / packed 5.000 / oneDNN 2.000 ms (0.50x / 0.40x)" in line


def test_missing_onednn_says_how_to_install(tmp_path):
    with pytest.raises(SystemExit, match="pip install onednn-cpu-gomp onednn-devel-cpu-gomp"):
        bo.find_dnnl(str(tmp_path))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("training", [False, True])
def test_arrays_match_the_driver_order(cell, training):
    # The driver's output file is split by the shapes of fastrnn's arrays, in names() order:
    # one array per name, each of the shape that name has.
    T, N, I, H = 3, 2, 5, 4
    a = bo.make_inputs(cell, T, N, I, H, seed=1)
    arrays = bo.run_fastrnn(cell, a, training, "native")
    shapes = {
        "y": (T, N, H),
        "h_n": (N, H),
        "c_n": (N, H),
        "dx": (T, N, I),
        "dh0": (N, H),
        "dc0": (N, H),
        "dw_ih": (bo.CELLS[cell] * H, I),
        "dw_hh": (bo.CELLS[cell] * H, H),
        "db_ih": (bo.CELLS[cell] * H,),
        "db_hh": (bo.CELLS[cell] * H,),
    }
    assert [x.shape for x in arrays] == [shapes[n] for n in bo.names(cell, training)]


def test_check_rejects_a_wrong_gradient():
    cell, a = "gru", bo.make_inputs("gru", 4, 3, 5, 6, seed=2)
    good = bo.run_fastrnn(cell, a, True, "native")
    assert bo.check(cell, a, True, {"fastrnn": good}) < 1e-4
    bad = [x.copy() for x in good]
    bad[bo.names(cell, True).index("dw_hh")][1, 2] += 0.1
    with pytest.raises(AssertionError, match="dw_hh"):
        bo.check(cell, a, True, {"onednn": bad})


def _onednn_installed() -> bool:
    try:
        bo.find_dnnl(None)
    except SystemExit:
        return False
    return shutil.which("c++") is not None or shutil.which("g++") is not None


@pytest.mark.skipif(not _onednn_installed(), reason="oneDNN 3.x (onednn-devel-cpu-gomp) not found")
def test_quick_run_checks_and_times(tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["--cases", "lstm:3,2,5,4;gru:2,3,4,5;rnn:3,1,2,3", "--repeat", "1", "--rounds", "1"]
    assert bo.main([*args, "--json", str(out)]) == 0
    import json

    rows = json.loads(out.read_text())
    assert len(rows) == 6 and {r["mode"] for r in rows} == {"inference", "training"}
    for r in rows:
        assert r["max_rel_err"] < 1e-3
        assert r["fastrnn_ms"] > 0 and r["onednn_ms"] > 0
        assert np.isclose(r["speedup"], r["onednn_ms"] / r["fastrnn_ms"])
        assert np.isclose(r["speedup_packed"], r["onednn_ms"] / r["fastrnn_packed_ms"])
        split = [f"{k}_{p}_ms" for k in ("fastrnn", "fastrnn_packed", "onednn") for p in PARTS]
        if r["mode"] == "training":
            assert all(r[k] > 0 for k in split)
        else:
            assert not any(k in r for k in split)
    assert "oneDNN" in capsys.readouterr().out
