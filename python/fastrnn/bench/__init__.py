"""``fastrnn-bench``: check, then time, RNN/LSTM/GRU backends on suites of shapes.

Run ``fastrnn-bench --help`` or ``python -m fastrnn.bench --help``; see
``docs/benchmarks.md`` for how to run it and how to read the output.
"""

from __future__ import annotations

from fastrnn.bench.cases import Case, cases_from_toml, parse_case_spec
from fastrnn.bench.cli import main
from fastrnn.bench.suites import SUITES, get_suite

__all__ = ["SUITES", "Case", "cases_from_toml", "get_suite", "main", "parse_case_spec"]
