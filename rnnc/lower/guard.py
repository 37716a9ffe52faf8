"""Guard each loop of an inference model against empty input.

onnxruntime 1.31's Scan crashes the process (SIGFPE) when its sequence input is empty (no
steps, or an empty batch). An inference model must run for any batch and any length, so
each top-level Scan is wrapped in

    If(Size(x) == 0, then: (initial states, empty outputs), else: Scan(...))

which returns what zero steps compute: the initial state, and outputs with no elements.
"""
from __future__ import annotations

import itertools

import numpy as np
from onnx import numpy_helper

from ..graph import NUMPY_DTYPES, Graph, Node, Value


def guard_empty_scans(graph: Graph) -> Graph:
    ids = itertools.count()
    fresh = lambda hint: f"{hint}_guard{next(ids)}"   # noqa: E731
    nodes = []
    for node in graph.nodes:
        if node.op != "Scan":
            nodes.append(node)
            continue
        m = node.attrs["num_scan_inputs"]
        n = len(node.inputs) - m
        xs0 = graph.values[node.inputs[n]]
        size, zero, empty = fresh("size"), fresh("zero"), fresh("empty")
        graph.initializers[zero] = np.array(0, np.int64)
        graph.values[zero] = Value(zero, "i64", ())
        nodes.append(Node("Size", [xs0.name], [size]))
        nodes.append(Node("Equal", [size, zero], [empty]))
        for name, dtype in ((size, "i64"), (empty, "bool")):
            graph.values[name] = Value(name, dtype, ())

        then_g = Graph(parent=graph)
        then_outs = []
        for i, out in enumerate(node.outputs):
            v = graph.values[out]
            o = fresh(out)
            if i < n:
                then_g.nodes.append(Node("Identity", [node.inputs[i]], [o]))
            else:   # [batch, time, rest...] with no elements
                lead, shape = fresh("lead"), fresh("shape")
                rest = fresh("rest")
                graph.initializers[rest] = np.array([d for d in v.shape[2:]], np.int64)
                graph.values[rest] = Value(rest, "i64", (len(v.shape) - 2,))
                then_g.nodes.append(Node("Shape", [xs0.name], [lead], {"start": 0, "end": 2}))
                then_g.nodes.append(Node("Concat", [lead, rest], [shape], {"axis": 0}))
                zero_value = numpy_helper.from_array(np.zeros(1, NUMPY_DTYPES[v.dtype]))
                then_g.nodes.append(Node("ConstantOfShape", [shape], [o], {"value": zero_value}))
                for nm, dt, sh in ((lead, "i64", (2,)), (shape, "i64", (len(v.shape),))):
                    then_g.values[nm] = Value(nm, dt, sh)
            then_g.values[o] = Value(o, v.dtype, v.shape)
            then_outs.append(then_g.values[o])
        then_g.outputs = then_outs

        else_g = Graph(parent=graph)
        renamed = [fresh(o) for o in node.outputs]
        else_g.nodes.append(Node("Scan", node.inputs, renamed, node.attrs, node.body))
        node.body.parent = else_g
        for o, r in zip(node.outputs, renamed):
            v = graph.values[o]
            else_g.values[r] = Value(r, v.dtype, v.shape)
        else_g.outputs = [else_g.values[r] for r in renamed]
        nodes.append(Node("If", [empty], list(node.outputs), {"then_branch": then_g, "else_branch": else_g}))
    graph.nodes = nodes
    return graph
