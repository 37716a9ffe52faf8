"""Unroll marked loops into flat graphs after differentiation.

Training graphs lower every cell run as a Scan, even when its lowering is `static`: the
gradient of a Scan is a backward Scan whose step the stepwise pass (grad/stepwise.py)
shortens to the few nodes that read the carried gradients. Scans whose run chose `static`
carry the private attribute UNROLL; this pass then copies their bodies T times, so the
graph runs without per-iteration loop overhead (onnxruntime's Scan costs ~0.2 ms a step).

Per-step slices and stacked outputs use one Reshape and one Split (or Concat) per
sequence: [T, B, H] -> [T·B, H] -> T × [B, H], with no Squeeze or Unsqueeze per step.
"""
from __future__ import annotations

import numpy as np

from ..builder import Builder, Tensor
from ..graph import Graph, Node, Value
from .recurrence import inline

UNROLL = "_rnnc_unroll"


def unroll_marked(b: Builder) -> None:
    """Unroll every top-level Scan of b's graph that carries UNROLL (and drop the mark)."""
    g = b.g
    for node in list(g.nodes):
        if node.op == "Scan" and node.attrs.pop(UNROLL, None):
            _unroll(b, node)


def _unroll(b: Builder, node: Node) -> None:
    g = b.g
    at = g.nodes.index(node)
    tail = g.nodes[at + 1:]
    del g.nodes[at:]
    saved = b.root.placement
    b.root.placement = node.placement
    body = node.body
    m = node.attrs["num_scan_inputs"]
    n = len(node.inputs) - m
    in_dirs = node.attrs.get("scan_input_directions", [0] * m)
    n_out = len(node.outputs) - n
    out_dirs = node.attrs.get("scan_output_directions", [0] * n_out)
    xs = [b.tensor(x) for x in node.inputs[n:]]
    T = xs[0].shape[0]
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"cannot unroll a loop over {T} steps")
    slices = [_slices(b, x, T) for x in xs]
    carries = [b.tensor(x) for x in node.inputs[:n]]
    per_step: list[list[Tensor]] = [[None] * T for _ in range(n_out)]
    for k in range(T):
        args = [s[T - 1 - k] if d else s[k] for s, d in zip(slices, in_dirs)]
        outs = _inline_flat(b, body, carries + args)
        carries = outs[:n]
        for j in range(n_out):
            per_step[j][T - 1 - k if out_dirs[j] else k] = outs[n + j]
    for name, t in zip(node.outputs[:n], carries):
        _alias(b, t, name)
    for j, name in enumerate(node.outputs[n:]):
        _alias(b, _stack(b, per_step[j]), name)
    b.root.placement = saved
    g.nodes += tail


def _inline_flat(b: Builder, body: Graph, args: list[Tensor]) -> list[Tensor]:
    """inline() without the body's Identity nodes (an identity is just another name)."""
    rename: dict[str, str] = {}
    kept = [nd for nd in body.nodes if nd.op != "Identity"]
    alias = {nd.outputs[0]: nd.inputs[0] for nd in body.nodes if nd.op == "Identity"}

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name
    flat = Graph(inputs=body.inputs, outputs=[body.values.get(resolve(v.name)) or body.lookup(resolve(v.name))
                                              for v in body.outputs],
                 nodes=[Node(nd.op, [resolve(i) for i in nd.inputs], nd.outputs, nd.attrs, nd.body, nd.placement)
                        for nd in kept],
                 values=body.values, parent=body.parent)
    return inline(b, flat, args, rename)


def _slices(b: Builder, x: Tensor, T: int) -> list[Tensor]:
    rest = tuple(x.shape[1:])
    if T == 1:
        return [b.squeeze(x, [0])]
    if rest and all(isinstance(d, int) for d in rest[1:]):
        flat = b.reshape_to(x, [-1] + list(rest[1:]), (None,) + rest[1:])
        # T row counts, not num_outputs=T: onnxruntime refuses num_outputs on an empty batch
        rows = b.op("Expand", [b.shape_of(x, 1, 2), b.const(np.array([T], np.int64), "i64")], (T,))
        return b.node("Split", [flat, rows], [(x.dtype, rest)] * T, {"axis": 0})
    parts = b.node("Split", [x], [(x.dtype, (1,) + rest)] * T, {"axis": 0, "num_outputs": T})
    return [b.squeeze(p, [0]) for p in parts]


def _stack(b: Builder, parts: list[Tensor]) -> Tensor:
    T, rest = len(parts), tuple(parts[0].shape)
    if T == 1:
        return b.unsqueeze(parts[0], [0])
    if rest and all(isinstance(d, int) for d in rest[1:]):
        flat = b.concat(parts, axis=0)
        return b.reshape_to(flat, [T, -1] + list(rest[1:]), (T,) + rest)
    return b.concat([b.unsqueeze(p, [0]) for p in parts], axis=0)


def _alias(b: Builder, t: Tensor, name: str) -> None:
    """The loop's output `name` (read by later nodes) is now t."""
    v = b.g.values[name]
    b.g.nodes.append(Node("Identity", [t.name], [name], placement=b.root.placement))
    b.g.values[name] = Value(name, v.dtype, v.shape)

