"""`--memory checkpoint[:K]` (rnnc/lower/chunked.py): a cell run of a training graph is a
loop over chunks of K steps, each chunk rerun in the backward pass.

Its gradients must be those of the store policy (float64, 1e-10) and of central finite
differences of onnxruntime's own forward; with K dividing T, K not dividing T (padded,
masked steps), lengths including 0, a stack, state dropout and a dynamic T. Empty inputs
(no steps, empty batch) must run; `rnnc train --memory checkpoint:3` must train to the
weights `--memory store` trains to; bad values are refused with one clear message.
"""
from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from rnnc import checkpoint as ckpt
from rnnc.api import check
from rnnc.cli import main
from rnnc.lower.chunked import chunk_size, parse_memory
from rnnc.training_graph import build_grad, build_train

B, I = 4, 3
FD_EPS, FD_TOL = 1e-6, 1e-5


def spec(cell: str, T) -> str:
    """Per-step outputs and the final state both reach the loss; lengths on the run."""
    return textwrap.dedent(f"""\
        model m
        input x: f32[batch, {T}, {I}]
        input n: i64[batch]
        input y: f32[batch, {T}, 2]
        input z: f32[batch, 2]
        cell rnn = {cell}
        seq, last = rnn(x, lengths=n)
        pred = dense(seq, 2)
        loss = mse(pred, y, lengths=n) + 0.5 * mse(dense(last, 2), z)
        output pred
        """)


# (case, cell, T of the spec, T fed, memory): K divides T, K leaves a remainder (padded),
# the default K, a stack, state dropout, a dynamic T (padded at run time)
CASES = {
    "lstm_k_divides": ("lstm(3)", 6, 6, "checkpoint:2"),
    "gru_padded": ("gru(3)", 6, 6, "checkpoint:4"),
    "basic_default_k": ("basic(3)", 7, 7, "checkpoint"),
    "stack_padded": ("stack(lstm(3), gru(2))", 7, 7, "checkpoint:3"),
    "dropout_padded": ("lstm(3) | dropout(state_keep=0.6, input_keep=0.8)", 5, 5, "checkpoint:2"),
    "dynamic_lstm": ("lstm(3) | project(2)", "time", 7, "checkpoint:3"),
    "dynamic_stack": ("stack(gru(2), basic(3))", "time", 5, "checkpoint:2"),
}


@functools.lru_cache(maxsize=None)
def proto(case: str, memory: str) -> onnx.ModelProto:
    cell, T, _, _ = CASES[case]
    return build_grad(check("m.rnn", text=spec(cell, T)), unroll="loop", fdtype="f64", wrt_inputs=("x",),
                      memory=memory)


def session(p: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(p.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=None)
def feeds(case: str) -> dict[str, np.ndarray]:
    T = CASES[case][2]
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    out = {"x": rng.normal(size=(B, T, I)), "n": np.array([T, 0, 3, T - 1], np.int64),
           "y": rng.normal(size=(B, T, 2)), "z": rng.normal(size=(B, 2)),
           "seed": np.array(7, np.int64), "step": np.array(3, np.int64)}
    for i in proto(case, "store").graph.input:          # random parameters: no zero bias hides a term
        if i.name not in out:
            out[i.name] = rng.normal(scale=0.5, size=[d.dim_value for d in i.type.tensor_type.shape.dim])
    return out


def run(p: onnx.ModelProto, f: dict, names=None) -> dict[str, np.ndarray]:
    s = session(p)
    outs = s.run(names, {i.name: f[i.name] for i in s.get_inputs()})
    return dict(zip(names or [o.name for o in s.get_outputs()], outs))


def nested_scan(p: onnx.ModelProto) -> bool:
    """A top-level Scan (inside its empty-input guard) whose body runs a Scan."""
    for node in p.graph.node:
        for a in node.attribute:
            if node.op_type == "If" and a.name == "else_branch":
                for inner in a.g.node:
                    body = [b.g for b in inner.attribute if b.name == "body"]
                    if inner.op_type == "Scan" and body and any(n.op_type == "Scan" for n in body[0].node):
                        return True
    return False


@pytest.mark.parametrize("case", CASES)
def test_checkpoint_gradients_equal_store_gradients(case):
    memory = CASES[case][3]
    assert nested_scan(proto(case, memory)) and not nested_scan(proto(case, "store"))
    ref, got = run(proto(case, "store"), feeds(case)), run(proto(case, memory), feeds(case))
    assert set(ref) == set(got)
    for k, v in ref.items():
        assert np.any(v != 0.0) or k == "loss", k
        np.testing.assert_allclose(got[k], v, rtol=1e-10, atol=1e-12, err_msg=f"{case} {k}")
    # nothing reaches x at the padded steps of a sequence (t ≥ its length)
    n = feeds(case)["n"]
    for b in range(B):
        assert np.all(got["grad.x"][b, n[b]:] == 0.0)


@pytest.mark.parametrize("case", ["lstm_k_divides", "gru_padded", "basic_default_k", "dynamic_lstm"])
def test_checkpoint_gradients_match_finite_differences(case):
    memory = CASES[case][3]
    p = proto(case, memory)
    got = run(p, feeds(case))
    fwd = onnx.ModelProto()
    fwd.CopyFrom(p)
    keep = [o for o in fwd.graph.output if o.name == "loss"]
    del fwd.graph.output[:]
    fwd.graph.output.extend(keep)
    s = session(fwd)
    base = {i.name: feeds(case)[i.name].copy() for i in s.get_inputs()}
    for name in [o.name[len("grad."):] for o in p.graph.output if o.name.startswith("grad.")]:
        flat = base[name].reshape(-1)
        fd = np.zeros_like(flat)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + FD_EPS
            up = float(s.run(["loss"], base)[0])
            flat[i] = old - FD_EPS
            down = float(s.run(["loss"], base)[0])
            flat[i] = old
            fd[i] = (up - down) / (2 * FD_EPS)
        err = np.max(np.abs(got[f"grad.{name}"].reshape(-1) - fd)) / max(1e-6, np.max(np.abs(fd)))
        assert err <= FD_TOL, f"{case}: grad.{name} vs finite differences, relative error {err:.2e}"


_EMPTY = r"""
import sys
import numpy as np
import onnxruntime as ort
from rnnc.api import check
from rnnc.training_graph import build_grad, build_train

SPEC = '''model z
input x: f32[batch, TIME, 2]
input n: i64[batch]
input y: i64[batch]
cell rnn = stack(lstm(2), basic(2))
seq, last = rnn(x, lengths=n)
logits = dense(last, 3)
loss = softmax_cross_entropy(logits, y)
output logits
'''
for B, T, time in [(2, 0, "time"), (0, 3, "time"), (0, 3, "3")]:
    model = check("z.rnn", text=SPEC.replace("TIME", time))
    data = {"x": np.zeros((B, T, 2)), "n": np.full(B, T, np.int64), "y": np.zeros(B, np.int64)}
    grads = {}
    for memory in ("store", "checkpoint:2"):
        proto = build_grad(model, unroll="loop", fdtype="f64", wrt_inputs=("x",), memory=memory)
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {i.name: data[i.name] if i.name in data else np.full(i.shape, 0.3) for i in sess.get_inputs()}
        grads[memory] = sess.run(None, feeds)
        tm = build_train(model, "loop", memory=memory)
        sess = ort.InferenceSession(tm.onnx.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {**{k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in data.items()},
                 "lr": np.array(0.01, np.float32), "step": np.array(0, np.int64), **tm.params, **tm.slots}
        sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})
    diff = max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(grads["store"], grads["checkpoint:2"]))
    print(B, T, time, diff, flush=True)
"""


def test_empty_input_runs(tmp_path):
    """No steps or an empty batch (dynamic and fixed T): the chunked loops (nested Scans) run,
    in the grad and the train model, and give the store policy's gradients. In a subprocess:
    onnxruntime's Scan kills the process on empty input when unguarded."""
    script = tmp_path / "empty.py"
    script.write_text(_EMPTY)
    root = __file__.rsplit("/tests/", 1)[0]
    p = subprocess.run([sys.executable, str(script)], cwd=root, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 3 and all(float(line.split()[-1]) == 0.0 for line in lines), lines


def test_chunk_size_and_policy_names():
    assert chunk_size(2000) == 40 and chunk_size(500) == 20      # divisors of T nearest √T
    assert chunk_size(7) == 3 and chunk_size(1) == 1             # none near √7: padded
    assert chunk_size("time") == 32 and chunk_size(None, 5) == 5
    assert chunk_size(20, 50) == 20 and chunk_size(20, 3) == 3
    assert parse_memory("checkpoint:50") == ("checkpoint", 50)
    assert parse_memory("checkpoint") == ("checkpoint", None) and parse_memory("store") == ("store", None)
    for bad in ("checkpoint:0", "checkpoint:", "checkpoint:-3", "checkpoint:x", "Store", "store:3", ""):
        with pytest.raises(ValueError, match="store, recompute, checkpoint or checkpoint:K"):
            parse_memory(bad)


TINY = """\
model tiny
input x: f32[batch, 7, 2]
input n: i64[batch]
input y: f32[batch, 7, 1]
cell rnn = lstm(3) | project(1)
pred, _ = rnn(x, lengths=n)
loss = mse(pred, y, lengths=n)
output pred
train { optimizer adam(lr=0.05)  batch 4  steps 3 }
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    (root / "tiny.rnn").write_text(TINY)
    rng = np.random.default_rng(0)
    np.savez(root / "data.npz", x=rng.normal(size=(8, 7, 2)).astype(np.float32),
             n=rng.integers(0, 8, size=8).astype(np.int64), y=rng.normal(size=(8, 7, 1)).astype(np.float32))
    return root


def _train(root, memory, *extra):
    out = root / f"run-{memory.replace(':', '-')}-{len(extra)}"
    r = CliRunner().invoke(main, ["train", str(root / "tiny.rnn"), "--data", str(root / "data.npz"), "-o", str(out),
                                  "--memory", memory, "--threads", "1", "--quiet", *extra])
    assert r.exit_code == 0, r.output
    arrays, meta = ckpt.load(ckpt.latest(out / "checkpoints"))
    return arrays


@pytest.mark.parametrize("extra", [(), ("--set", "tbptt=4")])
def test_rnnc_train_with_checkpoint_policy_trains_as_store_does(tiny, extra):
    """Same data, seed and steps: the same weights and optimizer slots (float32 rounding
    apart); with tbptt the windows (a dynamic time dim) are chunked too."""
    got, want = _train(tiny, "checkpoint:3", *extra), _train(tiny, "store", *extra)
    assert set(got) == set(want) and any(k.endswith("rnn.W") for k in got)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-6, err_msg=k)
    tm = build_train(check("tiny.rnn", text=TINY), memory="checkpoint:3")
    assert tm.strategies == [("rnn", "checkpoint:3")]


@pytest.mark.parametrize("command", ["compile", "train"])
@pytest.mark.parametrize("value", ["bogus", "checkpoint:0", "checkpoint:x"])
def test_bad_memory_value_is_a_usage_error(tiny, command, value):
    args = [command, str(tiny / "tiny.rnn"), "--memory", value, "-o", str(tiny / "never")]
    if command == "train":
        args += ["--data", str(tiny / "data.npz")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert "store, recompute, checkpoint or checkpoint:K" in r.output and "Traceback" not in r.output
    assert not (tiny / "never").exists()


@pytest.mark.parametrize("case", ["luong_reversed", "dot_gru"])
def test_seq2seq_encoder_is_chunked_with_the_store_gradients(case):
    """The encoder of a seq2seq block is a cell run like any other (lengths with a 0); the
    decoder, which reads the attention memory, stays one loop."""
    from tests.test_seq2seq_gradients import CASES as S2S  # noqa: PLC0415

    model = check("g.rnn", text=S2S[case][0])
    protos = {m: build_grad(model, unroll="loop", fdtype="f64", memory=m) for m in ("store", "checkpoint:3")}
    assert nested_scan(protos["checkpoint:3"]) and not nested_scan(protos["store"])
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    dims = {"batch": 3, "src_time": 4, "tgt_time": 3}
    f = {"src_len": np.array([0, 4, 2]), "tgt_len": np.array([3, 1, 2])}
    for i in session(protos["store"]).get_inputs():
        shape = [dims.get(d, d) for d in i.shape]
        if i.name not in f:
            f[i.name] = rng.integers(4, 7, size=shape) if i.type == "tensor(int64)" else rng.normal(scale=0.5, size=shape)
    ref, got = run(protos["store"], f), run(protos["checkpoint:3"], f)
    for k, v in ref.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-10, atol=1e-12, err_msg=f"{case} {k}")
