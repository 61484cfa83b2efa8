"""Shared fixtures: SIMD targets and thread counts to run native kernels under."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import fastrnn

SUPPORTED_ISAS = list(fastrnn._core.supported_isas())


@pytest.fixture(params=SUPPORTED_ISAS)
def isa(request):
    """Run the test once per SIMD target this CPU supports, restoring the original."""
    before = fastrnn.get_isa()
    fastrnn.set_isa(request.param)
    try:
        yield request.param
    finally:
        fastrnn.set_isa(before)


@pytest.fixture(params=[1, 2])
def threads(request):
    """Run the test with 1 and with 2 threads, restoring the original count."""
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(request.param)
    try:
        yield request.param
    finally:
        fastrnn.set_num_threads(before)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: fresh inputs per case, reproducible."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
