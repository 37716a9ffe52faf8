"""bench/breakdown.py times each loop of a train step as a model of its own, fed values
probed from a real step. Its figures mean something only if what it times is that loop: run
alone on the probed inputs, every top-level loop must return exactly what the whole step's
empty-input If returns for it, and every top-level matmul what it computes in the step."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rnnc.api import check
from rnnc.training_graph import build_train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import breakdown

SPEC = """model m
input x: f32[batch, 7, 3]
input n: i64[batch]
input y: f32[batch, 7, 1]
cell rnn = stack(lstm(5), basic(4, activation=relu)) | project(1)
pred, _ = rnn(x, lengths=n)
loss = mse(pred, y)
output pred
train { optimizer adam(lr=0.01) }
"""


def test_parts_alone_compute_what_the_step_computes():
    tm = build_train(check("m.rnn", text=SPEC), "auto")
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(4, 7, 3)).astype(np.float32), "n": np.array([7, 0, 3, 5], np.int64),
             "y": rng.normal(size=(4, 7, 1)).astype(np.float32), "lr": np.array(0.01, np.float32),
             "step": np.array(0, np.int64), **tm.params, **tm.slots}
    guarded = [(n, a.g.node[0]) for n in tm.onnx.graph.node if n.op_type == "If"
               for a in n.attribute if a.name == "else_branch" and a.g.node[0].op_type == "Scan"]
    matmuls = [n for n in tm.onnx.graph.node if n.op_type in ("MatMul", "Gemm")]
    assert len(guarded) == 4 and [s.name for _, s in guarded] == [s.name for s in breakdown.top_loops(tm.onnx)]
    wanted = [o for n, _ in guarded for o in n.output] + [o for n in matmuls for o in list(n.input) + list(n.output)]
    for _, scan in guarded:
        body = next(a.g for a in scan.attribute if a.name == "body")
        wanted += list(scan.input) + breakdown.captured(body)
    values = breakdown.probe(tm.onnx, feeds, wanted)

    parts = [(scan, if_node.output) for if_node, scan in guarded] + [(m, m.output) for m in matmuls]
    for node, step_outputs in parts:
        proto, part_feeds = breakdown.node_model(tm.onnx, node, values)
        got = ort.InferenceSession(proto, providers=["CPUExecutionProvider"]).run(None, part_feeds)
        for name, alone in zip(step_outputs, got):
            np.testing.assert_array_equal(alone, values[name], err_msg=f"{node.name}: {name}")
