"""The reverse-mode driver: walks a node list backwards emitting gradient nodes.

    grads = backprop(b, nodes, seeds={loss: 1}, wrt={"rnn.W", ...})

Only values that depend on `wrt` and reach a seed get gradients. The driver sums the
gradients of values used several times, undoes broadcasting (a bias [H] added to [B, H]
gets its gradient summed over B), and asks each op's rule (rules.py) or, for Scan, the
loop rule (scan.py) with the Scan's own policy (`Node.memory`: "store", "recompute" or
"checkpoint") or else `memory`. `intercept` names loop-invariant weights whose MatMul gradients
are wanted as (left operand, output grad) pairs instead of being summed in place: the
Scan rule uses this to form the weight gradient of all steps in one MatMul after the loop.
"""
from __future__ import annotations

import numpy as np

from ..builder import Builder, Tensor
from ..graph import FLOAT_DTYPES, Node
from .rules import NON_DIFFERENTIABLE, RULES, _const, TAKES_NONE


def depends_on(nodes: list[Node], wrt: set[str]) -> set[str]:
    dep = set(wrt)
    for node in nodes:
        reads = list(node.inputs) + (node.body.captures() if node.body is not None else [])
        if any(r in dep for r in reads):
            dep.update(node.outputs)
    return dep


def unbroadcast(b: Builder, g: Tensor, shape) -> Tensor:
    """Sum g over the axes a value of `shape` was broadcast along."""
    extra = g.rank - len(shape)
    if extra > 0:
        g = b.reduce_sum(g, list(range(extra)))
    axes = [i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1]
    if axes:
        g = b.reduce_sum(g, axes, keepdims=True)
    return g


def backprop(b: Builder, nodes: list[Node], seeds: dict[str, Tensor], wrt: set[str],
             intercept: set[str] = frozenset(), pairs: dict | None = None,
             memory: str = "store") -> dict[str, Tensor]:
    dep = depends_on(nodes, wrt)
    grads: dict[str, Tensor] = dict(seeds)
    outer_placement = b.root.placement

    def add(name: str, g: Tensor | None) -> None:
        if g is None or name not in dep:
            return
        v = b.g.lookup(name)
        if v.dtype not in FLOAT_DTYPES:
            return
        g = unbroadcast(b, g, v.shape)
        grads[name] = b.add(grads[name], g) if name in grads else g

    for node in reversed(nodes):
        gouts = [grads.get(o) for o in node.outputs]
        if all(g is None for g in gouts) or node.op in NON_DIFFERENTIABLE:
            continue
        reads = list(node.inputs) + (node.body.captures() if node.body is not None else [])
        if not any(r in dep for r in reads):
            continue
        ins = [b.tensor(i) if i else None for i in node.inputs]
        outs = [b.tensor(o) for o in node.outputs]
        b.root.placement = node.placement     # a gradient runs where its forward op runs
        if node.op == "Scan":
            from .scan import scan_grad
            gins, gcaps = scan_grad(b, node, ins, outs, gouts, dep, node.memory or memory)
            for name, g in gcaps.items():
                add(name, g)
        elif node.op == "MatMul" and node.inputs[1] in intercept and pairs is not None:
            gy = gouts[0]
            pairs.setdefault(node.inputs[1], []).append((ins[0], gy))
            gins = [RULES["MatMul"](b, node, ins, outs, gouts)[0] if node.inputs[0] in dep else None, None]
        elif node.op == "Pad" and _const(b, node.inputs[1]) is None:
            gins = _runtime_pad_grad(b, ins, gouts[0])
        else:
            if node.op not in RULES:
                raise ValueError(f"no gradient rule for {node.op}")
            if node.op not in TAKES_NONE:
                gouts = [g if g is not None else b.zeros_like(o) for g, o in zip(gouts, outs)]
            gins = RULES[node.op](b, node, ins, outs, gouts)
        for name, g in zip(node.inputs, gins):
            if name:
                add(name, g)
    b.root.placement = outer_placement
    return grads


def _runtime_pad_grad(b: Builder, ins: list[Tensor], g: Tensor) -> list:
    """Pad by amounts known only at run time (a chunked loop's padded steps, lower/chunked.py):
    the gradient is the slice of g where the input was; rules.py's Pad reads constant pads."""
    x, pads = ins[0], ins[1]
    r = x.rank
    zero, rank = b.const(np.array([0], np.int64), "i64"), b.const(np.array([r], np.int64), "i64")
    starts = b.op("Slice", [pads, zero, rank], (r,))
    ends = b.add(starts, b.shape_of(x))
    return [b.op("Slice", [g, starts, ends], x.shape)] + [None] * (len(ins) - 1)


def param_gradients(b: Builder, nodes: list[Node], seeds: dict[str, Tensor], params: list[str],
                    memory: str = "store") -> dict[str, Tensor]:
    """Gradients of `params`. A weight read by several MatMuls (every step of a static
    unroll) gets Σ aᵀ·dz as one MatMul over the stacked (a, dz) pairs, not one per use
    followed by a chain of Adds."""
    uses: dict[str, int] = {}
    for n in nodes:
        if n.op == "MatMul" and n.inputs[1] in params and b.g.lookup(n.inputs[1]).rank == 2:
            uses[n.inputs[1]] = uses.get(n.inputs[1], 0) + 1
    intercept = {p for p, k in uses.items() if k > 1}
    pairs: dict[str, list] = {}
    grads = backprop(b, nodes, seeds, set(params), intercept=intercept, pairs=pairs, memory=memory)
    placed = {i: n.placement for n in nodes for i in n.inputs if i in params}
    outer_placement = b.root.placement
    for p, found in pairs.items():
        b.root.placement = placed.get(p)
        left = [b.flatten_leading(a) if a.rank != 2 else a for a, _ in found]
        right = [b.flatten_leading(g) if g.rank != 2 else g for _, g in found]
        a_all = b.concat(left, axis=0) if len(left) > 1 else left[0]
        g_all = b.concat(right, axis=0) if len(right) > 1 else right[0]
        dw = b.matmul(b.transpose(a_all, [1, 0]), g_all)
        grads[p] = b.add(grads[p], dw) if p in grads else dw
    b.root.placement = outer_placement
    return grads
