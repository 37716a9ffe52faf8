"""Training-graph lowerings that change the shape of the backward pass, checked numerically.

1. `unroll=fused` in a training graph: onnxruntime's LSTM kernel runs the forward, and the
   backward recomputes from its hidden states (rnnc/grad/lstm.py). onnxruntime's RNN kernels
   run float32 only, so the check is: the float32 gradient of the fused model equals the
   float64 gradient of the same spec's loop lowering (itself checked against finite
   differences in test_gradients.py) to 1e-4 relative, and a central finite difference of
   the float64 loss along a random direction equals the fused gradient's dot product with
   it.
2. The shortened backward loop (rnnc/grad/stepwise.py) and the unrolling of static runs
   after differentiation (rnnc/lower/unroll.py): an LSTM's backward step is at most 8 nodes,
   and a static training graph has no loop left.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from rnnc.api import check
from rnnc.training_graph import _lower_loss, build_grad, build_train
from rnnc.grad.reverse import param_gradients
from support import all_nodes

B, I, H = 4, 3, 5


def spec(T, *, lengths=False, layers=1, head="seq", initial=False) -> str:
    cell = "lstm(5, forget_bias=1.0)" if layers == 1 else f"stack({layers} * lstm(5))"
    t = T if T is not None else "time"
    lines = ["model m", f"input x: f32[batch, {t}, {I}]"]
    if lengths:
        lines.append("input n: i64[batch]")
    if initial:
        lines += [f"input c0: f32[batch, {H}]", f"input h0: f32[batch, {H}]"]
    args = "x" + (", lengths=n" if lengths else "") + (", initial=(c0, h0)" if initial else "")
    if head == "seq":
        lines += [f"input y: f32[batch, {t}, 1]", f"cell rnn = {cell} | project(1)", f"pred, _ = rnn({args})",
                  "loss = mse(pred, y)", "output pred"]
    else:     # the final state only (the book's classifier on the last state)
        lines += ["input y: i64[batch]", f"cell rnn = {cell}", f"_, last = rnn({args})",
                  "logits = dense(last, 3)", "loss = softmax_cross_entropy(logits, y)", "output logits"]
    lines.append("train { optimizer sgd(lr=0.1) }")
    return "\n".join(lines) + "\n"


def _session(proto: onnx.ModelProto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _feeds(proto, data: dict, dtype, params: dict | None = None) -> dict:
    feeds = {}
    rng = np.random.default_rng(7)
    for i in proto.graph.input:
        if i.name in data:
            v = data[i.name]
            feeds[i.name] = v.astype(dtype) if v.dtype.kind == "f" else v
        elif params is not None and i.name in params:
            feeds[i.name] = params[i.name].astype(dtype)
        else:
            shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
            feeds[i.name] = (rng.normal(size=shape) * 0.5).astype(dtype)
    return feeds


CASES = {
    "static": dict(T=6),
    "static-lengths": dict(T=6, lengths=True),
    "stack-lengths": dict(T=5, layers=2, lengths=True),
    "last-state": dict(T=6, head="last", lengths=True),
    "initial-state": dict(T=4, initial=True),
    "long-loop": dict(T=70, lengths=True),          # > 64 steps: the backward chains are Scans
    "dynamic-time": dict(T=None, lengths=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fused_training_gradient(case):
    kw = CASES[case]
    T = kw["T"] or 7
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(B, T, I)), "n": np.array([T, 2, 0, T - 1], np.int64),
            "c0": rng.normal(size=(B, H)), "h0": rng.normal(size=(B, H))}
    data["y"] = rng.normal(size=(B, T, 1)) if kw.get("head", "seq") == "seq" else np.array([0, 2, 1, 1])
    model = check("m.rnn", text=spec(**kw))
    fused = build_grad(model, "fused", fdtype="f32", wrt_inputs=("x",))
    ref = build_grad(model, "loop", fdtype="f64", wrt_inputs=("x",))
    assert any(n.op_type == "LSTM" for n in all_nodes(fused.graph)), "the fused lowering was not used"
    f64 = _feeds(ref, data, np.float64)
    params = {k: v for k, v in f64.items() if k not in data}
    got = dict(zip([o.name for o in fused.graph.output], _session(fused).run(None, _feeds(fused, data, np.float32, params))))
    sess = _session(ref)
    names = [o.name for o in ref.graph.output]
    want = dict(zip(names, sess.run(None, f64)))
    for k in want:
        scale = max(np.abs(want[k]).max(), 1e-3)
        assert np.abs(got[k] - want[k]).max() / scale < 1e-4, k

    # a central difference of the float64 loss along one random direction of every parameter
    direction = {k: rng.normal(size=v.shape) for k, v in params.items()}
    eps = 1e-6

    def loss_at(sign):
        f = dict(f64)
        for k, d in direction.items():
            f[k] = f64[k] + sign * eps * d
        return sess.run(["loss"], f)[0]
    fd = (loss_at(1) - loss_at(-1)) / (2 * eps)
    analytic = sum(float((got[f"grad.{k}"].astype(np.float64) * d).sum()) for k, d in direction.items())
    assert abs(analytic - fd) <= 1e-4 * max(1.0, abs(fd))


def test_fused_training_one_step():
    """A single step (and a sequence of length 0 in the batch): the train step runs and gives
    finite numbers. (Empty batches and zero-step batches: tests/test_empty_batches.py.)"""
    model = check("m.rnn", text=spec(None, lengths=True))
    tm = build_train(model, "fused")
    assert ("rnn", "fused") in tm.strategies
    sess = _session(tm.onnx)
    feeds = {"x": np.ones((2, 1, I), np.float32), "n": np.array([1, 0], np.int64),
             "y": np.ones((2, 1, 1), np.float32), "lr": np.array(0.1, np.float32),
             "step": np.array(0, np.int64), **tm.params, **tm.slots}
    outs = sess.run(None, feeds)
    assert all(np.isfinite(o).all() for o in outs if o.dtype.kind == "f")


def test_fused_training_refuses_what_it_cannot_differentiate():
    """Peepholes and GRUs stay unfused in training graphs, with the reason in --explain."""
    text = spec(6).replace("lstm(5, forget_bias=1.0)", "lstm(5, peepholes=true)")
    tm = build_train(check("m.rnn", text=text), "fused")
    assert tm.strategies == [("rnn", "loop")]
    text = spec(6).replace("lstm(5, forget_bias=1.0)", "gru(5)")
    assert build_train(check("m.rnn", text=text), "fused").strategies == [("rnn", "loop")]


def test_lstm_backward_step_is_short():
    """After the stepwise pass an LSTM's backward loop body keeps only the nodes that read
    the carried gradients: dh, dc, the concatenated gate gradient, one MatMul, dc·f."""
    model = check("m.rnn", text=spec(6))
    lw, outs = _lower_loss(model, "f32", 0, "loop", None, stateful=False)
    n_before = len(lw.g.nodes)
    param_gradients(lw.b, list(lw.g.nodes), {outs[0].name: lw.b.const(1.0)}, list(lw.g.params))
    scans = [n for n in lw.g.nodes[n_before:] if n.op == "Scan"]
    assert len(scans) == 1
    ops = sorted(n.op for n in scans[0].body.nodes)
    assert len(ops) <= 8, ops
    assert ops.count("MatMul") == 1


def test_static_training_graph_has_no_loop():
    model = check("m.rnn", text=spec(6, lengths=True))
    tm = build_train(model, "static")
    assert not any(n.op_type in ("Scan", "Loop") for n in all_nodes(tm.onnx.graph))
    tm = build_train(model, "loop")
    assert any(n.op_type == "Scan" for n in all_nodes(tm.onnx.graph))
