"""Drop-in replacements for ``torch.nn.RNN``, ``torch.nn.LSTM`` and ``torch.nn.GRU`` on the CPU
(and for their cells ``RNNCell``, ``LSTMCell``, ``GRUCell``: one step each).

``fastrnn.torch.RNN``, ``LSTM`` and ``GRU`` subclass their ``torch.nn`` counterparts: the
constructor arguments, parameter names, shapes and registration order, ``state_dict`` keys,
default initialisation, ``repr`` and call signatures are PyTorch's own. Only ``forward``
differs: on CPU float32/float64 tensors it runs fastrnn's kernels through a
``torch.autograd.Function`` (gradients for the input, the initial states and every
parameter), and everything else goes to the PyTorch implementation with a
:class:`FastRNNFallbackWarning` (one per reason per process).

Shapes (T steps, N batch, I input features, H hidden units, L layers, D = 2 if
bidirectional else 1)::

    input  (T, N, I) | (N, T, I) if batch_first | (T, I) unbatched | PackedSequence
    h_0    (L*D, N, H) | (L*D, H) unbatched      (LSTM: a tuple (h_0, c_0))
    output (T, N, D*H) | (N, T, D*H) if batch_first | (T, D*H) unbatched | PackedSequence
    h_n    (L*D, N, H)                            (LSTM: a tuple (h_n, c_n))

Equations (PyTorch's, gate orders included):

- RNN:  h' = φ(W_ih x + b_ih + W_hh h + b_hh), φ = tanh or relu.
- LSTM: i, f, g, o = σ, σ, tanh, σ of (W_ih x + b_ih + W_hh h + b_hh);
  c' = f⊙c + i⊙g; h' = o⊙tanh(c').
- GRU:  r, z = σ(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z});
  n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn)); h' = (1−z)⊙n + z⊙h.

Threads: each call runs fastrnn's kernels with ``torch.get_num_threads()`` threads (so
``torch.set_num_threads`` governs both libraries); set ``fastrnn.torch._FOLLOW_TORCH_THREADS
= False`` to use ``fastrnn.set_num_threads`` instead.

Dropout between layers (training mode, ``dropout > 0``, ``num_layers > 1``) draws its masks
from a NumPy generator seeded from PyTorch's default generator, so ``torch.manual_seed``
makes runs repeatable and ``torch.utils.checkpoint`` recomputes the same masks.

Fallbacks (PyTorch's implementation, with one warning per reason): tensors not on the CPU,
dtypes other than float32/float64, autocast, TorchScript (tracing and scripting). Under
``torch.compile`` the modules are kept out of the compiled graph (a graph break) and run
fastrnn eagerly. Empty inputs go to PyTorch silently. Double backward
(``create_graph=True``) recomputes the layer with PyTorch to get differentiable gradients
(not possible with active dropout, which raises ``RuntimeError`` rather than give a wrong
answer).

Internal settings (not public API): ``_BACKEND`` selects fastrnn's backend (``"native"``
C++ kernels, or ``"reference"``, the NumPy oracle used by the tests).
"""

from __future__ import annotations

import copy
import functools
import sys
import warnings
import weakref
from typing import Any

try:
    import torch
    from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "fastrnn.torch needs PyTorch; install it with: pip install fastrnn[torch]"
    ) from exc

import numpy as np

import fastrnn
from fastrnn import _core, _native, _stack
from fastrnn._stack import _stack_rows

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "FastRNNFallbackWarning",
    "GRUCell",
    "LSTMCell",
    "RNNCell",
    "convert",
    "revert",
]

#: Backend used by fastrnn.torch (internal): "native" or "reference".
_BACKEND: str = "native"
#: Run each call with torch.get_num_threads() fastrnn threads (internal).
_FOLLOW_TORCH_THREADS: bool = True

_SUPPORTED_DTYPES = (torch.float32, torch.float64)
_WARNED: set[str] = set()


class FastRNNFallbackWarning(UserWarning):
    """fastrnn cannot serve a call and runs PyTorch's own implementation instead."""


def _warn_fallback(reason: str, stacklevel: int = 5) -> None:
    """Warn once per process and reason that a call falls back to PyTorch."""
    if reason in _WARNED:
        return
    _WARNED.add(reason)
    warnings.warn(
        f"fastrnn.torch: falling back to the PyTorch implementation ({reason})",
        FastRNNFallbackWarning,
        stacklevel=stacklevel,  # the caller of module(...)
    )


def _reset_fallback_warnings() -> None:
    """Forget which fallback reasons have warned (internal, for tests)."""
    _WARNED.clear()


class _ThreadScope:
    """``with _ThreadScope():`` runs fastrnn with torch.get_num_threads() threads for the
    duration of a call. (A plain class: the generator-based context manager it replaces
    took ~2 us per call, a tenth of the module's own time at T = N = 1.)"""

    __slots__ = ("before",)

    def __enter__(self) -> None:
        self.before = None
        if not _FOLLOW_TORCH_THREADS:
            return
        want = max(1, int(torch.get_num_threads()))
        before = fastrnn.get_num_threads()
        if want != before and not _core.fork_limited():  # forked: one thread, no warning
            fastrnn.set_num_threads(want)
            self.before = before

    def __exit__(self, *exc: object) -> None:
        if self.before is not None:
            fastrnn.set_num_threads(self.before)


def _np(t: torch.Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor (a copy only when it is not contiguous)."""
    return t.detach().contiguous().numpy()


#: module -> (its parameters, their data pointers, name -> NumPy view) at its last call.
_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _param_arrays(module: Any, names: list[str], params: tuple[torch.Tensor, ...]) -> dict:
    """NumPy views of a module's parameters (name -> array), kept from its last call while
    they are the same contiguous tensors, same shapes, at the same addresses: the views
    see in-place updates (optimizers), and a replaced tensor or ``.data`` makes new ones.
    (Making the views took ~1 us per parameter per call.)"""
    hit = _VIEWS.get(module)
    if hit is not None:
        old, ptrs, arrays = hit
        if len(old) == len(params) and all(
            p is q and p.data_ptr() == ptr and p.is_contiguous() and p.shape == a.shape
            for p, q, ptr, a in zip(params, old, ptrs, arrays.values())
        ):
            return arrays
    arrays = {name: _np(p) for name, p in zip(names, params)}
    if all(p.is_contiguous() for p in params):
        _VIEWS[module] = (params, tuple(p.data_ptr() for p in params), arrays)
    return arrays


# Modules whose inference calls reuse packed weights (_FastRNNMixin.pack_weights): module ->
# {layer suffix: ((tensors, data pointers, versions), PackedWeights)}.
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _packed_weights(cfg: _Config, named: dict, sfx: str) -> Any:
    """The packed weights of one layer and direction of a module under pack_weights()
    (``named``: its parameter tensors by name), made again when either weight tensor was
    replaced, moved or changed in place since."""
    cache = _PACKED[cfg.owner]
    wi, wh = named[f"weight_ih_{sfx}"], named[f"weight_hh_{sfx}"]
    wr = named.get(f"weight_hr_{sfx}")  # an LSTM's projection, or None
    key = (wi.data_ptr(), wh.data_ptr(), wi._version, wh._version)
    if wr is not None:
        key += (wr.data_ptr(), wr._version)
    hit = cache.get(sfx)
    if hit is None or hit[0] is not wi or hit[1] is not wh or hit[2] != key:
        from fastrnn import functional

        hr = None if wr is None else _np(wr)
        hit = (wi, wh, key, functional.pack_weights(cfg.mode, _np(wi), _np(wh), weight_hr=hr))
        cache[sfx] = hit
    return hit[3]


def _tensor(a: Any, dtype: torch.dtype) -> torch.Tensor:
    """A tensor sharing memory with a NumPy result (copied if read-only or mistyped)."""
    arr = np.asarray(a)
    want = np.float32 if dtype == torch.float32 else np.float64
    if arr.dtype != want or not arr.flags.writeable:
        arr = arr.astype(want, copy=True)
    return torch.from_numpy(arr)


def _tensors(arrays: list[Any], dtype: torch.dtype, avoid: list[np.ndarray]) -> list[Any]:
    """Tensors for results (None stays None), none sharing memory with another or with
    ``avoid`` (the arrays handed to the engine): an alias is copied, so that in-place
    updates of one gradient or output (clipping, optimizers) never change another."""
    seen = [a for a in avoid if a is not None]
    out: list[Any] = []
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        arr = np.asarray(a)
        if any(np.may_share_memory(arr, b) for b in seen):
            arr = arr.copy()
        seen.append(arr)
        out.append(_tensor(arr, dtype))
    return out


class _Config:
    """Everything about one call that is not a tensor."""

    __slots__ = (
        "bias",
        "bidirectional",
        "dropout",
        "dropout_active",
        "hidden_size",
        "lengths",
        "mode",
        "names",
        "nonlinearity",
        "num_layers",
        "owner",
        "proj_size",
        "seed",
        "vf_mode",
    )

    def params_of(self, cell: Any) -> tuple[torch.Tensor, ...]:
        """A cell's parameters in ``names`` order (from ``_parameters``: no __getattr__)."""
        p = cell._parameters
        if self.bias:
            return (p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])
        return (p["weight_ih"], p["weight_hh"])

    def __init__(self, module: torch.nn.RNNBase, lengths: np.ndarray | None) -> None:
        vf_mode = module.mode
        self.owner = module  # the module whose parameters these are (_param_arrays)
        self.vf_mode = vf_mode
        self.mode = {"LSTM": "lstm", "GRU": "gru"}.get(vf_mode, "rnn")
        self.nonlinearity = "relu" if vf_mode == "RNN_RELU" else "tanh"
        self.num_layers = int(module.num_layers)
        self.hidden_size = int(module.hidden_size)
        self.proj_size = int(getattr(module, "proj_size", 0))
        self.bidirectional = bool(module.bidirectional)
        self.bias = bool(module.bias)
        self.names = list(module._flat_weights_names)
        self.lengths = lengths
        self.dropout = float(module.dropout) if module.training else 0.0
        self.dropout_active = self.dropout > 0.0 and self.num_layers > 1
        # Masks come from torch's generator so that torch.manual_seed and checkpointing
        # (which restores torch's RNG state) see the same masks.
        self.seed = (
            int(torch.randint(0, 2**62, (1,), dtype=torch.int64).item())
            if self.dropout_active
            else None
        )


#: cell -> its _Config (made once: the fields are fixed at construction).
_CELL_CONFIGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cell_config(module: torch.nn.RNNCellBase) -> _Config:
    """The _Config of a cell: a one-layer, one-direction stack run for one step."""
    cfg = _CELL_CONFIGS.get(module)
    if cfg is not None and cfg.nonlinearity == getattr(module, "nonlinearity", "tanh"):
        return cfg
    cfg = object.__new__(_Config)
    if isinstance(module, torch.nn.LSTMCell):
        cfg.vf_mode, cfg.mode, cfg.nonlinearity = "LSTM", "lstm", "tanh"
    elif isinstance(module, torch.nn.GRUCell):
        cfg.vf_mode, cfg.mode, cfg.nonlinearity = "GRU", "gru", "tanh"
    else:
        cfg.nonlinearity = module.nonlinearity
        cfg.vf_mode, cfg.mode = f"RNN_{cfg.nonlinearity.upper()}", "rnn"
    cfg.owner = module
    cfg.num_layers, cfg.hidden_size, cfg.bidirectional = 1, int(module.hidden_size), False
    cfg.proj_size = 0
    cfg.bias = bool(module.bias)
    cfg.names = ["weight_ih_l0", "weight_hh_l0"]
    if cfg.bias:
        cfg.names += ["bias_ih_l0", "bias_hh_l0"]
    cfg.lengths, cfg.dropout, cfg.dropout_active, cfg.seed = None, 0.0, False, None
    _CELL_CONFIGS[module] = cfg
    return cfg


def _run_stack(
    cfg: _Config,
    x: torch.Tensor,
    h0: torch.Tensor | None,
    c0: torch.Tensor | None,
    params: tuple[torch.Tensor, ...],
    training: bool,
) -> tuple[list[torch.Tensor], Any]:
    """Run the engine; returns ([y, h_n(, c_n)] as tensors, tape or None).

    ``h0`` None (and for LSTM ``c0`` None) means zero initial states.
    """
    lstm = cfg.mode == "lstm"
    x_np = _np(x)
    h_np = None if h0 is None else _np(h0)
    c_np = None if c0 is None else _np(c0)
    p_np = _param_arrays(cfg.owner, cfg.names, params)
    if _BACKEND == "native" and not cfg.dropout_active:
        with _ThreadScope():
            packed = None if training or cfg.owner not in _PACKED else params
            y, states, tape = _native_stack(cfg, x_np, h_np, c_np, p_np, training, packed)
        return [_tensor(a, x.dtype) for a in (y, *states)], tape
    state: Any = None if h_np is None else ((h_np, c_np) if lstm else h_np)
    rng = np.random.default_rng(cfg.seed) if cfg.seed is not None else None
    with _ThreadScope():
        y, state_n, tape = _stack.stack_forward(
            cfg.mode,
            x_np,
            p_np,
            num_layers=cfg.num_layers,
            hidden_size=cfg.hidden_size,
            bidirectional=cfg.bidirectional,
            state=state,
            lengths=cfg.lengths,
            dropout=cfg.dropout,
            rng=rng,
            training=training or cfg.dropout_active,
            nonlinearity=cfg.nonlinearity,
            backend=_BACKEND,
            proj_size=cfg.proj_size,
        )
    states = list(state_n) if lstm else [state_n]
    if _BACKEND == "native":
        # The native engine's outputs are new arrays, never views of an input or of each
        # other: no alias checks (they took ~10 us of a ~80 us call at T = N = 1).
        outs = [_tensor(a, x.dtype) for a in (y, *states)]
    else:
        outs = _tensors([y, *states], x.dtype, [x_np, h_np, c_np, *p_np.values()])
    return outs, tape


class _NativeStackTape(list):
    """What ``_native_stack`` keeps for ``_native_stack_backward``: per layer, per
    direction, the kernel's tape (``_core.seq_forward``'s dict; with a projection,
    ``(_core.lstmp_forward``'s dict, the layer's input, W_ih, W_hh, W_hr)``)."""


def _native_stack(
    cfg: _Config,
    x: np.ndarray,
    h0: np.ndarray | None,
    c0: np.ndarray | None,
    params: dict[str, np.ndarray],
    training: bool,
    packed_from: tuple | None = None,
) -> tuple[np.ndarray, list[np.ndarray], _NativeStackTape | None]:
    """``_stack.stack_forward`` without dropout: the native kernel layer by layer, without
    the Python-side argument checks (torch.nn's ``check_forward_args`` has checked x and
    the states, the parameters are the module's, and the kernel's binding checks every
    array again). Those checks and the layers of wrappers around them were a quarter of a
    T = N = 1 inference call and a third of a training step. The tapes keep x and the
    weights as given: ``_StackFunction`` saves those tensors, so PyTorch raises if they
    change before the backward. ``packed_from``: the parameter tensors of an inference call
    of a module under pack_weights(), whose packed weights it then reads. Returns
    (y, [h_n(, c_n)], tape or None).
    """

    lstm = cfg.mode == "lstm"
    L, D, H, P = cfg.num_layers, 2 if cfg.bidirectional else 1, cfg.hidden_size, cfg.proj_size
    zeros = np.zeros((x.shape[1], H), x.dtype) if h0 is None or (lstm and c0 is None) else None
    hzeros = np.zeros((x.shape[1], P), x.dtype) if P and h0 is None else zeros
    hs, cs = [], []
    tape = _NativeStackTape() if training else None
    named = None if packed_from is None else dict(zip(cfg.names, packed_from))
    inp = x
    for k in range(L):
        outs, tapes = [], []
        for d in range(D):
            sfx = f"l{k}" + ("_reverse" if d else "")
            row = k * D + d
            if P:  # the projection's kernel
                wts = (params[f"weight_ih_{sfx}"], params[f"weight_hh_{sfx}"])
                w_hr = params[f"weight_hr_{sfx}"]
                pw = None if named is None else _packed_weights(cfg, named, sfx)
                y, h_n, c_n, t = _core.lstmp_forward(
                    inp, hzeros if h0 is None else h0[row], zeros if c0 is None else c0[row],
                    *wts, params.get(f"bias_ih_{sfx}"), params.get(f"bias_hh_{sfx}"), w_hr,
                    cfg.lengths, bool(d), training, False, None if pw is None else pw._data,
                )  # fmt: skip
                outs.append(y)
                tapes.append((t, inp, *wts, w_hr) if training else None)
                hs.append(h_n)
                cs.append(c_n)
                continue
            pw = None if named is None else _packed_weights(cfg, named, sfx)
            y, h_n, c_n, t = _core.seq_forward(
                cfg.mode,
                inp,
                zeros if h0 is None else h0[row],
                (zeros if c0 is None else c0[row]) if lstm else None,
                params[f"weight_ih_{sfx}"] if pw is None else pw.weight_ih,
                params[f"weight_hh_{sfx}"] if pw is None else pw.weight_hh,
                params.get(f"bias_ih_{sfx}"),
                params.get(f"bias_hh_{sfx}"),
                cfg.lengths,
                cfg.nonlinearity,
                True,  # reset_after: PyTorch's GRU
                bool(d),  # reverse
                training,
                False,  # copy_inputs: autograd's version counters guard the saved tensors
                False,  # poison
                packed=None if pw is None else pw._data,
                packed_isa=-1 if pw is None else pw._isa,
            )
            outs.append(y)
            tapes.append(t)
            hs.append(h_n)
            cs.append(c_n)
        if tape is not None:
            tape.append(tapes)
        inp = outs[0] if D == 1 else np.concatenate(outs, axis=2)
    states = [_stack_rows(hs), _stack_rows(cs)] if lstm else [_stack_rows(hs)]
    return inp, states, tape


def _native_stack_backward(
    cfg: _Config,
    tape: _NativeStackTape,
    dy: np.ndarray | None,
    dh_n: np.ndarray | None,
    dc_n: np.ndarray | None,
) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
    """BPTT through ``_native_stack``'s layers (``_stack.stack_backward`` for that tape).

    dy (T, N, D*S) or None, dh_n (L*D, N, S), dc_n (L*D, N, H) or None (zeros), with S the
    projection's size P or else H. Returns (dx, [dh_0(, dc_0)], name -> gradient); every
    array is new.
    """
    lstm = cfg.mode == "lstm"
    L, D, H, P = cfg.num_layers, 2 if cfg.bidirectional else 1, cfg.hidden_size, cfg.proj_size
    S = P or H  # the columns of each direction's output
    dh0: list[Any] = [None] * (L * D)
    dc0: list[Any] = [None] * (L * D)
    grads: dict[str, np.ndarray] = {}
    dout = dy
    for k in reversed(range(L)):
        dinp = None
        for d in range(D):
            row = k * D + d
            dy_d = dout
            if dout is not None and D == 2:
                dy_d = np.ascontiguousarray(dout[..., d * S : (d + 1) * S])
            dh = None if dh_n is None else dh_n[row]
            dc = None if dc_n is None else dc_n[row]
            if P:
                t, inp, w_ih, w_hh, w_hr = tape[k][d]
                g = _core.lstmp_backward(t, inp, w_ih, w_hh, w_hr, bool(d), dy_d, dh, dc, False)
            else:
                g = _core.seq_backward(
                    cfg.mode,
                    tape[k][d],
                    cfg.nonlinearity,
                    True,  # reset_after
                    bool(d),  # reverse
                    dy_d,
                    dh,
                    dc,
                    False,  # poison
                )
            dh0[row] = g["h0"]
            dc0[row] = g.get("c0")
            if dinp is None:
                dinp = g["x"]
            else:
                dinp += g["x"]  # both new arrays from the kernel
            sfx = f"l{k}" + ("_reverse" if d else "")
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
                if g.get(name) is not None:
                    grads[f"{name}_{sfx}"] = g[name]
        dout = dinp
    states = [np.stack(dh0), np.stack(dc0)] if lstm else [np.stack(dh0)]
    return dout, states, grads


def _torch_stack(
    cfg: _Config,
    x: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor | None,
    params: tuple[torch.Tensor, ...] | list[torch.Tensor],
) -> tuple[torch.Tensor, ...]:
    """The same computation as ``_run_stack`` with PyTorch's kernels (no dropout).

    x (T, N, I) time-major; used to recompute a layer for double backward.
    """
    fn = {
        "LSTM": torch._VF.lstm,
        "GRU": torch._VF.gru,
        "RNN_TANH": torch._VF.rnn_tanh,
        "RNN_RELU": torch._VF.rnn_relu,
    }[cfg.vf_mode]
    hx: Any = h0 if c0 is None else (h0, c0)
    common = (list(params), cfg.bias, cfg.num_layers, 0.0, False, cfg.bidirectional)
    if cfg.lengths is None:
        out = fn(x, hx, *common, False)
        return tuple(out)
    packed = pack_padded_sequence(
        x, torch.from_numpy(np.asarray(cfg.lengths, dtype=np.int64)), enforce_sorted=False
    )
    data, batch_sizes, sorted_idx, unsorted_idx = packed
    if c0 is None:
        hx = h0.index_select(1, sorted_idx)
    else:
        hx = (h0.index_select(1, sorted_idx), c0.index_select(1, sorted_idx))
    out = fn(data, batch_sizes, hx, *common)
    y, _ = pad_packed_sequence(
        PackedSequence(out[0], batch_sizes, sorted_idx, unsorted_idx), total_length=x.shape[0]
    )
    return (y, *(s.index_select(1, unsorted_idx) for s in out[1:]))


class _StackFunction(torch.autograd.Function):
    """Forward and BPTT of a whole RNN stack through fastrnn.

    Inputs: cfg, x (T, N, I) time-major, h0 (L*D, N, H), c0 (L*D, N, H) or None, then the
    parameters in ``cfg.names`` order. Outputs: y (T, N, D*H), h_n, and c_n for LSTM.
    """

    @staticmethod
    def forward(ctx, cfg, x, h0, c0, *params):  # type: ignore[override]
        # x and the parameters are saved below: PyTorch raises if they change before
        # backward, so the tape needs no private copies of them.
        with _native._tape_shares_inputs():
            outs, tape = _run_stack(cfg, x, h0, c0, params, training=True)
        ctx.cfg = cfg
        ctx.tape = tape
        ctx.has_c = c0 is not None
        # Saved for PyTorch's in-place modification checks and for double backward.
        ctx.save_for_backward(x, h0, c0, *params)
        ctx.set_materialize_grads(False)
        return tuple(outs)

    @staticmethod
    def backward(ctx, dy, dh, dc=None):  # type: ignore[override]
        # Unpacked once: with non-reentrant checkpointing each saved tensor may be
        # unpacked only once per backward (a second read raised CheckpointError).
        saved = ctx.saved_tensors
        x, h0, c0, params = saved[0], saved[1], saved[2], saved[3:]
        cfg: _Config = ctx.cfg
        if torch.is_grad_enabled():
            return (None, *_double_backward(cfg, x, h0, c0, params, dy, dh, dc))
        if isinstance(ctx.tape, _NativeStackTape):
            return _native_backward(ctx, x, dy, dh, dc)
        if dh is None and dc is None:
            dstate: Any = None
        elif not ctx.has_c:
            dstate = _np(dh)
        else:
            dstate = (
                _np(dh) if dh is not None else np.zeros(tuple(h0.shape), _np(h0).dtype),
                _np(dc) if dc is not None else np.zeros(tuple(c0.shape), _np(c0).dtype),
            )
        dy_np = None if dy is None else _np(dy)
        with _ThreadScope():
            dx, dstate0, grads = _stack.stack_backward(ctx.tape, dy_np, dstate)
        need = ctx.needs_input_grad
        dstates = [dstate0[0], dstate0[1]] if ctx.has_c else [dstate0, None]
        wanted = [dx, *dstates, *(grads[name] for name in cfg.names)]
        wanted = [a if need[1 + k] else None for k, a in enumerate(wanted)]
        if _BACKEND == "native":
            # New arrays from the kernels and stack_backward, as in _run_stack: no alias
            # checks (~20 us of a T = N = 1 training step).
            return (None, *(None if a is None else _tensor(a, x.dtype) for a in wanted))
        avoid = [dy_np, *(dstate if isinstance(dstate, tuple) else (dstate,))]
        gx, gh, gc, *gp = _tensors(wanted, x.dtype, avoid)
        return (None, gx, gh, gc, *gp)


def _native_backward(ctx: Any, x: torch.Tensor, dy: Any, dh: Any, dc: Any) -> tuple:
    """``_StackFunction.backward`` for a ``_native_stack`` tape (``x``: the saved input)."""
    with _ThreadScope():
        dx, dstates, grads = _native_stack_backward(
            ctx.cfg,
            ctx.tape,
            None if dy is None else _np(dy),
            None if dh is None else _np(dh),
            None if dc is None else _np(dc),
        )
    need = ctx.needs_input_grad
    if not ctx.has_c:
        dstates = [dstates[0], None]
    wanted = [dx, *dstates, *(grads.get(name) for name in ctx.cfg.names)]
    # All new arrays (as in _run_stack): no alias checks.
    return (
        None,
        *(
            None if a is None or not need[1 + k] else _tensor(a, x.dtype)
            for k, a in enumerate(wanted)
        ),
    )


def _double_backward(cfg, x, h0, c0, params, dy, dh, dc):
    """Differentiable gradients (create_graph=True): recompute the stack with PyTorch."""
    if cfg.dropout_active:
        raise RuntimeError(
            "fastrnn.torch: double backward (create_graph=True) is not supported with "
            "dropout active; use torch.nn's module or call .eval()"
        )
    _warn_fallback("double backward", stacklevel=2)
    inputs = [x, h0] + ([c0] if c0 is not None else []) + list(params)
    wanted = [t for t in inputs if t.requires_grad]
    with torch.enable_grad():
        outs = _torch_stack(cfg, x, h0, c0, params)
        pairs = [(o, g) for o, g in zip(outs, (dy, dh, dc)) if g is not None]
        grads = torch.autograd.grad(
            [o for o, _ in pairs],
            wanted,
            [g for _, g in pairs],
            create_graph=True,
            allow_unused=True,
        )
    it = iter(grads)
    full = [next(it) if t.requires_grad else None for t in inputs]
    if c0 is None:
        full.insert(2, None)
    return full


def _fallback_reason(module: Any, data: torch.Tensor, hx: Any, weights: Any = None) -> str | None:
    """Why fastrnn cannot serve this call, or None when it can. ``weights``: the module's
    parameters (default: a sequence module's ``_flat_weights``)."""
    if weights is None:
        weights = module._flat_weights
    # is_cpu: a tenth of the cost of device.type (this runs on every call)
    on_cpu = data.is_cpu and all(w is None or w.is_cpu for w in weights)
    if on_cpu and hx is not None:
        states = hx if isinstance(hx, (tuple, list)) else (hx,)
        on_cpu = all(not isinstance(t, torch.Tensor) or t.is_cpu for t in states)
    if not on_cpu:
        return "tensors not on the CPU"
    if data.dtype not in _SUPPORTED_DTYPES:
        return f"dtype {data.dtype}"
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return "TorchScript tracing"
    if torch.compiler.is_compiling():
        return "torch.compile"
    if torch._C._is_any_autocast_enabled():
        return "autocast"
    return None


def _padded_from_packed(data: torch.Tensor, batch_sizes: torch.Tensor):
    """(sum of lengths, I) packed data -> (T, N, I) zero-padded, the mask, the lengths."""
    t_max = int(batch_sizes.numel())
    n = int(batch_sizes[0])
    mask = torch.arange(n).unsqueeze(0) < batch_sizes.unsqueeze(1)  # (T, N)
    padded = data.new_zeros((t_max, n, data.shape[-1])).masked_scatter(mask.unsqueeze(-1), data)
    lengths = mask.sum(0).numpy().astype(np.int64)
    return padded, mask, lengths


class _FastRNNMixin:
    """The forward shared by the drop-ins; everything else is the torch.nn parent's."""

    def __prepare_scriptable__(self) -> torch.nn.Module:
        """``torch.jit.script`` compiles the torch.nn module with the same parameters.

        (torch.jit.script also puts that module in place of this one in a parent module.)
        """
        _warn_fallback(
            "TorchScript scripting; torch.jit.script swaps in the torch.nn module, "
            "sharing the parameters",
            stacklevel=3,
        )
        twin = object.__new__(_PARENT[type(self)])
        twin.__dict__ = dict(self.__dict__)
        for key in ("_parameters", "_buffers", "_modules"):
            twin.__dict__[key] = dict(self.__dict__[key])
        return twin

    def pack_weights(self) -> None:
        """From now on, keep each layer's weights laid out for fastrnn's kernels between
        inference calls (no autograd: ``torch.no_grad()``, ``torch.inference_mode()`` or
        parameters that do not require grad) instead of laying them out in every call, as
        torch.nn does with oneDNN's: 1.1-1.3x faster for short sequences and small batches,
        the same results bit for bit. Laid out at the first such call and again whenever a
        weight tensor is replaced or changed in place (its version counter moves: optimizer
        steps, ``load_state_dict``, in-place ops under ``torch.no_grad()``). Edits through
        ``.data`` move no version counter: call ``pack_weights()`` again after those. Costs
        one copy of the weights plus their layout. :meth:`unpack_weights` undoes it."""
        _PACKED[self] = {}

    def unpack_weights(self) -> None:
        """Stop keeping packed weights (:meth:`pack_weights`) and free them."""
        _PACKED.pop(self, None)

    def forward(self, input: torch.Tensor | PackedSequence, hx: Any = None) -> tuple[Any, Any]:
        """``output, h_n = module(input, h_0)`` (LSTM: ``output, (h_n, c_n)``), as torch.nn."""
        module: Any = self
        parent = _PARENT[type(self)]
        if isinstance(input, PackedSequence):
            data = input.data
        elif isinstance(input, torch.Tensor):
            data = input
        else:
            return parent.forward(self, input, hx)
        weight0 = module._flat_weights[0]
        if weight0 is not None and data.dtype != weight0.dtype:
            return parent.forward(self, input, hx)  # PyTorch raises its own error
        if data.numel() == 0:  # nothing to speed up; PyTorch returns or rejects it
            return parent.forward(self, input, hx)
        reason = _fallback_reason(module, data, hx)
        if reason is not None:
            _warn_fallback(reason)
            return parent.forward(self, input, hx)
        if "torch._dynamo" in sys.modules:  # torch.compile in use: never trace fastrnn's path
            return _outside_compile(_forward)(module, input, hx)
        return _forward(module, input, hx)


@functools.cache
def _outside_compile(fn: Any) -> Any:
    """``fn`` hidden from torch.compile's tracer (a graph break: it runs eagerly)."""
    return torch.compiler.disable(fn, recursive=True)


def _forward(module: Any, input: Any, hx: Any) -> Any:
    """Mirror of torch.nn's argument handling with fastrnn doing the sequence work."""
    module._update_flat_weights()
    is_lstm = module.mode == "LSTM"
    num_directions = 2 if module.bidirectional else 1
    orig_input = input
    batch_sizes = None
    sorted_indices = None
    unsorted_indices = None
    is_batched = True
    batch_dim = 0 if module.batch_first else 1

    def zeros(n: int, like: torch.Tensor, size: int | None = None) -> torch.Tensor:
        return torch.zeros(
            module.num_layers * num_directions,
            n,
            module.hidden_size if size is None else size,
            dtype=like.dtype,
            device=like.device,
        )

    if isinstance(orig_input, PackedSequence):
        input, batch_sizes, sorted_indices, unsorted_indices = input
        n = int(batch_sizes[0])
        if hx is not None:
            hx = module.permute_hidden(hx, sorted_indices)
    else:
        name = {"LSTM": "LSTM", "GRU": "GRU"}.get(module.mode, "RNN")
        if input.dim() not in (2, 3):
            raise ValueError(
                f"{name}: Expected input to be 2D or 3D, got {input.dim()}D"
                f"{' tensor' if name == 'RNN' else ''} instead"  # PyTorch's words for each
            )
        is_batched = input.dim() == 3
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        n = input.size(0) if module.batch_first else input.size(1)
        if hx is not None and is_lstm:
            want = 3 if is_batched else 2
            if hx[0].dim() != want or hx[1].dim() != want:
                kind = "batched 3-D" if is_batched else "unbatched 2-D"
                raise RuntimeError(
                    f"For {kind} input, hx and cx should also be {want}-D but got "
                    f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                )
            if not is_batched:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        elif hx is not None:
            if is_batched and hx.dim() != 3:
                raise RuntimeError(
                    f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor"
                )
            if not is_batched:
                if hx.dim() != 2:
                    raise RuntimeError(
                        f"For unbatched 2-D input, hx should also be 2-D but got "
                        f"{hx.dim()}-D tensor"
                    )
                hx = hx.unsqueeze(1)
    if hx is None:
        module.check_input(input, batch_sizes)
        h0 = c0 = None  # zeros (made below only if autograd needs tensors)
    else:
        module.check_forward_args(input, hx, batch_sizes)
        h0, c0 = (hx[0], hx[1]) if is_lstm else (hx, None)
        if h0.dtype != input.dtype or (c0 is not None and c0.dtype != input.dtype):
            raise RuntimeError(f"hx dtype ({h0.dtype}) must match the input dtype ({input.dtype})")

    mask = None
    lengths = None
    if batch_sizes is not None:
        x, mask, lengths = _padded_from_packed(input, batch_sizes)
    elif module.batch_first:
        x = input.transpose(0, 1)
    else:
        x = input
    cfg = _Config(module, lengths)
    params = tuple(module._flat_weights)

    inputs = (x, h0, c0, *params)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    if needs_grad:
        if h0 is None:
            h0 = zeros(n, x, getattr(module, "proj_size", 0) or None)
            c0 = zeros(n, x) if is_lstm else None
        outs = _StackFunction.apply(cfg, x, h0, c0, *params)
    else:
        outs, _ = _run_stack(cfg, x, h0, c0, params, training=False)
    y = outs[0]
    hidden: Any = (outs[1], outs[2]) if is_lstm else outs[1]

    if mask is not None:
        return (
            PackedSequence(y[mask], batch_sizes, sorted_indices, unsorted_indices),
            module.permute_hidden(hidden, unsorted_indices),
        )
    if module.batch_first:
        y = y.transpose(0, 1)
    if not is_batched:
        y = y.squeeze(batch_dim)
        hidden = (hidden[0].squeeze(1), hidden[1].squeeze(1)) if is_lstm else hidden.squeeze(1)
    return y, hidden


class _FastCellMixin(_FastRNNMixin):
    """The forward shared by the cell drop-ins: one step of the sequence engine.

    A cell is called once per step (decoding, streaming), so its per-call Python cost is
    most of its time: parameters come from ``_parameters`` (not ``nn.Module.__getattr__``),
    the config is made once per module, and without autograd the step goes straight from
    NumPy views to the kernel (``_cell_step``).
    """

    def forward(self, input: torch.Tensor, hx: Any = None) -> Any:
        """``h' = cell(input, h)`` (LSTMCell: ``h', c' = cell(input, (h, c))``), as torch.nn."""
        if "torch._dynamo" in sys.modules:  # torch.compile in use: never trace fastrnn's path
            return _outside_compile(_cell_call)(self, input, hx)
        return _cell_call(self, input, hx)


def _cell_call(module: Any, input: Any, hx: Any) -> Any:
    """A cell's forward: PyTorch's for what fastrnn does not serve, else ``_cell_forward``.
    (Hidden from torch.compile as a whole: Dynamo would otherwise trace the checks and then
    PyTorch's cell.)"""
    parent = _PARENT[type(module)]
    if not isinstance(input, torch.Tensor) or input.dim() not in (1, 2) or input.numel() == 0:
        return parent.forward(module, input, hx)  # PyTorch returns or raises its own error
    cfg = _cell_config(module)
    lstm = cfg.mode == "lstm"
    if hx is None:
        states: tuple = ()
    elif lstm and isinstance(hx, (tuple, list)):
        states = tuple(hx)
    else:
        states = (hx,)  # for LSTMCell the wrong count: PyTorch raises below
    want = (*input.shape[:-1], module.hidden_size)
    params = cfg.params_of(module)
    if (
        input.shape[-1] != module.input_size
        or input.dtype != params[0].dtype
        or len(states) not in (0, 2 if lstm else 1)
        or any(
            not isinstance(s, torch.Tensor) or s.shape != want or s.dtype != input.dtype
            for s in states
        )
    ):
        return parent.forward(module, input, hx)  # PyTorch's own checks and errors
    reason = _fallback_reason(module, input, states, params)
    if reason is not None:
        _warn_fallback(reason)
        return parent.forward(module, input, hx)
    return _cell_forward(module, cfg, params, input, states)


def _cell_forward(module: Any, cfg: _Config, params: tuple, input: torch.Tensor, states: tuple):
    """One step through the sequence engine: x (1, N, I), states (1, N, H)."""
    batched = input.dim() == 2
    n = input.shape[0] if batched else 1
    H = cfg.hidden_size
    lstm = cfg.mode == "lstm"
    shape = (n, H) if batched else (H,)
    grad = torch.is_grad_enabled() and (
        input.requires_grad
        or any(s.requires_grad for s in states)
        or any(p.requires_grad for p in params)
    )
    if not grad and _BACKEND == "native":
        h, c = _cell_step(cfg, params, _np(input).reshape(1, n, -1), states, n)
        h = torch.from_numpy(h.reshape(shape))  # new arrays from the kernel
        return (h, torch.from_numpy(c.reshape(shape))) if lstm else h
    x = input.reshape(1, n, module.input_size)
    h0 = c0 = None
    if states:
        h0 = states[0].reshape(1, n, H)
        c0 = states[1].reshape(1, n, H) if lstm else None
    if grad:
        if h0 is None:
            h0 = x.new_zeros((1, n, H))
            c0 = x.new_zeros((1, n, H)) if lstm else None
        outs = _StackFunction.apply(cfg, x, h0, c0, *params)
    else:
        outs, _ = _run_stack(cfg, x, h0, c0, params, training=False)
    h = outs[1].reshape(shape)
    return (h, outs[2].reshape(shape)) if lstm else h


def _cell_step(cfg: _Config, params: tuple, x: np.ndarray, states: tuple, n: int):
    """The native kernel for one step without autograd: x (1, n, I) -> (h', c' or None),
    new (n, H) arrays."""
    p = _param_arrays(cfg.owner, cfg.names, params)
    H = cfg.hidden_size
    # states: () or all of them (checked by _cell_call)
    zeros = None if states else np.zeros((n, H), x.dtype)
    h0 = _np(states[0]).reshape(n, H) if states else zeros
    c0 = (_np(states[1]).reshape(n, H) if states else zeros) if cfg.mode == "lstm" else None
    pw = _packed_weights(cfg, dict(zip(cfg.names, params)), "l0") if cfg.owner in _PACKED else None
    with _ThreadScope():
        _, h, c, _ = _core.seq_forward(
            cfg.mode,
            x,
            h0,
            c0,
            p["weight_ih_l0"] if pw is None else pw.weight_ih,
            p["weight_hh_l0"] if pw is None else pw.weight_hh,
            p.get("bias_ih_l0"),
            p.get("bias_hh_l0"),
            None,  # lengths
            cfg.nonlinearity,
            True,  # reset_after: PyTorch's GRU
            False,  # reverse
            False,  # training
            False,  # copy_inputs
            False,  # poison
            packed=None if pw is None else pw._data,
            packed_isa=-1 if pw is None else pw._isa,
        )
    return h, c


class RNN(_FastRNNMixin, torch.nn.RNN):
    """Drop-in ``torch.nn.RNN`` (Elman RNN, tanh or relu) running fastrnn on the CPU.

    Same constructor, parameters, state_dict and call signature as ``torch.nn.RNN``:
    ``output, h_n = rnn(input, h_0=None)``. See the module docstring for shapes.
    """


class LSTM(_FastRNNMixin, torch.nn.LSTM):
    """Drop-in ``torch.nn.LSTM`` running fastrnn on the CPU.

    Same constructor, parameters, state_dict and call signature as ``torch.nn.LSTM``:
    ``output, (h_n, c_n) = lstm(input, (h_0, c_0))``. See the module docstring for shapes.
    With ``proj_size > 0``, h_0, h_n and each direction's output have proj_size columns
    (:func:`fastrnn.functional.lstm`'s ``weight_hr``).
    """


class GRU(_FastRNNMixin, torch.nn.GRU):
    """Drop-in ``torch.nn.GRU`` (PyTorch's reset-after GRU) running fastrnn on the CPU.

    Same constructor, parameters, state_dict and call signature as ``torch.nn.GRU``:
    ``output, h_n = gru(input, h_0=None)``. See the module docstring for shapes.
    """


class RNNCell(_FastCellMixin, torch.nn.RNNCell):
    """Drop-in ``torch.nn.RNNCell`` (tanh or relu) running fastrnn on the CPU: one step,
    ``h' = cell(input, h=None)``, input (N, I) or (I,). Same constructor, parameters and
    state_dict as ``torch.nn.RNNCell``."""


class LSTMCell(_FastCellMixin, torch.nn.LSTMCell):
    """Drop-in ``torch.nn.LSTMCell`` running fastrnn on the CPU: one step,
    ``h', c' = cell(input, (h, c))``, input (N, I) or (I,). Same constructor, parameters
    and state_dict as ``torch.nn.LSTMCell``."""


class GRUCell(_FastCellMixin, torch.nn.GRUCell):
    """Drop-in ``torch.nn.GRUCell`` running fastrnn on the CPU: one step,
    ``h' = cell(input, h=None)``, input (N, I) or (I,). Same constructor, parameters and
    state_dict as ``torch.nn.GRUCell``."""


_PARENT: dict[type, type] = {
    RNN: torch.nn.RNN,
    LSTM: torch.nn.LSTM,
    GRU: torch.nn.GRU,
    RNNCell: torch.nn.RNNCell,
    LSTMCell: torch.nn.LSTMCell,
    GRUCell: torch.nn.GRUCell,
}
_TO_FAST: dict[type, type] = {v: k for k, v in _PARENT.items()}
_TO_TORCH: dict[type, type] = {v: k for k, v in _TO_FAST.items()}


def _swap_classes(model: torch.nn.Module, table: dict[type, type]) -> torch.nn.Module:
    for module in model.modules():
        new_class = table.get(type(module))
        if new_class is not None:
            module.__class__ = new_class
    return model


def convert(model: torch.nn.Module, inplace: bool = True) -> torch.nn.Module:
    """Make every ``torch.nn.RNN``/``LSTM``/``GRU`` (and ``*Cell``) in ``model`` (recursively)
    a fastrnn one.

    The modules keep their parameters (the very same ``Parameter`` objects, so an existing
    optimizer keeps working), buffers, hooks and training mode: only the class changes.
    Subclasses of the torch.nn modules are left alone (they may override ``forward``).
    With ``inplace=False`` a deep copy is converted and ``model`` is untouched.
    Returns the converted model (``model`` itself when ``inplace``).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"convert: model must be a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    return _swap_classes(model, _TO_FAST)


def revert(model: torch.nn.Module, inplace: bool = True) -> torch.nn.Module:
    """The inverse of :func:`convert`: fastrnn.torch modules become torch.nn ones again."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"revert: model must be a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    return _swap_classes(model, _TO_TORCH)
