"""The one base class of fastrnn's modules: :class:`Module`.

Every module (recurrent layers and cells, ``Linear``, ``Embedding``, ``Recurrent``,
``Sequential``, ``Seq2Seq``) shares this protocol:

- ``params``: ``dict[str, np.ndarray]`` of parameters (PyTorch names),
- ``grads``: the same keys and shapes, where ``backward`` *accumulates*,
- ``zero_grad()``, ``state_dict()`` (copies), ``load_state_dict(d, strict=True)`` (copies
  into the existing arrays, all keys checked before anything changes),
- ``num_parameters()``,
- ``pack_weights()`` / ``unpack_weights()`` / ``weights_packed``: recurrent layers' weights
  laid out once for the native kernels (containers: every recurrent layer inside them;
  other modules have nothing to lay out),
- ``config()`` (constructor arguments), ``save(path)`` / ``load(path)`` / ``from_file(path)``
  for ``.npz`` files holding the parameters and a JSON entry ``__fastrnn__``.

Leaf modules fill their parameters with :meth:`Module._init_params`. Containers (modules
that hold other modules) override the ``params``/``grads`` properties to return the
children's own arrays under prefixed names; loading then writes straight into the
children. Containers have no ``config()``: their weights save and load, but
:meth:`Module.from_file` cannot rebuild them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["Module", "load_module"]

_META = "__fastrnn__"
_REGISTRY: dict[str, type[Module]] = {}


@contextlib.contextmanager
def _open_npz(path: str | os.PathLike[str]) -> Iterator[Any]:
    """``np.load`` of a file ``save`` wrote; anything else (an ``.npy``, a text or empty
    file, a pickle) is a ValueError naming the path, not NumPy's own error."""
    try:
        f = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise ValueError(
            f"{path}: not a fastrnn module file (an .npz written by save()): {exc}"
        ) from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{path}: not a fastrnn module file (an .npz written by save()), but a single "
            f"array of shape {getattr(f, 'shape', '?')}"
        )
    with f:
        yield f


class _TapeKey:
    """A module's identity for its tapes (see :func:`tape_key`)."""


def tape_key(module: Module) -> _TapeKey:
    """The key a module's tapes carry; ``backward`` takes only tapes with its own. Another
    module's tape holds activations of other weights, so its gradients would be silently
    wrong. A deep copy of a module gets a new key; a module and its tapes pickled together
    keep a shared one, and a tape pickled alone matches no module."""
    key = module.__dict__.get("_tape_key")
    if key is None:
        key = module.__dict__["_tape_key"] = _TapeKey()
    return key


class Module:
    """Base of fastrnn's modules: parameters, gradients, state dicts and ``.npz`` files.

    Subclasses fill ``self.params`` (name -> array) in ``__init__`` through
    :meth:`_init_params` (which also creates zeroed ``grads``) and list their constructor
    arguments in :meth:`config`. Public subclasses are registered by class name so that
    :meth:`from_file` can rebuild them.
    """

    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]
    dtype: np.dtype

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            _REGISTRY[cls.__name__] = cls

    def _init_params(self, params: dict[str, np.ndarray]) -> None:
        """Set ``params`` and matching zeroed ``grads``."""
        self.params = params
        self._init_grads()

    def _init_grads(self) -> None:
        """(Re)create ``grads``: zeros shaped like every parameter."""
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this module (JSON-serialisable)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no config(): it cannot be rebuilt from its arguments"
        )

    def zero_grad(self) -> None:
        """Set every accumulated gradient to zero (in place)."""
        for g in self.grads.values():
            g[...] = 0

    def _submodules(self) -> list[Any]:
        """The modules this one holds (containers override)."""
        return []

    def _walk(self) -> list[Module]:
        """This module and every module inside it."""
        out: list[Module] = [self]
        for m in self._submodules():
            if isinstance(m, Module):
                out += m._walk()
        return out

    # A module's own packed weights (recurrent layers override these three).
    def _pack_own(self) -> None:
        pass

    def _unpack_own(self) -> None:
        pass

    def _own_packed(self) -> bool:
        return False

    def pack_weights(self) -> None:
        """Lay out every recurrent layer's weights (this module's and those inside it)
        once for the native kernels, instead of in every forward (see
        :meth:`fastrnn.layers.LSTM.pack_weights`). A module without recurrent weights has
        nothing to lay out. :meth:`unpack_weights` undoes it."""
        for m in self._walk():
            m._pack_own()

    def unpack_weights(self) -> None:
        """Undo :meth:`pack_weights`: the weights become writable arrays again."""
        for m in self._walk():
            m._unpack_own()

    @property
    def weights_packed(self) -> bool:
        """Whether any recurrent layer in this module holds packed weights."""
        return any(m._own_packed() for m in self._walk())

    def num_parameters(self) -> int:
        """Total number of scalar parameters."""
        return int(sum(p.size for p in self.params.values()))

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, keyed like ``torch.nn``'s ``state_dict()``."""
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Copy values into the parameters (in place: existing references stay valid).

        Values may be NumPy arrays, anything ``np.asarray`` accepts, or ``torch`` tensors
        (also ones that require grad, as from ``named_parameters()``); they are cast to
        the parameter's dtype. Raises ``ValueError`` for a shape mismatch, or (with
        ``strict``) for missing or unexpected keys, and ``TypeError`` for values that are
        not real numbers. Nothing is changed unless every key checks out. Packed weights
        (:meth:`pack_weights`) are loaded, then laid out again.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a mapping, got {type(state_dict).__name__}")
        packed = [m for m in self._walk() if m._own_packed()]
        for m in packed:
            m._unpack_own()
        try:
            self._load(state_dict, strict)
        finally:
            for m in packed:
                m._pack_own()

    def _load(self, state_dict: Mapping[str, Any], strict: bool) -> None:
        params = self.params  # containers build this dict on access: build it once
        if strict:
            missing = [k for k in params if k not in state_dict]
            unexpected = [k for k in state_dict if k not in params]
            if missing or unexpected:
                raise ValueError(
                    f"load_state_dict: missing keys {missing}, unexpected keys {unexpected} "
                    f"(expected {list(params)})"
                )
        staged = {}
        for key, value in state_dict.items():
            if key not in params:
                continue
            target = params[key]
            try:
                if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
                    value = value.detach().cpu()
                    if value.dtype.is_floating_point and value.dtype.itemsize < 4:
                        value = value.float()  # bfloat16 (and float16): not in NumPy
                    value = value.numpy()
                arr = np.asarray(value)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise TypeError(
                    f"load_state_dict: {key!r} is not an array of real numbers of shape "
                    f"{target.shape} ({exc})"
                ) from None
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise TypeError(
                    f"load_state_dict: {key!r} must hold real numbers (cast to {target.dtype}), "
                    f"got dtype {arr.dtype}"
                )
            if arr.shape != target.shape:
                raise ValueError(
                    f"load_state_dict: {key!r} expected shape {target.shape}, got {arr.shape}"
                )
            staged[key] = arr
        for key, arr in staged.items():
            params[key][...] = arr

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the configuration and parameters to an ``.npz`` file.

        As with ``np.savez``, ``.npz`` is appended to a path that lacks it.

        :meth:`from_file` (or :func:`load_module`) rebuilds the module;
        :meth:`load` loads the parameters into an existing one. A container (no
        ``config()``) saves its weights with ``config`` null: rebuild it and call
        :meth:`load`.
        """
        try:
            cfg: dict[str, Any] | None = self.config()
        except NotImplementedError:
            cfg = None
        meta = {"class": type(self).__name__, "config": cfg}
        np.savez(path, **{_META: np.array(json.dumps(meta))}, **self.params)  # type: ignore[arg-type]

    def load(self, path: str | os.PathLike[str]) -> None:
        """Load the parameters saved by :meth:`save` into this module (strictly)."""
        with _open_npz(path) as f:
            self.load_state_dict({k: f[k] for k in f.files if k != _META})

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Module:
        """A new module built from a file written by :meth:`save` (config and weights)."""
        with _open_npz(path) as f:
            if _META not in f.files:
                raise ValueError(f"{path}: not a fastrnn module file (no {_META!r} entry)")
            try:
                meta = json.loads(str(f[_META]))
                name, config = meta["class"], meta.get("config")
                if not isinstance(name, str) or not (config is None or isinstance(config, dict)):
                    raise TypeError("'class' must be a name and 'config' a dict or null")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}: damaged {_META!r} entry ({exc!r})") from None
            if name not in _REGISTRY:
                raise ValueError(f"{path}: unknown module class {name!r}")
            klass = _REGISTRY[name]
            if cls is not Module and not issubclass(klass, cls):
                raise ValueError(f"{path}: holds a {name}, not a {cls.__name__}")
            if config is None:
                raise ValueError(
                    f"{path}: a {name} wraps other modules and cannot be rebuilt from a file; "
                    f"build the {name} again and call .load({str(path)!r}) on it"
                )
            try:
                module = klass(**config)
            except TypeError as exc:
                raise ValueError(f"{path}: damaged {_META!r} entry: {name}({exc})") from None
            module.load_state_dict({k: f[k] for k in f.files if k != _META})
        return module

    def __repr__(self) -> str:
        try:
            cfg = self.config()
        except NotImplementedError:
            return object.__repr__(self)
        args = ", ".join(f"{k}={v!r}" for k, v in cfg.items())
        return f"{type(self).__name__}({args})"


def load_module(path: str | os.PathLike[str]) -> Module:
    """Build any fastrnn module (layer, cell, ``Linear``, ...) from a file written by ``save``."""
    return Module.from_file(path)
