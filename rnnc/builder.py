"""One builder, one method per operator, shapes inferred as nodes are made.

Cell step functions are written against `Tensor` (operators `+ - * / @` and the methods of
`Builder`), so the same step code is traced into the top-level graph (static unrolling) or
into a Scan body (loop lowering), and the gradient rules emit their nodes through it too.
"""
from __future__ import annotations

import itertools

import numpy as np

from .graph import NUMPY_DTYPES, Dim, Graph, Node, Shape, Value


class Tensor:
    """A value of a graph being built, with arithmetic that emits nodes."""

    __slots__ = ("b", "v")
    __array_priority__ = 1000  # numpy scalars on the left defer to our operators

    def __init__(self, builder: "Builder", value: Value):
        self.b, self.v = builder, value

    name = property(lambda self: self.v.name)
    shape = property(lambda self: self.v.shape)
    dtype = property(lambda self: self.v.dtype)
    rank = property(lambda self: len(self.v.shape))

    def _on(self, o) -> "Builder":
        """The builder of the innermost graph of the operands: a weight of the model read
        inside a loop body emits into the body, not the model."""
        return o.b if isinstance(o, Tensor) and o.b.depth > self.b.depth else self.b

    def __add__(self, o): return self._on(o).add(self, o)
    def __radd__(self, o): return self._on(o).add(o, self)
    def __sub__(self, o): return self._on(o).sub(self, o)
    def __rsub__(self, o): return self._on(o).sub(o, self)
    def __mul__(self, o): return self._on(o).mul(self, o)
    def __rmul__(self, o): return self._on(o).mul(o, self)
    def __truediv__(self, o): return self._on(o).div(self, o)
    def __rtruediv__(self, o): return self._on(o).div(o, self)
    def __matmul__(self, o): return self._on(o).matmul(self, o)
    def __neg__(self): return self.b.neg(self)

    def __repr__(self) -> str:
        return f"Tensor({self.v!r})"


def broadcast(a: Shape, b: Shape) -> Shape:
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out: list[Dim] = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        elif x is None:
            out.append(y)
        else:
            out.append(x)
    return tuple(out)


def _depth(g: Graph) -> int:
    d = 0
    while g.parent is not None:
        g, d = g.parent, d + 1
    return d


class Builder:
    """Emits nodes into `graph`; `fdtype` is the float type of parameters and constants."""

    def __init__(self, graph: Graph, fdtype: str = "f32", names: itertools.count | None = None,
                 root: "Builder | None" = None):
        self.g = graph
        self.fdtype = fdtype
        self._ids = names if names is not None else itertools.count()
        self.root = root or self
        self.placement: str | None = None   # on the root: the placement of the nodes being made
        self.depth = 0 if root is None else _depth(graph)
        self._consts: dict = {} if root is None else root._consts
        self._transposes: dict = {}

    # ----- naming, values, constants -----
    def fresh(self, hint: str = "t") -> str:
        return f"{hint}_{next(self._ids)}"

    def _value(self, name: str, dtype: str, shape: Shape) -> Value:
        v = Value(name, dtype, tuple(shape))
        self.g.values[name] = v
        return v

    def tensor(self, name: str) -> Tensor:
        return Tensor(self, self.g.lookup(name))

    def input(self, name: str, dtype: str, shape: Shape) -> Tensor:
        v = self._value(name, dtype, shape)
        self.g.inputs.append(v)
        return Tensor(self, v)

    def initializer(self, name: str, array: np.ndarray, trainable: bool = False) -> Tensor:
        root = self.root.g
        dtype = {np.dtype(t): k for k, t in NUMPY_DTYPES.items()}[array.dtype]
        root.initializers[name] = array
        v = Value(name, dtype, tuple(array.shape))
        root.values[name] = v
        if trainable:
            root.params.append(name)
        return Tensor(self.root, v)

    def const(self, value, dtype: str | None = None) -> Tensor:
        """A constant initializer in the root graph, shared by every body that reads it."""
        dtype = dtype or self.fdtype
        array = np.asarray(value, dtype=NUMPY_DTYPES[dtype])
        key = (dtype, array.shape, array.tobytes())
        if key not in self._consts:
            name = self.root.fresh("const")
            self._consts[key] = self.root.initializer(name, array).v
        return Tensor(self, self._consts[key])

    def lift(self, x) -> Tensor:
        return x if isinstance(x, Tensor) else self.const(x)

    def op(self, op: str, inputs: list, shape: Shape, dtype: str | None = None, attrs: dict | None = None,
           hint: str | None = None) -> Tensor:
        ins = [self.lift(x) if x is not None else None for x in inputs]
        if dtype is None:
            dtype = next(t.dtype for t in ins if t is not None)
        name = self.fresh(hint or op.lower())
        v = self._value(name, dtype, shape)
        self.g.nodes.append(Node(op, [t.name if t is not None else "" for t in ins], [name], dict(attrs or {}),
                                 placement=self.root.placement))
        return Tensor(self, v)

    def node(self, op: str, inputs: list, outputs: list[tuple[str, Shape]], attrs: dict | None = None,
             body: Graph | None = None) -> list[Tensor]:
        """A node with several outputs, given as (dtype, shape) pairs; a None input is an
        omitted optional input."""
        names = [self.fresh(op.lower()) for _ in outputs]
        vals = [self._value(n, d, s) for n, (d, s) in zip(names, outputs)]
        self.g.nodes.append(Node(op, [t.name if t is not None else "" for t in inputs], names,
                                 dict(attrs or {}), body, placement=self.root.placement))
        return [Tensor(self, v) for v in vals]

    # ----- elementwise -----
    def _binary(self, op, a, b, dtype=None):
        a, b = self._pair(a, b)
        return self.op(op, [a, b], broadcast(a.shape, b.shape), dtype=dtype)

    def _pair(self, a, b):
        if not isinstance(a, Tensor):
            a = self.const(a, b.dtype)
        if not isinstance(b, Tensor):
            b = self.const(b, a.dtype)
        return a, b

    def add(self, a, b): return self._binary("Add", a, b)
    def sub(self, a, b): return self._binary("Sub", a, b)
    def mul(self, a, b): return self._binary("Mul", a, b)
    def div(self, a, b): return self._binary("Div", a, b)
    def pow(self, a, b): return self._binary("Pow", a, b)
    def minimum(self, a, b): return self._binary("Min", a, b)
    def maximum(self, a, b): return self._binary("Max", a, b)
    def less(self, a, b): return self._binary("Less", a, b, dtype="bool")
    def greater(self, a, b): return self._binary("Greater", a, b, dtype="bool")
    def equal(self, a, b): return self._binary("Equal", a, b, dtype="bool")

    def where(self, cond, a, b):
        a, b = self._pair(a, b)
        shape = broadcast(broadcast(cond.shape, a.shape), b.shape)
        return self.op("Where", [cond, a, b], shape, dtype=a.dtype)

    def _unary(self, op, x, **attrs):
        return self.op(op, [x], x.shape, attrs=attrs)

    def neg(self, x): return self._unary("Neg", x)
    def sigmoid(self, x): return self._unary("Sigmoid", x)
    def tanh(self, x): return self._unary("Tanh", x)
    def relu(self, x): return self._unary("Relu", x)
    def exp(self, x): return self._unary("Exp", x)
    def log(self, x): return self._unary("Log", x)
    def sqrt(self, x): return self._unary("Sqrt", x)
    def identity(self, x): return self._unary("Identity", x)
    def softmax(self, x): return self._unary("Softmax", x, axis=-1)
    def log_softmax(self, x): return self._unary("LogSoftmax", x, axis=-1)

    def clip(self, x, lo, hi):
        return self.minimum(self.maximum(x, lo), hi)

    def cast(self, x, dtype: str):
        if x.dtype == dtype:
            return x
        return self.op("Cast", [x], x.shape, dtype=dtype, attrs={"to": dtype})

    # ----- linear algebra and shape -----
    def matmul(self, a, b):
        if b.rank == 2:
            shape = tuple(a.shape[:-1]) + (b.shape[-1],)
        else:
            shape = broadcast(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
        return self.op("MatMul", [a, b], shape)

    def transpose(self, x, perm):
        """Each value's transpose is made once per graph (a weight's Wᵀ is read by the
        gradient of every step that used W)."""
        key = (id(self.g), x.name, tuple(perm))
        memo = self.root._transposes
        if key not in memo or memo[key].name not in self.g.values:
            memo[key] = self.op("Transpose", [x], tuple(x.shape[p] for p in perm), attrs={"perm": list(perm)})
        return Tensor(self, memo[key].v)

    def reshape_to(self, x, target: list[int], out_shape: Shape):
        return self.op("Reshape", [x, self.const(np.array(target, dtype=np.int64), "i64")], out_shape)

    def flatten_leading(self, x):
        """[..., k] -> [N, k]: all leading axes folded into one."""
        return self.reshape_to(x, [-1, x.shape[-1]], (None, x.shape[-1]))

    def unsqueeze(self, x, axes: list[int]):
        shape = list(x.shape)
        for a in sorted(a % (x.rank + len(axes)) for a in axes):
            shape.insert(a, 1)
        return self.op("Unsqueeze", [x, self.const(np.array(axes, np.int64), "i64")], tuple(shape))

    def squeeze(self, x, axes: list[int]):
        axes_n = {a % x.rank for a in axes}
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes_n)
        return self.op("Squeeze", [x, self.const(np.array(axes, np.int64), "i64")], shape)

    def concat(self, xs, axis: int = -1):
        rank = xs[0].rank
        ax = axis % rank
        dims = [x.shape[ax] for x in xs]
        total = sum(dims) if all(isinstance(d, int) for d in dims) else None
        shape = tuple(total if i == ax else xs[0].shape[i] for i in range(rank))
        return self.op("Concat", xs, shape, attrs={"axis": axis})

    def slice(self, x, start: int, end: int, axis: int = -1):
        ax = axis % x.rank
        d = x.shape[ax]
        if isinstance(d, int):
            size = len(range(*slice(start, end).indices(d)))
        elif start >= 0 and end >= 0 and end < 2**62:
            size = end - start
        else:
            size = None
        shape = tuple(size if i == ax else x.shape[i] for i in range(x.rank))
        i64 = lambda v: self.const(np.array([v], np.int64), "i64")
        return self.op("Slice", [x, i64(start), i64(end), i64(axis)], shape)

    def split(self, x, k: int, axis: int = -1):
        """k equal parts along `axis`, as one Split node."""
        d = x.shape[axis]
        if not isinstance(d, int) or d % k:
            raise ValueError(f"cannot split a dim of {d} into {k} equal parts")
        return self.split_sizes(x, [d // k] * k, axis)

    def split_sizes(self, x, sizes: list[int], axis: int = -1):
        ax = axis % x.rank
        outs = [(x.dtype, tuple(n if i == ax else x.shape[i] for i in range(x.rank))) for n in sizes]
        return self.node("Split", [x, self.const(np.array(sizes, np.int64), "i64")], outs, {"axis": axis})

    def gather(self, x, idx, axis: int = 0):
        ax = axis % x.rank
        shape = tuple(x.shape[:ax]) + tuple(idx.shape) + tuple(x.shape[ax + 1:])
        return self.op("Gather", [x, idx], shape, attrs={"axis": axis})

    def reduce_sum(self, x, axes: list[int], keepdims: bool = False):
        return self._reduce("ReduceSum", x, axes, keepdims)

    def _reduce(self, op, x, axes, keepdims):
        axes_n = sorted({a % x.rank for a in axes})
        if keepdims:
            shape = tuple(1 if i in axes_n else d for i, d in enumerate(x.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in axes_n)
        return self.op(op, [x, self.const(np.array(axes_n, np.int64), "i64")], shape,
                       attrs={"keepdims": int(keepdims)})

    def argmax(self, x, axis: int = -1):
        ax = axis % x.rank
        shape = tuple(d for i, d in enumerate(x.shape) if i != ax)
        return self.op("ArgMax", [x], shape, dtype="i64", attrs={"axis": axis, "keepdims": 0})

    def shape_of(self, x, start: int | None = None, end: int | None = None):
        attrs = {}
        if start is not None:
            attrs["start"] = start
        if end is not None:
            attrs["end"] = end
        lo = 0 if start is None else start % x.rank
        hi = x.rank if end is None else end % (x.rank + 1)
        return self.op("Shape", [x], (hi - lo,), dtype="i64", attrs=attrs)

    def expand(self, x, shape_tensor, out_shape: Shape):
        return self.op("Expand", [x, shape_tensor], out_shape)

    def zeros_like(self, x):
        """Zeros of x's (runtime) shape and dtype."""
        return self.mul(x, self.const(0.0, x.dtype))

    def reverse_sequence(self, x, lengths, time_axis: int = 1, batch_axis: int = 0):
        return self.op("ReverseSequence", [x, lengths], x.shape,
                       attrs={"time_axis": time_axis, "batch_axis": batch_axis})

    def range_(self, start, limit, delta, size: Dim):
        return self.op("Range", [start, limit, delta], (size,), dtype=start.dtype)

    def one_hot_like(self, labels, depth: int, dtype: str):
        """one_hot(labels)[..., depth] in `dtype`, via Equal with a Range (no OneHot needed)."""
        classes = self.const(np.arange(depth, dtype=np.int64), "i64")
        eq = self.equal(self.unsqueeze(labels, [-1]), classes)
        return self.cast(eq, dtype)

    # ----- subgraphs -----
    def subgraph(self) -> "Builder":
        """A builder for a loop body; names stay unique across the whole model."""
        return Builder(Graph(parent=self.g), self.fdtype, self._ids, self.root)
