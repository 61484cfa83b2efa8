"""SIMD target selection and the vector layer's memory safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastrnn
from fastrnn import ops

INFO = fastrnn.build_info()
SUPPORTED = list(INFO["targets_supported"])
UNSUPPORTED = [t for t in INFO["targets_compiled"] if t not in SUPPORTED]
LANES = {"generic": (4, 2), "avx2": (8, 4), "avx512": (16, 8)}


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("target", SUPPORTED)
def test_env_forces_each_supported_target(target):
    code = """
        import json, numpy as np, fastrnn
        from fastrnn import ops
        i = fastrnn.build_info()
        y = ops.tanh(np.linspace(-3, 3, 37))
        print(json.dumps({"isa": i["isa"], "reason": i["isa_reason"], "y": y.tolist()}))
    """
    p = _python(code, FASTRNN_ISA=target)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["isa"] == target
    assert "FASTRNN_ISA" in got["reason"]
    # The forced target computes the same as selecting it in this process.
    before = fastrnn.get_isa()
    try:
        fastrnn.set_isa(target)
        np.testing.assert_array_equal(got["y"], ops.tanh(np.linspace(-3, 3, 37)))
    finally:
        fastrnn.set_isa(before)


def test_target_lanes_reported():
    for name, details in INFO["target_details"].items():
        if name in LANES:
            assert (details["float_lanes"], details["double_lanes"]) == LANES[name]


@pytest.mark.skipif(not UNSUPPORTED, reason="this CPU supports every compiled target")
@pytest.mark.parametrize("target", UNSUPPORTED or ["none"])
def test_unsupported_target_is_reported_not_used(target):
    p = _python(
        "import fastrnn; i = fastrnn.build_info(); print(i['isa']); print(i['isa_reason'])",
        FASTRNN_ISA=target,
    )
    assert p.returncode == 0, p.stderr
    isa, reason = p.stdout.strip().splitlines()
    assert isa != target and isa == INFO["isa_best"]
    assert target in reason and "not supported" in reason
    with pytest.raises(ValueError, match="not supported"):
        fastrnn.set_isa(target)


# Inputs and outputs placed so that their last element ends a page followed by
# an inaccessible page: any read or write past the end kills the process.
_GUARD_PAGE_SCRIPT = """
import ctypes, mmap, sys
import numpy as np
import fastrnn
from fastrnn import ops

PAGE = mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

def guarded(nbytes):
    pages = (nbytes + PAGE - 1) // PAGE + 1
    m = mmap.mmap(-1, pages * PAGE)
    buf = np.frombuffer(m, dtype=np.uint8)
    base = buf.ctypes.data
    if libc.mprotect(base + (pages - 1) * PAGE, PAGE, 0) != 0:
        raise OSError(ctypes.get_errno(), "mprotect")
    end = (pages - 1) * PAGE
    return m, buf, end

keep = []
def at_page_end(n, dtype):
    item = np.dtype(dtype).itemsize
    m, buf, end = guarded(max(n * item, 1))
    keep.append(m)
    return buf[end - n * item : end].view(dtype)

rng = np.random.default_rng(0)
for isa in fastrnn._core.supported_isas():
    fastrnn.set_isa(isa)
    for dtype in (np.float32, np.float64):
        for n in (0, 1, 3, 7, 15, 16, 17, 31, 33):
            x = at_page_end(n, dtype)
            x[:] = rng.uniform(-4, 4, n)
            out = at_page_end(n, dtype)
            for name in ("exp", "tanh", "sigmoid"):
                fn = getattr(ops, name)
                fn(x, out=out)
                want = fn(np.array(x))
                assert np.array_equal(out, want), (isa, dtype, n, name)
                y = np.array(x)
                fn(x, out=x)  # in place at the page end
                assert np.array_equal(x, want), (isa, dtype, n, name)
                x[:] = y
print("ok")
"""


def test_partial_loads_stores_stay_inside_arrays():
    p = _python(_GUARD_PAGE_SCRIPT)
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr}"
    assert p.stdout.strip() == "ok"


def test_guard_elements_untouched_every_target(isa):
    for dtype in (np.float32, np.float64):
        for n in range(0, 40):
            x = np.linspace(-2, 2, n).astype(dtype)
            buf = np.full(n + 24, np.nan, dtype=dtype)
            buf[n:] = -777.0
            ops.sigmoid(x, out=buf[:n])
            assert np.all(buf[n:] == -777.0), (isa, dtype, n)
            assert not np.any(np.isnan(buf[:n])), (isa, dtype, n)


def test_fma_targets_agree_bitwise(rng):
    """avx2 and avx512 run the same IEEE operations lane by lane: identical results."""
    fma_targets = [t for t in SUPPORTED if t in ("avx2", "avx512")]
    if len(fma_targets) < 2:
        pytest.skip("needs two FMA targets")
    before = fastrnn.get_isa()
    try:
        for dtype in (np.float32, np.float64):
            x = np.concatenate([rng.uniform(-30, 30, 5000), rng.standard_normal(5000) * 1e-3])
            x = x.astype(dtype)
            results = []
            for t in fma_targets:
                fastrnn.set_isa(t)
                results.append([ops.exp(x), ops.tanh(x), ops.sigmoid(x), ops.tanh(x, fast=True)])
            for a, b in zip(results[0], results[1]):
                np.testing.assert_array_equal(a, b)
    finally:
        fastrnn.set_isa(before)
