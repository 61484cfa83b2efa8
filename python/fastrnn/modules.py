"""Feed-forward building blocks and composition: ``Linear``, ``Embedding``, ``Sequential``.

Every module derives from :class:`fastrnn._module.Module` (also importable here as
``fastrnn.modules.Module``) and so follows the shared module protocol of :mod:`fastrnn`:

- ``module.params``: ``dict[str, np.ndarray]`` of parameters (PyTorch names),
- ``module.grads``: a dict with the same keys and shapes, where ``backward`` *accumulates*,
- ``zero_grad()``, ``state_dict()`` (copies), ``load_state_dict(d, strict=True)`` (copies in
  place), ``num_parameters()``, ``save``/``load``; ``Linear`` and ``Embedding`` also have
  ``config()``, so ``Module.from_file`` rebuilds them. ``Recurrent`` and ``Sequential``
  save and load their weights, but must be rebuilt in code before ``load``.

Modules used by :class:`Sequential` implement ``forward(x, training=True) -> (y, tape)`` and
``backward(tape, dy) -> dx``; recurrent layers (``forward(x, state, lengths, training) ->
(y, state, tape)``) join a chain through the :class:`Recurrent` adapter.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Union

import numpy as np

from fastrnn._module import Module
from fastrnn._ops_gemm import matmul
from fastrnn.reference import FLOAT_DTYPES, _check_index

DTypeLike = Union[str, np.dtype, type]
SeedLike = Union[int, np.random.Generator, None]

__all__ = ["Embedding", "Linear", "Module", "Recurrent", "Sequential"]


def _float_dtype(dtype: DTypeLike) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _rng(seed: SeedLike) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _seed_config(seed: SeedLike) -> int | None:
    """The seed as ``config()`` records it: an int, or None (for a Generator: the weights
    saved next to the config are what matter)."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return int(seed)
    return None


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_dy(dy: Any, dtype: np.dtype) -> np.ndarray:
    dy = np.asarray(dy)
    if dy.dtype != dtype:
        raise TypeError(f"dy must have dtype {dtype} (the module's dtype), got {dy.dtype}")
    return dy


class Linear(Module):
    """Affine map over the last axis: ``y = x W^T + b``.

    Applies over any leading dimensions: ``x`` (..., in_features) -> ``y`` (..., out_features),
    e.g. (T, N, F) or (N, F). Inputs and gradients must have the module's dtype (a mismatch
    is a TypeError, never a silent cast, as for the recurrent layers).

    Parameters (PyTorch names and init): ``weight`` (out_features, in_features) and
    ``bias`` (out_features,), both drawn from U(-1/sqrt(in_features), 1/sqrt(in_features)).

    Backward: ``dx = dy W``, ``dW += dy^T x`` and ``db += sum(dy)`` over all leading dims.

    The products run in fastrnn's own GEMM (:func:`fastrnn.ops.matmul`), not NumPy's
    BLAS: on the threads :func:`fastrnn.set_num_threads` sets, with results that do not
    depend on their number, and without leaving BLAS worker threads spinning after each
    call (OpenBLAS's spin for ~0.1 s and halve the speed of a recurrent kernel started
    meanwhile: an LSTM + Linear training step ran 1.5x slower that way).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: DTypeLike = "float32",
        seed: SeedLike = None,
    ) -> None:
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        self.dtype = _float_dtype(dtype)
        self.seed = _seed_config(seed)
        rng = _rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        shape = (self.out_features, self.in_features)
        params = {"weight": rng.uniform(-bound, bound, shape).astype(self.dtype)}
        if bias:
            params["bias"] = rng.uniform(-bound, bound, self.out_features).astype(self.dtype)
        self._init_params(params)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (``seed`` is None when a Generator was passed)."""
        return dict(
            in_features=self.in_features,
            out_features=self.out_features,
            bias="bias" in self.params,
            dtype=self.dtype.name,
            seed=self.seed,
        )

    def _check_x(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have shape (..., {self.in_features}) (in_features last), got {x.shape}"
            )
        if x.dtype != self.dtype:
            raise TypeError(f"x must have dtype {self.dtype} (the module's dtype), got {x.dtype}")
        return x

    def __call__(self, x: Any) -> np.ndarray:
        """Inference: ``x`` (..., in_features) -> ``y`` (..., out_features)."""
        return self.forward(x, training=False)[0]

    def forward(self, x: Any, training: bool = True) -> tuple[np.ndarray, Any]:
        """``x`` (..., in_features) -> ``(y (..., out_features), tape)``; tape is None if
        not training."""
        x = self._check_x(x)
        x2 = x.reshape(-1, self.in_features)
        y = matmul(x2, self.params["weight"], transpose_b=True)
        y = y.reshape(*x.shape[:-1], self.out_features)
        if "bias" in self.params:
            y += self.params["bias"]
        return y, (x if training else None)

    def backward(self, tape: Any, dy: Any) -> np.ndarray:
        """Accumulate ``dW``, ``db`` from ``dy`` (..., out_features); return ``dx`` (..., in)."""
        if tape is None:
            raise ValueError("tape is None: call forward(x, training=True) before backward")
        x = tape
        dy = _check_dy(dy, self.dtype)
        if dy.shape != (*x.shape[:-1], self.out_features):
            raise ValueError(
                f"dy must have shape {(*x.shape[:-1], self.out_features)}, got {dy.shape}"
            )
        dy2 = dy.reshape(-1, self.out_features)
        self.grads["weight"] += matmul(dy2, x.reshape(-1, self.in_features), transpose_a=True)
        if "bias" in self.grads:
            self.grads["bias"] += dy2.sum(axis=0)
        return matmul(dy2, self.params["weight"]).reshape(x.shape)

    def __repr__(self) -> str:
        return (
            f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={'bias' in self.params}, dtype={self.dtype.name})"
        )


class Embedding(Module):
    """Lookup table: integer indices of any shape (...) -> vectors (..., embedding_dim).

    Parameter ``weight`` (num_embeddings, embedding_dim), drawn from N(0, 1) (PyTorch init).
    Backward scatter-adds: ``dW[idx] += dy`` (repeated indices add up). Indices are not
    differentiable, so ``backward`` returns None. With ``padding_idx`` set, that row is
    initialised to zero and receives no gradient.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        dtype: DTypeLike = "float32",
        seed: SeedLike = None,
    ) -> None:
        self.num_embeddings = _positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = _positive_int("embedding_dim", embedding_dim)
        self.dtype = _float_dtype(dtype)
        if padding_idx is not None:
            padding_idx = _check_index("padding_idx", padding_idx)
            if not 0 <= padding_idx < self.num_embeddings:
                raise ValueError(
                    f"padding_idx must be in [0, {self.num_embeddings}) or None, got {padding_idx}"
                )
        self.padding_idx = padding_idx
        self.seed = _seed_config(seed)
        rng = _rng(seed)
        w = rng.standard_normal((self.num_embeddings, self.embedding_dim)).astype(self.dtype)
        if padding_idx is not None:
            w[padding_idx] = 0
        self._init_params({"weight": w})

    def config(self) -> dict[str, Any]:
        """Constructor arguments (``seed`` is None when a Generator was passed)."""
        return dict(
            num_embeddings=self.num_embeddings,
            embedding_dim=self.embedding_dim,
            padding_idx=None if self.padding_idx is None else int(self.padding_idx),
            dtype=self.dtype.name,
            seed=self.seed,
        )

    def _check_idx(self, idx: Any) -> np.ndarray:
        idx = np.asarray(idx)
        if idx.dtype == np.bool_ or not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"indices must be an integer array, got dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_embeddings):
            bad = idx[(idx < 0) | (idx >= self.num_embeddings)].flat[0]
            raise IndexError(
                f"indices must be in [0, {self.num_embeddings}) (num_embeddings), found {bad}"
            )
        return idx.astype(np.intp, copy=False)

    def __call__(self, idx: Any) -> np.ndarray:
        """Inference: ``idx`` (...) ints -> ``(..., embedding_dim)``."""
        return self.forward(idx, training=False)[0]

    def forward(self, idx: Any, training: bool = True) -> tuple[np.ndarray, Any]:
        """``idx`` (...) ints -> ``(vectors (..., embedding_dim), tape)``."""
        idx = self._check_idx(idx)
        return self.params["weight"][idx], (idx if training else None)

    def backward(self, tape: Any, dy: Any) -> None:
        """Scatter-add ``dy`` (..., embedding_dim) into ``grads['weight']``; returns None."""
        if tape is None:
            raise ValueError("tape is None: call forward(idx, training=True) before backward")
        idx = tape
        dy = _check_dy(dy, self.dtype)
        if dy.shape != (*idx.shape, self.embedding_dim):
            raise ValueError(
                f"dy must have shape {(*idx.shape, self.embedding_dim)}, got {dy.shape}"
            )
        dy2 = dy.reshape(-1, self.embedding_dim)
        flat = idx.reshape(-1)
        if self.padding_idx is not None:
            keep = flat != self.padding_idx
            flat, dy2 = flat[keep], dy2[keep]
        np.add.at(self.grads["weight"], flat, dy2)
        return None

    def __repr__(self) -> str:
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}, dtype={self.dtype.name})"


class Recurrent(Module):
    """Adapter putting a recurrent layer (``fastrnn.layers.RNN/LSTM/GRU``) into a chain.

    ``forward(x, training)`` runs ``layer.forward(x, state=None)`` and returns
    ``(y, tape)``, dropping the final state; ``backward(tape, dy)`` returns ``dx``
    (no gradient flows into the zero initial state). Parameters and gradients are the
    layer's own dicts (shared, not copied).
    """

    def __init__(self, layer: Any) -> None:
        for attr in ("forward", "backward", "params", "grads"):
            if not hasattr(layer, attr):
                raise TypeError(f"layer must be a recurrent layer with .{attr}, got {layer!r}")
        self.layer = layer

    @property  # type: ignore[override]
    def params(self) -> dict[str, np.ndarray]:
        return self.layer.params

    @property  # type: ignore[override]
    def grads(self) -> dict[str, np.ndarray]:
        return self.layer.grads

    def zero_grad(self) -> None:
        self.layer.zero_grad()

    def _submodules(self) -> list[Any]:
        return [self.layer]

    def __call__(self, x: Any) -> np.ndarray:
        """Inference: the layer's output sequence ``y`` only."""
        return self.forward(x, training=False)[0]

    def forward(self, x: Any, training: bool = True) -> tuple[np.ndarray, Any]:
        y, _state, tape = self.layer.forward(x, training=training)
        return y, tape

    def backward(self, tape: Any, dy: Any) -> np.ndarray:
        dx, _dstate = self.layer.backward(tape, dy)
        return dx

    def __repr__(self) -> str:
        return f"Recurrent({self.layer!r})"


class Sequential(Module):
    """Chain of modules: ``forward`` runs them in order, ``backward`` in reverse.

    Each module must implement ``forward(x, training) -> (y, tape)`` and
    ``backward(tape, dy) -> dx``; wrap recurrent layers in :class:`Recurrent` (a bare layer
    with a ``forward(x, state, ...)`` signature is wrapped automatically). Parameter names
    are prefixed with the module's position, PyTorch style: ``"0.weight"``,
    ``"1.weight_ih_l0"``. ``params``/``grads`` are built on access and hold the children's
    own arrays, so in-place updates (optimizers) reach the children.

    Example::

        model = Sequential(Embedding(V, E), Recurrent(LSTM(E, H)), Linear(H, V))
        logits, tape = model.forward(tokens)           # tokens (T, N) -> (T, N, V)
        loss, dlogits = softmax_cross_entropy(logits, targets)
        model.backward(tape, dlogits)                  # grads in model.grads
    """

    def __init__(self, *modules: Any) -> None:
        if len(modules) == 1 and isinstance(modules[0], (list, tuple)):
            modules = tuple(modules[0])
        if not modules:
            raise ValueError("Sequential needs at least one module")
        self.modules: list[Any] = [self._wrap(m) for m in modules]

    @staticmethod
    def _wrap(m: Any) -> Any:
        if hasattr(m, "layer") or isinstance(m, (Linear, Embedding, Sequential)):
            return m
        if hasattr(m, "hidden_size") and hasattr(m, "num_layers"):
            return Recurrent(m)
        for attr in ("forward", "backward", "params", "grads"):
            if not hasattr(m, attr):
                raise TypeError(f"Sequential modules need .{attr}; got {m!r}")
        return m

    def __len__(self) -> int:
        return len(self.modules)

    def __getitem__(self, i: int) -> Any:
        return self.modules[i]

    def __iter__(self) -> Iterable[Any]:
        return iter(self.modules)

    @property  # type: ignore[override]
    def params(self) -> dict[str, np.ndarray]:
        return {f"{i}.{k}": v for i, m in enumerate(self.modules) for k, v in m.params.items()}

    @property  # type: ignore[override]
    def grads(self) -> dict[str, np.ndarray]:
        return {f"{i}.{k}": v for i, m in enumerate(self.modules) for k, v in m.grads.items()}

    def zero_grad(self) -> None:
        for m in self.modules:
            m.zero_grad()

    def _submodules(self) -> list[Any]:
        return list(self.modules)

    def __call__(self, x: Any) -> Any:
        """Inference through the chain (``training=False``)."""
        return self.forward(x, training=False)[0]

    def forward(self, x: Any, training: bool = True) -> tuple[Any, list[Any]]:
        """Run every module in order; the tape is the list of the modules' tapes."""
        tapes = []
        for m in self.modules:
            x, tape = m.forward(x, training=training)
            tapes.append(tape)
        return x, tapes

    def backward(self, tape: list[Any], dy: Any) -> Any:
        """Run every module's backward in reverse; returns the gradient for the input
        (None when the first module is an :class:`Embedding`)."""
        if not isinstance(tape, list) or len(tape) != len(self.modules):
            raise ValueError("tape must be the list returned by this Sequential's forward")
        for m, t in zip(reversed(self.modules), reversed(tape)):
            dy = m.backward(t, dy)
        return dy

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(m) for m in self.modules)
        return f"Sequential(\n  {inner}\n)"
