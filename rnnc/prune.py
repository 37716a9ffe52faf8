"""Dead-code elimination: keep only what the graph's outputs depend on.

The inference model takes exactly the inputs its outputs need (LANGUAGE.md §1), and carries
no initializer that nothing reads.
"""
from __future__ import annotations

from .graph import Graph


# ops whose outputs are all optional in ONNX: onnxruntime's LSTM skips writing an omitted Y
# (the whole [T, 1, B, H] sequence) when only the final state is read
OPTIONAL_OUTPUTS = ("LSTM", "GRU", "RNN")


def prune(graph: Graph, keep_inputs: tuple[str, ...] = ()) -> Graph:
    """`keep_inputs` stay inputs even when nothing reads them (an interface promises them)."""
    live = {v.name for v in graph.outputs} | set(keep_inputs)
    kept = []
    for node in reversed(graph.nodes):
        if any(o in live for o in node.outputs):
            if node.op in OPTIONAL_OUTPUTS:      # an output nobody reads is not made at all
                node.outputs = [o if o in live else "" for o in node.outputs]
            kept.append(node)
            live.update(i for i in node.inputs if i)
            if node.body is not None:
                live.update(node.body.captures())
    out = Graph(parent=graph.parent)
    out.nodes = list(reversed(kept))
    out.inputs = [v for v in graph.inputs if v.name in live]
    out.outputs = list(graph.outputs)
    out.initializers = {k: a for k, a in graph.initializers.items() if k in live}
    out.params = [p for p in graph.params if p in live]
    defined = {v.name for v in out.inputs} | set(out.initializers) | {o for n in out.nodes for o in n.outputs}
    out.values = {k: v for k, v in graph.values.items() if k in defined}
    for n in out.nodes:
        if n.body is not None:
            n.body.parent = out
    return out
