"""Reverse-mode rules, one per operator: (builder, node, inputs, outputs, output grads) -> input grads.

A rule returns one gradient per node input (None where the input gets none). Rules read the
op's output where that is cheaper (tanh' = 1 − y²). The driver (reverse.py) sums fan-out,
undoes broadcasting, and skips inputs that need no gradient. Ops in NON_DIFFERENTIABLE
produce integers, booleans or shapes and pass no gradient.
"""
from __future__ import annotations

import numpy as np

from ..builder import Builder, Tensor

RULES: dict = {}
NON_DIFFERENTIABLE = {"Shape", "Size", "Less", "Greater", "Equal", "And", "Not", "ArgMax", "Range",
                      "ConstantOfShape", "OneHot", "Mod", "Floor"}


def rule(*ops):
    def register(fn):
        for op in ops:
            RULES[op] = fn
        return fn
    return register


def _i64(b: Builder, values) -> Tensor:
    return b.const(np.array(values, np.int64), "i64")


# ----- arithmetic -----
@rule("Add")
def _add(b, n, x, y, g): return [g[0], g[0]]
@rule("Sub")
def _sub(b, n, x, y, g): return [g[0], b.neg(g[0])]
@rule("Mul")
def _mul(b, n, x, y, g): return [b.mul(g[0], x[1]), b.mul(g[0], x[0])]
@rule("Div")
def _div(b, n, x, y, g): return [b.div(g[0], x[1]), b.neg(b.div(b.mul(g[0], y[0]), x[1]))]
@rule("Neg")
def _neg(b, n, x, y, g): return [b.neg(g[0])]
@rule("Identity")
def _identity(b, n, x, y, g): return [g[0]]


@rule("MatMul")
def _matmul(b, n, x, y, g):
    a, w = x
    gy = g[0]
    if w.rank == 2:
        ga = b.matmul(gy, b.transpose(w, [1, 0]))
        if a.rank == 2:
            gw = b.matmul(b.transpose(a, [1, 0]), gy)
        else:   # all leading axes (batch, time) in one MatMul
            fa, fg = b.flatten_leading(a), b.flatten_leading(gy)
            gw = b.matmul(b.transpose(fa, [1, 0]), fg)
        return [ga, gw]
    perm_a = list(range(a.rank - 2)) + [a.rank - 1, a.rank - 2]
    perm_w = list(range(w.rank - 2)) + [w.rank - 1, w.rank - 2]
    return [b.matmul(gy, b.transpose(w, perm_w)), b.matmul(b.transpose(a, perm_a), gy)]


# ----- elementwise nonlinearities (reading the output) -----
@rule("Sigmoid")
def _sigmoid(b, n, x, y, g): return [b.mul(g[0], b.mul(y[0], b.sub(1.0, y[0])))]
@rule("Tanh")
def _tanh(b, n, x, y, g): return [b.mul(g[0], b.sub(1.0, b.mul(y[0], y[0])))]
@rule("Relu")
def _relu(b, n, x, y, g): return [b.where(b.greater(y[0], b.const(0.0, y[0].dtype)), g[0], 0.0)]
@rule("Exp")
def _exp(b, n, x, y, g): return [b.mul(g[0], y[0])]
@rule("Log")
def _log(b, n, x, y, g): return [b.div(g[0], x[0])]
@rule("Sqrt")
def _sqrt(b, n, x, y, g): return [b.div(g[0], b.mul(y[0], 2.0))]


@rule("Min")
def _min(b, n, x, y, g):
    pick_b = b.less(x[1], x[0])          # ties send the gradient to the first operand
    return [b.where(pick_b, 0.0, g[0]), b.where(pick_b, g[0], 0.0)]


@rule("Max")
def _max(b, n, x, y, g):
    pick_b = b.less(x[0], x[1])
    return [b.where(pick_b, 0.0, g[0]), b.where(pick_b, g[0], 0.0)]


@rule("Where")
def _where(b, n, x, y, g):
    return [None, b.where(x[0], g[0], 0.0), b.where(x[0], 0.0, g[0])]


@rule("Softmax")
def _softmax(b, n, x, y, g):
    s = y[0]
    dot = b.reduce_sum(b.mul(g[0], s), [-1], keepdims=True)
    return [b.mul(s, b.sub(g[0], dot))]


@rule("LogSoftmax")
def _log_softmax(b, n, x, y, g):
    total = b.reduce_sum(g[0], [-1], keepdims=True)
    return [b.sub(g[0], b.mul(b.exp(y[0]), total))]


@rule("Cast")
def _cast(b, n, x, y, g):
    if x[0].dtype not in ("f32", "f64"):
        return [None]
    return [b.cast(g[0], x[0].dtype)]


# ----- shape and data movement -----
@rule("Concat")
def _concat(b, n, x, y, g):
    axis = n.attrs["axis"]
    sizes = [t.shape[axis] for t in x]
    if not all(isinstance(s, int) for s in sizes):
        raise ValueError("the gradient of Concat needs fixed sizes along its axis")
    return b.split_sizes(g[0], sizes, axis)


@rule("Split")
def _split(b, n, x, y, g):
    return [b.concat(list(g), n.attrs["axis"]), None]


def _pad_axis(b: Builder, t: Tensor, axis: int, before: int, after: int, out_shape) -> Tensor:
    pads = [0] * (2 * t.rank)
    pads[axis % t.rank] = before
    pads[t.rank + axis % t.rank] = after
    return b.op("Pad", [t, _i64(b, pads)], out_shape)


@rule("Slice")
def _slice(b, n, x, y, g):
    data = x[0]
    start = int(_const(b, n.inputs[1])[0])
    end = int(_const(b, n.inputs[2])[0])
    axis = int(_const(b, n.inputs[3])[0]) % data.rank
    size = data.shape[axis]
    if not isinstance(size, int):
        raise ValueError("the gradient of Slice needs a fixed size along its axis")
    start, end, _ = slice(start, end).indices(size)
    return [_pad_axis(b, g[0], axis, start, size - end, data.shape), None, None, None]


@rule("Gather")
def _gather(b, n, x, y, g):
    data, idx = x
    axis = n.attrs.get("axis", 0) % data.rank
    index = _const(b, n.inputs[1])
    if index is not None and index.ndim == 0 and isinstance(data.shape[axis], int):
        t, size = int(index), data.shape[axis]      # one step of a static unroll
        return [_pad_axis(b, b.unsqueeze(g[0], [axis]), axis, t, size - 1 - t, data.shape), None]
    if axis != 0 or data.rank != 2:
        raise ValueError("the gradient of Gather is defined for row lookups (embeddings) only")
    # rows: each looked-up row's gradient added into its row of zeros (ScatterND with
    # reduction=add), not onehot(ids)ᵀ·g: a [V × N·N × E] MatMul for a 1000-word table (W5)
    ids = b.unsqueeze(b.cast(idx, "i64"), [-1])
    return [b.op("ScatterND", [b.zeros_like(data), ids, g[0]], data.shape, attrs={"reduction": "add"}), None]


@rule("GatherElements")
def _gather_elements(b, n, x, y, g):
    data, idx = x
    return [b.op("ScatterElements", [b.zeros_like(data), idx, g[0]], data.shape,
                 attrs={"axis": n.attrs.get("axis", 0), "reduction": "add"}), None]


@rule("Unsqueeze")
def _unsqueeze(b, n, x, y, g): return [b.squeeze(g[0], list(_const(b, n.inputs[1]))), None]
@rule("Squeeze")
def _squeeze(b, n, x, y, g): return [b.unsqueeze(g[0], list(_const(b, n.inputs[1]))), None]


@rule("Reshape")
def _reshape(b, n, x, y, g):
    return [b.op("Reshape", [g[0], b.shape_of(x[0])], x[0].shape), None]


@rule("Transpose")
def _transpose(b, n, x, y, g):
    perm = n.attrs["perm"]
    return [b.transpose(g[0], list(np.argsort(perm)))]


@rule("Expand")
def _expand(b, n, x, y, g): return [g[0], None]   # the driver sums the broadcast axes


@rule("ReduceSum")
def _reduce_sum(b, n, x, y, g):
    axes = [int(a) for a in _const(b, n.inputs[1])]
    gy = g[0] if n.attrs.get("keepdims", 1) else b.unsqueeze(g[0], axes)
    return [b.expand(gy, b.shape_of(x[0]), x[0].shape), None]


@rule("ReduceMean")
def _reduce_mean(b, n, x, y, g):
    [gsum, _] = _reduce_sum(b, n, x, y, g)
    count = b.div(b.cast(b.op("Size", [x[0]], (), dtype="i64"), x[0].dtype),
                  b.cast(b.op("Size", [y[0]], (), dtype="i64"), x[0].dtype))
    return [b.div(gsum, count), None]


@rule("ReverseSequence")
def _reverse_sequence(b, n, x, y, g):
    return [b.reverse_sequence(g[0], x[1], n.attrs["time_axis"], n.attrs["batch_axis"]), None]


@rule("LSTM")
def _lstm(b, n, x, y, g):     # onnxruntime's fused LSTM forward, recomputed backward (lstm.py)
    from .lstm import lstm_grad
    return lstm_grad(b, n, x, y, g)


# rules that take None for an output nobody differentiates (instead of zeros)
TAKES_NONE = {"LSTM"}


@rule("Pad")
def _pad(b, n, x, y, g):
    pads = [int(p) for p in _const(b, n.inputs[1])]
    r = x[0].rank
    out = g[0]
    for axis in range(r):
        if pads[axis] or pads[r + axis]:
            size = x[0].shape[axis]
            out = b.slice(out, pads[axis], pads[axis] + size, axis)
    return [out, None]


def _const(b: Builder, name: str):
    """The value of a constant initializer (axes, indices), or None."""
    g = b.g
    while g.parent is not None:
        g = g.parent
    arr = g.initializers.get(name)
    return None if arr is None else arr

