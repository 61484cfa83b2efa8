"""Multi-layer recurrent layers: :class:`RNN`, :class:`LSTM`, :class:`GRU`.

PyTorch's ``torch.nn.RNN/LSTM/GRU`` with NumPy arrays: same arguments, parameter names,
shapes, gate orders and ``state_dict()`` keys, so weights move both ways unchanged.
Gradients are explicit: :meth:`forward` returns a tape and :meth:`backward` turns the
gradient of the outputs into the gradient of the inputs, accumulating parameter
gradients into ``module.grads``.

Shapes (``L`` layers, ``D`` directions, ``H`` hidden units)::

    x      (T, N, I)  or (N, T, I) with batch_first, or unbatched (T, I)
    y      (T, N, D*H) or (N, T, D*H) with batch_first, or (T, D*H)
    state  (L*D, N, H) or unbatched (L*D, H); LSTM: a pair (h, c) of those

Equations per layer and direction (``x_t`` the layer's input, ``h`` the previous state):

* RNN:  ``h' = phi(W_ih x_t + b_ih + W_hh h + b_hh)``, ``phi`` tanh, relu or sigmoid.
* LSTM: ``i, f, g, o = sigma, sigma, tanh, sigma (W_ih x_t + b_ih + W_hh h + b_hh)``
  (split in four), ``c' = f*c + i*g``, ``h' = o*tanh(c')``; with peepholes the
  pre-activations of i and f add ``p_i*c``, ``p_f*c`` and that of o adds ``p_o*c'``.
* GRU:  ``r, z = sigma(W_i{r,z} x_t + b_i{r,z} + W_h{r,z} h + b_h{r,z})``,
  ``n = tanh(W_in x_t + b_in + r*(W_hn h + b_hn))``, ``h' = (1-z)*n + z*h``
  (``reset_after=False``: ``n = tanh(W_in x_t + b_in + W_hn (r*h) + b_hn)``).

Every module here derives from :class:`fastrnn._module.Module`, the base shared with the
rest of fastrnn (``Linear``, ``Embedding``, cells, ``Seq2Seq``): ``params`` and ``grads``
(``dict[str, np.ndarray]``, same keys), ``zero_grad()``, ``state_dict()``,
``load_state_dict()``, ``save``/``load``/``from_file``. ``ParamModule`` is its former name.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from fastrnn import _stack, functional
from fastrnn._module import Module, load_module, tape_key
from fastrnn.init import SCHEMES, init_recurrent

__all__ = ["GRU", "LSTM", "RNN", "load_module"]

_BACKENDS = ("native", "reference")
_DTYPES = ("float32", "float64")


def _check_int(name: str, v: Any, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an int >= {lo}, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {v}")
    return int(v)


def _check_bool(name: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(v).__name__}")
    return bool(v)


def _check_choice(name: str, v: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(v, str) or v not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {v!r}")
    return v


def _check_dtype(v: Any) -> str:
    try:
        name = np.dtype(v).name
    except TypeError:
        name = None
    if name not in _DTYPES:
        raise ValueError(f"dtype: expected one of {_DTYPES}, got {v!r}")
    return name  # type: ignore[return-value]


ParamModule = Module
"""Former name of :class:`fastrnn._module.Module` (the same class)."""


def _set_recurrent_options(
    m: Any, nonlinearity: Any, reset_after: Any, dtype: Any, seed: Any, init: Any, backend: Any
) -> None:
    """Check and store the constructor options that layers and cells share."""
    m.nonlinearity = _check_choice("nonlinearity", nonlinearity, ("tanh", "relu", "sigmoid"))
    m.reset_after = _check_bool("reset_after", reset_after)
    m.dtype = np.dtype(_check_dtype(dtype))
    m.seed = None if seed is None else _check_int("seed", seed, lo=0)
    m.init = _check_choice("init", init, SCHEMES)
    m.backend = _check_choice("backend", backend, _BACKENDS)


def _recurrent_options_config(m: Any) -> dict[str, Any]:
    """The shared options as they appear in ``config()`` (mode-specific ones only where used)."""
    cfg: dict[str, Any] = {}
    if m.mode == "rnn":
        cfg["nonlinearity"] = m.nonlinearity
    if m.mode == "gru":
        cfg["reset_after"] = m.reset_after
    cfg.update(dtype=m.dtype.name, seed=m.seed, init=m.init, backend=m.backend)
    return cfg


class _LayerTape:
    """A layer's tape: the stack tape, how to map shapes back for backward, and the key of
    the layer that recorded it (:func:`fastrnn._module.tape_key`)."""

    __slots__ = ("batch_first", "key", "stack", "unbatched")

    def __init__(
        self, key: Any, stack: _stack.StackTape, batch_first: bool, unbatched: bool
    ) -> None:
        self.key = key
        self.stack = stack
        self.batch_first = batch_first
        self.unbatched = unbatched


class _RecurrentLayer(Module):
    mode: ClassVar[str]
    peephole: bool = False  # the default of layers pickled before peepholes existed

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        nonlinearity: str = "tanh",
        reset_after: bool = True,
        dtype: Any = "float32",
        seed: int | None = None,
        init: str = "uniform",
        backend: str = "native",
        proj_size: int = 0,
        peephole: bool = False,
    ) -> None:
        self.input_size = _check_int("input_size", input_size)
        self.hidden_size = _check_int("hidden_size", hidden_size)
        self.proj_size = _stack.check_proj_size(self.mode, proj_size, self.hidden_size)
        self.peephole = _check_bool("peephole", peephole)
        _stack.check_peephole(self.mode, self.peephole)
        self.num_layers = _check_int("num_layers", num_layers)
        self.bias = _check_bool("bias", bias)
        self.batch_first = _check_bool("batch_first", batch_first)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)):
            raise TypeError(f"dropout: expected a float in [0, 1], got {type(dropout).__name__}")
        if not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1], got {dropout}")
        self.dropout = float(dropout)
        self.bidirectional = _check_bool("bidirectional", bidirectional)
        _set_recurrent_options(self, nonlinearity, reset_after, dtype, seed, init, backend)
        self.num_directions = 2 if self.bidirectional else 1
        self._packed: dict[str, functional.PackedWeights] = {}
        self.rng = np.random.default_rng(seed)
        shapes = _stack.param_shapes(
            self.mode, self.input_size, self.hidden_size, self.num_layers, self.bidirectional,
            self.bias, self.proj_size, self.peephole,
        )  # fmt: skip
        self._init_params(
            init_recurrent(
                shapes,
                gates=_stack.GATES[self.mode],
                hidden_size=self.hidden_size,
                scheme=self.init,
                rng=self.rng,
                dtype=self.dtype.name,
            )
        )

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = dict(
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            dropout=self.dropout,
            bidirectional=self.bidirectional,
        )
        if self.proj_size:
            cfg["proj_size"] = self.proj_size
        if self.peephole:
            cfg["peephole"] = True
        cfg.update(_recurrent_options_config(self))
        return cfg

    # ---------------------------------------------------------------- shapes in/out
    def _prepare(self, x: Any, state: Any, lengths: Any):
        """Time-major 3-D x, batched state and checked lengths; plus the unbatched flag."""
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        if x.dtype != self.dtype:
            raise TypeError(f"x: expected dtype {self.dtype} (the layer's dtype), got {x.dtype}")
        I = self.input_size
        if x.ndim == 2:
            unbatched = True
            if x.shape[1] != I:
                raise ValueError(
                    f"x: expected shape (T, I) = (T, {I}) when unbatched, got {x.shape}"
                )
            if lengths is not None:
                raise ValueError("lengths: only allowed with batched (3-D) input")
            x = x[:, None, :]
        elif x.ndim == 3:
            unbatched = False
            if x.shape[2] != I:
                want = "(N, T, I)" if self.batch_first else "(T, N, I)"
                raise ValueError(f"x: expected shape {want} with I = {I}, got {x.shape}")
            if self.batch_first:
                x = x.transpose(1, 0, 2)
        else:
            want = "(N, T, I)" if self.batch_first else "(T, N, I)"
            raise ValueError(f"x: expected a 3-D array {want} or unbatched (T, I), got {x.shape}")
        T, N = int(x.shape[0]), int(x.shape[1])
        lengths = _stack.check_lengths(lengths, N, T)
        state = self._batch_state(state, N, unbatched)
        return x, state, lengths, unbatched

    def _batch_state(self, state: Any, N: int, unbatched: bool, name: str = "state") -> Any:
        """Check a state (or state gradient) and add the batch axis for unbatched input."""
        if state is None:
            return None
        LD, H = self.num_layers * self.num_directions, self.hidden_size

        def shape(size: int, sym: str) -> tuple[tuple[int, ...], str]:
            if unbatched:
                return (LD, size), f"(L*D, {sym})"
            return (LD, N, size), f"(L*D, N, {sym})"

        def one(label: str, s: Any, size: int = H, sym: str = "H") -> np.ndarray | None:
            if s is None:
                return None
            s = np.asarray(s)
            if s.dtype != self.dtype:
                raise TypeError(f"{label}: expected dtype {self.dtype}, got {s.dtype}")
            want, desc = shape(size, sym)
            if s.shape != want:
                raise ValueError(f"{label}: expected shape {desc} = {want}, got {s.shape}")
            return s[:, None, :] if unbatched else s

        want, desc = shape(H, "H")
        if self.mode == "lstm":
            P = self.proj_size
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                h_want, h_desc = shape(P, "P") if P else (want, desc)
                raise TypeError(
                    f"{name}: expected a pair (h, c) of arrays of shapes {h_desc} = {h_want} "
                    f"and {desc} = {want}, got {type(state).__name__}"
                )
            h = one(f"{name}[0] (h)", state[0], *((P, "P") if P else (H, "H")))
            return (h, one(f"{name}[1] (c)", state[1]))
        if isinstance(state, (tuple, list)):
            raise TypeError(f"{name}: expected an array of shape {desc} = {want}, got a tuple")
        return one(name, state)

    def _unbatch_state(self, state: Any, unbatched: bool) -> Any:
        if not unbatched:
            return state
        if isinstance(state, tuple):
            return tuple(s[:, 0, :] for s in state)
        return state[:, 0, :]

    def _out(self, y: np.ndarray, unbatched: bool) -> np.ndarray:
        if unbatched:
            return y[:, 0, :]
        return y.transpose(1, 0, 2) if self.batch_first else y

    # ---------------------------------------------------------------- packed weights
    def _suffixes(self) -> list[str]:
        return [
            f"l{k}" + ("_reverse" if d else "")
            for k in range(self.num_layers)
            for d in range(self.num_directions)
        ]

    def pack_weights(self) -> None:
        """Lay out the weights once for the native kernels instead of in every forward:
        1.05-1.3x faster inference for short sequences and small batches, bitwise the same
        results (training forwards use it too and skip their copy of the weights).

        The weight arrays in ``params`` become read-only snapshots, so that they cannot
        change under their layout: an in-place edit or an optimizer step raises an error
        instead (call :meth:`unpack_weights` before training); ``load_state_dict``
        loads and lays them out again. An entry of ``params`` replaced by another array
        runs unpacked. Costs one copy of the weights plus their layout; calling it
        again lays out the current weights. An LSTM's peepholes are not laid out: they
        stay writable and every forward uses them as they are.
        """
        super().pack_weights()

    def _pack_own(self) -> None:
        packed = {}
        for sfx in self._suffixes():
            wih, whh = self.params[f"weight_ih_{sfx}"], self.params[f"weight_hh_{sfx}"]
            whr = self.params[f"weight_hr_{sfx}"] if self.proj_size else None
            pw = self._packed.get(sfx)
            # A layout whose read-only snapshot is still in params is current as it is.
            if (
                pw is None
                or pw.weight_ih is not wih
                or pw.weight_hh is not whh
                or (pw.weight_hr is not whr)
            ):
                pw = functional.pack_weights(
                    self.mode, wih, whh, reset_after=self.reset_after, weight_hr=whr
                )
            packed[sfx] = pw
        for sfx, pw in packed.items():
            self.params[f"weight_ih_{sfx}"] = pw.weight_ih
            self.params[f"weight_hh_{sfx}"] = pw.weight_hh
            if pw.weight_hr is not None:
                self.params[f"weight_hr_{sfx}"] = pw.weight_hr
        self._packed = packed

    def _unpack_own(self) -> None:
        for sfx, pw in self._packed.items():
            snaps = [("weight_ih", pw.weight_ih), ("weight_hh", pw.weight_hh)]
            if pw.weight_hr is not None:
                snaps.append(("weight_hr", pw.weight_hr))
            for name, snap in snaps:
                key = f"{name}_{sfx}"
                if self.params.get(key) is snap:  # not replaced since: a writable copy
                    self.params[key] = snap.copy()
        self._packed = {}

    def _own_packed(self) -> bool:
        return bool(self._packed)

    # Copies (pickle, copy.deepcopy) lay their weights out again: copied arrays are
    # writable, so a copied layout could drift from them.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_repack"] = bool(state.get("_packed"))
        state["_packed"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        repack = state.pop("_repack", False)
        self.__dict__.update(state)
        if repack:
            self._pack_own()

    # ---------------------------------------------------------------- running
    def _run(self, x: Any, state: Any, lengths: Any, training: bool, record: bool):
        x, state, lengths, unbatched = self._prepare(x, state, lengths)
        y, state_n, tape = _stack.stack_forward(
            self.mode,
            x,
            self.params,
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            bidirectional=self.bidirectional,
            state=state,
            lengths=lengths,
            dropout=self.dropout if training else 0.0,
            rng=self.rng,
            training=record,
            nonlinearity=self.nonlinearity,
            reset_after=self.reset_after,
            backend=self.backend,
            packed=self._packed,
            proj_size=self.proj_size,
            peephole=self.peephole,
        )
        out = (self._out(y, unbatched), self._unbatch_state(state_n, unbatched))
        return out, (
            None if tape is None else _LayerTape(tape_key(self), tape, self.batch_first, unbatched)
        )

    def __call__(self, x: Any, state: Any = None, lengths: Any = None) -> tuple[np.ndarray, Any]:
        """Inference (no dropout, nothing recorded): returns ``(y, state_n)``.

        Args:
            x: (T, N, I), (N, T, I) if ``batch_first``, or unbatched (T, I); the layer's dtype.
            state: None (zeros), (L*D, N, H) (unbatched: (L*D, H)); LSTM: ``(h0, c0)``.
            lengths: None or (N,) ints in [1, T]: sample ``n`` has ``lengths[n]`` valid
                steps; later steps give y = 0 and leave the state unchanged (packed
                sequence semantics).

        Returns:
            y (T, N, D*H) (batch_first: (N, T, D*H)); state_n like ``state``.
        """
        out, _ = self._run(x, state, lengths, training=False, record=False)
        return out

    def forward(
        self, x: Any, state: Any = None, lengths: Any = None, training: bool = True
    ) -> tuple[np.ndarray, Any, _LayerTape]:
        """Like calling the layer, but also returns a tape for :meth:`backward`.

        ``training=True`` applies dropout (if any) to the inputs of layers 1..L-1;
        ``training=False`` does not, but still records the tape.
        """
        out, tape = self._run(x, state, lengths, training=bool(training), record=True)
        return out[0], out[1], tape  # type: ignore[return-value]

    def backward(
        self, tape: _LayerTape, dy: Any = None, dstate: Any = None
    ) -> tuple[np.ndarray, Any]:
        """Gradients w.r.t. the inputs; parameter gradients are added to ``self.grads``.

        Args:
            tape: from :meth:`forward`.
            dy: gradient w.r.t. y (y's shape), or None (zeros).
            dstate: gradient w.r.t. ``state_n`` (its shape; LSTM: a pair, either may be
                None), or None.

        Returns:
            ``(dx, dstate0)``: dx in x's shape; dstate0 the gradient w.r.t. the initial
            state, in the state's shape (also when the forward's state was None).
        """
        if not isinstance(tape, _LayerTape):
            raise TypeError(f"tape: expected a tape from forward(), got {type(tape).__name__}")
        if tape.key is not tape_key(self):
            raise ValueError(
                "tape: expected a tape from this layer's forward(), got one from another layer"
            )
        st = tape.stack
        T, N, DH = st.T, st.N, st.num_directions * (st.proj_size or st.hidden_size)
        if dy is not None:
            dy = np.asarray(dy)
            if dy.dtype != self.dtype:
                raise TypeError(f"dy: expected dtype {self.dtype}, got {dy.dtype}")
            if tape.unbatched:
                want = (T, DH)
            else:
                want = (N, T, DH) if tape.batch_first else (T, N, DH)
            if dy.shape != want:
                raise ValueError(f"dy: expected y's shape {want}, got {dy.shape}")
            if tape.unbatched:
                dy = dy[:, None, :]
            elif tape.batch_first:
                dy = dy.transpose(1, 0, 2)
            dy = np.ascontiguousarray(dy)
        dstate = self._batch_state(dstate, N, tape.unbatched, name="dstate")
        dx, dstate0, grads = _stack.stack_backward(st, dy, dstate)
        for k, g in grads.items():
            self.grads[k] += g
        if tape.unbatched:
            dx = dx[:, 0, :]
        elif tape.batch_first:
            dx = dx.transpose(1, 0, 2)
        return dx, self._unbatch_state(dstate0, tape.unbatched)


class RNN(_RecurrentLayer):
    """Elman RNN layers: ``h' = phi(W_ih x + b_ih + W_hh h + b_hh)``, like ``torch.nn.RNN``.

    Args:
        input_size: I. hidden_size: H. num_layers: L.
        bias: with ``bias_ih_l*``/``bias_hh_l*``.
        batch_first: x and y are (N, T, ·) instead of (T, N, ·).
        dropout: p, on the inputs of layers 1..L-1 in training (inverted scaling).
        bidirectional: D = 2 directions; y (T, N, 2H), forward half first.
        nonlinearity: phi, ``"tanh"``, ``"relu"`` or ``"sigmoid"``.
        dtype: ``"float32"`` or ``"float64"``.
        seed: seeds the generator for the initial weights and the dropout masks.
        init: ``"uniform"`` (PyTorch's U(-1/sqrt(H), 1/sqrt(H))), ``"xavier"`` or
            ``"orthogonal"`` (see :mod:`fastrnn.init`).
        backend: ``"native"`` (C++ kernels) or ``"reference"`` (NumPy).
    """

    mode = "rnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        dtype: Any = "float32",
        seed: int | None = None,
        init: str = "uniform",
        backend: str = "native",
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            nonlinearity=nonlinearity, dtype=dtype, seed=seed, init=init, backend=backend,
        )  # fmt: skip


class LSTM(_RecurrentLayer):
    """LSTM layers (gates i, f, g, o), like ``torch.nn.LSTM``.

    ``i, f, g, o = sigma, sigma, tanh, sigma (W_ih x + b_ih + W_hh h + b_hh)``,
    ``c' = f*c + i*g``, ``h' = o*tanh(c')``. The state is a pair ``(h, c)``.
    Arguments as :class:`RNN` (without ``nonlinearity``), plus ``proj_size``: P with
    1 <= P < H gives each layer a projection ``h' = W_hr (o*tanh(c'))`` (``weight_hr_l*``
    (P, H)), so h and each direction's output have P columns (y (T, N, D*P)) while c keeps
    H; 0 (the default) none.

    ``peephole=True`` adds peephole connections (as in ONNX's and oneDNN's LSTM, not in
    PyTorch): ``i = sigma(a_i + p_i*c)``, ``f = sigma(a_f + p_f*c)``,
    ``o = sigma(a_o + p_o*c')`` with ``a_*`` the pre-activations above, through one more
    parameter per layer and direction, ``weight_peephole_l*`` (3*H,) holding the blocks
    p_i, p_f, p_o, placed last among that layer and direction's parameters. They are drawn
    from U(-1/sqrt(H), 1/sqrt(H)) under every ``init`` scheme (see :mod:`fastrnn.init`).
    They combine with ``proj_size``.
    """

    mode = "lstm"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        dtype: Any = "float32",
        seed: int | None = None,
        init: str = "uniform",
        backend: str = "native",
        proj_size: int = 0,
        peephole: bool = False,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            dtype=dtype, seed=seed, init=init, backend=backend, proj_size=proj_size,
            peephole=peephole,
        )  # fmt: skip


class GRU(_RecurrentLayer):
    """GRU layers (gates r, z, n), like ``torch.nn.GRU``.

    ``r, z = sigma(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z})``,
    ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))``, ``h' = (1-z)*n + z*h``.
    ``reset_after=False`` gives Keras' other variant,
    ``n = tanh(W_in x + b_in + W_hn (r*h) + b_hn)``.
    Other arguments as :class:`RNN` (without ``nonlinearity``).
    """

    mode = "gru"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        reset_after: bool = True,
        dtype: Any = "float32",
        seed: int | None = None,
        init: str = "uniform",
        backend: str = "native",
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            reset_after=reset_after, dtype=dtype, seed=seed, init=init, backend=backend,
        )  # fmt: skip
