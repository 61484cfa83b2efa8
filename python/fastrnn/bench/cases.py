"""Benchmark cases: one recurrent layer, one direction, one shape.

A case is ``cell`` (``lstm``, ``gru`` or ``rnn``) with sizes ``T`` (time steps), ``N``
(batch), ``I`` (input features) and ``H`` (hidden units), and the modes to run it in:

- ``inference``: forward over the whole sequence, nothing kept for backward.
- ``training``: forward that keeps what backward needs, then backpropagation through
  time producing every gradient (inputs, initial states, weights and biases).
- ``step``: one time step with the state carried from the previous call (streaming).

Floating-point work counted per call (G gates: LSTM 4, GRU 3, vanilla RNN 1)::

    forward  = 2 * T * N * G * H * (I + H)
    training = 3 * forward
    step     = forward with T = 1

An LSTM case may have a projection, ``P`` (PyTorch's ``proj_size``, 1 <= P < H): its state
and outputs have P columns and forward = 2 * T * N * (4 * H * (I + P) + H * P); it runs in
inference and training mode only (PyTorch has no projected cell for steps).

An LSTM case may have peepholes, ``peephole=1`` (``fastrnn.functional.lstm``'s
``weight_peephole``, three vectors of H: ``i`` and ``f`` also see ``c_{t-1}``, ``o`` sees
``c_t``): each step adds 3 * N * H multiply-adds, so forward gains 6 * T * N * H (training
is still 3 * forward). It combines with ``P`` and runs in every mode (step mode is the
sequence call with T = 1); PyTorch and JAX have no peephole LSTM, so their backends skip
such cases.

Cases come from the built-in suites, from ``--case`` specs such as
``lstm:T=100,N=32,I=256,H=256`` (``,P=64`` for a projection, ``,peephole=1`` for
peepholes) or from a TOML file of ``[[case]]`` tables.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

CELLS: dict[str, int] = {"lstm": 4, "gru": 3, "rnn": 1}
MODES: tuple[str, ...] = ("inference", "training", "step")
DEFAULT_MODES: tuple[str, ...] = ("inference", "training")
_SIZE_KEYS = ("T", "N", "I", "H")
_MAX_SIZE = 2**31 - 1  # per size; the memory a case needs is checked by the command line
_FLAGS = {"1": True, "true": True, "0": False, "false": False}  # spec values of peephole


@dataclass(frozen=True)
class Case:
    """One benchmark shape.

    ``note`` records anything changed from the case's source (for example a DeepBench
    shape whose T was scaled down to fit the time budget); it is printed in the table.
    """

    cell: str
    T: int
    N: int
    I: int
    H: int
    modes: tuple[str, ...] = DEFAULT_MODES
    name: str = ""
    note: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    P: int = 0  # LSTM projection (proj_size), 0 for none
    peephole: bool = False  # LSTM peepholes (weight_peephole, 3*H values)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        for key in _SIZE_KEYS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_SIZE:
                raise ValueError(f"case {key} must be a positive int <= {_MAX_SIZE}, got {value!r}")
        P = self.P
        if isinstance(P, bool) or not isinstance(P, int) or not 0 <= P < self.H:
            raise ValueError(f"case P must be an int with 0 <= P < H = {self.H}, got {P!r}")
        if P and self.cell != "lstm":
            raise ValueError(f"case P: only an lstm has a projection, not {self.cell}")
        if P and "step" in self.modes:
            raise ValueError("case P: a projected lstm has no step mode (no such PyTorch cell)")
        if not isinstance(self.peephole, bool):
            raise ValueError(f"case peephole must be true or false, got {self.peephole!r}")
        if self.peephole and self.cell != "lstm":
            raise ValueError(f"case peephole: only an lstm has peepholes, not {self.cell}")
        if not self.modes:
            raise ValueError("case modes must not be empty")
        for mode in self.modes:
            if mode not in MODES:
                raise ValueError(f"mode must be one of {MODES}, got {mode!r}")

    @property
    def gates(self) -> int:
        """Gate count G: 4 for LSTM, 3 for GRU, 1 for the vanilla RNN."""
        return CELLS[self.cell]

    @property
    def shape(self) -> str:
        text = f"T={self.T},N={self.N},I={self.I},H={self.H}"
        return text + (f",P={self.P}" if self.P else "") + (",peephole=1" if self.peephole else "")

    @property
    def S(self) -> int:
        """The columns of the state h and of y: P with a projection, else H."""
        return self.P or self.H

    @property
    def label(self) -> str:
        """Short unique text for tables: ``lstm T=100,N=64,I=256,H=256``."""
        return self.name or f"{self.cell} {self.shape}"

    def flops(self, mode: str) -> float:
        """Floating-point operations of one timed call in ``mode`` (see module doc)."""
        steps = 1 if mode == "step" else self.T
        G, H, S = self.gates, self.H, self.S
        peephole = 3 * H if self.peephole else 0
        forward = 2.0 * steps * self.N * (G * H * (self.I + S) + H * self.P + peephole)
        return 3.0 * forward if mode == "training" else forward

    def input_bytes(self, itemsize: int) -> int:
        """Bytes of the inputs, states, weights and upstream gradients one run draws."""
        T, N, I, H, G, S, P = self.T, self.N, self.I, self.H, self.gates, self.S, self.P
        peephole = 3 * H if self.peephole else 0
        return itemsize * (
            T * N * (I + S) + G * H * (I + S + 2) + P * H + peephole + 2 * N * (H + S)
        )

    def small(self, T: int = 4, N: int = 3) -> Case:
        """The same cell and feature sizes with tiny T and N, for the correctness check."""
        return replace(self, T=min(self.T, T), N=min(self.N, N), name="", note="")

    def with_modes(self, modes: tuple[str, ...]) -> Case:
        return replace(self, modes=tuple(modes))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cell": self.cell,
            "T": self.T,
            "N": self.N,
            "I": self.I,
            "H": self.H,
            **({"P": self.P} if self.P else {}),
            **({"peephole": True} if self.peephole else {}),
            "label": self.label,
            "note": self.note,
        }
        out.update(self.meta)
        return out


def _parse_int(key: str, text: str, spec: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"case {spec!r}: {key} must be a positive integer, got {text!r}") from None
    if not 1 <= value <= _MAX_SIZE:
        raise ValueError(
            f"case {spec!r}: {key} must be a positive integer <= {_MAX_SIZE}, got {value}"
        )
    return value


def parse_case_spec(spec: str) -> Case:
    """Parse ``cell:T=..,N=..,I=..,H=..[,P=..][,peephole=1][,modes=inference+training]``.

    ``I`` defaults to ``H`` when left out; ``peephole`` takes 1 or 0 (also true or false).
    Raises ``ValueError`` naming the problem.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(
            f"case {spec!r}: expected 'cell:T=..,N=..,I=..,H=..' with cell in {sorted(CELLS)}"
        )
    cell, _, rest = spec.partition(":")
    cell = cell.strip().lower()
    if cell not in CELLS:
        raise ValueError(f"case {spec!r}: cell must be one of {sorted(CELLS)}, got {cell!r}")
    sizes: dict[str, int] = {}
    modes: tuple[str, ...] = DEFAULT_MODES
    peephole: bool | None = None
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise ValueError(f"case {spec!r}: expected key=value, got {item!r}")
        if key == "modes":
            modes = tuple(m.strip() for m in value.split("+") if m.strip())
            bad = [m for m in modes if m not in MODES]
            if bad or not modes:
                raise ValueError(f"case {spec!r}: modes must be '+'-joined from {MODES}")
            continue
        if key == "peephole":
            if peephole is not None:
                raise ValueError(f"case {spec!r}: peephole given twice")
            flag = value.strip().lower()
            if flag not in _FLAGS:
                raise ValueError(f"case {spec!r}: peephole must be 1 or 0, got {value!r}")
            peephole = _FLAGS[flag]
            continue
        if key not in (*_SIZE_KEYS, "P"):
            raise ValueError(
                f"case {spec!r}: unknown key {key!r}; use T, N, I, H, P, peephole, modes"
            )
        if key in sizes:
            raise ValueError(f"case {spec!r}: {key} given twice")
        sizes[key] = _parse_int(key, value, spec)
    if "H" in sizes:
        sizes.setdefault("I", sizes["H"])
    missing = [k for k in ("T", "N", "H") if k not in sizes]
    if missing:
        raise ValueError(f"case {spec!r}: missing {', '.join(missing)}")
    try:
        return Case(
            cell,
            sizes["T"],
            sizes["N"],
            sizes["I"],
            sizes["H"],
            modes=modes,
            P=sizes.get("P", 0),
            peephole=bool(peephole),
        )
    except ValueError as exc:
        raise ValueError(f"case {spec!r}: {exc}") from None


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - depends on the interpreter
        try:
            import tomli as tomllib
        except ImportError as exc:
            raise ValueError(
                "reading TOML on Python < 3.11 needs tomli: pip install 'fastrnn[bench]'"
            ) from exc
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ValueError(f"config {str(path)!r}: cannot read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"config {str(path)!r}: invalid TOML ({exc})") from None


def cases_from_toml(path: str | Path) -> list[Case]:
    """Read cases from a TOML file.

    Format::

        modes = ["inference", "training"]   # optional default for every case

        [[case]]
        cell = "lstm"
        T = 100
        N = 32
        I = 256          # optional, defaults to H
        H = 256
        P = 64           # optional, lstm only: a projection (proj_size)
        peephole = true  # optional, lstm only: peepholes (weight_peephole)
        modes = ["step"] # optional
        name = "my lstm" # optional label
    """
    path = Path(path)
    data = _load_toml(path)
    where = f"config {str(path)!r}"
    unknown_top = set(data) - {"case", "modes"}
    if unknown_top:
        raise ValueError(f"{where}: unknown top-level keys {sorted(unknown_top)}")
    default_modes = _modes_from(data.get("modes", list(DEFAULT_MODES)), where)
    tables = data.get("case")
    if not isinstance(tables, list) or not tables:
        raise ValueError(f"{where}: expected one or more [[case]] tables")
    cases = []
    for k, table in enumerate(tables):
        at = f"{where} case #{k + 1}"
        if not isinstance(table, dict):
            raise ValueError(f"{at}: expected a [[case]] table, got {table!r}")
        known = {"cell", "T", "N", "I", "H", "P", "peephole", "modes", "name", "note"}
        unknown = set(table) - known
        if unknown:
            raise ValueError(f"{at}: unknown keys {sorted(unknown)}")
        for key in ("cell", "T", "N", "H"):
            if key not in table:
                raise ValueError(f"{at}: missing {key}")
        modes = _modes_from(table["modes"], at) if "modes" in table else default_modes
        try:
            cases.append(
                Case(
                    str(table["cell"]).lower(),
                    table["T"],
                    table["N"],
                    table.get("I", table["H"]),
                    table["H"],
                    modes=modes,
                    name=str(table.get("name", "")),
                    note=str(table.get("note", "")),
                    P=table.get("P", 0),
                    peephole=table.get("peephole", False),
                )
            )
        except ValueError as exc:
            raise ValueError(f"{at}: {exc}") from None
    return cases


def _modes_from(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or any(m not in MODES for m in value):
        raise ValueError(f"{where}: modes must be a non-empty list from {MODES}, got {value!r}")
    return tuple(value)
