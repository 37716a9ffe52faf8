"""The two memory policies of loop gradients agree with each other and with the unrolled
graph: `store` keeps what the gradient reads, `recompute` only the states."""
import numpy as np
import onnxruntime as ort
import pytest

from rnnc.api import check
from rnnc.training_graph import build_grad

SPECS = {
    "lstm_lengths": """model m
input x: f32[batch, 5, 3]
input n: i64[batch]
input y: f32[batch, 5, 2]
cell rnn = stack(lstm(4, proj=3, clip=0.7), gru(3), basic(2, activation=relu))
seq, _ = rnn(x, lengths=n)
loss = mse(seq, y, lengths=n)
output seq
""",
    "peepholes_bi": """model m
input x: f32[batch, 4, 2]
input y: i64[batch]
cell rnn = bi(lstm(3, peepholes=true, forget_bias=0.5))
_, last = rnn(x)
logits = dense(last, 3)
loss = softmax_cross_entropy(logits, y)
output logits
""",
}


def _grads(proto, feeds):
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, {i.name: feeds[i.name] for i in s.get_inputs()})))


def _loop_scan(proto):
    """The forward Scan of a grad model (inside its empty-input guard)."""
    for node in proto.graph.node:
        if node.op_type == "If":
            for a in node.attribute:
                if a.name == "else_branch" and a.g.node[0].op_type == "Scan":
                    return a.g.node[0]
    raise AssertionError("no guarded Scan")


@pytest.mark.parametrize("name", SPECS)
def test_store_and_recompute_give_the_unrolled_gradients(name):
    model = check("m.rnn", text=SPECS[name])
    rng = np.random.default_rng(1)
    protos = {
        "static": build_grad(model, "static", "f64"),
        "store": build_grad(model, "loop", "f64", memory="store"),
        "recompute": build_grad(model, "loop", "f64", memory="recompute"),
    }
    s = ort.InferenceSession(protos["static"].SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    for i in s.get_inputs():
        shape = [3 if not isinstance(d, int) else d for d in i.shape]
        if i.type == "tensor(double)":
            feeds[i.name] = rng.normal(scale=0.5, size=shape)
        elif i.name == "n":
            feeds[i.name] = np.array([5, 0, 3])
        else:
            feeds[i.name] = rng.integers(0, 3, size=shape)
    ref = _grads(protos["static"], feeds)
    for policy in ("store", "recompute"):
        got = _grads(protos[policy], feeds)
        for k, v in ref.items():
            np.testing.assert_allclose(got[k], v, rtol=1e-10, atol=1e-12, err_msg=f"{policy} {k}")
    # store emits more per-step values from the forward loop than recompute, which keeps states only
    n_store = len(_loop_scan(protos["store"]).output)
    n_recompute = len(_loop_scan(protos["recompute"]).output)
    assert n_store > n_recompute
