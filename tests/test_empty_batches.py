"""Train and eval models on an empty batch, or a batch of zero steps, in every lowering and
memory policy: the step runs, its loss is 0 (a mean over no elements), and no weight moves.

onnxruntime 1.31 crashes on empty loops and reduces empty tensors wrongly over some axes;
rnnc/lower/guard.py wraps both. Run in a subprocess, so that a crash fails this test
instead of the whole pytest run.
"""
from __future__ import annotations

import subprocess
import sys

_RUN = r"""
import numpy as np
import onnxruntime as ort
from rnnc.api import check
from rnnc.training_graph import build_eval, build_train

SPECS = {
    "seq-mse": '''model m
input x: f32[batch, TIME, 3]
input n: i64[batch]
input y: f32[batch, TIME, 2]
cell rnn = stack(lstm(4), gru(3)) | project(2)
pred, _ = rnn(x, lengths=n)
loss = mse(pred, y, lengths=n)
output pred
train { optimizer adam(lr=0.01) }
''',
    "tagger": '''model m
input x: f32[batch, TIME, 3]
input y: i64[batch, TIME]
cell rnn = bi(lstm(4)) | project(3)
logits, _ = rnn(x)
loss = softmax_cross_entropy(logits, y)
metric accuracy(logits, y)
output logits
train { optimizer sgd(lr=0.1, momentum=0.9) }
''',
}
for name, text in SPECS.items():
    for unroll, memory in (("loop", "store"), ("static", "store"), ("fused", "store"), ("auto", "recompute"),
                           ("auto", "checkpoint:2")):
        # static unrolling needs a fixed number of steps: an empty batch of 5 steps only
        model = check("m.rnn", text=text.replace("TIME", "5" if unroll == "static" else "time"))
        tm = build_train(model, unroll, memory=memory)
        sess = ort.InferenceSession(tm.onnx.SerializeToString(), providers=["CPUExecutionProvider"])
        ev = ort.InferenceSession(build_eval(model, unroll).SerializeToString(), providers=["CPUExecutionProvider"])
        for B, T in ((0, 5),) if unroll == "static" else ((0, 5), (3, 0)):
            feeds = {"x": np.ones((B, T, 3), np.float32), "n": np.full(B, T, np.int64),
                     "y": np.zeros((B, T, 2), np.float32) if name == "seq-mse" else np.zeros((B, T), np.int64),
                     "lr": np.array(0.1, np.float32), "step": np.array(0, np.int64), **tm.params, **tm.slots}
            names = [o.name for o in sess.get_outputs()]
            out = dict(zip(names, sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})))
            moved = max(float(np.max(np.abs(out[p + ".next"] - tm.params[p]), initial=0.0)) for p in tm.params)
            ev_out = ev.run(None, {i.name: feeds[i.name] if i.name in feeds else tm.params[i.name]
                                   for i in ev.get_inputs()})
            print(name, unroll, memory, B, T, float(out["loss"]), moved, float(ev_out[0]), flush=True)
"""


def test_train_and_eval_models_run_on_empty_batches(tmp_path):
    script = tmp_path / "empty.py"
    script.write_text(_RUN)
    root = __file__.rsplit("/tests/", 1)[0]
    p = subprocess.run([sys.executable, str(script)], cwd=root, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 2 * (1 + 4 * 2), lines
    for line in lines:
        *_, loss, moved, eval_loss = line.split()
        assert float(loss) == 0.0 and float(moved) == 0.0 and float(eval_loss) == 0.0, line
