"""Single-step recurrent cells: :class:`RNNCell`, :class:`LSTMCell`, :class:`GRUCell`.

PyTorch's ``torch.nn.*Cell`` with NumPy arrays: parameters ``weight_ih`` (G*H, I),
``weight_hh`` (G*H, H), ``bias_ih``, ``bias_hh`` (G*H,), same gate orders. A cell step is
the functional sequence API run with T = 1, so a Python loop over a cell computes
exactly what the matching layer computes over the whole sequence.

Shapes: ``x`` (N, I) or unbatched (I,); state ``h`` (N, H) or (H,), for LSTM a pair
``(h, c)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from fastrnn import functional
from fastrnn._module import Module, tape_key
from fastrnn._stack import GATES
from fastrnn.init import init_recurrent
from fastrnn.layers import (
    _check_bool,
    _check_int,
    _recurrent_options_config,
    _set_recurrent_options,
)

__all__ = ["GRUCell", "LSTMCell", "RNNCell"]


class _CellTape:
    """A cell's tape: the functional tape (T = 1), whether the input was unbatched, and the
    key of the cell that recorded it (:func:`fastrnn._module.tape_key`)."""

    __slots__ = ("batch", "key", "tape", "unbatched")

    def __init__(self, key: Any, tape: Any, batch: int, unbatched: bool) -> None:
        self.key = key
        self.tape = tape
        self.batch = batch
        self.unbatched = unbatched


class _Cell(Module):
    mode: ClassVar[str]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        nonlinearity: str = "tanh",
        reset_after: bool = True,
        dtype: Any = "float32",
        seed: int | None = None,
        init: str = "uniform",
        backend: str = "native",
    ) -> None:
        self.input_size = _check_int("input_size", input_size)
        self.hidden_size = _check_int("hidden_size", hidden_size)
        self.bias = _check_bool("bias", bias)
        _set_recurrent_options(self, nonlinearity, reset_after, dtype, seed, init, backend)
        G, H, I = GATES[self.mode], self.hidden_size, self.input_size
        shapes: dict[str, tuple[int, ...]] = {"weight_ih": (G * H, I), "weight_hh": (G * H, H)}
        if self.bias:
            shapes.update(bias_ih=(G * H,), bias_hh=(G * H,))
        self._init_params(
            init_recurrent(
                shapes,
                gates=G,
                hidden_size=H,
                scheme=self.init,
                rng=np.random.default_rng(seed),
                dtype=self.dtype.name,
            )
        )

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = dict(
            input_size=self.input_size, hidden_size=self.hidden_size, bias=self.bias
        )
        cfg.update(_recurrent_options_config(self))
        return cfg

    # ------------------------------------------------------------------ shapes
    def _check(self, label: str, a: Any, want: tuple[int, ...], desc: str) -> np.ndarray:
        a = np.asarray(a)
        if a.dtype != self.dtype:
            raise TypeError(
                f"{label}: expected dtype {self.dtype} (the cell's dtype), got {a.dtype}"
            )
        if a.shape != want:
            raise ValueError(f"{label}: expected shape {desc} = {want}, got {a.shape}")
        return a

    def _state_in(self, state: Any, N: int, unbatched: bool, name: str) -> tuple[Any, Any]:
        """(h, c) as (N, H) arrays or None; c is None unless LSTM."""
        H = self.hidden_size
        want, desc = ((H,), "(H,)") if unbatched else ((N, H), "(N, H)")

        def one(label: str, s: Any) -> np.ndarray | None:
            if s is None:
                return None
            s = self._check(label, s, want, desc)
            return s[None, :] if unbatched else s

        if state is None:
            return None, None
        if self.mode == "lstm":
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError(
                    f"{name}: expected a pair (h, c) of arrays of shape {desc}, "
                    f"got {type(state).__name__}"
                )
            return one(f"{name}[0] (h)", state[0]), one(f"{name}[1] (c)", state[1])
        if isinstance(state, (tuple, list)):
            raise TypeError(f"{name}: expected an array of shape {desc}, got a tuple")
        return one(name, state), None

    def _state_out(self, h: np.ndarray, c: np.ndarray | None, unbatched: bool) -> Any:
        if unbatched:
            h = h[0]
            c = None if c is None else c[0]
        return (h, c) if self.mode == "lstm" else h

    # ------------------------------------------------------------------ running
    def _step(self, x: Any, state: Any, training: bool):
        x = np.asarray(x)
        if x.dtype != self.dtype:
            raise TypeError(f"x: expected dtype {self.dtype} (the cell's dtype), got {x.dtype}")
        I = self.input_size
        if x.ndim == 1:
            unbatched = True
            if x.shape != (I,):
                raise ValueError(f"x: expected shape (I,) = ({I},) when unbatched, got {x.shape}")
            x = x[None, :]
        elif x.ndim == 2:
            unbatched = False
            if x.shape[1] != I:
                raise ValueError(f"x: expected shape (N, I) with I = {I}, got {x.shape}")
        else:
            raise ValueError(f"x: expected shape (N, I) or unbatched (I,), got {x.shape}")
        h0, c0 = self._state_in(state, x.shape[0], unbatched, "state")
        p = self.params
        args = (p["weight_ih"], p["weight_hh"], p.get("bias_ih"), p.get("bias_hh"))
        kw: dict[str, Any] = dict(training=training, backend=self.backend)
        x3 = x[None]
        if self.mode == "lstm":
            res = functional.lstm(x3, h0, c0, *args, **kw)
            h, c = res[1]
        elif self.mode == "gru":
            res = functional.gru(x3, h0, *args, reset_after=self.reset_after, **kw)
            h, c = res[1], None
        else:
            res = functional.rnn(x3, h0, *args, nonlinearity=self.nonlinearity, **kw)
            h, c = res[1], None
        new_state = self._state_out(h, c, unbatched)
        return new_state, (
            _CellTape(tape_key(self), res[2], x.shape[0], unbatched) if training else None
        )

    def __call__(self, x: Any, state: Any = None) -> Any:
        """One step: the new state (``h``, or ``(h, c)`` for LSTM) from ``x`` and ``state``.

        Args:
            x: (N, I) or unbatched (I,), the cell's dtype.
            state: None (zeros) or (N, H) / (H,); LSTM: a pair ``(h, c)``.
        """
        return self._step(x, state, training=False)[0]

    def forward(self, x: Any, state: Any = None, training: bool = True) -> tuple[Any, _CellTape]:
        """One step that also returns a tape for :meth:`backward`: ``(new_state, tape)``.

        Cells have no dropout, so ``training`` only documents intent; the tape is always
        recorded.
        """
        del training
        new_state, tape = self._step(x, state, training=True)
        return new_state, tape  # type: ignore[return-value]

    def backward(self, tape: _CellTape, dstate: Any = None) -> tuple[np.ndarray, Any]:
        """Gradients of one step; parameter gradients are added to ``self.grads``.

        Args:
            tape: from :meth:`forward`.
            dstate: gradient w.r.t. the new state (its shape; LSTM: a pair, either may be
                None), or None.

        Returns:
            ``(dx, dstate0)``: dx in x's shape; dstate0 the gradient w.r.t. the state that
            went in (in its shape; also when that state was None, i.e. zeros).
        """
        if not isinstance(tape, _CellTape):
            raise TypeError(f"tape: expected a tape from forward(), got {type(tape).__name__}")
        if tape.key is not tape_key(self):
            raise ValueError(
                "tape: expected a tape from this cell's forward(), got one from another cell"
            )
        dh, dc = self._state_in(dstate, tape.batch, tape.unbatched, "dstate")
        if self.mode == "lstm":
            g = functional.lstm_backward(tape.tape, None, dh, dc)
        elif self.mode == "gru":
            g = functional.gru_backward(tape.tape, None, dh)
        else:
            g = functional.rnn_backward(tape.tape, None, dh)
        for name in self.grads:
            self.grads[name] += g[name]
        dx = g["x"][0]
        if tape.unbatched:
            dx = dx[0]
        return dx, self._state_out(g["h0"], g.get("c0"), tape.unbatched)


class RNNCell(_Cell):
    """Elman RNN cell, like ``torch.nn.RNNCell``.

    Equation::

        h' = phi(W_ih x + b_ih + W_hh h + b_hh),   phi = tanh | relu | sigmoid

    Args:
        input_size: I. hidden_size: H. bias: with ``bias_ih``/``bias_hh``.
        nonlinearity: phi. dtype: ``"float32"`` or ``"float64"``.
        seed: seeds the initial weights. init: ``"uniform"`` (PyTorch's default),
            ``"xavier"`` or ``"orthogonal"``. backend: ``"native"`` or ``"reference"``.
    """

    mode = "rnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        *,
        dtype: Any = "float32",
        seed: int | None = None,
        init: str = "uniform",
        backend: str = "native",
    ) -> None:
        super().__init__(
            input_size, hidden_size, bias, nonlinearity=nonlinearity, dtype=dtype, seed=seed,
            init=init, backend=backend,
        )  # fmt: skip


class LSTMCell(_Cell):
    """LSTM cell (gates i, f, g, o), like ``torch.nn.LSTMCell``; the state is ``(h, c)``.

    Equations::

        i = sigma(W_ii x + b_ii + W_hi h + b_hi)
        f = sigma(W_if x + b_if + W_hf h + b_hf)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)
        o = sigma(W_io x + b_io + W_ho h + b_ho)
        c' = f * c + i * g
        h' = o * tanh(c')

    Arguments as :class:`RNNCell` (without ``nonlinearity``).
    """

    mode = "lstm"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        dtype: Any = "float32",
        seed: int | None = None,
        init: str = "uniform",
        backend: str = "native",
    ) -> None:
        super().__init__(
            input_size, hidden_size, bias, dtype=dtype, seed=seed, init=init, backend=backend
        )


class GRUCell(_Cell):
    """GRU cell (gates r, z, n), like ``torch.nn.GRUCell``.

    Equations (``reset_after=True``, PyTorch/cuDNN)::

        r = sigma(W_ir x + b_ir + W_hr h + b_hr)
        z = sigma(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    ``reset_after=False`` (Keras' other variant): ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``.
    Other arguments as :class:`RNNCell` (without ``nonlinearity``).
    """

    mode = "gru"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        reset_after: bool = True,
        dtype: Any = "float32",
        seed: int | None = None,
        init: str = "uniform",
        backend: str = "native",
    ) -> None:
        super().__init__(
            input_size, hidden_size, bias, reset_after=reset_after, dtype=dtype, seed=seed,
            init=init, backend=backend,
        )  # fmt: skip
