from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fastrnn


def test_build_info_reports_real_values():
    info = fastrnn.build_info()
    assert info["version"] == fastrnn.__version__ != "unknown"
    assert "generic" in info["targets_compiled"]
    assert info["isa"] in info["targets_supported"]
    assert set(info["targets_supported"]) <= set(info["targets_compiled"])
    assert info["num_threads"] >= 1
    assert info["available_cpus"] >= 1
    assert isinstance(info["openmp"], bool)
    assert info["compiler"] and info["compiler"] != "unknown"
    for name in info["targets_compiled"]:
        assert info["target_details"][name]["float_lanes"] >= 1


def test_set_num_threads_round_trip():
    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(1)
        assert fastrnn.get_num_threads() == 1
        assert fastrnn.build_info()["num_threads"] == 1
    finally:
        fastrnn.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -3, 4097, 2**31, 2**40, np.int64(-1)])
def test_set_num_threads_rejects_out_of_range(bad):
    before = fastrnn.get_num_threads()
    with pytest.raises(ValueError, match=r"n must be in \[1, 4096\], got " + str(int(bad))):
        fastrnn.set_num_threads(bad)
    assert fastrnn.get_num_threads() == before


def test_core_set_num_threads_checks_its_range_too():
    from fastrnn import _core

    for bad in (0, 4097):
        with pytest.raises(ValueError, match=r"n must be in \[1, 4096\]"):
            _core.set_num_threads(bad)


@pytest.mark.parametrize("bad", [2.0, True, np.bool_(True), "2", None])
def test_set_num_threads_rejects_non_int(bad):
    with pytest.raises(TypeError, match="must be an int"):
        fastrnn.set_num_threads(bad)


def test_set_num_threads_takes_numpy_integers():
    before = fastrnn.get_num_threads()
    try:
        for n in (np.int64(1), np.uint8(2), 4096):
            fastrnn.set_num_threads(n)
            assert fastrnn.get_num_threads() == int(n)
    finally:
        fastrnn.set_num_threads(before)


def test_set_isa_rejects_unknown():
    with pytest.raises(ValueError, match="unknown SIMD target"):
        fastrnn.set_isa("sse9")


def test_every_supported_isa_can_be_selected(isa):
    assert fastrnn.get_isa() == isa
    assert fastrnn.build_info()["isa"] == isa


def _run(env_extra: dict[str, str], code: str) -> str:
    env = dict(os.environ, **env_extra)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_env_forces_lower_isa():
    got = _run({"FASTRNN_ISA": "generic"}, "import fastrnn; print(fastrnn.get_isa())")
    assert got == "generic"


def test_env_unknown_isa_falls_back_to_best_with_reason():
    code = (
        "import fastrnn; i = fastrnn.build_info(); "
        "print(i['isa'] == i['isa_best'], i['isa_reason'])"
    )
    got = _run({"FASTRNN_ISA": "bogus"}, code)
    assert got.startswith("True") and "bogus" in got


def test_env_sets_thread_count():
    code = "import fastrnn; print(fastrnn.get_num_threads())"
    assert _run({"FASTRNN_NUM_THREADS": "1"}, code) == "1"


def test_self_check_runs():
    out = subprocess.run(
        [sys.executable, "-m", "fastrnn"], capture_output=True, text=True, check=True
    ).stdout
    assert "SIMD target in use" in out
