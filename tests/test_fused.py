"""The fused lowering (ONNX RNN/LSTM/GRU) computes what the loop lowering computes, lengths 0
included, and is used only where exact and only in graphs that are not differentiated."""
import numpy as np
import onnxruntime as ort
import pytest

from rnnc.api import build_infer, check
from rnnc.training_graph import build_train

CELLS = ["basic(3)", "basic(3, activation=relu)", "lstm(5)", "lstm(4, forget_bias=0.7, peepholes=true)",
         "gru(3)", "gru(3, reset_after=true)", "bi(lstm(3))", "stack(gru(4), basic(2))"]
NOT_FUSABLE = {"lstm(4, proj=2)": "proj", "lstm(4, clip=0.5)": "clip"}


def _spec(cell, initial=False):
    init = ", initial=h0" if initial else ""
    extra = "input h0: f32[batch, 3]\n" if initial else ""
    return (f"model m\ninput x: f32[batch, time, 3]\ninput n: i64[batch]\n{extra}cell rnn = {cell}\n"
            f"seq, last = rnn(x, lengths=n{init})\noutput seq\noutput last\n")


def _run(built, feeds):
    s = ort.InferenceSession(built.onnx.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: feeds[i.name] for i in s.get_inputs()})


def _ops(graph, acc=None):
    acc = set() if acc is None else acc
    for n in graph.node:
        acc.add(n.op_type)
        for a in n.attribute:
            if a.g.node:
                _ops(a.g, acc)
    return acc


def _weights(model, rng):
    return {k: rng.normal(scale=0.5, size=v.shape).astype(np.float32)
            for k, v in build_infer(model, "loop").params.items()}


@pytest.mark.parametrize("cell", CELLS)
def test_fused_equals_loop(cell):
    model = check("m.rnn", text=_spec(cell))
    rng = np.random.default_rng(0)
    w = _weights(model, rng)
    feeds = {"x": rng.normal(size=(4, 6, 3)).astype(np.float32), "n": np.array([6, 0, 3, 1])}
    fused = build_infer(model, "fused", weights=w)
    assert {s for _, s in fused.strategies} == {"fused"}
    assert _ops(fused.onnx.graph) & {"LSTM", "GRU", "RNN"}
    for got, want in zip(_run(fused, feeds), _run(build_infer(model, "loop", weights=w), feeds)):
        np.testing.assert_allclose(got, want, atol=2e-6)


def test_fused_keeps_the_initial_state_of_empty_sequences():
    model = check("m.rnn", text=_spec("basic(3)", initial=True))
    rng = np.random.default_rng(1)
    h0 = rng.normal(size=(3, 3)).astype(np.float32)
    feeds = {"x": rng.normal(size=(3, 4, 3)).astype(np.float32), "n": np.array([0, 4, 2]), "h0": h0}
    seq, last = _run(build_infer(model, "fused", weights=_weights(model, rng)), feeds)
    np.testing.assert_array_equal(last[0], h0[0])      # onnxruntime alone would give zeros
    assert not seq[0].any()


@pytest.mark.parametrize("shape", [(2, 0, 3), (0, 4, 3)])
def test_fused_runs_on_empty_input(shape):
    model = check("m.rnn", text=_spec("lstm(4)"))
    seq, last = _run(build_infer(model, "fused"), {"x": np.ones(shape, np.float32), "n": np.full(shape[0], shape[1])})
    assert seq.shape == (shape[0], shape[1], 4) and last.shape == (shape[0], 4)


@pytest.mark.parametrize("cell,why", NOT_FUSABLE.items())
def test_cells_onnx_cannot_express_are_not_fused(cell, why):
    built = build_infer(check("m.rnn", text=_spec(cell)), "fused")
    (path, strategy, reason), = built.decisions
    assert strategy == "loop" and why in reason
    assert not _ops(built.onnx.graph) & {"LSTM", "GRU", "RNN"}


def test_auto_fuses_only_lstms():
    model = check("m.rnn", text=_spec("stack(lstm(4), gru(3), basic(2))"))
    assert [s for _, s in build_infer(model, "auto").strategies] == ["fused", "loop", "loop"]
    assert [s for _, s in build_infer(model, "fused").strategies] == ["fused", "fused", "fused"]


def test_auto_fuses_inference_but_never_training_or_float64():
    text = _spec("lstm(4)").replace("output last\n", "output last\ninput y: f32[batch, time, 4]\n"
                                    "loss = mse(seq, y, lengths=n)\n")
    model = check("m.rnn", text=text)
    assert [s for _, s in build_infer(model, "auto").strategies] == ["fused"]
    assert [s for _, s in build_infer(model, "auto", fdtype="f64").strategies] == ["loop"]
    assert not _ops(build_train(model, "auto").onnx.graph) & {"LSTM", "GRU", "RNN"}


def test_lowerings_for_a_cuda_target_avoid_what_the_cuda_provider_sends_to_the_cpu(tmp_path):
    """`rnnc compile --device cuda` picks lowerings by static rules, without a GPU: no fused
    variant the CUDA provider would run on the CPU (peepholes, GRU reset-before, relu)."""
    from rnnc.api import compile

    cells = "stack(lstm(4, peepholes=true), lstm(4), gru(3), gru(3, reset_after=true), basic(3, activation=relu))"
    spec = tmp_path / "cu.rnn"
    spec.write_text(f"model cu\ninput x: f32[batch, time, 3]\ncell rnn = {cells}\n"
                    "seq, _ = rnn(x, unroll=fused)\noutput seq\n")
    cuda = compile(spec, out=tmp_path / "cuda", device="cuda").infer
    assert [s for _, s in cuda.strategies] == ["loop", "fused", "loop", "fused", "loop"]
    assert set(cuda.providers.values()) == {"CUDAExecutionProvider"}
    cpu = compile(spec, out=tmp_path / "cpu").infer
    assert [s for _, s in cpu.strategies] == ["fused"] * 5
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(cuda, {"x": x})[0], _run(cpu, {"x": x})[0], atol=2e-6)


def test_an_on_cuda_placement_lowers_its_cell_for_cuda():
    built = build_infer(check("m.rnn", text=_spec("gru(3) on cuda:0")), "fused")
    (path, strategy, why), = built.decisions
    assert strategy != "fused" and "linear_before_reset" in why
    assert built.providers[path] == "CUDAExecutionProvider"


def test_fused_lstm_leaves_out_the_sequence_nobody_reads():
    """Only the last state is read: the LSTM node omits Y (onnxruntime then never writes the
    [T, 1, B, H] sequence), and the numbers stay those of the loop lowering."""
    import onnx
    import onnxruntime as ort
    from rnnc.api import build_infer, check

    text = ("model m\ninput x: f32[batch, 6, 3]\ncell rnn = lstm(4)\n_, last = rnn(x)\n"
            "logits = dense(last, 2)\noutput logits\n")
    model = check("m.rnn", text=text)
    fused = build_infer(model, "auto").onnx

    def lstm_nodes(g):
        for n in g.node:
            if n.op_type == "LSTM":
                yield n
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    yield from lstm_nodes(a.g)
    (node,) = list(lstm_nodes(fused.graph))
    assert node.output[0] == "" and node.output[1]
    x = np.random.default_rng(0).normal(size=(5, 6, 3)).astype(np.float32)
    run = lambda p: ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(run(fused), run(build_infer(model, "loop").onnx), atol=1e-5)
