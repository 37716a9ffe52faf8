"""The summary `rnnc compile` prints: inputs and outputs, parameters, nodes, lowerings."""
from __future__ import annotations

import onnx

from .export import ONNX_DTYPES

_DTYPE_NAMES = {v: k for k, v in ONNX_DTYPES.items()}


def _io(v: onnx.ValueInfoProto) -> str:
    t = v.type.tensor_type
    dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
    return f"{v.name}: {_DTYPE_NAMES.get(t.elem_type, '?')}[{', '.join(dims)}]"


def _count_nodes(graph: onnx.GraphProto) -> int:
    n = 0
    for node in graph.node:
        n += 1
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                n += _count_nodes(a.g)
    return n


def summarize(result, explain: bool = False) -> str:
    proto = result.infer.onnx
    n_params = sum(int(a.size) for a in result.infer.params.values())
    lines = [f"model {result.model.name} -> {result.out}/"]
    lines += [f"  wrote {p}" for p in result.files]
    lines.append("  inputs:  " + "; ".join(_io(v) for v in proto.graph.input))
    lines.append("  outputs: " + "; ".join(_io(v) for v in proto.graph.output))
    lines.append(f"  parameters: {n_params:,} in {len(result.infer.params)} tensors; "
                 f"nodes: {_count_nodes(proto.graph)} (loop bodies included)")
    for path, strategy, why in result.infer.decisions:
        provider = result.infer.providers.get(path, "CPUExecutionProvider")
        lines.append(f"  run of cell '{path}': {strategy}" + (f" [{provider}] — {why}" if explain else ""))
    if explain and result.model.loss is not None:
        lines.append("  (eval.onnx lowers the same way; train.onnx never uses fused operators, which rnnc cannot "
                     "differentiate: there auto is static or loop)")
    return "\n".join(lines)
