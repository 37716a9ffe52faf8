"""Streaming inference with state carried between calls, and truncated BPTT training,
both checked against an independent computation (tests/reference.py, numpy float64)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as R

import rnnc.api
from rnnc.train import Trainer

# LANGUAGE.md §2, with a smaller cell.
SINE8 = """\
model sine_next

input x: f32[batch, time, 1]
input y: f32[batch, time, 1]            # x shifted one step into the future

cell rnn = basic(8, activation=relu) | project(1)
pred, _ = rnn(x)
loss = mse(pred, y)
output pred

train { optimizer adam(lr=0.001)  batch 50  steps 2000 }
"""

TBPTT = """\
model tb
input x: f32[batch, time, 1]
input y: f32[batch, time, 1]
cell rnn = basic(4, activation=tanh) | project(1)
pred, _ = rnn(x)
loss = mse(pred, y)
output pred
train { optimizer sgd(lr=0.1)  batch 4  steps 3  tbptt 5 }
"""


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------- streaming


@pytest.fixture(scope="module")
def stateful_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    (d / "sine8.rnn").write_text(SINE8)
    rnnc.api.compile(d / "sine8.rnn", out=d / "out", stateful=True)
    return d / "out"


def test_stateful_model_lists_its_state(stateful_dir):
    proto = onnx.load(str(stateful_dir / "infer_stateful.onnx"))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    state = json.loads(meta["rnnc.state"])
    assert state == [{"input": "state.rnn.h", "output": "state.rnn.h.next", "size": 8}]
    sess = _session(stateful_dir / "infer_stateful.onnx")
    ins = {i.name: i.shape for i in sess.get_inputs()}
    outs = {o.name: o.shape for o in sess.get_outputs()}
    assert set(ins) == {"x", "state.rnn.h"}
    assert ins["state.rnn.h"][-1] == 8
    assert set(outs) == {"pred", "state.rnn.h.next"}
    assert outs["state.rnn.h.next"][-1] == 8
    # the plain inference model has no state inputs
    plain = _session(stateful_dir / "infer.onnx")
    assert [i.name for i in plain.get_inputs()] == ["x"]
    assert [o.name for o in plain.get_outputs()] == ["pred"]


def test_streaming_in_pieces_equals_one_call(stateful_dir):
    x = np.random.default_rng(7).normal(size=(2, 12, 1)).astype(np.float32) * 2
    whole = _session(stateful_dir / "infer.onnx").run(["pred"], {"x": x})[0]
    assert whole.shape == (2, 12, 1)
    sess = _session(stateful_dir / "infer_stateful.onnx")
    meta = {p.key: p.value for p in onnx.load(str(stateful_dir / "infer_stateful.onnx")).metadata_props}
    io = json.loads(meta["rnnc.state"])
    state = {s["input"]: np.zeros((2, s["size"]), np.float32) for s in io}
    names = [o.name for o in sess.get_outputs()]
    pieces = []
    for k in range(3):
        out = dict(zip(names, sess.run(names, {"x": x[:, 4 * k:4 * k + 4], **state})))
        pieces.append(out["pred"])
        state = {s["input"]: out[s["output"]] for s in io}
    streamed = np.concatenate(pieces, axis=1)
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-5)
    # the carried state matters: restarting each piece from zeros gives other outputs
    fresh = [dict(zip(names, sess.run(names, {"x": x[:, 4 * k:4 * k + 4],
                                              "state.rnn.h": np.zeros((2, 8), np.float32)})))["pred"]
             for k in range(3)]
    assert np.abs(np.concatenate(fresh, axis=1) - whole).max() > 1e-3


# ----------------------------------------------------------------------------- TBPTT


def _tbptt_data(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 12, 1)).astype(np.float32)
    y = (np.roll(x, -1, axis=1) + 0.3 * rng.normal(size=x.shape)).astype(np.float32)
    spec = tmp_path / "tb.rnn"
    spec.write_text(TBPTT)
    np.savez(tmp_path / "tb.npz", x=x, y=y)
    return spec, tmp_path / "tb.npz", x, y


def _forward(p, x, h0):
    out, hT = R.run(R.basic_cell(p["rnn.W"], p["rnn.U"], p["rnn.b"], "tanh"), x, h0)
    return R.project(out, p["rnn.project.W"], p["rnn.project.b"]), hT


def _reference_tbptt(p0, x, y, window, optimizer, lr, carry_state=True):
    """Windows in order; each window one optimizer step; state carried forward (computed
    with the weights before that window's update); no gradient into the carried state."""
    p = {k: np.asarray(v, np.float64) for k, v in p0.items()}
    x, y = x.astype(np.float64), y.astype(np.float64)
    h = np.zeros((x.shape[0], p["rnn.U"].shape[0]))
    slots = None
    losses = []
    for s, e in R.tbptt_windows(x.shape[1], window):
        xs, ys = x[:, s:e], y[:, s:e]
        h0 = h if carry_state else np.zeros_like(h)
        losses.append(float(R.mse(_forward(p, xs, h0)[0], ys)))
        g = R.numeric_grad(lambda q, xs=xs, ys=ys, h0=h0: R.mse(_forward(q, xs, h0)[0], ys), p)
        h = _forward(p, xs, h0)[1]
        if optimizer == "sgd":
            p, _ = R.sgd(p, g, None, lr)
        else:
            p, slots = R.adam(p, g, slots, lr)
    return p, losses


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("adam", 0.01)])
def test_tbptt_matches_numpy(tmp_path, optimizer, lr):
    spec, data, x, y = _tbptt_data(tmp_path)
    tr = Trainer(str(spec), str(data), str(tmp_path / "run"), threads=1, progress=False,
                 sets=(f"optimizer={optimizer}", f"lr={lr}"))
    assert tr.cfg.tbptt == 5 and tr.cfg.batch == 4 and tr.total_steps() == 3
    assert [i for i, _, _ in tr.tm.state_io] == ["state.rnn.h"]
    p0 = {k: v.copy() for k, v in tr.state.params.items()}
    # initial weights come from the seed alone: build_train with the same seed agrees
    from rnnc.training_graph import build_train
    for k, v in build_train(tr.model, seed=0).params.items():
        np.testing.assert_array_equal(v, p0[k])

    tr.train()
    assert tr.state.step == 3
    want, want_losses = _reference_tbptt(p0, x, y, 5, optimizer, lr)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_recs] == [1, 2, 3]
    np.testing.assert_allclose([r["loss"] for r in train_recs], want_losses, rtol=1e-5)
    for k, v in want.items():
        got = tr.state.params[k].astype(np.float64)
        assert np.abs(got - v).max() <= 1e-4 * max(1.0, np.abs(v).max()), k
        assert np.abs(v - p0[k]).max() > 1e-3  # every parameter really moved

    # the test tells the difference: restarting each window from zeros lands elsewhere
    other, _ = _reference_tbptt(p0, x, y, 5, optimizer, lr, carry_state=False)
    assert max(np.abs(tr.state.params[k] - other[k]).max() for k in other) > 1e-3


def test_sgd_trains_from_the_spec(tmp_path):
    # regression: the trainer always feeds `step`; the sgd train model must declare it
    # (at 39e5e9a it was pruned away and every sgd run crashed in onnxruntime)
    spec, data, _, _ = _tbptt_data(tmp_path)
    tr = Trainer(str(spec), str(data), str(tmp_path / "run"), threads=1, progress=False)
    rec = tr.train()
    assert tr.state.step == 3 and np.isfinite(rec["loss"])
    assert "step" in {i.name for i in tr.sess.get_inputs()}
