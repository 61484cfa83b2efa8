"""Diagnostics: how much gradient reaches each time step (vanishing/exploding gradients).

Definition used by :func:`gradient_norms`. Run a recurrent layer over ``x`` (T, N, I)
from ``state``; let ``h_t`` be its hidden state after step t (t = 0 .. T-1; all stacked
layers, shape (num_layers, N, H)) and ``y_{T-1}`` its output at the last step. With an
upstream gradient ``g`` placed on the last output only, ``L = sum(g * y_{T-1})``, the
result is, for every t,

    norms[t] = || dL / dh_t ||_2        (Frobenius norm over layers, batch and units)

where the derivative is the *partial* derivative with the rest of the state at step t
(the LSTM cell ``c_t``) held fixed, i.e. exactly the ``dh`` that backpropagation through
time carries into step t. ``norms[T-1]`` is ``||g||`` (on the top layer); with a vanishing
gradient, ``norms[t]`` shrinks as t goes back in time. With ``cell_state=True`` (LSTM) the
norm covers both parts of the state, ``sqrt(||dL/dh_t||^2 + ||dL/dc_t||^2)``, each partial
with the other held fixed (so ``dL/dc_{T-1} = 0``).

Method (exact, using only the layer's public forward/backward): the states ``h_t`` (and
``c_t``) are recorded by stepping the layer one step at a time; then, for each t, the layer
is run from state t over ``x[t+1:]`` and backpropagated with ``g`` at the last output;
the gradient it returns for its initial state is ``dL/dh_t``. This costs O(T^2) steps, fine
for the short diagnostic runs it is meant for. The layer's accumulated ``grads`` are saved
and restored, so calling this does not disturb training. Bidirectional layers are
rejected (the backward direction's state at t depends on the future), and layers with
dropout should be diagnosed with ``dropout=0`` (each run would draw fresh masks).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["gradient_norms", "plot_gradient_norms"]


def _h_of(state: Any) -> np.ndarray:
    return state[0] if isinstance(state, (tuple, list)) else state


def gradient_norms(
    layer: Any,
    x: Any,
    state: Any = None,
    dy_last: np.ndarray | Callable[[np.ndarray], tuple[Any, np.ndarray]] | None = None,
    cell_state: bool = False,
) -> np.ndarray:
    """``||dL/dh_t||`` for every time step t of a recurrent layer (see module docstring).

    Args:
        layer: a unidirectional ``fastrnn.layers.RNN/LSTM/GRU`` (time-major, i.e.
            ``batch_first=False``).
        x: (T, N, input_size) input sequence.
        state: initial state (None: zeros), as the layer takes it.
        dy_last: upstream gradient ``g`` (N, H) on the last output; or a callable
            ``loss_fn(y_last) -> (loss, g)``; default all ones.
        cell_state: LSTM only: measure ``||(dL/dh_t, dL/dc_t)||`` (both parts of the
            state) instead of ``||dL/dh_t||``; the LSTM's long-range memory is ``c``.

    Returns float64 array (T,): ``norms[t] = ||dL/dh_t||``.
    """
    if getattr(layer, "bidirectional", False):
        raise ValueError("gradient_norms needs a unidirectional layer (bidirectional=False)")
    if getattr(layer, "batch_first", False):
        raise ValueError("gradient_norms needs a time-major layer (batch_first=False)")
    for attr in ("forward", "backward", "grads"):
        if not hasattr(layer, attr):
            raise TypeError(f"layer must be a recurrent layer with .{attr}, got {layer!r}")
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (T, N, input_size) with T >= 1, got {x.shape}")
    T = x.shape[0]

    # 1. states after every step (inference, one step at a time)
    states = []
    s = state
    y = None
    for t in range(T):
        y, s = layer(x[t : t + 1], s)
        states.append(s)
    assert y is not None
    y_last = y[0]

    # 2. upstream gradient on the last output
    if dy_last is None:
        g = np.ones_like(y_last)
    elif callable(dy_last):
        _, g = dy_last(y_last)
        g = np.asarray(g)
    else:
        g = np.asarray(dy_last)
    if g.shape != y_last.shape:
        raise ValueError(f"dy_last must have shape {y_last.shape} (N, H), got {g.shape}")
    g = g.astype(y_last.dtype, copy=False)

    saved = {k: v.copy() for k, v in layer.grads.items()}
    norms = np.empty(T, dtype=np.float64)
    try:
        # last step: the gradient is g itself on the top layer (zero on lower layers)
        norms[T - 1] = float(np.linalg.norm(g.astype(np.float64)))
        for t in range(T - 1):
            yy, _, tape = layer.forward(x[t + 1 :], states[t], training=True)
            dy = np.zeros_like(yy)
            dy[-1] = g
            _, dstate = layer.backward(tape, dy)
            parts = dstate if cell_state and isinstance(dstate, (tuple, list)) else [_h_of(dstate)]
            norms[t] = float(np.sqrt(sum(np.sum(np.square(p.astype(np.float64))) for p in parts)))
    finally:
        for k, v in saved.items():
            layer.grads[k][...] = v
    return norms


def plot_gradient_norms(
    norms: np.ndarray | dict[str, np.ndarray],
    path: str,
    title: str | None = "Gradient reaching each time step",
    log: bool = True,
) -> str:
    """Plot ``||dL/dh_t||`` against t (one line per entry of a dict) and save to ``path``.

    Needs matplotlib (``pip install fastrnn[plot]``); it is imported only here, with the
    non-interactive Agg backend. Returns ``path``.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plot_gradient_norms needs matplotlib: install the 'plot' extra "
            "(pip install 'fastrnn[plot]')"
        ) from e
    series = norms if isinstance(norms, dict) else {"": norms}
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        for label, n in series.items():
            n = np.asarray(n, dtype=np.float64)
            ax.plot(np.arange(len(n)), n, label=label or None)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("time step t")
        ax.set_ylabel("||dL/dh_t||")
        if title:
            ax.set_title(title)
        if any(series):
            ax.legend()
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
