"""The per-step backward work put back into the forward loop (rnnc/grad/sink.py).

The stepwise pass computes σ·(1−σ), 1−tanh², gate products and their concatenation on the
whole [T, B, ...] sequences; sinking moves those ops into the forward loop's body. Checks:
the graph with sinking computes the same loss and gradients as without it (float64, to
1e-12), and a central finite difference of the loss along a random direction agrees with
its gradient; the gate work on whole sequences has moved into the forward loop, and an
LSTM's forward loop emits no more per-step values than before.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from rnnc import training_graph
from rnnc.api import check
from rnnc.lower.hoist import ELEMENTWISE, LAST_AXIS

B, I, H = 3, 2, 4


def spec(T, cell, *, lengths=False, bi=False) -> str:
    t = T if T is not None else "time"
    run = f"bi({cell})" if bi else cell
    lines = ["model m", f"input x: f32[batch, {t}, {I}]", f"input y: f32[batch, {t}, 1]"]
    if lengths:
        lines.append("input n: i64[batch]")
    lines += [f"cell rnn = {run} | project(1)", f"pred, _ = rnn(x{', lengths=n' if lengths else ''})",
              "loss = mse(pred, y)", "output pred", "train { optimizer sgd(lr=0.1) }"]
    return "\n".join(lines) + "\n"


CASES = {
    "lstm-long": spec(70, f"lstm({H})"),
    "lstm-dynamic-lengths": spec(None, f"lstm({H}, forget_bias=1.0)", lengths=True),
    "peephole-lengths": spec(9, f"lstm({H}, peepholes=true)", lengths=True),
    "gru": spec(8, f"gru({H})"),
    "basic-relu": spec(8, f"basic({H}, activation=relu)"),
    "stack": spec(7, f"stack(2 * lstm({H}))"),
    "bi-lengths": spec(6, f"lstm({H})", lengths=True, bi=True),
}


def _grad_model(text: str, sink: bool, monkeypatch):
    if not sink:
        monkeypatch.setattr(training_graph, "sink_into_loops", lambda *a, **k: None)
    proto = training_graph.build_grad(check("m.rnn", text=text), "loop", "f64")
    monkeypatch.undo()
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _feeds(sess, T, rng):
    feeds = {}
    for i in sess.get_inputs():
        if i.name == "x":
            feeds[i.name] = rng.normal(size=(B, T, I))
        elif i.name == "y":
            feeds[i.name] = rng.normal(size=(B, T, 1))
        elif i.name == "n":
            feeds[i.name] = np.array([T, 0, max(T - 3, 1)], np.int64)
        else:
            shape = [d if isinstance(d, int) else B for d in i.shape]
            feeds[i.name] = rng.normal(size=shape) * 0.5
    return feeds


@pytest.mark.parametrize("case", list(CASES))
def test_sunk_gradients_equal_unsunk(case, monkeypatch):
    text = CASES[case]
    T = 11 if "dynamic" in case else int(text.split("f32[batch, ")[1].split(",")[0])
    sunk = _grad_model(text, True, monkeypatch)
    plain = _grad_model(text, False, monkeypatch)
    feeds = _feeds(sunk, T, np.random.default_rng(0))
    names = [o.name for o in sunk.get_outputs()]
    got = sunk.run(names, feeds)
    want = plain.run(names, feeds)
    for name, a, b in zip(names, got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=name)

    params = [n for n in names if n.startswith("grad.")]
    rng = np.random.default_rng(1)
    direction = {p[5:]: rng.normal(size=feeds[p[5:]].shape) for p in params}
    eps = 1e-6

    def loss_at(s):
        return sunk.run(["loss"], {**feeds, **{k: feeds[k] + s * d for k, d in direction.items()}})[0]
    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    analytic = sum(float(np.sum(g * direction[n[5:]])) for n, g in zip(names, got) if n in params)
    assert numeric == pytest.approx(analytic, rel=1e-6, abs=1e-10)


def _finalized(text: str, sink: bool, monkeypatch):
    if not sink:
        monkeypatch.setattr(training_graph, "sink_into_loops", lambda *a, **k: None)
    g = training_graph.build_train(check("m.rnn", text=text), "loop").graph
    monkeypatch.undo()
    return g


def _whole_sequence_nodes(g) -> list:
    return [n for n in g.nodes if n.body is None and n.outputs and n.outputs[0]
            and g.lookup(n.outputs[0]).rank == 3]


@pytest.mark.parametrize("case", ["lstm-long", "gru", "stack"])
def test_gate_work_moves_into_the_forward_loop(case, monkeypatch):
    sunk = _finalized(CASES[case], True, monkeypatch)
    plain = _finalized(CASES[case], False, monkeypatch)
    before = _whole_sequence_nodes(plain)
    after = _whole_sequence_nodes(sunk)
    assert len(after) < len(before)
    moved = {n.op for n in before} - {n.op for n in after}
    assert moved <= ELEMENTWISE | LAST_AXIS
    # 1−σ and 1−tanh² on whole sequences are gone (the loss's Sub on [B, T, 1] stays)
    assert any(n.op == "Sub" and plain.lookup(n.outputs[0]).shape[-1] > 1 for n in before)
    assert not any(n.op == "Sub" and sunk.lookup(n.outputs[0]).shape[-1] > 1 for n in after)

    def stored_width(g):    # Σ last dims of the forward loops' per-step outputs (inside their If)
        loops = [n for n in g.nodes if n.op == "If" and n.attrs["else_branch"].nodes[0].op == "Scan"
                 and not n.attrs["else_branch"].nodes[0].attrs.get("scan_input_directions")]
        return sum(g.lookup(o).shape[-1] for n in loops for o in n.outputs)
    # an LSTM's forward loop emits the gate factors in place of the gates, no more values
    # per step than before; a GRU's emits 10 [B, H] values per step instead of 8 (README)
    limit = 1.25 if case == "gru" else 1.0
    assert stored_width(sunk) <= limit * stored_width(plain)

    # nothing is computed twice in a forward body (the sunk Split of the gates is the body's)
    for n in sunk.nodes:
        if n.op == "If" and n.attrs["else_branch"].nodes[0].op == "Scan":
            body = n.attrs["else_branch"].nodes[0].body
            keys = [(m.op, tuple(m.inputs), repr(sorted(m.attrs.items()))) for m in body.nodes]
            assert len(keys) == len(set(keys))
