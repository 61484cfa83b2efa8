"""Losses summed or averaged over time, with masks, each returning ``(loss, gradient)``.

Sequences are time-major: targets (T, N) or (T, N, ...). A ``mask`` has the shape of the
per-position loss (the targets' shape for cross-entropy; ``pred.shape`` or a prefix of it
for MSE), bool or float weights; ``lengths`` (N,) builds the (T, N) mask
``mask[t, n] = t < lengths[n]`` (use :func:`mask_from_lengths` with ``batch_first=True``
for (N, T) data).

Reductions, with per-position loss ``l`` and weights ``w`` (all ones without a mask):

- ``"sum"``:  ``L = sum(w * l)``
- ``"mean"``: ``L = sum(w * l) / sum(w)`` (0 when ``sum(w) == 0``); for MSE the count
  includes the feature elements a mask broadcasts over, as PyTorch's ``mean`` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastrnn._runtime import _empty
from fastrnn.reference import FLOAT_DTYPES, _check_index

__all__ = ["MSELoss", "SoftmaxCrossEntropy", "mask_from_lengths", "mse", "softmax_cross_entropy"]

REDUCTIONS = ("sum", "mean")


def mask_from_lengths(lengths: Any, T: int, batch_first: bool = False) -> np.ndarray:
    """Bool mask (T, N) with ``mask[t, n] = t < lengths[n]`` ((N, T) if ``batch_first``)."""
    T = _check_index("T", T)
    if T < 0:
        raise ValueError(f"T must be an integer >= 0, got {T}")
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths must be a 1-D integer array (N,), got {lengths!r}")
    if lengths.size and (lengths.min() < 0 or lengths.max() > T):
        raise ValueError(
            f"lengths must be in [0, T={T}], got min {lengths.min()}, max {lengths.max()}"
        )
    mask = np.arange(T)[:, None] < lengths[None, :]
    return mask.T.copy() if batch_first else mask


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _weights(mask: Any, lengths: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """Per-position weights with a shape that is a prefix of ``shape`` (or None)."""
    if mask is not None and lengths is not None:
        raise ValueError("pass either mask or lengths, not both")
    if lengths is not None:
        if len(shape) < 2:
            raise ValueError(f"lengths needs time-major data of shape (T, N, ...), got {shape}")
        mask = mask_from_lengths(lengths, shape[0])
        if mask.shape[1] != shape[1]:
            raise ValueError(f"lengths must have shape ({shape[1]},) (N), got ({mask.shape[1]},)")
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != shape[: mask.ndim]:
        raise ValueError(f"mask must have shape {shape} or a prefix of it, got {mask.shape}")
    if not (mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.number)):
        raise TypeError(f"mask must be bool or numeric, got dtype {mask.dtype}")
    return mask.astype(dtype)


def _expand(w: np.ndarray, ndim: int) -> np.ndarray:
    return w.reshape(w.shape + (1,) * (ndim - w.ndim))


def softmax_cross_entropy(
    logits: Any,
    targets: Any,
    mask: Any = None,
    reduction: str = "sum",
    *,
    lengths: Any = None,
) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy fused with its gradient.

    Args:
        logits: (..., C) float32 or float64 scores, e.g. (T, N, C).
        targets: (...) integer classes in [0, C) (checked only where the mask is nonzero,
            so padding may hold any value, e.g. -1).
        mask: (...) bool/float weights, or None. ``lengths``: (N,) instead of a mask.
        reduction: ``"sum"`` or ``"mean"`` (see module docstring).

    Per position: ``l = logsumexp(z) - z[y]`` (computed as ``m + log(sum(exp(z - m)))``
    with ``m = max(z)``, so no overflow), gradient ``softmax(z) - onehot(y)`` times the
    weight (divided by ``sum(w)`` for ``"mean"``).

    Returns ``(loss, dlogits)``: a Python float and an array like ``logits``.
    """
    _check_reduction(reduction)
    logits = np.asarray(logits)
    # float16 would overflow "mean"'s divisor past 65504 elements (a zero gradient); wider
    # floats than float64 are not what the rest of the library computes in.
    if logits.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"logits must be a float32 or float64 array (..., C), got dtype {logits.dtype}"
        )
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape (..., C) with C >= 1, got {logits.shape}")
    targets = np.asarray(targets)
    if targets.dtype == np.bool_ or not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"targets must be an integer array, got dtype {targets.dtype}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"targets must have shape {logits.shape[:-1]} (logits without the class axis), "
            f"got {targets.shape}"
        )
    C = logits.shape[-1]
    w = _weights(mask, lengths, targets.shape, logits.dtype)
    if w is not None and w.shape != targets.shape:
        raise ValueError(f"mask must have shape {targets.shape}, got {w.shape}")
    valid = np.ones(targets.shape, bool) if w is None else w != 0
    tv = targets[valid]
    if tv.size and (tv.min() < 0 or tv.max() >= C):
        bad = tv[(tv < 0) | (tv >= C)][0]
        raise IndexError(f"targets must be in [0, {C}) (number of classes), found {bad}")
    t = np.where(valid, targets, 0).astype(np.intp)

    denom = float(targets.size) if w is None else float(w.sum(dtype=np.float64))
    if reduction == "mean" and denom == 0:
        return 0.0, np.zeros_like(logits)
    # One array of the logits' size (from the buffer cache), updated in place: shift, exp,
    # scale. With a large vocabulary these passes are memory-bound, and each temporary
    # would cost a pass and fresh pages (35 ms -> 17 ms at 1120 x 10000 float32).
    grad = np.subtract(
        logits, logits.max(axis=-1, keepdims=True), out=_empty(logits.shape, logits.dtype)
    )
    picked = np.take_along_axis(grad, t[..., None], axis=-1)[..., 0]
    np.exp(grad, out=grad)
    s = grad.sum(axis=-1)
    per = np.log(s) - picked  # (...)
    loss = float(per.sum(dtype=np.float64) if w is None else (per * w).sum(dtype=np.float64))
    # d/dz = weight * (softmax(z) - onehot(y)), weight = w (1 without a mask) / denom for
    # "mean": the softmax's 1/s and the weight in one multiply.
    wt = np.ones_like(s) if w is None else w.astype(logits.dtype, copy=False)
    if reduction == "mean":
        loss /= denom
        wt = wt / logits.dtype.type(denom)
    grad *= (wt / s)[..., None]
    np.put_along_axis(
        grad, t[..., None], np.take_along_axis(grad, t[..., None], -1) - wt[..., None], -1
    )
    return loss, grad


def mse(
    pred: Any,
    target: Any,
    mask: Any = None,
    reduction: str = "sum",
    *,
    lengths: Any = None,
) -> tuple[float, np.ndarray]:
    """Squared error ``l = (pred - target)^2`` per element, fused with its gradient.

    Args:
        pred, target: arrays of the same shape, e.g. (T, N, F); ``pred`` float32 or
            float64, ``target`` any real numbers (converted to ``pred``'s dtype).
        mask: weights of shape ``pred.shape`` or a prefix of it (e.g. (T, N)), broadcast
            over the remaining axes; ``lengths`` (N,) instead of a mask.
        reduction: ``"sum"`` -> ``sum(w l)``; ``"mean"`` -> ``sum(w l) / sum(w)``
            with ``w`` broadcast to ``pred.shape`` (the number of unmasked elements).

    Returns ``(loss, dpred)`` with ``dpred = 2 w (pred - target)`` (/ ``sum(w)`` for mean).
    """
    _check_reduction(reduction)
    pred = np.asarray(pred)
    if pred.dtype not in FLOAT_DTYPES:  # as for logits
        raise TypeError(f"pred must be a float32 or float64 array, got dtype {pred.dtype}")
    target = np.asarray(target)
    if not any(np.issubdtype(target.dtype, k) for k in (np.bool_, np.integer, np.floating)):
        raise TypeError(f"target must be a real numeric array, got dtype {target.dtype}")
    if target.shape != pred.shape:
        raise ValueError(f"target must have shape {pred.shape} (like pred), got {target.shape}")
    diff = pred - target.astype(pred.dtype, copy=False)
    w = _weights(mask, lengths, pred.shape, pred.dtype)
    if w is None:
        loss = float(np.square(diff).sum(dtype=np.float64))
        grad = 2 * diff
        denom = float(diff.size)
    else:
        wf = np.broadcast_to(_expand(w, pred.ndim), pred.shape)
        loss = float((np.square(diff) * wf).sum(dtype=np.float64))
        grad = 2 * diff * wf
        denom = float(wf.sum(dtype=np.float64))
    if reduction == "mean":
        if denom == 0:
            return 0.0, np.zeros_like(pred)
        loss /= denom
        grad /= pred.dtype.type(denom)
    return loss, grad


class SoftmaxCrossEntropy:
    """Class form of :func:`softmax_cross_entropy` with a fixed ``reduction``."""

    def __init__(self, reduction: str = "sum") -> None:
        _check_reduction(reduction)
        self.reduction = reduction

    def __call__(
        self, logits: Any, targets: Any, mask: Any = None, *, lengths: Any = None
    ) -> tuple[float, np.ndarray]:
        return softmax_cross_entropy(logits, targets, mask, self.reduction, lengths=lengths)


class MSELoss:
    """Class form of :func:`mse` with a fixed ``reduction``."""

    def __init__(self, reduction: str = "sum") -> None:
        _check_reduction(reduction)
        self.reduction = reduction

    def __call__(
        self, pred: Any, target: Any, mask: Any = None, *, lengths: Any = None
    ) -> tuple[float, np.ndarray]:
        return mse(pred, target, mask, self.reduction, lengths=lengths)
