"""Backends the benchmark can time, behind one small interface.

Every backend turns a case, a mode and a set of NumPy parameters into

- ``prepare(case, mode, params)``: a zero-argument callable, the unit that is timed
  (inference: a forward over the sequence; training: forward + backward producing every
  gradient; step: one time step with the state carried to the next call), and
- ``compute(case, mode, params)``: the same work returned as NumPy arrays, used by the
  correctness check against the float64 NumPy reference.

Result keys: ``y`` (T, N, H), ``h_n`` (N, H), ``c_n`` (LSTM), and in training mode the
gradients ``d_x``, ``d_h0``, ``d_c0`` (LSTM), ``d_weight_ih``, ``d_weight_hh``,
``d_bias_ih``, ``d_bias_hh`` (and ``d_weight_hr``, an LSTM's projection, and
``d_weight_peephole``, its peepholes) of ``L = sum(y*dy) + sum(h_n*dh_n) (+ sum(c_n*dc_n))``.
With a projection (``case.P``) y, h_n and their gradients have P columns instead of H.
Backends without peepholes (PyTorch, JAX) raise ``NotImplementedError`` for
``case.peephole``, which the runner reports as skipped.
In step mode ``compute`` runs ``T`` single steps carrying the state and stacks them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from fastrnn.bench.cases import Case

Params = dict[str, np.ndarray]
Outputs = dict[str, np.ndarray]

_GRAD_NAMES = ("x", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh")


def make_params(case: Case, dtype: str, seed: int = 0) -> Params:
    """Inputs, states, weights and upstream gradients for ``case`` (PyTorch's init range).

    Shapes: x (T, N, I); h0, c0, dh_n, dc_n (N, H); weight_ih (G*H, I);
    weight_hh (G*H, H); bias_ih, bias_hh (G*H,); dy (T, N, H). With a projection (S = P):
    h0, dh_n (N, P), weight_hh (4*H, P), dy (T, N, P) and weight_hr (P, H). With
    peepholes: weight_peephole (3*H,).
    """
    rng = np.random.default_rng(seed)
    T, N, I, H, G, S = case.T, case.N, case.I, case.H, case.gates, case.S
    k = 1.0 / np.sqrt(H)
    dt = np.dtype(dtype)

    def u(shape: tuple[int, ...], scale: float) -> np.ndarray:
        return rng.uniform(-scale, scale, size=shape).astype(dt, copy=False)

    p: Params = {
        "x": u((T, N, I), 1.0),
        "h0": u((N, S), 0.5),
        "weight_ih": u((G * H, I), k),
        "weight_hh": u((G * H, S), k),
        "bias_ih": u((G * H,), k),
        "bias_hh": u((G * H,), k),
        "dy": u((T, N, S), 1.0),
        "dh_n": u((N, S), 1.0),
    }
    if case.cell == "lstm":
        p["c0"] = u((N, H), 0.5)
        p["dc_n"] = u((N, H), 1.0)
    if case.P:
        p["weight_hr"] = u((case.P, H), k)
    if case.peephole:
        p["weight_peephole"] = u((3 * H,), k)
    return p


# --------------------------------------------------------------------------------------
# fastrnn.functional (native and reference)
# --------------------------------------------------------------------------------------


def _forward(fn: Any, cell: str, p: Params, x: np.ndarray, state: tuple, **kw: Any) -> Any:
    w = (p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])
    if cell == "lstm":
        for name in ("weight_hr", "weight_peephole"):
            if name in p:
                kw[name] = p[name]
        return fn.lstm(x, state[0], state[1], *w, **kw)
    return getattr(fn, cell)(x, state[0], *w, **kw)


def _split(cell: str, out: Any) -> tuple[np.ndarray, tuple]:
    y, st = out[0], out[1]
    return y, (tuple(st) if cell == "lstm" else (st,))


def _init_state(cell: str, p: Params) -> tuple:
    return (p["h0"], p["c0"]) if cell == "lstm" else (p["h0"],)


def _state_outputs(cell: str, state: tuple) -> Outputs:
    out = {"h_n": np.asarray(state[0])}
    if cell == "lstm":
        out["c_n"] = np.asarray(state[1])
    return out


def _backward(fn: Any, cell: str, tape: Any, p: Params) -> dict:
    if cell == "lstm":
        return fn.lstm_backward(tape, p["dy"], p["dh_n"], p["dc_n"])
    return getattr(fn, f"{cell}_backward")(tape, p["dy"], p["dh_n"])


class Backend:
    """Base class: ``name``, availability, versions, thread control, the two entry points."""

    name = "?"
    # True when tracemalloc sees its buffers (NumPy arrays, fastrnn's buffer cache)
    traced_memory = False
    # False: timed on its own after the others instead of interleaved with them (see
    # fastrnn.bench.run).
    interleave = True

    def unavailable(self) -> str | None:
        """None when usable here, else the reason it is not."""
        return None

    def version(self) -> str:
        return ""

    def set_threads(self, n: int) -> str:
        """Use ``n`` threads; returns a note when that cannot be honoured exactly."""
        return ""

    def prepare(self, case: Case, mode: str, p: Params) -> Callable[[], Any]:
        raise NotImplementedError

    def compute(self, case: Case, mode: str, p: Params) -> Outputs:
        raise NotImplementedError


class FunctionalBackend(Backend):
    """``fastrnn.functional`` with ``backend="native"`` or ``"reference"``."""

    traced_memory = True

    def __init__(self, which: str) -> None:
        self.name = which
        # The reference's per-step NumPy products leave the BLAS worker threads spinning
        # for up to ~0.1 s after each call, which would slow whichever backend comes next.
        self.interleave = which != "reference"
        self.which = which

    def unavailable(self) -> str | None:
        module = "fastrnn._native" if self.which == "native" else "fastrnn.reference"
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{exc}"
        return None

    def version(self) -> str:
        import fastrnn

        return str(fastrnn.__version__)

    def set_threads(self, n: int) -> str:
        import fastrnn

        fastrnn.set_num_threads(n)
        if self.which == "reference":
            return _set_blas_threads(n)
        return ""

    def _fn(self) -> Any:
        from fastrnn import functional

        return functional

    def _setup(self, case: Case, p: Params) -> tuple[Params, dict[str, Any]]:
        """The parameters and extra keyword arguments of this backend's calls."""
        return p, {"backend": self.which}

    def prepare(self, case: Case, mode: str, p: Params) -> Callable[[], Any]:
        p, kw = self._setup(case, p)
        fn, cell = self._fn(), case.cell
        state0 = _init_state(cell, p)
        if mode == "inference":
            return lambda: _forward(fn, cell, p, p["x"], state0, **kw)
        if mode == "training":

            def train() -> Any:
                out = _forward(fn, cell, p, p["x"], state0, training=True, **kw)
                return _backward(fn, cell, out[2], p)

            return train
        steps = [p["x"][t : t + 1] for t in range(p["x"].shape[0])]
        box = {"t": 0, "state": state0}

        def step() -> None:
            t = box["t"]
            _, box["state"] = _split(cell, _forward(fn, cell, p, steps[t], box["state"], **kw))
            box["t"] = (t + 1) % len(steps)

        return step

    def compute(self, case: Case, mode: str, p: Params) -> Outputs:
        p, kw = self._setup(case, p)
        fn, cell = self._fn(), case.cell
        state0 = _init_state(cell, p)
        if mode == "step":
            ys, state = [], state0
            for t in range(p["x"].shape[0]):
                y, state = _split(cell, _forward(fn, cell, p, p["x"][t : t + 1], state, **kw))
                ys.append(y[0])
            return {"y": np.stack(ys), **_state_outputs(cell, state)}
        out = _forward(fn, cell, p, p["x"], state0, training=mode == "training", **kw)
        y, state = _split(cell, out)
        res = {"y": np.asarray(y), **_state_outputs(cell, state)}
        if mode == "training":
            grads = _backward(fn, cell, out[2], p)
            res.update({f"d_{k}": np.asarray(v) for k, v in grads.items() if v is not None})
        return res


class PackedNativeBackend(FunctionalBackend):
    """``native`` with each case's weights laid out once before it is timed
    (``fastrnn.functional.pack_weights``), as oneDNN's and cuDNN's programs do with theirs;
    ``native`` lays them out in every call, as ``torch.nn`` does."""

    def __init__(self) -> None:
        super().__init__("native")
        self.name = "native-packed"

    def _setup(self, case: Case, p: Params) -> tuple[Params, dict[str, Any]]:
        from fastrnn import functional

        packed = functional.pack_weights(
            case.cell, p["weight_ih"], p["weight_hh"], weight_hr=p.get("weight_hr")
        )
        p = dict(p, weight_ih=packed.weight_ih, weight_hh=packed.weight_hh)
        if packed.weight_hr is not None:
            p["weight_hr"] = packed.weight_hr
        return p, {"backend": "native", "packed": packed}


def _set_blas_threads(n: int) -> str:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "NumPy's BLAS threads not set (threadpoolctl not installed)"
    threadpool_limits(limits=n)
    return ""


def reference_outputs(case: Case, mode: str, p: Params) -> Outputs:
    """The oracle: the NumPy reference in float64 on the same parameters."""
    p64 = {k: np.asarray(v, np.float64) for k, v in p.items()}
    return FunctionalBackend("reference").compute(case, mode, p64)


# --------------------------------------------------------------------------------------
# PyTorch (torch.nn) and fastrnn.torch drop-ins
# --------------------------------------------------------------------------------------

# Per-layer parameter names in PyTorch's order; weight_hr only with a projection.
_TORCH_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


class TorchBackend(Backend):
    """``torch.nn.LSTM/GRU/RNN`` (and ``*Cell`` for step mode), weights copied in."""

    name = "torch"
    module_name = "torch.nn"
    probe_modules: tuple[str, ...] = ("torch",)

    def unavailable(self) -> str | None:
        # Probe without importing torch (slow): find_spec("torch.nn") would import it.
        for module in self.probe_modules:
            try:
                found = importlib.util.find_spec(module) is not None
            except ImportError:
                found = False
            if not found:
                return f"No module named {module!r}"
        return None

    def version(self) -> str:
        import torch

        return str(torch.__version__)

    def set_threads(self, n: int) -> str:
        import torch

        torch.set_num_threads(n)
        return ""

    def _classes(self) -> dict[str, Any]:
        mod = importlib.import_module(self.module_name)
        return {"lstm": mod.LSTM, "gru": mod.GRU, "rnn": mod.RNN}

    def _cell_classes(self) -> dict[str, Any] | None:
        import torch

        nn = torch.nn
        return {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}

    def _module(self, case: Case, p: Params, step: bool) -> Any:
        import torch

        if case.peephole:
            raise NotImplementedError(f"{self.module_name} has no peephole LSTM")

        dtype = torch.float64 if p["x"].dtype == np.float64 else torch.float32
        cells = self._cell_classes() if step else None
        suffix = "" if cells else "_l0"
        cls = (cells or self._classes())[case.cell]
        if case.P:  # torch.nn.LSTM's notice on every call that oneDNN takes no projection
            warnings.filterwarnings("ignore", "LSTM with projections is not supported")
        m = (cls(case.I, case.H, proj_size=case.P) if case.P else cls(case.I, case.H)).to(dtype)
        with torch.no_grad():
            for name in _TORCH_PARAMS[: 5 if case.P else 4]:
                getattr(m, name + suffix).copy_(torch.from_numpy(p[name]))
        return m, bool(cells)

    def _tensors(self, p: Params) -> dict[str, Any]:
        import torch

        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in p.items()}

    def _state_in(self, case: Case, tp: dict, is_cell: bool) -> Any:
        def s(v: Any) -> Any:
            return v if is_cell else v.unsqueeze(0)

        if case.cell == "lstm":
            return (s(tp["h0"]), s(tp["c0"]))
        return s(tp["h0"])

    def prepare(self, case: Case, mode: str, p: Params) -> Callable[[], Any]:
        import torch

        tp = self._tensors(p)
        if mode == "step":
            m, is_cell = self._module(case, p, step=True)
            xs = [tp["x"][t] if is_cell else tp["x"][t : t + 1] for t in range(case.T)]
            box = {"t": 0, "state": self._state_in(case, tp, is_cell)}

            def step() -> None:
                t = box["t"]
                with torch.inference_mode():
                    out = m(xs[t], box["state"])
                box["state"] = out if is_cell else out[1]
                box["t"] = (t + 1) % len(xs)

            return step
        m, _ = self._module(case, p, step=False)
        st = self._state_in(case, tp, False)
        if mode == "inference":

            def infer() -> Any:
                with torch.inference_mode():
                    return m(tp["x"], st)

            return infer
        return lambda: self._train(case, m, tp)

    def _train(self, case: Case, m: Any, tp: dict) -> dict:
        import torch

        x = tp["x"].detach().requires_grad_(True)
        h0 = tp["h0"].unsqueeze(0).detach().requires_grad_(True)
        leaves = [x, h0]
        if case.cell == "lstm":
            c0 = tp["c0"].unsqueeze(0).detach().requires_grad_(True)
            leaves.append(c0)
            y, (hn, cn) = m(x, (h0, c0))
            outs, grads = [y, hn, cn], [tp["dy"], tp["dh_n"][None], tp["dc_n"][None]]
        else:
            y, hn = m(x, h0)
            outs, grads = [y, hn], [tp["dy"], tp["dh_n"][None]]
        pnames = list(_TORCH_PARAMS[: 5 if case.P else 4])
        params = [getattr(m, n + "_l0") for n in pnames]
        got = torch.autograd.grad(outs, leaves + params, grads)
        names = ["x", "h0"] + (["c0"] if case.cell == "lstm" else []) + pnames
        return dict(zip(names, got))

    def compute(self, case: Case, mode: str, p: Params) -> Outputs:
        import torch

        tp = self._tensors(p)
        if mode == "step":
            m, is_cell = self._module(case, p, step=True)
            state, ys = self._state_in(case, tp, is_cell), []
            with torch.inference_mode():
                for t in range(case.T):
                    xt = tp["x"][t] if is_cell else tp["x"][t : t + 1]
                    out = m(xt, state)
                    state = out if is_cell else out[1]
                    h = state[0] if case.cell == "lstm" else state
                    ys.append(h.reshape(case.N, case.H).numpy().copy())
            res: Outputs = {"y": np.stack(ys)}
        else:
            m, _ = self._module(case, p, step=False)
            with torch.inference_mode():
                y, state = m(tp["x"], self._state_in(case, tp, False))
            res = {"y": y.numpy().copy()}
            if mode == "training":
                grads = self._train(case, m, tp)
                for k, v in grads.items():
                    res[f"d_{k}"] = v.detach().numpy().reshape(p[k].shape).copy()
        if case.cell == "lstm":
            res["h_n"] = state[0].detach().reshape(case.N, case.S).numpy().copy()
            res["c_n"] = state[1].detach().reshape(case.N, case.H).numpy().copy()
        else:
            res["h_n"] = state.detach().reshape(case.N, case.H).numpy().copy()
        return res


class FastrnnTorchBackend(TorchBackend):
    """``fastrnn.torch.LSTM/GRU/RNN``: the drop-in modules (absent until that module exists)."""

    name = "fastrnn.torch"
    module_name = "fastrnn.torch"
    probe_modules = ("torch", "fastrnn.torch")

    def version(self) -> str:
        import fastrnn

        return str(fastrnn.__version__)

    def set_threads(self, n: int) -> str:
        import fastrnn

        fastrnn.set_num_threads(n)
        return super().set_threads(n)

    def _cell_classes(self) -> dict[str, Any] | None:
        mod = importlib.import_module(self.module_name)
        names = {"lstm": "LSTMCell", "gru": "GRUCell", "rnn": "RNNCell"}
        if all(hasattr(mod, v) for v in names.values()):
            return {k: getattr(mod, v) for k, v in names.items()}
        return None  # step mode then runs the sequence module with T = 1


# --------------------------------------------------------------------------------------
# JAX: jitted lax.scan
# --------------------------------------------------------------------------------------


class JaxBackend(Backend):
    """A jitted ``lax.scan`` over time after one input-projection matmul for all steps;
    training is ``jax.vjp`` of the same function (every gradient); step mode is the jitted
    cell alone. The thread count is set through ``XLA_FLAGS`` before JAX is first
    imported (1 thread: Eigen's multi-threading off); it cannot change afterwards."""

    name = "jax"

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("jax") is None:
            return "No module named 'jax'"
        return None

    def version(self) -> str:
        import jax

        return str(jax.__version__)

    def set_threads(self, n: int) -> str:
        if "jax" in sys.modules:
            return "JAX already imported: thread count left as it was"
        if n == 1:
            flags = os.environ.get("XLA_FLAGS", "")
            extra = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            os.environ["XLA_FLAGS"] = f"{flags} {extra}".strip()
            return ""
        return "" if n >= (os.cpu_count() or 1) else f"JAX uses all cores, not {n}"

    def _jax(self, dtype: np.dtype) -> Any:
        import jax

        if dtype == np.float64:
            jax.config.update("jax_enable_x64", True)
        return jax

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], dict[str, Any]] = {}

    def _fns(self, case: Case, jax: Any) -> dict[str, Any]:
        """Jitted functions per (cell, H), kept so repeated shapes are compiled once."""
        key = (case.cell, case.H)
        if key not in self._cache:
            self._cache[key] = self._make_fns(case, jax)
        return self._cache[key]

    def _make_fns(self, case: Case, jax: Any) -> dict[str, Any]:
        jnp, lax, cell, H = jax.numpy, jax.lax, case.cell, case.H

        def cell_step(w: tuple, state: tuple, gx: Any) -> tuple:
            _, w_hh, _, b_hh = w
            h = state[0]
            gh = h @ w_hh.T + b_hh
            if cell == "lstm":
                g = gx + gh
                i = jax.nn.sigmoid(g[:, :H])
                f = jax.nn.sigmoid(g[:, H : 2 * H])
                gg = jnp.tanh(g[:, 2 * H : 3 * H])
                o = jax.nn.sigmoid(g[:, 3 * H :])
                c = f * state[1] + i * gg
                return (o * jnp.tanh(c), c)
            if cell == "gru":
                r = jax.nn.sigmoid(gx[:, :H] + gh[:, :H])
                z = jax.nn.sigmoid(gx[:, H : 2 * H] + gh[:, H : 2 * H])
                n = jnp.tanh(gx[:, 2 * H :] + r * gh[:, 2 * H :])
                return ((1 - z) * n + z * h,)
            return (jnp.tanh(gx + gh),)

        def seq(w: tuple, x: Any, state: tuple) -> tuple:
            gx = x @ w[0].T + w[2]  # (T, N, G*H): all steps at once

            def body(carry: tuple, g: Any) -> tuple:
                new = cell_step(w, carry, g)
                return new, new[0]

            final, y = lax.scan(body, state, gx)
            return y, final

        def loss(w: tuple, x: Any, state: tuple, dy: Any, dst: tuple) -> Any:
            y, final = seq(w, x, state)
            return jnp.sum(y * dy) + sum(jnp.sum(a * b) for a, b in zip(final, dst))

        def one_step(w: tuple, x_t: Any, state: tuple) -> tuple:
            return cell_step(w, state, x_t @ w[0].T + w[2])

        return {
            "inference": jax.jit(seq),
            "training": jax.jit(jax.grad(loss, argnums=(0, 1, 2))),
            "step": jax.jit(one_step),
        }

    def _args(self, case: Case, p: Params, jax: Any) -> tuple:
        a = {k: jax.numpy.asarray(v) for k, v in p.items()}
        w = (a["weight_ih"], a["weight_hh"], a["bias_ih"], a["bias_hh"])
        names = ("h0", "c0") if case.cell == "lstm" else ("h0",)
        dnames = ("dh_n", "dc_n") if case.cell == "lstm" else ("dh_n",)
        return a, w, tuple(a[n] for n in names), tuple(a[n] for n in dnames)

    def prepare(self, case: Case, mode: str, p: Params) -> Callable[[], Any]:
        if case.P:
            raise NotImplementedError("the JAX backend has no LSTM projection")
        if case.peephole:
            raise NotImplementedError("the JAX backend has no peephole LSTM")
        jax = self._jax(p["x"].dtype)
        f = self._fns(case, jax)[mode]
        a, w, st, dst = self._args(case, p, jax)
        if mode == "inference":
            return lambda: jax.block_until_ready(f(w, a["x"], st))
        if mode == "training":
            return lambda: jax.block_until_ready(f(w, a["x"], st, a["dy"], dst))
        xs = [a["x"][t] for t in range(case.T)]
        box = {"t": 0, "state": st}

        def step() -> None:
            t = box["t"]
            box["state"] = jax.block_until_ready(f(w, xs[t], box["state"]))
            box["t"] = (t + 1) % len(xs)

        return step

    def compute(self, case: Case, mode: str, p: Params) -> Outputs:
        if case.P:
            raise NotImplementedError("the JAX backend has no LSTM projection")
        if case.peephole:
            raise NotImplementedError("the JAX backend has no peephole LSTM")
        jax = self._jax(p["x"].dtype)
        fns = self._fns(case, jax)
        a, w, st, dst = self._args(case, p, jax)
        if mode == "step":
            ys, state = [], st
            for t in range(case.T):
                state = fns["step"](w, a["x"][t], state)
                ys.append(np.asarray(state[0]))
            res: Outputs = {"y": np.stack(ys)}
        else:
            y, state = fns["inference"](w, a["x"], st)
            res = {"y": np.asarray(y)}
        res["h_n"] = np.asarray(state[0])
        if case.cell == "lstm":
            res["c_n"] = np.asarray(state[1])
        if mode == "training":
            gw, gx, gst = fns["training"](w, a["x"], st, a["dy"], dst)
            names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            res.update({f"d_{n}": np.asarray(g) for n, g in zip(names, gw)})
            res["d_x"] = np.asarray(gx)
            res["d_h0"] = np.asarray(gst[0])
            if case.cell == "lstm":
                res["d_c0"] = np.asarray(gst[1])
        return res


def all_backends() -> dict[str, Backend]:
    """Every backend the runner knows, by name (available or not)."""
    backends: list[Backend] = [
        FunctionalBackend("native"),
        PackedNativeBackend(),
        FunctionalBackend("reference"),
        TorchBackend(),
        FastrnnTorchBackend(),
        JaxBackend(),
    ]
    return {b.name: b for b in backends}
