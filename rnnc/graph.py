"""The tensor graph: ONNX-level operators with known dtypes and (possibly symbolic) shapes.

A `Graph` is a list of `Node`s in topological order over named `Value`s. Loop bodies are
`Graph`s too (the `body` of a Scan node); a body may read values of enclosing graphs by
name (ONNX outer-scope capture). Dims are ints, symbolic names ("batch", "time"), or None
when unknown. Every pass is graph -> graph; `verify` checks the invariants after each.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Dim = int | str | None
Shape = tuple[Dim, ...]

NUMPY_DTYPES = {"f32": np.float32, "f64": np.float64, "i64": np.int64, "i32": np.int32, "bool": np.bool_}
FLOAT_DTYPES = ("f32", "f64")


@dataclass(frozen=True)
class Value:
    name: str
    dtype: str
    shape: Shape

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    body: "Graph | None" = None
    placement: str | None = None   # "<k>:<device>" of the `on` it was lowered under; None: the run's device
    # a Scan's backward policy ("store" | "recompute" | "checkpoint"), Python-only (never exported);
    # None: the policy backprop is called with (grad/scan.py)
    memory: str | None = None

    def __repr__(self) -> str:
        attrs = "".join(f" {k}={v}" for k, v in self.attrs.items())
        return f"{', '.join(self.outputs)} = {self.op}({', '.join(self.inputs)}){attrs}"


@dataclass
class Graph:
    """Inputs, outputs, nodes; `values` types every name defined in this graph."""

    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    values: dict[str, Value] = field(default_factory=dict)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    params: list[str] = field(default_factory=list)  # trainable initializers, in creation order
    parent: "Graph | None" = None

    def lookup(self, name: str) -> Value:
        g: Graph | None = self
        while g is not None:
            if name in g.values:
                return g.values[name]
            g = g.parent
        raise KeyError(name)

    def captures(self) -> list[str]:
        """Names read by this graph (or its bodies) that are defined in an enclosing graph."""
        defined = {v.name for v in self.inputs} | {o for n in self.nodes for o in n.outputs}
        defined |= set(self.initializers)
        seen: list[str] = []
        for n in self.nodes:
            reads = list(n.inputs) + (n.body.captures() if n.body is not None else [])
            for name in reads:
                if name and name not in defined and name not in seen:
                    seen.append(name)
        return seen

    def __repr__(self) -> str:
        lines = [f"graph({', '.join(map(repr, self.inputs))}) -> ({', '.join(v.name for v in self.outputs)})"]
        lines += [f"  {n!r}" for n in self.nodes]
        return "\n".join(lines)


class GraphError(Exception):
    """An internal invariant of the tensor graph is broken (a compiler bug, not a user error)."""


def verify(graph: Graph) -> None:
    """Check SSA, definition before use, and that every output and node value is typed."""
    defined = set(graph.initializers) | {v.name for v in graph.inputs}
    outer: set[str] = set()
    g = graph.parent
    while g is not None:
        outer |= set(g.values) | set(g.initializers)
        g = g.parent
    for node in graph.nodes:
        for name in node.inputs:
            if name and name not in defined and name not in outer:
                raise GraphError(f"{node!r}: input {name!r} is used before it is defined")
        for name in node.outputs:
            if not name:              # an optional output left out
                continue
            if name in defined:
                raise GraphError(f"{node!r}: {name!r} is defined twice")
            if name not in graph.values:
                raise GraphError(f"{node!r}: output {name!r} has no type")
            defined.add(name)
        if node.body is not None:
            verify(node.body)
    for v in graph.outputs:
        if v.name not in defined and v.name not in outer:
            raise GraphError(f"graph output {v.name!r} is never defined")
