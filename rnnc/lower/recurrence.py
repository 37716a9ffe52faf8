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
             mask: Tensor | None, strategy: str, extra: list[Tensor] = (),
             unroll_later: bool = False) -> tuple[Tensor, list[Tensor]]:
    """`strategy`: "static", "loop", or "checkpoint:K" (a loop over chunks of K steps, for
    training graphs with --memory checkpoint: lower/chunked.py). `unroll_later`: a static run
    is emitted as a Scan marked for lower/unroll.py, which unrolls it after differentiation
    (training graphs: the backward loop is shortened first, grad/stepwise.py)."""
    if strategy.startswith("checkpoint:"):
        from .chunked import run_chunked
        return run_chunked(b, cell, params, x, initial, mask, int(strategy.split(":", 1)[1]), extra)
    traced = hoist(b, trace_step(b, cell, params, x, mask, extra=extra))
    if strategy == "static" and not (unroll_later and isinstance(x.shape[0], int)):
        return _unrolled(b, traced, initial, x)
    y, final = _scan(b, traced, initial, x, cell)
    if strategy == "static":
        from .unroll import UNROLL
        next(n for n in reversed(b.g.nodes) if n.op == "Scan").attrs[UNROLL] = 1
    return y, final


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
    `rename`, when given, is filled with the body name -> new name of every value. A node
    with a body of its own (a nested Scan) gets a deep copy of it: gradients mutate the
    Scan they differentiate, so a copy must never share its body with the original."""
    rename = {} if rename is None else rename
    rename.update({v.name: a.name for v, a in zip(body.inputs, args)})
    for node in body.nodes:
        outs = [_fresh_value(b, b.g, body.values[o], rename, o) for o in node.outputs]
        sub = _copy_body(b, node.body, rename, b.g) if node.body is not None else None
        b.g.nodes.append(Node(node.op, [rename.get(i, i) for i in node.inputs], outs, dict(node.attrs), sub,
                              placement=b.root.placement, memory=node.memory))
    return [b.tensor(rename.get(v.name, v.name)) for v in body.outputs]


def _fresh_value(b: Builder, g: Graph, v: Value, rename: dict[str, str], old: str) -> str:
    new = b.fresh(old.rsplit("_", 1)[0])
    rename[old] = new
    g.values[new] = Value(new, v.dtype, v.shape)
    return new


def _copy_body(b: Builder, body: Graph, outer: dict[str, str], parent: Graph) -> Graph:
    """A copy of a loop body with fresh names; what it reads from enclosing graphs is
    renamed through `outer` (values the copy's enclosing graph renamed)."""
    local = dict(outer)
    g = Graph(parent=parent, initializers=dict(body.initializers))
    for v in body.inputs:
        g.inputs.append(g.values[_fresh_value(b, g, v, local, v.name)])
    for node in body.nodes:
        outs = [_fresh_value(b, g, body.values[o], local, o) for o in node.outputs]
        sub = _copy_body(b, node.body, local, g) if node.body is not None else None
        g.nodes.append(Node(node.op, [local.get(i, i) for i in node.inputs], outs, dict(node.attrs), sub,
                            placement=node.placement, memory=node.memory))
    g.outputs = [g.lookup(local.get(v.name, v.name)) for v in body.outputs]
    return g
