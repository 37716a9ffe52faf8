"""Losses and metrics as graph nodes (LANGUAGE.md §6).

Each is Σ w·l / Σ w over batch and time, with w from `lengths=` (1 for steps before a
sequence's length, else 0) or `weights=`, or all ones; mse also averages over features.
Cross-entropy reads a log-softmax, so large logits stay finite. A batch whose weights are
all zero gives 0, not NaN.
"""
from __future__ import annotations

import numpy as np

from .builder import Builder, Tensor


def _step_mask(b: Builder, lengths: Tensor, rows: Tensor) -> Tensor:
    """w[b, t] = t < lengths[b], in the float type, shaped like `rows` [B, T]."""
    T = b.shape_of(rows, 1, 2)
    zero = b.const(np.array(0, np.int64), "i64")
    one = b.const(np.array(1, np.int64), "i64")
    steps = b.range_(zero, b.squeeze(T, [0]), one, rows.shape[1])
    valid = b.less(b.unsqueeze(steps, [0]), b.unsqueeze(b.cast(lengths, "i64"), [1]))
    return b.cast(valid, b.fdtype)


def weighted_mean(b: Builder, rows: Tensor, weighting: str | None, w: Tensor | None) -> Tensor:
    """Σ w·rows / Σ w over every axis of `rows`."""
    axes = list(range(rows.rank))
    if weighting is None:
        return b.op("ReduceMean", [rows, b.const(np.array(axes, np.int64), "i64")], (), attrs={"keepdims": 0})
    if weighting == "lengths":
        w = _step_mask(b, w, rows)
    else:
        w = b.cast(w, rows.dtype)
        if w.rank < rows.rank:
            w = b.unsqueeze(w, list(range(w.rank, rows.rank)))
        w = b.add(w, b.zeros_like(rows))   # spread [B] weights over time
    total = b.reduce_sum(w, axes)
    return b.div(b.reduce_sum(b.mul(w, rows), axes), b.maximum(total, b.const(1e-12, rows.dtype)))


def mse(b: Builder, pred: Tensor, target: Tensor, weighting=None, w=None) -> Tensor:
    d = b.sub(pred, target)
    sq = b.mul(d, d)
    rows = b.op("ReduceMean", [sq, b.const(np.array([-1], np.int64), "i64")], sq.shape[:-1],
                attrs={"keepdims": 0}) if sq.rank > 1 else sq
    return weighted_mean(b, rows, weighting, w)


def softmax_xent(b: Builder, logits: Tensor, labels: Tensor, weighting=None, w=None) -> Tensor:
    logp = b.log_softmax(logits)
    # the label's log-probability by lookup (a one-hot product costs a pass over all classes)
    ids = b.unsqueeze(b.cast(labels, "i64"), [-1])
    picked = b.op("GatherElements", [logp, ids], tuple(logp.shape[:-1]) + (1,), attrs={"axis": logp.rank - 1})
    nll = b.neg(b.squeeze(picked, [-1]))
    return weighted_mean(b, nll, weighting, w)


def accuracy(b: Builder, logits: Tensor, labels: Tensor, weighting=None, w=None) -> Tensor:
    # a positive axis: onnxruntime 1.31's ArgMax(axis=-1) gives the wrong shape on empty input
    hit = b.cast(b.equal(b.argmax(logits, logits.rank - 1), b.cast(labels, "i64")), logits.dtype)
    return weighted_mean(b, hit, weighting, w)
