"""Sampled softmax (Jean et al. 2015; TF1 `sampled_softmax_loss`) for training only.

For step outputs y [B, T, A], output layer W [A, V], b [V], targets t [B, T] and N sampled
classes s_1..s_N (shared by the whole batch, drawn with replacement from the log-uniform
distribution Q(k) = log((k + 2) / (k + 1)) / log(V + 1)):

    z_t = y·W[:, t] + b[t] - log(N·Q(t))            the true class
    z_j = y·W[:, s_j] + b[s_j] - log(N·Q(s_j))      each sample (-1e9 where s_j = t: accidental hit)
    loss = Σ w · -log softmax([z_t, z_1..z_N])[0] / Σ w      (w from lengths=, as every loss)

The samples are a pure function of the batch (no Random* op): a counter-based hash of
(the batch's target and source ids, the sample's index) made of integer Mul/Add/Mod gives
u in (0, 1), and s = floor(exp(u·log(V + 1))) - 1 inverts Q's distribution function. A
spec may instead feed them: `ids=` names an i64[N] input. Inference uses the full softmax.
"""
from __future__ import annotations

import math

import numpy as np

from ..builder import Builder, Tensor
from ..losses import weighted_mean

NEG = -1e9
M = 2147483647          # 2^31 - 1, a prime: every product below stays within int64


def log_q(V: int) -> np.ndarray:
    k = np.arange(V, dtype=np.float64)
    return np.log(np.log((k + 2) / (k + 1)) / math.log(V + 1))


def _i64(b: Builder, v) -> Tensor:
    return b.const(np.array(v, np.int64), "i64")


def _mod(b: Builder, x: Tensor) -> Tensor:
    return b.op("Mod", [x, _i64(b, M)], x.shape, attrs={"fmod": 0})


def _positional_sum(b: Builder, ids: Tensor, mult: int) -> Tensor:
    """Σ ids[b, t]·(t + 1)·mult mod M, a scalar."""
    T = b.squeeze(b.shape_of(ids, 1, 2), [0])
    pos = b.add(b.range_(_i64(b, 0), T, _i64(b, 1), ids.shape[1]), _i64(b, 1))
    return _mod(b, b.reduce_sum(_mod(b, b.mul(b.mul(ids, b.unsqueeze(pos, [0])), _i64(b, mult))), [0, 1]))


def sample_ids(b: Builder, tgt: Tensor, src: Tensor, n: int, V: int) -> Tensor:
    """n class ids in [0, V), log-uniform, from a hash of the batch."""
    seed = _mod(b, b.add(_positional_sum(b, tgt, 31), _positional_sum(b, src, 17)))
    i = _i64(b, np.arange(1, n + 1))
    x = _mod(b, b.add(b.mul(seed, _i64(b, 1000003)), b.mul(i, _i64(b, 7919))))
    for r in range(3):
        x = _mod(b, b.add(b.mul(x, x), b.add(b.mul(i, _i64(b, 17 + r)), _i64(b, 1))))     # nonlinear
        x = _mod(b, b.mul(x, _i64(b, 48271)))
    u = b.div(b.add(b.cast(x, b.fdtype), 0.5), float(M))
    k = b.sub(b.op("Floor", [b.exp(b.mul(u, math.log(V + 1)))], (n,)), 1.0)
    k = b.minimum(b.maximum(k, 0.0), float(V - 1))
    return b.cast(k, "i64")


def sampled_softmax_loss(b: Builder, y: Tensor, W: Tensor, bias: Tensor, tgt: Tensor, lengths: Tensor | None,
                         n: int, ids: Tensor | None, src: Tensor) -> Tensor:
    V = W.shape[1]
    ids = sample_ids(b, tgt, src, n, V) if ids is None else b.cast(ids, "i64")
    Wt = b.transpose(W, [1, 0])                                              # [V, A]
    bcol = b.unsqueeze(bias, [1])                                            # [V, 1]
    correction = b.const(log_q(V) + math.log(n))                             # log(N·Q(k)), [V]
    z_true = b.reduce_sum(b.mul(y, b.gather(Wt, tgt, axis=0)), [-1])        # [B, T]
    z_true = z_true + b.squeeze(b.gather(bcol, tgt, axis=0), [-1]) - b.gather(correction, tgt, axis=0)
    rows = b.gather(Wt, ids, axis=0)                                         # [N, A]
    z_s = b.matmul(y, b.transpose(rows, [1, 0]))                             # [B, T, N]
    z_s = z_s + (b.squeeze(b.gather(bcol, ids, axis=0), [-1]) - b.gather(correction, ids, axis=0))
    hit = b.equal(b.unsqueeze(tgt, [-1]), ids)
    z_s = b.where(hit, NEG, z_s)
    logits = b.concat([b.unsqueeze(z_true, [-1]), z_s], axis=-1)            # [B, T, N + 1]
    nll = b.neg(b.squeeze(b.slice(b.log_softmax(logits), 0, 1, axis=-1), [-1]))
    return weighted_mean(b, nll, "lengths" if lengths is not None else None, lengths)
