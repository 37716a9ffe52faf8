"""gru(units, reset_after=true) — the PyTorch/Keras/cuDNN GRU (ONNX linear_before_reset=1).

Forward: compiled models (static and loop, with lengths including 0) against the numpy
oracle `tests/reference.py` (`gru_cell(W, U, b, reset_after=True, bU=...)`, whose bias
convention is rnnc's: b on the input side, bU on the recurrent side, the candidate's bU
inside r ⊙ (·)). Backward: rnnc's gradients against central finite differences of
onnxruntime's own forward, in float64, with random parameters.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from rnnc.api import build_infer, check
from rnnc.api import compile as compile_
from rnnc.training_graph import build_grad

try:
    from tests import reference as R
except ImportError:  # pragma: no cover
    import reference as R

B, T, I, H = 3, 4, 3, 4
LENGTHS = np.array([0, T, 2], dtype=np.int64)

FWD = f"""model g
input x: f32[batch, {T}, {I}]
input n: i64[batch]
cell rnn = stack(gru({H}, reset_after=true), bi(gru(2, reset_after=true)))
seq, last = rnn(x, lengths=n)
output seq
output last
"""


def _sess(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def test_parameters_and_initial_values():
    model = check("g.rnn", text=FWD)
    p = build_infer(model).params
    assert p["rnn.0.bU"].shape == (3 * H,) and not p["rnn.0.bU"].any()
    assert p["rnn.0.b"].tolist() == [1.0] * 2 * H + [0.0] * H
    assert {k for k in p if k.startswith("rnn.0.")} == {"rnn.0.W", "rnn.0.U", "rnn.0.b", "rnn.0.bU"}


@pytest.mark.parametrize("unroll", ["static", "loop"])
@pytest.mark.parametrize("fdtype", ["f32", "f64"])
def test_forward_matches_reference(unroll, fdtype):
    model = check("g.rnn", text=FWD)
    shapes = {k: v.shape for k, v in build_infer(model).params.items()}
    rng = np.random.default_rng(3)
    dt = np.float64 if fdtype == "f64" else np.float32
    w = {k: rng.normal(scale=0.6, size=s).astype(dt) for k, s in sorted(shapes.items())}
    sess = _sess(build_infer(model, unroll, fdtype, weights=w).onnx)
    x = rng.normal(size=(B, T, I)).astype(dt)
    seq, last = sess.run(["seq", "last"], {"x": x, "n": LENGTHS})

    def cell(p):
        return R.gru_cell(w[f"{p}.W"], w[f"{p}.U"], w[f"{p}.b"], reset_after=True, bU=w[f"{p}.bU"])

    h0 = R.run(cell("rnn.0"), x, np.zeros((B, H), dt), LENGTHS)[0]
    want_seq, (ffw, fbw) = R.bi_run(cell("rnn.1.fw"), cell("rnn.1.bw"), h0, np.zeros((B, 2), dt),
                                    np.zeros((B, 2), dt), LENGTHS)
    tol = 1e-10 if fdtype == "f64" else 1e-5
    np.testing.assert_allclose(seq, want_seq, atol=tol, rtol=0)
    np.testing.assert_allclose(last, np.concatenate([ffw, fbw], -1), atol=tol, rtol=0)


GRAD = f"""model g
input x: f32[batch, {T}, {I}]
input n: i64[batch]
input y: i64[batch]
cell rnn = bi(gru(3, reset_after=true))
seq, last = rnn(x, lengths=n)
logits = dense(last, 3)
loss = softmax_cross_entropy(logits, y)
output probs = softmax(logits)
"""


@pytest.mark.parametrize("unroll", ["static", "loop"])
def test_gradients_match_finite_differences(unroll):
    model = check("g.rnn", text=GRAD)
    proto = build_grad(model, unroll=unroll, fdtype="f64", wrt_inputs=("x",))
    rng = np.random.default_rng(5)
    feeds = {"x": rng.normal(size=(B, T, I)), "n": LENGTHS.copy(), "y": np.array([0, 2, 1], np.int64)}
    for inp in proto.graph.input:
        if inp.name not in feeds:
            dims = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
            feeds[inp.name] = rng.normal(scale=0.5, size=dims)
    sess = _sess(proto)
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, feeds)))
    fwd = onnx.ModelProto()
    fwd.CopyFrom(proto)
    keep = [o for o in fwd.graph.output if o.name == "loss"]
    del fwd.graph.output[:]
    fwd.graph.output.extend(keep)
    fsess = _sess(fwd)
    eps = 1e-6
    params = [n[5:] for n in names if n.startswith("grad.")]
    assert "rnn.fw.bU" in params and "rnn.bw.bU" in params
    for p in params:
        arr = feeds[p]
        fd = np.zeros_like(arr)
        flat, g = arr.reshape(-1), fd.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            lp = float(fsess.run(["loss"], feeds)[0])
            flat[i] = old - eps
            lm = float(fsess.run(["loss"], feeds)[0])
            flat[i] = old
            g[i] = (lp - lm) / (2 * eps)
        err = np.max(np.abs(got[f"grad.{p}"] - fd)) / max(1e-6, np.max(np.abs(fd)))
        assert err <= 1e-5, (p, err)
        if p != "x":
            assert np.max(np.abs(fd)) > 1e-8, p
    assert np.all(got["grad.x"][0] == 0.0)      # the empty sequence gets no gradient


def test_compiles_with_train_model(tmp_path):
    spec = tmp_path / "g.rnn"
    spec.write_text(GRAD)
    res = compile_(spec, out=tmp_path / "out")
    assert {p.name for p in res.files} == {"infer.onnx", "eval.onnx", "train.onnx"}
