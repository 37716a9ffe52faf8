"""PyTorch weights into rnnc and back (`rnnc weights import/export --layout torch`).

The oracle is PyTorch itself (2.13 CPU): a module with PyTorch's own random weights, its
state_dict saved as .npz, imported into a spec, must give the module's outputs on the same
inputs to float32 tolerance — without lengths (static lowering) and with lengths (loop
lowering; PyTorch runs pack_padded_sequence, so only valid steps count, and final states
are at the last valid step). Export → import → export is bit-exact; import → export keeps
every tensor bit for bit except the folded biases (bias_ih/bias_hh of RNN and LSTM), and
the exported file loaded back into PyTorch reproduces the module's outputs.
"""
from __future__ import annotations

import json
import struct

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from rnnc.api import build_infer, check
from rnnc.errors import SpecError
from rnnc.weights import (
    WeightsError,
    export_weights,
    import_params,
    import_weights,
    read_tensors,
)

I, T, B = 3, 6, 4
LENGTHS = np.array([6, 3, 1, 5], dtype=np.int64)
TOL = 2e-5

# name -> (module factory, spec cell, output size per direction, folded tensors)
CASES = {
    "rnn_tanh": (lambda: nn.RNN(I, 4, batch_first=True), "basic(4)", True),
    "rnn_relu": (lambda: nn.RNN(I, 4, nonlinearity="relu", batch_first=True), "basic(4, activation=relu)", True),
    "lstm": (lambda: nn.LSTM(I, 4, batch_first=True), "lstm(4, forget_bias=0.0)", True),
    "lstm_fb1": (lambda: nn.LSTM(I, 4, batch_first=True), "lstm(4)", True),
    "lstm_proj": (lambda: nn.LSTM(I, 5, proj_size=2, batch_first=True), "lstm(5, forget_bias=0.0, proj=2)", True),
    "gru": (lambda: nn.GRU(I, 4, batch_first=True), "gru(4, reset_after=true)", False),
    "lstm_stack": (lambda: nn.LSTM(I, 4, num_layers=2, batch_first=True), "stack(2 * lstm(4, forget_bias=0.0))", True),
    "gru_bi": (lambda: nn.GRU(I, 3, bidirectional=True, batch_first=True), "bi(gru(3, reset_after=true))", False),
    "rnn_stack_bi": (lambda: nn.RNN(I, 3, num_layers=2, nonlinearity="relu", bidirectional=True, batch_first=True),
                     "stack(2 * bi(basic(3, activation=relu)))", True),
    "lstm_proj_stack_bi": (lambda: nn.LSTM(I, 4, num_layers=2, proj_size=2, bidirectional=True, batch_first=True),
                           "stack(bi(lstm(4, forget_bias=0.0, proj=2)), bi(lstm(4, forget_bias=0.0, proj=2)))", True),
    "gru_stack_bi": (lambda: nn.GRU(I, 3, num_layers=2, bidirectional=True, batch_first=True),
                     "stack(2 * bi(gru(3, reset_after=true)))", False),
}


class Net(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        out = (rnn.proj_size or rnn.hidden_size) if isinstance(rnn, nn.LSTM) else rnn.hidden_size
        self.head = nn.Linear(out * (2 if rnn.bidirectional else 1), 2)

    def forward(self, x, lengths=None):
        """(head on every valid step, zero past lengths; top layer's final h, fw ⊕ bw)."""
        if lengths is not None:
            x = nn.utils.rnn.pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
        out, h = self.rnn(x)
        h = h[0] if isinstance(h, tuple) else h
        if lengths is not None:
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
        last = torch.cat([h[-2], h[-1]], -1) if self.rnn.bidirectional else h[-1]
        return valid(self.head(out).detach().numpy(), lengths), last.detach().numpy()


def valid(pred: np.ndarray, lengths) -> np.ndarray:
    """Only the valid steps count (a dense layer maps padding to its bias): zero the rest."""
    if lengths is None:
        return pred
    return np.where(np.arange(T)[None, :, None] < np.asarray(lengths)[:, None, None], pred, 0.0)


def spec_text(cell: str, lengths: bool) -> str:
    return "\n".join([
        "model m",
        f"input x: f32[batch, {T}, {I}]",
        "input n: i64[batch]" if lengths else "",
        f"cell rnn = {cell}",
        f"seq, last = rnn(x{', lengths=n, unroll=loop' if lengths else ''})",
        "pred = dense(seq, 2)",
        "output pred",
        "output last",
        ""])


def make_net(name: str) -> Net:
    torch.manual_seed(sum(map(ord, name)))
    return Net(CASES[name][0]())


def save_npz(path, sd: dict) -> None:
    np.savez(path, **{k: v.detach().numpy() for k, v in sd.items()})


def run_rnnc(model, params, x, n=None):
    built = build_infer(model, weights=params)
    sess = ort.InferenceSession(built.onnx.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"x": x} | ({"n": n} if n is not None else {})
    pred, last = sess.run(["pred", "last"], feeds)
    return valid(pred, n), last


X = np.random.default_rng(7).normal(size=(B, T, I)).astype(np.float32)


@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("name", list(CASES))
def test_import_matches_pytorch(name, lengths, tmp_path):
    net = make_net(name)
    save_npz(tmp_path / "w.npz", net.state_dict())
    model = check("t.rnn", text=spec_text(CASES[name][1], lengths))
    params = import_params(model, tmp_path / "w.npz", "torch", {"pred": "head"})
    n = LENGTHS if lengths else None
    pred, last = run_rnnc(model, params, X, n)
    want_pred, want_last = net(torch.tensor(X), n)
    np.testing.assert_allclose(pred, want_pred, atol=TOL, rtol=0)
    np.testing.assert_allclose(last, want_last, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_round_trips(name, tmp_path):
    net = make_net(name)
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    np.savez(tmp_path / "w.npz", **sd)
    spec = tmp_path / "t.rnn"
    spec.write_text(spec_text(CASES[name][1], True))
    maps = {"pred": "head"}
    import_weights(spec, tmp_path / "w.npz", "torch", tmp_path / "a", maps)
    e1 = export_weights(tmp_path / "a", "torch", tmp_path / "e1.npz", maps)
    import_weights(spec, tmp_path / "e1.npz", "torch", tmp_path / "b", maps)
    e2 = export_weights(tmp_path / "b", "torch", tmp_path / "e2.safetensors", maps)
    # export -> import -> export: bit-exact (and the file on disk is what was returned)
    assert list(e1) == list(e2) == list(sd)
    on_disk = read_tensors(tmp_path / "e2.safetensors")
    for k in e1:
        assert e1[k].dtype == e2[k].dtype == np.float32
        assert e1[k].tobytes() == e2[k].tobytes() == on_disk[k].tobytes(), k
    # import -> export: every tensor bit for bit, except the folded biases
    folds = CASES[name][2]
    for k, v in sd.items():
        if folds and ".bias_" in k and k.startswith("rnn."):
            continue
        assert e1[k].tobytes() == v.tobytes(), f"{k} changed"
    # ... and the exported file, loaded into PyTorch, gives the module's outputs
    net2 = make_net(name)
    net2.load_state_dict({k: torch.tensor(v) for k, v in e1.items()})
    for n in (None, LENGTHS):
        for got, want in zip(net2(torch.tensor(X), n), net(torch.tensor(X), n)):
            np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_bare_module_state_dict_needs_no_prefix(tmp_path):
    lstm = nn.LSTM(I, 4, batch_first=True)
    save_npz(tmp_path / "w.npz", lstm.state_dict())
    spec = ("model m\ninput x: f32[batch, 6, 3]\ncell rnn = lstm(4, forget_bias=0.0)\n"
            "seq, last = rnn(x)\noutput seq\n")
    model = check("t.rnn", text=spec)
    params = import_params(model, tmp_path / "w.npz", "torch")
    built = build_infer(model, weights=params)
    sess = ort.InferenceSession(built.onnx.SerializeToString(), providers=["CPUExecutionProvider"])
    (seq,) = sess.run(None, {"x": X})
    np.testing.assert_allclose(seq, lstm(torch.tensor(X))[0].detach().numpy(), atol=TOL, rtol=0)


def _safetensors(path, tensors: dict) -> None:
    """A safetensors file written by hand from the format's definition (JSON header + bytes)."""
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for k, v in tensors.items():
        raw = np.ascontiguousarray(v, dtype="<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_safetensors_import_equals_npz_import(tmp_path):
    net = make_net("lstm_proj_stack_bi")
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    np.savez(tmp_path / "w.npz", **sd)
    _safetensors(tmp_path / "w.safetensors", sd)
    model = check("t.rnn", text=spec_text(CASES["lstm_proj_stack_bi"][1], False))
    a = import_params(model, tmp_path / "w.npz", "torch", {"pred": "head"})
    b = import_params(model, tmp_path / "w.safetensors", "torch", {"pred": "head"})
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes()


def test_safetensors_export_follows_the_format(tmp_path):
    """The exported file parsed by hand: u64 header length, JSON header, raw little-endian F32."""
    net = make_net("gru_bi")
    np.savez(tmp_path / "w.npz", **{k: v.detach().numpy() for k, v in net.state_dict().items()})
    spec = tmp_path / "t.rnn"
    spec.write_text(spec_text(CASES["gru_bi"][1], False))
    import_weights(spec, tmp_path / "w.npz", "torch", tmp_path / "a", {"pred": "head"})
    export_weights(tmp_path / "a", "torch", tmp_path / "e.safetensors", {"pred": "head"})
    data = (tmp_path / "e.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    sd = net.state_dict()
    assert set(header) == set(sd)
    for k, info in header.items():
        assert info["dtype"] == "F32" and info["shape"] == list(sd[k].shape)
        b, e = info["data_offsets"]
        got = np.frombuffer(body[b:e], "<f4").reshape(info["shape"])
        assert got.tobytes() == sd[k].numpy().tobytes(), k      # GRU: nothing folded


# ----- errors -----
def _err(spec: str, sd: dict, tmp_path, maps=None) -> SpecError:
    np.savez(tmp_path / "w.npz", **sd)
    with pytest.raises(SpecError) as e:
        import_params(check("t.rnn", text=spec), tmp_path / "w.npz", "torch", maps)
    return e.value


def _sd(module) -> dict:
    return {f"rnn.{k}": v.detach().numpy() for k, v in module.state_dict().items()}


SIMPLE = "model m\ninput x: f32[batch, 6, 3]\ncell rnn = {}\nseq, last = rnn(x)\noutput seq\n"


def test_pytorch_gru_into_reset_before_gru_is_refused_with_its_location(tmp_path):
    e = _err(SIMPLE.format("gru(4)"), _sd(nn.GRU(I, 4)), tmp_path)
    text = e.report()
    assert "t.rnn:3:12" in text and "reset gate after" in text and "reset_after=true" in text
    assert len(e.diagnostics) == 1


def test_missing_extra_and_misshapen_tensors_are_each_named(tmp_path):
    sd = _sd(nn.LSTM(I, 4))
    del sd["rnn.bias_hh_l0"]
    text = _err(SIMPLE.format("lstm(4)"), sd, tmp_path).report()
    assert "'rnn.bias_hh_l0' is missing" in text and "t.rnn:3:12" in text

    text = _err(SIMPLE.format("lstm(4)"), _sd(nn.LSTM(I, 4, bidirectional=True)), tmp_path).report()
    assert "'rnn.weight_ih_l0_reverse'" in text and "matches no parameter" in text

    text = _err(SIMPLE.format("lstm(5)"), _sd(nn.LSTM(I, 4)), tmp_path).report()
    assert "'rnn.weight_ih_l0' has shape (16, 3), but lstm(5" in text and "(20, 3)" in text

    text = _err(SIMPLE.format("lstm(4, peepholes=true)"), _sd(nn.LSTM(I, 4)), tmp_path).report()
    assert "no peepholes" in text

    text = _err(SIMPLE.format("bi(stack(2 * lstm(4)))"), _sd(nn.LSTM(I, 4)), tmp_path).report()
    assert "stack(bi(...), bi(...))" in text


def test_unreadable_or_pickled_files_are_weights_errors(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    import zipfile
    with zipfile.ZipFile(tmp_path / "p.npz", "w") as z:
        z.write(tmp_path / "o.npy", "rnn.weight_ih_l0.npy")
    model = check("t.rnn", text=SIMPLE.format("lstm(4)"))
    with pytest.raises(WeightsError, match="never unpickled"):
        import_params(model, tmp_path / "p.npz", "torch")
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 20)
    with pytest.raises(WeightsError):
        import_params(model, tmp_path / "bad.safetensors", "torch")
    with pytest.raises(WeightsError):
        import_params(model, tmp_path / "nope.npz", "torch")


def test_cli_import_export_and_exit_codes(tmp_path):
    from click.testing import CliRunner

    from rnnc.cli_weights import weights

    spec = tmp_path / "t.rnn"
    spec.write_text(SIMPLE.format("gru(4, reset_after=true)"))
    np.savez(tmp_path / "w.npz", **_sd(nn.GRU(I, 4)))
    r = CliRunner().invoke(weights, ["import", str(spec), str(tmp_path / "w.npz"), "--layout", "torch",
                                     "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "infer.onnx").is_file()
    r = CliRunner().invoke(weights, ["export", str(tmp_path / "out"), "--layout", "torch", "-o", str(tmp_path / "e.npz")])
    assert r.exit_code == 0, r.output
    assert sorted(read_tensors(tmp_path / "e.npz")) == sorted(_sd(nn.GRU(I, 4)))
    spec.write_text(SIMPLE.format("gru(4)"))
    r = CliRunner().invoke(weights, ["import", str(spec), str(tmp_path / "w.npz"), "--layout", "torch",
                                     "-o", str(tmp_path / "out2")])
    assert r.exit_code == 3 and "reset_after=true" in r.output
    assert not (tmp_path / "out2").exists()
    r = CliRunner().invoke(weights, ["import", str(spec), str(tmp_path / "missing.npz"), "--layout", "torch",
                                     "-o", str(tmp_path / "out2")])
    assert r.exit_code == 4, r.output


def test_pytorch_to_rnnc_train_and_back(tmp_path):
    """PyTorch → rnnc → train (--init) → PyTorch: training starts from the imported weights,
    and the trained run folder exports to a state_dict PyTorch loads and runs like rnnc."""
    from rnnc.train import Trainer

    net = make_net("lstm")
    save_npz(tmp_path / "w.npz", net.state_dict())
    spec = tmp_path / "t.rnn"
    spec.write_text(spec_text("lstm(4, forget_bias=0.0)", True).replace(
        "output pred", "input y: f32[batch, 6, 2]\nloss = mse(pred, y, lengths=n)\noutput pred")
        + "train { optimizer adam(lr=0.01)  batch 4  epochs 1 }\n")
    res = import_weights(spec, tmp_path / "w.npz", "torch", tmp_path / "imported", {"pred": "head"})
    assert {p.name for p in res.files} == {"infer.onnx", "eval.onnx", "train.onnx"}
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(8, T, I)).astype(np.float32),
             y=rng.normal(size=(8, T, 2)).astype(np.float32), n=np.array([6, 3, 1, 5, 2, 6, 4, 6]))
    tr = Trainer(str(spec), str(tmp_path / "d.npz"), str(tmp_path / "run"), init=str(tmp_path / "imported"),
                 progress=False, steps=3)
    for k, v in res.params.items():
        assert tr.state.params[k].tobytes() == v.tobytes(), k
    tr.train()
    e = export_weights(tmp_path / "run", "torch", tmp_path / "trained.npz", {"pred": "head"})
    net2 = make_net("lstm")
    net2.load_state_dict({k: torch.tensor(v) for k, v in e.items()})
    assert not np.allclose(e["rnn.weight_ih_l0"], net.state_dict()["rnn.weight_ih_l0"].numpy())
    sess = ort.InferenceSession(str(tmp_path / "run" / "infer.onnx"), providers=["CPUExecutionProvider"])
    pred, last = sess.run(["pred", "last"], {"x": X, "n": LENGTHS})
    pred = valid(pred, LENGTHS)
    want_pred, want_last = net2(torch.tensor(X), LENGTHS)
    np.testing.assert_allclose(pred, want_pred, atol=TOL, rtol=0)
    np.testing.assert_allclose(last, want_last, atol=TOL, rtol=0)


def test_init_with_a_mismatched_model_is_a_clear_error(tmp_path):
    from rnnc.train import Trainer

    spec = tmp_path / "t.rnn"
    spec.write_text(spec_text("lstm(4)", False).replace(
        "output pred", "input y: f32[batch, 6, 2]\nloss = mse(pred, y)\noutput pred"))
    other = tmp_path / "o.rnn"
    other.write_text(spec_text("lstm(5)", False))
    from rnnc.api import compile as compile_
    compile_(other, out=tmp_path / "other")
    np.savez(tmp_path / "d.npz", x=np.zeros((2, T, I), np.float32), y=np.zeros((2, T, 2), np.float32))
    with pytest.raises(WeightsError, match=r"'rnn.W' has shape \(3, 20\), the spec needs \(3, 16\)"):
        Trainer(str(spec), str(tmp_path / "d.npz"), str(tmp_path / "run"), init=str(tmp_path / "other"),
                progress=False)
