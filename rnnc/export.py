"""Tensor graph -> a standard ONNX model (ai.onnx ops only, IR 10, opset 21).

onnx 1.23 writes IR version 14 by default, which onnxruntime 1.31 refuses: both the IR
version and the opset are set explicitly here, and `onnx.checker` (full) runs on the result.
"""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper, numpy_helper

from .graph import Graph, Value

IR_VERSION = 10
OPSET = 21
ONNX_DTYPES = {"f32": TensorProto.FLOAT, "f64": TensorProto.DOUBLE, "i64": TensorProto.INT64,
               "i32": TensorProto.INT32, "bool": TensorProto.BOOL}


def value_info(v: Value, name: str | None = None) -> onnx.ValueInfoProto:
    dims = [d if d is not None else None for d in v.shape]
    return helper.make_tensor_value_info(name or v.name, ONNX_DTYPES[v.dtype], dims)


def _attr_value(key: str, value, owner: str):
    if key == "to":
        return ONNX_DTYPES[value]
    if isinstance(value, Graph):
        return to_graph_proto(value, f"{owner}_{key}", with_initializers=False)
    return value


def to_graph_proto(graph: Graph, name: str, with_initializers: bool = True) -> onnx.GraphProto:
    nodes = []
    for n in graph.nodes:
        attrs = {k: _attr_value(k, v, n.outputs[0]) for k, v in n.attrs.items()}
        if n.body is not None:
            attrs["body"] = to_graph_proto(n.body, f"{n.outputs[0]}_body", with_initializers=False)
        nodes.append(helper.make_node(n.op, n.inputs, n.outputs, name=n.outputs[0], **attrs))
    inits = []
    if with_initializers:
        inits = [numpy_helper.from_array(a, k) for k, a in graph.initializers.items()]
    return helper.make_graph(nodes, name, [value_info(v) for v in graph.inputs],
                             [value_info(v) for v in graph.outputs], initializer=inits)


def to_model(graph: Graph, name: str, metadata: dict[str, str] | None = None,
             doc: str = "") -> onnx.ModelProto:
    model = helper.make_model(to_graph_proto(graph, name), producer_name="rnnc",
                              opset_imports=[helper.make_opsetid("", OPSET)], doc_string=doc)
    model.ir_version = IR_VERSION
    for k, v in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model, full_check=True)
    return model
