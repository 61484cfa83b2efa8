"""``python -m fastrnn.bench``: the same as the ``fastrnn-bench`` command."""

from __future__ import annotations

from fastrnn.bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
