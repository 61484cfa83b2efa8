"""Optimizers (SGD, Adam) and gradient clipping, with PyTorch's update rules.

Optimizers take one module or a sequence of modules (anything with ``params`` and
``grads`` dicts of the same keys) and update the parameter arrays **in place**, so layers
and composite models see the new values without reassignment.

Clipping functions take modules, grad dicts, or a list mixing both, and scale the
gradient arrays in place. Clipping is a separate step between ``backward`` and ``step``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from fastrnn import _core
from fastrnn._runtime import _empty
from fastrnn.reference import FLOAT_DTYPES

__all__ = ["SGD", "Adam", "Optimizer", "clip_grad_norm", "clip_grad_value"]


def _as_module_list(modules: Any) -> list[Any]:
    items = list(modules) if isinstance(modules, (list, tuple)) else [modules]
    if not items:
        raise ValueError("modules must be a module or a non-empty sequence of modules")
    for m in items:
        if not (hasattr(m, "params") and hasattr(m, "grads")):
            raise TypeError(f"modules must have .params and .grads dicts, got {type(m).__name__}")
    return items


def _number(name: str, value: Any, lo: float, hi: float = math.inf, hi_open: bool = False) -> float:
    """``value`` as a float in ``[lo, hi]`` (``[lo, hi)`` with ``hi_open``): a real number
    (anything ``float()`` takes but a bool, a string or a complex: also NumPy scalars and
    0-d arrays, fractions, decimals), not NaN; a clear error naming ``name`` otherwise."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or np.iscomplexobj(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    if not (lo <= v and (v < hi if hi_open else v <= hi)):
        upper = "" if hi == math.inf else (f" and < {hi}" if hi_open else f" and <= {hi}")
        raise ValueError(f"{name} must be >= {lo}{upper}, got {value!r}")
    return v


def _grad_arrays(modules_or_grad_dicts: Any) -> list[np.ndarray]:
    items = (
        list(modules_or_grad_dicts)
        if isinstance(modules_or_grad_dicts, (list, tuple))
        else [modules_or_grad_dicts]
    )
    out: list[np.ndarray] = []
    for it in items:
        if isinstance(it, dict):
            grads = it
        elif hasattr(it, "grads"):
            grads = it.grads
        else:
            raise TypeError(
                f"expected modules (with .grads) or gradient dicts, got {type(it).__name__}"
            )
        for k, g in grads.items():
            if not isinstance(g, np.ndarray):
                raise TypeError(f"gradient {k!r} must be a numpy array, got {type(g).__name__}")
            if not np.issubdtype(g.dtype, np.floating):
                # an integer array would be scaled by a coefficient cast to int: zeros
                raise TypeError(f"gradient {k!r} must be a float array, got dtype {g.dtype}")
            out.append(g)
    return out


def clip_grad_norm(
    modules_or_grad_dicts: Any,
    max_norm: float,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
) -> float:
    """Scale all gradients together so their global norm is at most ``max_norm``.

    ``total = (sum_g ||g||_p^p)^(1/p)`` over every gradient array (``p = inf``: the
    largest ``|g|``). If ``total > max_norm``, every gradient is multiplied in place by
    ``max_norm / (total + 1e-6)`` (PyTorch's ``clip_grad_norm_``). Returns ``total``, the
    norm *before* clipping. Non-finite ``total`` raises RuntimeError if
    ``error_if_nonfinite``, otherwise the gradients are scaled (to NaN) as PyTorch does.
    """
    if isinstance(norm_type, str):
        if norm_type != "inf":
            raise ValueError(f"norm_type must be a positive number or 'inf', got {norm_type!r}")
        p = math.inf
    else:
        p = float(norm_type)
    if not p > 0:
        raise ValueError(f"norm_type must be positive, got {norm_type!r}")
    max_norm = _number("max_norm", max_norm, 0.0)
    grads = _grad_arrays(modules_or_grad_dicts)
    if not grads:
        return 0.0
    if p == math.inf:
        total = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in grads)
    else:
        acc = 0.0
        for g in grads:
            a = np.abs(g.astype(np.float64, copy=False))
            acc += float(np.sum(a * a) if p == 2.0 else np.sum(a**p))
        total = acc ** (1.0 / p)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"the total norm of order {p} of the gradients is non-finite ({total})")
    coef = max_norm / (total + 1e-6)
    if coef < 1.0 or math.isnan(coef):
        for g in grads:
            g *= g.dtype.type(coef)
    return total


def clip_grad_value(modules_or_grad_dicts: Any, clip_value: float) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]`` in place."""
    clip_value = _number("clip_value", clip_value, 0.0)
    for g in _grad_arrays(modules_or_grad_dicts):
        np.clip(g, -clip_value, clip_value, out=g)


class Optimizer:
    """Base: holds the modules and per-parameter state keyed by (module index, name)."""

    def __init__(self, modules: Any) -> None:
        self.modules = _as_module_list(modules)
        self.state: dict[tuple[int, str], dict[str, Any]] = {}

    def _pairs(self) -> Iterator[tuple[tuple[int, str], np.ndarray, np.ndarray]]:
        # every pair checked before the first update; a parameter reachable twice (a module
        # and its parent both passed) updates once
        seen: set[int] = set()
        pairs = []
        for i, m in enumerate(self.modules):
            params, grads = m.params, m.grads
            for name, p in params.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                if not p.flags.writeable:
                    raise ValueError(
                        f"params[{name!r}] is read-only: an optimizer updates parameters in "
                        "place (weights packed for inference by pack_weights(): call "
                        "unpack_weights() before training)"
                    )
                if name not in grads:
                    raise KeyError(f"grads has no entry for params[{name!r}]")
                g = grads[name]
                if g.shape != p.shape:
                    raise ValueError(f"grads[{name!r}] shape {g.shape} != params {p.shape}")
                pairs.append(((i, name), p, g))
        return iter(pairs)

    def zero_grad(self) -> None:
        """Zero every module's gradients."""
        for m in self.modules:
            m.zero_grad()

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """A deep copy of the optimizer state (``{"state": {(i, name): {...}}}``)."""
        return {
            "state": {
                k: {n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in s.items()}
                for k, s in self.state.items()
            }
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore state saved by :meth:`state_dict` (of an optimizer over modules with
        the same parameters): checked entry by entry before anything changes."""
        if not isinstance(d, dict) or not isinstance(d.get("state"), dict):
            raise ValueError("expected a dict with a 'state' dict, as state_dict() returns")
        state = {}
        for k, s in d["state"].items():
            i, name = k if isinstance(k, (tuple, list)) and len(k) == 2 else (None, None)
            if not (
                isinstance(i, (int, np.integer))
                and not isinstance(i, bool)
                and 0 <= i < len(self.modules)
                and name in self.modules[i].params
            ):
                raise ValueError(f"state: key {k!r} names no parameter of these modules")
            i = int(i)
            p = self.modules[i].params[name]
            if not isinstance(s, dict):
                raise ValueError(f"state[{k!r}] must be a dict, got {type(s).__name__}")
            for n, v in s.items():
                if n == "step":
                    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                        raise ValueError(f"state[{k!r}]['step'] must be an int >= 0, got {v!r}")
                elif isinstance(v, np.ndarray) and v.shape != p.shape:
                    raise ValueError(
                        f"state[{k!r}][{n!r}] has shape {v.shape}, the parameter {p.shape}"
                    )
            state[(i, name)] = {
                n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in s.items()
            }
        self.state = state


def _fused_ok(p: np.ndarray, *others: np.ndarray) -> bool:
    """Whether the native fused update can run on these arrays: float32/float64,
    C-contiguous, one dtype and size, writable state, no two sharing memory."""
    if p.dtype not in FLOAT_DTYPES or not p.flags.c_contiguous or not p.flags.writeable:
        return False
    for a in others:
        if a.dtype != p.dtype or a.size != p.size or not a.flags.c_contiguous:
            return False
    if not all(a.flags.writeable for a in others[1:]):  # the state arrays
        return False
    arrays = (p, *others)
    return not any(np.may_share_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1 :])


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

    PyTorch's rule, per parameter ``p`` with gradient ``g``::

        g = g + weight_decay * p
        if momentum:  b = g (first step) else b = momentum * b + (1 - dampening) * g
                      g = g + momentum * b if nesterov else b
        p -= lr * g
    """

    def __init__(
        self,
        modules: Any,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        dampening: float = 0.0,
    ) -> None:
        super().__init__(modules)
        self.lr = _number("lr", lr, 0.0)
        self.momentum = _number("momentum", momentum, 0.0)
        self.weight_decay = _number("weight_decay", weight_decay, 0.0)
        self.dampening = _number("dampening", dampening, 0.0, 1.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool, got {type(nesterov).__name__}")
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov requires momentum > 0 and dampening == 0")
        self.nesterov = bool(nesterov)

    def step(self) -> None:
        """Apply one update to every parameter, in place."""
        for key, p, g in self._pairs():
            d = g
            if self.weight_decay:
                d = d + p.dtype.type(self.weight_decay) * p
            if self.momentum:
                st = self.state.setdefault(key, {})
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = st["momentum_buffer"] = np.array(d, dtype=p.dtype, copy=True)
                else:
                    buf *= p.dtype.type(self.momentum)
                    buf += p.dtype.type(1.0 - self.dampening) * d
                d = d + p.dtype.type(self.momentum) * buf if self.nesterov else buf
            p -= p.dtype.type(self.lr) * d


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's update rule and L2 ``weight_decay``::

    g = g + weight_decay * p
    m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2     (m, v start at 0)
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    float32/float64 contiguous parameters are updated by one fused native pass (on
    fastrnn's threads) that gives the same bits as these expressions in NumPy.
    """

    def __init__(
        self,
        modules: Any,
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(modules)
        self.lr = _number("lr", lr, 0.0)
        if not isinstance(betas, (tuple, list, np.ndarray)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        self.betas = (
            _number("betas[0]", betas[0], 0.0, 1.0, hi_open=True),
            _number("betas[1]", betas[1], 0.0, 1.0, hi_open=True),
        )
        self.eps = _number("eps", eps, 0.0)
        self.weight_decay = _number("weight_decay", weight_decay, 0.0)

    def step(self) -> None:
        """Apply one update to every parameter, in place."""
        b1, b2 = self.betas
        for key, p, g in self._pairs():
            T = p.dtype.type
            st = self.state.get(key)
            if st is None:
                st = self.state[key] = {
                    "step": 0,
                    "exp_avg": np.zeros_like(p),
                    "exp_avg_sq": np.zeros_like(p),
                }
            st["step"] += 1
            t = st["step"]
            m, v = st["exp_avg"], st["exp_avg_sq"]
            bc1 = 1.0 - b1**t
            bc2 = 1.0 - b2**t
            if _fused_ok(p, g, m, v):
                # One pass in C++ (csrc/optim/adam.cpp), the same operations in the same
                # order as below, so the same bits; on fastrnn's threads. 5.7M parameters:
                # 24 ms -> ~4 ms per step (2 threads).
                wd = self.weight_decay
                _core.adam_step(
                    p, g, m, v, bool(wd), T(wd), T(b1), T(1.0 - b1), T(b2), T(1.0 - b2),
                    T(math.sqrt(bc2)), T(self.eps), T(self.lr / bc1),
                )  # fmt: skip
                continue
            d = g if not self.weight_decay else g + T(self.weight_decay) * p
            # Other dtypes or layouts: the textbook expressions, evaluated in place
            # through one scratch array (each temporary of a parameter's size would cost
            # a pass over memory and fresh pages).
            buf = _empty(p.shape, p.dtype)
            m *= T(b1)
            m += np.multiply(T(1.0 - b1), d, out=buf)
            v *= T(b2)
            np.multiply(T(1.0 - b2), d, out=buf)
            buf *= d
            v += buf
            np.sqrt(v, out=buf)
            buf /= T(math.sqrt(bc2))
            buf += T(self.eps)  # denominator
            np.divide(m, buf, out=buf)
            buf *= T(self.lr / bc1)
            p -= buf
