"""`--memory checkpoint[:K]`: a cell run of a training graph as a loop over chunks of K steps.

    x [T, B, I] -> padded with masked steps to T' = n·K -> chunks [n, K, B, I]
    outer Scan over the n chunks, carrying the state:
        S, y_c = the chunk as a plain loop (its own input projection, then an inner Scan)
    y [n, K, B, H] -> [T', B, H] -> its first T steps

The gradient (grad/scan.py) reruns each chunk from its entry state in the backward pass
(the outer Scan is marked "checkpoint": recomputed, its weights' gradients summed per chunk
in the carry) and keeps the inner Scan's values for that one chunk ("store"). What lives
across the whole sequence is then the n entry states instead of every step's gate values
and input projection: O(T/K + K) steps' worth, least at K ≈ √T. A padded step is masked
like a step past a sequence's length: it keeps the state and outputs zeros.
"""
from __future__ import annotations

import math
import re

import numpy as np

from ..builder import Builder, Tensor
from ..cells import StepCell
from .hoist import hoist_invariants

DYNAMIC_CHUNK = 32          # K when the number of steps is known only at run time
USAGE = "store, recompute, checkpoint or checkpoint:K (K a positive whole number of steps)"


def parse_memory(memory: str) -> tuple[str, int | None]:
    """"store" | "recompute" | "checkpoint" | "checkpoint:K" -> (policy, K or None)."""
    m = re.fullmatch(r"(store|recompute)|checkpoint(?::([0-9]+))?", str(memory))
    if m is None or (m.group(2) is not None and int(m.group(2)) == 0):
        raise ValueError(f"memory policy must be {USAGE}, not {memory!r}")
    if m.group(1):
        return m.group(1), None
    return "checkpoint", int(m.group(2)) if m.group(2) else None


def fallback_policy(memory: str) -> str:
    """The policy of loops that are not chunked (a seq2seq decoder) under `memory`."""
    policy, _ = parse_memory(memory)
    return "recompute" if policy == "checkpoint" else policy


def chunk_size(time_dim, k: int | None = None) -> int:
    """K asked for (at most the number of steps), else for a fixed T the divisor of T
    nearest √T within ±30% (no padded steps), else round(√T); 32 for a dynamic T."""
    if not isinstance(time_dim, int):
        return k or DYNAMIC_CHUNK
    if k is not None:
        return max(1, min(k, time_dim))
    root = math.sqrt(max(time_dim, 1))
    near = [d for d in range(max(1, math.ceil(0.7 * root)), math.floor(1.3 * root) + 1) if time_dim % d == 0]
    return min(near, key=lambda d: (abs(d - root), d)) if near else max(1, round(root))


def chunked_strategy(strategy: tuple, memory: str, time_dim) -> tuple:
    """The (lowering, why, fuse) of a cell run in a training graph under `memory`: a static
    or loop lowering becomes "checkpoint:K" with --memory checkpoint; anything else stays."""
    policy, k = parse_memory(memory)
    base, why, fuse = strategy
    if policy != "checkpoint" or base not in ("static", "loop"):
        return strategy
    k = chunk_size(time_dim, k)
    return f"checkpoint:{k}", f"--memory checkpoint: a loop over chunks of {k} steps, each rerun backward; {why}", fuse


def run_chunked(b: Builder, cell: StepCell, params: dict[str, Tensor], x: Tensor, initial: list[Tensor],
                mask: Tensor | None, k: int, extra: list[Tensor] = ()) -> tuple[Tensor, list[Tensor]]:
    from .recurrence import run_cell

    T = x.shape[0]
    i64 = lambda v: b.const(np.array(v, np.int64), "i64")
    if isinstance(T, int):
        n = -(-T // k)
        pad_static = n * k - T
        n_dyn, t_dyn, pad = i64([n]), i64([T]), i64([pad_static])
    else:
        n = pad_static = None
        t_dyn = b.shape_of(x, 0, 1)
        n_dyn = b.div(b.add(t_dyn, i64([k - 1])), i64([k]))
        pad = b.sub(b.mul(n_dyn, i64([k])), t_dyn)
    steps = n * k if n is not None else None
    padded = pad_static != 0
    if padded:
        x = _pad_time(b, x, pad, pad_static, steps)
        extra = [_pad_time(b, e, pad, pad_static, steps) for e in extra]
        mask = _padded_mask(b, x, mask, pad, pad_static, t_dyn, steps)

    # the outer body: one chunk, lowered as a plain loop
    sub = b.subgraph()
    entry = [sub.input(sub.fresh("S_entry"), t.dtype, tuple(t.shape)) for t in initial]
    x_c = sub.input(sub.fresh("x_chunk"), x.dtype, (k,) + tuple(x.shape[1:]))
    m_c = sub.input(sub.fresh("mask_chunk"), "bool", (k,) + tuple(mask.shape[1:])) if mask is not None else None
    e_c = [sub.input(sub.fresh("extra_chunk"), e.dtype, (k,) + tuple(e.shape[1:])) for e in extra]
    y_c, final = run_cell(sub, cell, {p: Tensor(sub, t.v) for p, t in params.items()}, x_c, entry, m_c, "loop", e_c)
    for node in sub.g.nodes:
        if node.op == "Scan":
            node.memory = "store"          # a chunk's values are kept for its own backward pass
    outs, seen = [], {v.name for v in sub.g.inputs}
    for t in list(final) + [y_c]:          # body outputs: distinct, and not inputs
        if t.name in seen:
            t = sub.identity(t)
        seen.add(t.name)
        outs.append(t)
    sub.g.outputs = [t.v for t in outs]
    hoist_invariants(b, sub.g)             # slices and transposes of weights: once, not per chunk

    seqs = [_chunks(b, s, k, n_dyn, n) for s in [x] + ([mask] if mask is not None else []) + list(extra)]
    types = [(t.dtype, tuple(t.shape)) for t in initial] + [(y_c.dtype, (n, k) + tuple(y_c.shape[1:]))]
    attrs = {"num_scan_inputs": len(seqs), "scan_input_axes": [0] * len(seqs), "scan_output_axes": [0]}
    results = b.node("Scan", list(initial) + seqs, types, attrs, sub.g)
    b.g.nodes[-1].memory = "checkpoint"

    # [n, K, B, H] -> [T', 1, B, H] -> [T', B, H]: the batch dim is taken from x, not from
    # the chunks (the empty-input guard gives those a 0 there)
    rest = tuple(y_c.shape[1:])
    target = b.concat([b.mul(n_dyn, i64([k])), i64([1]), b.shape_of(x, 1, 2), i64(list(rest[1:]))], axis=0)
    y = b.squeeze(b.op("Reshape", [results[-1], target], (steps, 1) + rest), [1])
    if padded and pad_static is not None:
        y = b.slice(y, 0, T, axis=0)
    elif padded:
        sizes = b.concat([t_dyn, pad], axis=0)
        y = b.node("Split", [y, sizes], [(y.dtype, (None,) + rest)] * 2, {"axis": 0})[0]
    return y, results[:len(initial)]


def _pad_time(b: Builder, s: Tensor, pad: Tensor, pad_static: int | None, steps) -> Tensor:
    """s [T, ...] followed by `pad` steps of zeros."""
    r = s.rank
    if pad_static is not None:
        pads = b.const(np.array([0] * r + [pad_static] + [0] * (r - 1), np.int64), "i64")
    else:
        pads = b.concat([b.const(np.zeros(r, np.int64), "i64"), pad, b.const(np.zeros(r - 1, np.int64), "i64")], axis=0)
    return b.op("Pad", [s, pads], (steps,) + tuple(s.shape[1:]))


def _padded_mask(b: Builder, x: Tensor, mask: Tensor | None, pad: Tensor, pad_static, t_dyn: Tensor,
                 steps) -> Tensor:
    """[T', B, 1] bool: the run's mask (or all true) over the T real steps, false after."""
    i64 = lambda v: b.const(np.array(v, np.int64), "i64")
    batch = b.shape_of(x, 1, 2)
    if mask is None:
        t = b.range_(i64(0), b.squeeze(b.shape_of(x, 0, 1), [0]), i64(1), steps)
        valid = b.unsqueeze(b.less(t, b.squeeze(t_dyn, [0])), [1, 2])
        return b.expand(valid, b.concat([b.shape_of(x, 0, 1), batch, i64([1])], axis=0), (steps, x.shape[1], 1))
    off = b.expand(b.const(np.zeros((1, 1, 1), bool), "bool"), b.concat([pad, batch, i64([1])], axis=0),
                   (pad_static, x.shape[1], 1))
    return b.concat([mask, off], axis=0)


def _chunks(b: Builder, s: Tensor, k: int, n_dyn: Tensor, n) -> Tensor:
    """[T', B, ...] -> [n, K, B, ...]. Through [T', 1, B, ...], so that a 0 in the target
    (no steps, or an empty batch) copies a 0 of the same axis, here and in the gradient."""
    target = b.concat([n_dyn, b.const(np.array([k], np.int64), "i64"), b.shape_of(s, 1)], axis=0)
    return b.op("Reshape", [b.unsqueeze(s, [1]), target], (n, k) + tuple(s.shape[1:]))
