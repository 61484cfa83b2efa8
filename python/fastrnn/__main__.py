"""``python -m fastrnn``: print the build facts and run a quick self-check."""

from __future__ import annotations

from fastrnn._selfcheck import main

if __name__ == "__main__":
    raise SystemExit(main())
