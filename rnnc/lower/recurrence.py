"""Run one cell over a time-major [time, batch, features] sequence: static unrolling or one
ONNX Scan. Time-major keeps each step's slice contiguous (batch-major slicing is a strided
copy per step, and onnxruntime's Scan transposes a non-leading scan axis on every call).

Both lowerings start from the same traced and hoisted step body, so they compute the same
thing; they differ only in whether the body is copied T times or looped over. In Python:

    states = initial
    for t in range(T):
        states, y[:, t] = body(states, seqs[:, t])
    return y, states
"""
from __future__ import annotations

import numpy as np

from ..builder import Builder, Tensor
from ..cells import StepCell
from ..graph import Graph, Node, Value
from .hoist import hoist
from .step import trace_step


def length_mask(b: Builder, x: Tensor, lengths: Tensor) -> Tensor:
    """mask[t, b, 0] = t < lengths[b], as bool [T, B, 1] for a time-major x."""
    T = b.shape_of(x, 0, 1)
    zero = b.const(np.array(0, np.int64), "i64")
    one = b.const(np.array(1, np.int64), "i64")
    steps = b.range_(zero, b.squeeze(T, [0]), one, x.shape[0])
    valid = b.less(b.unsqueeze(steps, [1]), b.unsqueeze(lengths, [0]))
    return b.unsqueeze(valid, [2])


def zero_state(b: Builder, x: Tensor, size: int) -> Tensor:
    """Zeros [B, size] for a time-major x."""
    batch = b.shape_of(x, 1, 2)
    shape = b.concat([batch, b.const(np.array([size], np.int64), "i64")], axis=0)
    return b.expand(b.const(np.zeros((1, size)), b.fdtype), shape, (x.shape[1], size))


def run_cell(b: Builder, cell: StepCell, params: dict[str, Tensor], x: Tensor, initial: list[Tensor],
             mask: Tensor | None, strategy: str, extra: list[Tensor] = ()) -> tuple[Tensor, list[Tensor]]:
    traced = hoist(b, trace_step(b, cell, params, x, mask, extra=extra))
    if strategy == "static":
        return _unrolled(b, traced, initial, x)
    return _scan(b, traced, initial, x, cell)


def _scan(b: Builder, traced, initial: list[Tensor], x: Tensor, cell: StepCell):
    body, n = traced.body, traced.n_state
    m = len(traced.seq_inputs)
    outs = [(v.dtype, tuple(initial[i].shape)) for i, v in enumerate(body.outputs[:n])]
    for v in body.outputs[n:]:
        outs.append((v.dtype, (x.shape[0],) + tuple(v.shape)))
    if m == 0:
        raise ValueError("a step body without per-step input cannot be scanned")
    attrs = {"num_scan_inputs": m, "scan_input_axes": [0] * m, "scan_output_axes": [0] * (len(outs) - n)}
    results = b.node("Scan", initial + traced.seq_inputs, outs, attrs, body)
    return results[n], results[:n]


def _unrolled(b: Builder, traced, initial: list[Tensor], x: Tensor):
    body, n = traced.body, traced.n_state
    T = x.shape[0]
    if not isinstance(T, int):
        raise ValueError("static unrolling needs a fixed number of steps")
    states = list(initial)
    ys = []
    # one Split per sequence (its gradient is one Concat), then each step's slice
    steps = [b.split_sizes(s, [1] * T, axis=0) if T > 1 else [s] for s in traced.seq_inputs]
    for t in range(T):
        slices = [b.squeeze(parts[t], [0]) for parts in steps]
        outs = inline(b, body, states + slices)
        states, y = outs[:n], outs[n]
        ys.append(b.unsqueeze(y, [0]))
    return (b.concat(ys, axis=0) if len(ys) > 1 else ys[0]), states


def inline(b: Builder, body: Graph, args: list[Tensor], rename: dict[str, str] | None = None) -> list[Tensor]:
    """Copy the body's nodes into b's graph with fresh names, its inputs bound to args.
    `rename`, when given, is filled with the body name -> new name of every value."""
    rename = {} if rename is None else rename
    rename.update({v.name: a.name for v, a in zip(body.inputs, args)})
    for node in body.nodes:
        outs = []
        for o in node.outputs:
            new = b.fresh(o.rsplit("_", 1)[0])
            rename[o] = new
            v = body.values[o]
            b.g.values[new] = Value(new, v.dtype, v.shape)
            outs.append(new)
        if node.body is not None:
            raise ValueError("a step body with a loop inside cannot be unrolled")
        b.g.nodes.append(Node(node.op, [rename.get(i, i) for i in node.inputs], outs, dict(node.attrs),
                              placement=b.root.placement))
    return [b.tensor(rename.get(v.name, v.name)) for v in body.outputs]

