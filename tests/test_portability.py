"""The package must run on x86-64 CPUs without AVX-512 or AVX2.

Forcing a lower target with FASTRNN_ISA cannot catch an AVX-512 instruction that leaked into
code shared by all targets; running under a CPU emulator whose CPU model lacks those
instruction sets can. These tests run the self-check (every kernel family against the NumPy
reference) under qemu user mode when it is installed (Debian package `qemu-user`).
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys

import pytest

QEMU = shutil.which("qemu-x86_64")

pytestmark = pytest.mark.skipif(
    QEMU is None or platform.machine() not in ("x86_64", "AMD64"),
    reason="needs qemu-x86_64 (Debian package qemu-user) on an x86-64 machine",
)


@pytest.mark.parametrize(
    ("cpu", "expected_isa"),
    [("Haswell", "avx2"), ("Nehalem", "generic")],
)
def test_self_check_under_emulated_cpu(cpu, expected_isa):
    proc = subprocess.run(
        [QEMU, "-cpu", cpu, sys.executable, "-m", "fastrnn", "--expect-isa", expected_isa],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert f"SIMD target in use    : {expected_isa}" in proc.stdout
    assert "self-check passed" in proc.stdout
