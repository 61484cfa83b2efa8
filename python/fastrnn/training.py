"""Truncated backpropagation through time (TBPTT) over long streams.

A stream (T_total, N, ...) is cut into consecutive chunks of ``k`` steps. The recurrent
state is *carried* from the end of one chunk to the start of the next, but gradients are
*cut* there: the state is handed on as a plain array copy (detached), so each chunk's
``backward`` stops at the chunk's first step and never reaches earlier chunks. With
``k >= T_total`` this is ordinary full BPTT.

Typical use::

    def step(x, y, state):
        opt.zero_grad()
        out, state, tape = lstm.forward(x, state)
        logits, htape = head.forward(out)
        loss, dlogits = softmax_cross_entropy(logits, y, reduction="mean")
        lstm.backward(tape, head.backward(htape, dlogits))
        opt.step()
        return loss, state

    result = truncated_bptt(tokens_in, k=32, step=step, targets=tokens_out)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fastrnn.reference import _check_index

__all__ = ["TBPTTResult", "chunk_bounds", "detach_state", "truncated_bptt"]


def detach_state(state: Any) -> Any:
    """Copy a recurrent state (an array, or a tuple/list of arrays such as LSTM ``(h, c)``)
    into fresh arrays, so nothing downstream aliases or differentiates through it."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    if not isinstance(state, np.ndarray):
        raise TypeError(
            f"state must be None, an array or a tuple/list of arrays, got {type(state).__name__}"
        )
    return np.array(state, copy=True)


def chunk_bounds(T_total: int, k: int) -> Iterator[tuple[int, int]]:
    """Yield ``(start, stop)`` of consecutive chunks of ``k`` steps covering ``[0, T_total)``;
    the last chunk is shorter when ``k`` does not divide ``T_total``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k (chunk length) must be a positive integer, got {k!r}")
    T_total = _check_index("T_total", T_total)
    for s in range(0, int(T_total), int(k)):
        yield s, min(s + int(k), int(T_total))


@dataclass
class TBPTTResult:
    """What :func:`truncated_bptt` returns: per-chunk losses (as the step returned them),
    the chunk bounds, and the final (detached) state after the whole stream."""

    losses: list[Any] = field(default_factory=list)
    bounds: list[tuple[int, int]] = field(default_factory=list)
    state: Any = None


def truncated_bptt(
    x: Any,
    k: int,
    step: Callable[[np.ndarray, np.ndarray | None, Any], tuple[Any, Any]],
    state: Any = None,
    targets: Any = None,
) -> TBPTTResult:
    """Run ``step`` over ``x`` in chunks of ``k`` time steps, carrying a detached state.

    Args:
        x: (T_total, N, ...) time-major stream (array-like, sliced along axis 0).
        k: chunk length in time steps (the truncation length).
        step: ``step(x_chunk, targets_chunk, state) -> (loss, new_state)``; ``x_chunk`` is
            ``x[s:s+k]``, ``targets_chunk`` is ``targets[s:s+k]`` (None without targets),
            ``state`` is the detached final state of the previous chunk (``state`` given
            here for the first chunk; None means the layer's zero state). The step usually
            runs forward, backward and an optimizer update.
        state: initial state for the first chunk.
        targets: optional (T_total, ...) array sliced like ``x``.

    Returns a :class:`TBPTTResult` with the per-chunk losses, bounds and final state.
    """
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    if len(x.shape) < 1:
        raise ValueError("x must be an array of shape (T_total, N, ...), time-major")
    T_total = int(x.shape[0])
    if targets is not None and not hasattr(targets, "shape"):
        targets = np.asarray(targets)
    if targets is not None and (len(targets.shape) < 1 or targets.shape[0] != T_total):
        raise ValueError(
            f"targets must have T_total={T_total} steps on axis 0, "
            f"got shape {getattr(targets, 'shape', None)}"
        )
    if not callable(step):
        raise TypeError("step must be callable: step(x_chunk, targets_chunk, state)")
    result = TBPTTResult(state=detach_state(state))
    for s, e in chunk_bounds(T_total, k):
        out = step(x[s:e], None if targets is None else targets[s:e], result.state)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("step must return (loss, new_state)")
        loss, new_state = out
        result.losses.append(loss)
        result.bounds.append((s, e))
        result.state = detach_state(new_state)
    return result
