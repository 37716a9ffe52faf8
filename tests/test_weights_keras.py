"""Keras weights into rnnc and back (`rnnc weights import/export --layout keras`).

The oracle is Keras 3 itself on its torch backend: layers with random weights (every
variable drawn from a normal, so zero-initialized biases cannot hide a wrong mapping),
run on the same inputs, with and without a mask (lengths). Keras repeats the previous
output past a sequence's end and rnnc writes zeros, so only valid steps are compared;
final states are at the last valid step in both. Export → import → export is bit-exact;
import → export gives back every tensor bit for bit (an LSTM bias is folded with a
non-zero forget_bias: then it must match to float32 tolerance).
"""
from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
try:
    import keras
except ImportError:   # pragma: no cover
    keras = None
if keras is None or keras.backend.backend() != "torch":
    pytest.skip("Keras 3 on its torch backend is not installed (pip install keras; KERAS_BACKEND=torch)",
                allow_module_level=True)

from rnnc.api import build_infer, check
from rnnc.errors import SpecError
from rnnc.weights import export_weights, import_params, import_weights

L = keras.layers
I, T, B = 3, 6, 4
LENGTHS = np.array([6, 3, 1, 5], dtype=np.int64)
TOL = 2e-5
X = np.random.default_rng(11).normal(size=(B, T, I)).astype(np.float32)


# name -> (layers factory (last one returns sequences and state), spec cell, maps, bi)
CASES = {
    "simple_tanh": (lambda: [L.SimpleRNN(4, return_sequences=True, return_state=True, name="r")],
                    "basic(4)", {"rnn": "r/simple_rnn_cell"}),
    "simple_relu": (lambda: [L.SimpleRNN(4, activation="relu", return_sequences=True, return_state=True, name="r")],
                    "basic(4, activation=relu)", {"rnn": "r/simple_rnn_cell"}),
    "lstm": (lambda: [L.LSTM(4, return_sequences=True, return_state=True, name="l")],
             "lstm(4, forget_bias=0.0)", {"rnn": "l/lstm_cell"}),
    "lstm_fb1": (lambda: [L.LSTM(4, return_sequences=True, return_state=True, name="l")],
                 "lstm(4)", {"rnn": "l/lstm_cell"}),
    "gru_reset_after": (lambda: [L.GRU(4, return_sequences=True, return_state=True, name="g")],
                        "gru(4, reset_after=true)", {"rnn": "g/gru_cell"}),
    "gru_reset_before": (lambda: [L.GRU(4, reset_after=False, return_sequences=True, return_state=True, name="g")],
                         "gru(4)", {"rnn": "g/gru_cell"}),
    "lstm_stack": (lambda: [L.LSTM(4, return_sequences=True, name="l0"),
                            L.LSTM(3, return_sequences=True, return_state=True, name="l1")],
                   "stack(lstm(4, forget_bias=0.0), lstm(3, forget_bias=0.0))",
                   {"rnn.0": "l0/lstm_cell", "rnn.1": "l1/lstm_cell"}),
    "gru_bi": (lambda: [L.Bidirectional(L.GRU(3, return_sequences=True, return_state=True, name="g"), name="bi")],
               "bi(gru(3, reset_after=true))", {"rnn.fw": "bi/forward_g/gru_cell", "rnn.bw": "bi/backward_g/gru_cell"}),
    "simple_stack_bi": (lambda: [L.Bidirectional(L.SimpleRNN(3, return_sequences=True, name="s"), name="b0"),
                                 L.Bidirectional(L.SimpleRNN(2, return_sequences=True, return_state=True, name="s"),
                                                 name="b1")],
                        "stack(bi(basic(3)), bi(basic(2)))",
                        {"rnn.0.fw": "b0/forward_s/simple_rnn_cell", "rnn.0.bw": "b0/backward_s/simple_rnn_cell",
                         "rnn.1.fw": "b1/forward_s/simple_rnn_cell", "rnn.1.bw": "b1/backward_s/simple_rnn_cell"}),
}


class KerasNet:
    def __init__(self, name: str):
        self.layers = CASES[name][0]()
        self.head = L.Dense(2, name="head")
        self.bi = isinstance(self.layers[-1], L.Bidirectional)
        self(X, None)            # build
        rng = np.random.default_rng(sum(map(ord, name)))
        for v in self.weights():
            v.assign(rng.normal(scale=0.5, size=tuple(v.shape)).astype(np.float32))

    def weights(self):
        return [v for layer in self.layers + [self.head] for v in layer.weights]

    def state_dict(self) -> dict[str, np.ndarray]:
        return {v.path: np.asarray(keras.ops.convert_to_numpy(v)) for v in self.weights()}

    def load(self, tensors: dict[str, np.ndarray]) -> None:
        for v in self.weights():
            v.assign(tensors[v.path])

    def __call__(self, x, lengths):
        mask = None if lengths is None else np.arange(T)[None, :] < lengths[:, None]
        h = x
        for layer in self.layers[:-1]:
            h = layer(h, mask=mask)
        seq, *states = self.layers[-1](h, mask=mask)
        if self.bi:     # [h_fw, (c_fw), h_bw, (c_bw)]
            half = len(states) // 2
            last = np.concatenate([np.asarray(states[0].detach()), np.asarray(states[half].detach())], -1)
        else:
            last = np.asarray(states[0].detach())
        pred = np.asarray(self.head(seq).detach())
        return valid(pred, lengths), last


def valid(pred, lengths):
    if lengths is None:
        return pred
    return np.where(np.arange(T)[None, :, None] < lengths[:, None, None], pred, 0.0)


def spec_text(cell: str, lengths: bool) -> str:
    return "\n".join([
        "model m", f"input x: f32[batch, {T}, {I}]", "input n: i64[batch]" if lengths else "",
        f"cell rnn = {cell}", f"seq, last = rnn(x{', lengths=n, unroll=loop' if lengths else ''})",
        "pred = dense(seq, 2)", "output pred", "output last", ""])


def maps_of(name):
    return CASES[name][2] | {"pred": "head"}


@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("name", list(CASES))
def test_import_matches_keras(name, lengths, tmp_path):
    net = KerasNet(name)
    np.savez(tmp_path / "w.npz", **net.state_dict())
    model = check("t.rnn", text=spec_text(CASES[name][1], lengths))
    params = import_params(model, tmp_path / "w.npz", "keras", maps_of(name))
    sess = ort.InferenceSession(build_infer(model, weights=params).onnx.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    n = LENGTHS if lengths else None
    pred, last = sess.run(["pred", "last"], {"x": X} | ({"n": n} if lengths else {}))
    want_pred, want_last = net(X, n)
    np.testing.assert_allclose(valid(pred, n), want_pred, atol=TOL, rtol=0)
    np.testing.assert_allclose(last, want_last, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_round_trips(name, tmp_path):
    net = KerasNet(name)
    sd = net.state_dict()
    np.savez(tmp_path / "w.npz", **sd)
    spec = tmp_path / "t.rnn"
    spec.write_text(spec_text(CASES[name][1], True))
    import_weights(spec, tmp_path / "w.npz", "keras", tmp_path / "a", maps_of(name))
    e1 = export_weights(tmp_path / "a", "keras", tmp_path / "e1.npz", maps_of(name))
    import_weights(spec, tmp_path / "e1.npz", "keras", tmp_path / "b", maps_of(name))
    e2 = export_weights(tmp_path / "b", "keras", tmp_path / "e2.npz", maps_of(name))
    assert sorted(e1) == sorted(e2) == sorted(sd)
    for k in e1:
        assert e1[k].tobytes() == e2[k].tobytes(), k
    folded = name == "lstm_fb1"
    for k, v in sd.items():
        if folded and k.endswith("lstm_cell/bias"):
            np.testing.assert_allclose(e1[k], v, atol=1e-6, rtol=0)
        else:
            assert e1[k].tobytes() == v.tobytes(), f"{k} changed"
    net2 = KerasNet(name)
    net2.load(e1)
    for n in (None, LENGTHS):
        for got, want in zip(net2(X, n), net(X, n)):
            np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


SIMPLE = "model m\ninput x: f32[batch, 6, 3]\ncell rnn = {}\nseq, last = rnn(x)\noutput seq\n"


def _err(cell, tensors, tmp_path, maps):
    np.savez(tmp_path / "w.npz", **tensors)
    with pytest.raises(SpecError) as e:
        import_params(check("t.rnn", text=SIMPLE.format(cell)), tmp_path / "w.npz", "keras", maps)
    return e.value.report()


def test_gru_convention_mismatch_and_lstm_options_are_refused(tmp_path):
    g = L.GRU(4, name="g")
    g(X)
    sd = {v.path: keras.ops.convert_to_numpy(v) for v in g.weights}
    text = _err("gru(4)", sd, tmp_path, {"rnn": "g/gru_cell"})
    assert "t.rnn:3:12" in text and "'g/gru_cell/bias' has shape (2, 12)" in text and "reset_after=true" in text
    text = _err("lstm(4, proj=2)", {}, tmp_path, {})
    assert "Keras' LSTM has no projection" in text and "t.rnn:3:12" in text and "missing" not in text
    text = _err("lstm(4, peepholes=true)", {}, tmp_path, {})
    assert "Keras' LSTM has no peepholes" in text
