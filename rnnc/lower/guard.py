"""Guard each recurrence (and reduction) of a model against empty input.

onnxruntime 1.31's Scan crashes the process (SIGFPE) when its sequence input is empty (no
steps, or an empty batch), and its LSTM/GRU/RNN kernels crash (SIGSEGV) the same way. A
model must run for any batch and any length, so each such top-level node is wrapped in

    If(Size(x) == 0, then: (initial states, empty outputs), else: the node)

which returns what zero steps compute: the initial state, and outputs with no elements.

onnxruntime 1.31 also gets a reduction over some axes of an empty tensor wrong: it returns
the input unreduced (ReduceSum over axis -1 of a [0, 5, 2] tensor gives [0, 5, 2], not
[0, 5]), and the next node then stops the run with a buffer error. A loss over an empty
batch, and the bias gradients of a step with no time steps, are such reductions, so each
reduction over some (constant) axes of a tensor with a dim known only at run time is wrapped
the same way: If(Size(x) == 0, then: zeros of the reduced shape, else: the node). A mean
over no elements is then 0, as a weighted loss with all weights zero already is.
"""
from __future__ import annotations

import itertools

import numpy as np
from onnx import numpy_helper

from ..graph import NUMPY_DTYPES, Graph, Node, Value

RNN_OPS = ("LSTM", "GRU", "RNN")
REDUCE_OPS = ("ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2",
              "ReduceProd", "ReduceLogSumExp")


class _Guard:
    def __init__(self, graph: Graph):
        self.g = graph
        self.ids = itertools.count()

    def fresh(self, hint: str) -> str:
        return f"{hint}_guard{next(self.ids)}"

    def const(self, values, dtype="i64") -> str:
        name = self.fresh("c")
        arr = np.array(values, NUMPY_DTYPES[dtype])
        self.g.initializers[name] = arr
        self.g.values[name] = Value(name, dtype, arr.shape)
        return name

    def empty_like(self, branch: Graph, out: Value, dims: list[str]) -> str:
        """Zeros of out's dtype whose shape is the concatenation of `dims` (names of i64
        vectors, computed in the branch): no elements for a loop's outputs, the reduced shape
        for a reduction's."""
        shape, o = self.fresh("shape"), self.fresh(out.name)
        branch.nodes.append(Node("Concat", dims, [shape], {"axis": 0}))
        branch.values[shape] = Value(shape, "i64", (len(out.shape),))
        zero = numpy_helper.from_array(np.zeros(1, NUMPY_DTYPES[out.dtype]))
        branch.nodes.append(Node("ConstantOfShape", [shape], [o], {"value": zero}))
        branch.values[o] = Value(o, out.dtype, out.shape)
        return o

    def dims_of(self, branch: Graph, x: str, start: int, end: int) -> str:
        d = self.fresh("dims")
        branch.nodes.append(Node("Shape", [x], [d], {"start": start, "end": end}))
        branch.values[d] = Value(d, "i64", (end - start,))
        return d

    def out_dim(self, branch: Graph, x: str, x_shape, i: int, d) -> str:
        """Dim i of an empty scan output, as an i64 [1]: the steps of x for the scan axis, a
        fixed size, x's dim of the same name (its batch, also when x is chunked [n, k, batch,
        ...]), x's dim 1 for a dim 1 unnamed ([time, batch, ...]), else 0: a dim known only at
        run time (e.g. attention over src_time), where any size of an empty tensor will do."""
        if i == 0:
            return self.dims_of(branch, x, 0, 1)
        if isinstance(d, int):
            return self.const([d])
        if d is not None and d in x_shape[1:]:
            j = x_shape.index(d, 1)
            return self.dims_of(branch, x, j, j + 1)
        return self.dims_of(branch, x, 1, 2) if i == 1 else self.const([0])

    def identity(self, branch: Graph, src: str, like: Value) -> str:
        o = self.fresh(like.name)
        branch.nodes.append(Node("Identity", [src], [o]))
        branch.values[o] = Value(o, like.dtype, like.shape)
        return o

    def then_outputs(self, node: Node, branch: Graph) -> list[str]:
        if node.op in REDUCE_OPS:           # zeros, shaped as the reduction's result
            x = node.inputs[0]
            rank = self.g.values[x].rank
            axes = {int(a) % rank for a in self.g.initializers[node.inputs[1]].reshape(-1)}
            keep = node.attrs.get("keepdims", 1)
            dims = [self.const([1]) if i in axes else self.dims_of(branch, x, i, i + 1)
                    for i in range(rank) if keep or i not in axes]
            return [self.empty_like(branch, self.g.values[node.outputs[0]], dims)]
        if node.op == "Scan":
            outs = [self.g.values[o] for o in node.outputs]
            n = len(node.inputs) - node.attrs["num_scan_inputs"]
            xs0 = node.inputs[n]
            result = [self.identity(branch, node.inputs[i], outs[i]) for i in range(n)]
            x_shape = self.g.values[xs0].shape
            for v in outs[n:]:            # [time, ...] with no elements
                result.append(self.empty_like(branch, v, [self.out_dim(branch, xs0, x_shape, i, d)
                                                          for i, d in enumerate(v.shape)]))
            return result
        # LSTM/GRU/RNN: Y [T, 1, B, H] empty; Y_h (and LSTM's Y_c) are the initial states
        # (outputs pruned as unread are "" and have no value here)
        x = node.inputs[0]
        hidden = node.attrs["hidden_size"]
        result = []
        for k, o in enumerate(node.outputs):
            if not o:
                continue
            if k == 0:
                result.append(self.empty_like(branch, self.g.values[o], [
                    self.dims_of(branch, x, 0, 1), self.const([1]), self.dims_of(branch, x, 1, 2),
                    self.const([hidden])]))
            else:
                result.append(self.identity(branch, node.inputs[4 + k], self.g.values[o]))
        return result

    def wrap(self, node: Node) -> list[Node]:
        x = node.inputs[len(node.inputs) - node.attrs["num_scan_inputs"]] if node.op == "Scan" else node.inputs[0]
        size, zero, empty = self.fresh("size"), self.const(0), self.fresh("empty")
        self.g.values[size] = Value(size, "i64", ())
        self.g.values[empty] = Value(empty, "bool", ())
        then_g = Graph(parent=self.g)
        then_g.outputs = [then_g.values[o] for o in self.then_outputs(node, then_g)]
        else_g = Graph(parent=self.g)
        renamed = [self.fresh(o) if o else "" for o in node.outputs]
        else_g.nodes.append(Node(node.op, node.inputs, renamed, node.attrs, node.body))
        if node.body is not None:
            node.body.parent = else_g
        for o, r in zip(node.outputs, renamed):
            if o:
                v = self.g.values[o]
                else_g.values[r] = Value(r, v.dtype, v.shape)
        else_g.outputs = [else_g.values[r] for r in renamed if r]
        p = node.placement
        return [Node("Size", [x], [size], placement=p), Node("Equal", [size, zero], [empty], placement=p),
                Node("If", [empty], [o for o in node.outputs if o], {"then_branch": then_g, "else_branch": else_g},
                     placement=p)]


def guard_empty_input(graph: Graph) -> Graph:
    """Wraps every top-level recurrence, and every reduction onnxruntime gets wrong on empty
    input, in its If."""
    guard = _Guard(graph)
    nodes = []
    for node in graph.nodes:
        if node.op == "Scan" or node.op in RNN_OPS or _partial_reduction(graph, node):
            nodes += guard.wrap(node)
        else:
            nodes.append(node)
    graph.nodes = nodes
    return graph


def _partial_reduction(graph: Graph, node: Node) -> bool:
    """A reduction over some, not all, constant axes of a tensor that may be empty."""
    if node.op not in REDUCE_OPS or len(node.inputs) < 2 or node.inputs[1] not in graph.initializers:
        return False
    shape = graph.values[node.inputs[0]].shape
    axes = {int(a) % len(shape) for a in graph.initializers[node.inputs[1]].reshape(-1)} if shape else set()
    return 0 < len(axes) < len(shape) and any(not isinstance(d, int) for d in shape)
