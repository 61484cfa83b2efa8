"""Build facts, SIMD target selection and the thread count."""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from fastrnn import _core
from fastrnn.reference import FLOAT_DTYPES


def build_info() -> dict[str, Any]:
    """Facts about this build and this machine.

    Keys: ``version``, ``compiler``, ``openmp`` (bool), ``num_threads`` (threads the
    kernels use now), ``fork_limited`` (this process was forked from one that had loaded
    fastrnn, so the kernels run on one thread: :func:`set_num_threads`), ``available_cpus``
    (CPUs this process may run on), ``targets_compiled`` and ``targets_supported`` (SIMD
    targets in the build / runnable here), ``target_details`` (lanes and features per
    target), ``isa`` (target in use), ``isa_best`` and ``isa_reason`` (why ``isa`` was
    chosen).
    """
    return dict(_core.build_info())


def get_num_threads() -> int:
    """Threads the native kernels use (1 in a forked process: see :func:`set_num_threads`)."""
    return int(_core.get_num_threads())


#: The most threads :func:`set_num_threads` (and ``FASTRNN_NUM_THREADS``) accepts: the
#: kernels' own bound.
MAX_THREADS = int(_core.max_threads)


_fork_warned = False


def set_num_threads(n: int) -> None:
    """Set the threads the native kernels use (an int, ``1 <= n <= 4096``; NumPy
    integers are accepted).

    The default is ``FASTRNN_NUM_THREADS`` when set, else the CPUs this process may run
    on. Results are bitwise identical for any thread count.

    A process forked from one that had loaded fastrnn (``os.fork``, multiprocessing's
    default ``"fork"`` start method on Linux, DataLoader workers) runs the kernels on one
    thread: ``get_num_threads()`` says 1 there and asking for more warns once. GNU OpenMP
    keeps its worker threads between calls and cannot start them again in a forked
    child, which would wait for them forever; whether the parent's runtime had workers
    cannot be told (PyTorch's wheels ship a libgomp that then serves fastrnn too).
    Workers that need threads: use the ``"spawn"`` start method, or ``"forkserver"``
    without preloading fastrnn into the server. (Builds with LLVM's OpenMP runtime, which
    restarts its threads after fork, are not limited.)
    """
    global _fork_warned
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    n = int(n)
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be in [1, {MAX_THREADS}], got {n}")
    if n > 1 and not _fork_warned and _core.fork_limited():
        _fork_warned = True
        warnings.warn(
            "fastrnn: in a forked process the kernels run on one thread (GNU OpenMP cannot "
            "start its threads again after fork). Start workers with multiprocessing's "
            "'spawn' method (or 'forkserver' without preloading fastrnn) to give them "
            "threads.",
            RuntimeWarning,
            stacklevel=2,
        )
    _core.set_num_threads(n)


def get_isa() -> str:
    """The SIMD target the kernels use now: ``'generic'``, ``'avx2'`` or ``'avx512'``."""
    return str(_core.get_isa())


def set_isa(name: str) -> None:
    """Select a SIMD target this CPU supports (mainly for testing and benchmarking).

    ``FASTRNN_ISA=generic|avx2|avx512`` in the environment does the same at import.
    Raises ``ValueError`` for an unknown target or one this CPU cannot run.
    """
    if not isinstance(name, str):
        raise TypeError(f"set_isa: name must be a str, got {type(name).__name__}")
    _core.set_isa(name)


def cache_info() -> dict[str, int]:
    """The buffer cache: ``bytes`` and ``blocks`` held now, its ``limit`` in bytes, and
    ``in_use``: the bytes of fastrnn's outputs, tapes and workspaces alive right now.

    Large outputs, training tapes and workspaces (1 MiB and more: of the recurrent
    kernels, ``ops.matmul`` and ``Linear``, and the cross-entropy gradient) are reused
    across calls instead of being allocated and faulted in afresh each time: a training loop
    that repeats the same shapes then touches fresh memory only on its first step.
    Memory is cached only once NumPy has freed the arrays that used it. Blocks in use
    are reported to ``tracemalloc`` like NumPy's own arrays, so its figures include them.
    """
    return {k: int(v) for k, v in dict(_core.cache_info()).items()}


def empty_cache() -> int:
    """Return the cached buffers to the system; returns the bytes freed.

    Arrays still in use are not affected.
    """
    return int(_core.empty_cache())


def _empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.empty(shape, dtype)``, from the buffer cache for float32/float64 arrays of
    1 MiB and more: for outputs made afresh on every step of a loop (logits, their
    gradient), whose pages would otherwise be faulted in and zeroed each time."""
    for native in FLOAT_DTYPES:
        if dtype == native:  # the canonical dtype object is what _core.empty recognises
            return _core.empty(tuple(int(s) for s in shape), native)
    return np.empty(shape, dtype)


def set_cache_limit(nbytes: int) -> None:
    """Most bytes the buffer cache keeps (default 1 GiB, at most 64 blocks).

    ``0`` turns caching off (and frees what is cached). Lowering the limit frees the
    least recently used blocks beyond it.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"set_cache_limit: nbytes must be an int, got {type(nbytes).__name__}")
    if not 0 <= nbytes < 2**63:
        raise ValueError(f"set_cache_limit: nbytes must be in [0, 2**63), got {nbytes}")
    _core.set_cache_limit(nbytes)


def _warn_about_environment() -> None:
    """At import: say when FASTRNN_NUM_THREADS or FASTRNN_ISA was set but not used (the
    kernels then quietly ran with the default: the CPU count, the best target)."""
    if _core.num_threads_env_ignored():  # decided by the kernels' own parsing
        text = os.environ.get("FASTRNN_NUM_THREADS")
        warnings.warn(
            f"FASTRNN_NUM_THREADS={text!r} is not an integer in [1, {MAX_THREADS}]; "
            f"using {get_num_threads()} threads (the CPUs this process may run on)",
            RuntimeWarning,
            stacklevel=1,  # raised while fastrnn is imported: no caller of ours to name
        )
    reason = str(_core.build_info()["isa_reason"])
    if reason.startswith("FASTRNN_ISA="):  # set, but unknown or not runnable here
        warnings.warn(reason, RuntimeWarning, stacklevel=1)


_warn_about_environment()
