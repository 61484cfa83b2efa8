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


def _run_full(env_extra: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter with ``env_extra`` added to the environment."""
    env = dict(os.environ, **env_extra)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )


def _run(env_extra: dict[str, str], code: str) -> str:
    return _run_full(env_extra, code).stdout.strip()


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


@pytest.mark.parametrize(
    "bad", ["0", "-1", "4097", "abc", "", "2 ", "1.5", "0x2", "\u0663", "\u00a03"]
)  # the last two: Arabic-Indic 3 and a no-break space, which the kernels' strtol refuses
def test_env_bad_thread_count_warns_and_uses_the_cpus(bad):
    # These fell back to the CPU count without a word.
    code = "import fastrnn as f; print(f.get_num_threads(), f.build_info()['available_cpus'])"
    done = _run_full({"FASTRNN_NUM_THREADS": bad}, code)
    used, cpus = done.stdout.split()
    assert used == cpus
    assert f"FASTRNN_NUM_THREADS={bad!r} is not an integer in [1, 4096]" in done.stderr


@pytest.mark.parametrize(("text", "want"), [(" 3", "3"), ("+2", "2"), ("4096", "4096")])
def test_env_thread_counts_the_kernels_take_do_not_warn(text, want):
    code = "import fastrnn; print(fastrnn.get_num_threads())"
    done = _run_full({"FASTRNN_NUM_THREADS": text}, code)
    assert done.stdout.strip() == want and "FASTRNN_NUM_THREADS" not in done.stderr


def test_env_isa_in_any_case_and_a_bad_one_warns():
    got = _run_full({"FASTRNN_ISA": "GENERIC"}, "import fastrnn; print(fastrnn.get_isa())")
    assert got.stdout.strip() == "generic" and "FASTRNN_ISA" not in got.stderr
    bad = _run_full({"FASTRNN_ISA": "sse9"}, "import fastrnn")
    assert "FASTRNN_ISA=sse9 is not a target (generic, avx2, avx512)" in bad.stderr


def test_self_check_runs():
    out = subprocess.run(
        [sys.executable, "-m", "fastrnn"], capture_output=True, text=True, check=True
    ).stdout
    assert "SIMD target in use" in out


_FORK_SCRIPT = r"""
import os, sys, time, warnings
import numpy as np
import fastrnn
from fastrnn import functional as F

rng = np.random.default_rng(3)
x = rng.standard_normal((12, 9, 40)).astype(np.float32)
h0 = np.zeros((9, 48), np.float32)
w_ih = (0.1 * rng.standard_normal((192, 40))).astype(np.float32)
w_hh = (0.1 * rng.standard_normal((192, 48))).astype(np.float32)

def work():
    y, _, tape = F.lstm(x, h0, h0, w_ih, w_hh, training=True)
    g = F.lstm_backward(tape, y)
    return np.concatenate([y.ravel(), g["x"].ravel(), g["weight_hh"].ravel()])

fastrnn.set_num_threads(2)
early = os.fork()  # before any kernel ran here: another library may share the runtime
if early == 0:
    os._exit(0 if fastrnn.get_num_threads() == 1 and fastrnn.build_info()["fork_limited"] else 1)
if os.waitstatus_to_exitcode(os.waitpid(early, 0)[1]) != 0:
    print("early child not limited")
    sys.exit(1)
want = work()  # the parent's OpenMP threads now exist
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    code = 1
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fastrnn.set_num_threads(2)  # cannot be honoured: warns, stays at one thread
        checks = [
            fastrnn.get_num_threads() == 1,
            fastrnn.build_info()["fork_limited"],
            any("forked" in str(w.message) for w in caught),
            np.array_equal(work(), want),
        ]
        os.write(write, repr(checks).encode())
        code = 0
    finally:
        os._exit(code)
os.close(write)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)
    print("child hung")
    sys.exit(1)
print("child", os.read(read, 100).decode(), os.waitstatus_to_exitcode(status))
print("parent", fastrnn.build_info()["fork_limited"], fastrnn.get_num_threads())
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork: POSIX only")
def test_a_forked_child_runs_the_kernels_on_one_thread():
    # GNU OpenMP cannot start its threads again after fork: a child forked after threaded
    # kernels waited forever in its first parallel region (multiprocessing's default start
    # method on Linux, DataLoader workers). It must finish, with the parent's bits. In a
    # fresh interpreter: this one may hold other libraries' threads (JAX warns on fork).
    done = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.split("\n")
    assert lines[0] == "child [True, True, True, True] 0", done.stdout + done.stderr
    assert lines[1] == "parent False 2"  # the parent keeps its threads
