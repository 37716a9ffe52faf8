"""`| dropout(...)` (LANGUAGE.md §3, issue 5): TF1 DropoutWrapper semantics in train and
gradient models only; masks a pure function of (seed, step) made of integer ONNX ops.

- infer / eval models contain no dropout, no random op and no mask computation: their
  nodes are exactly those of the same spec without the wrapper;
- train.onnx: no Random*/Bitwise*/BitShift/Dropout op (the CUDA provider lacks them);
- the masks read out of train.onnx: keep 0.8 over 10⁵ elements zeroes 0.20 ± 0.01 and
  scales kept values by exactly 1.25; equal to the numpy twin `reference_mask`; the same
  (seed, step) gives the same mask, other steps or seeds another; `variational` reuses one
  mask at every time step;
- the forward pass equals a numpy TF1 reference (input, state and output dropout, lstm's c
  never dropped, lengths), and gradients match finite differences with the mask fixed;
- digits (§1) with `| dropout(input_keep=0.8)` trains; kill -9 + --resume with dropout ends
  with the weights of the uninterrupted run.
"""
from __future__ import annotations

import random
import signal
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from rnnc import checkpoint as ckpt
from rnnc.api import build_infer, check
from rnnc.lower.dropout import reference_mask, stream_id
from rnnc.train import Trainer
from rnnc.training_graph import build_eval, build_grad, build_train
from support import all_nodes, kill_after_checkpoint

try:
    from tests import reference as R
except ImportError:   # tests/ itself on sys.path
    import reference as R


def model(tmp_path, text, name="spec.rnn"):
    p = tmp_path / name
    p.write_text(text)
    return check(p)


def ops(proto) -> list[str]:
    return sorted(n.op_type for n in all_nodes(proto.graph))


def session(proto):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


ALL = """\
model deep
input x: f32[batch, 6, 3]
input n: i64[batch]
input y: f32[batch, 6, 1]
cell layer = lstm(5) | dropout(input_keep=0.8, output_keep=0.7, state_keep=0.6)
cell deep = stack(layer, gru(4) | dropout(state_keep=0.5, output_keep=0.9, variational=true)) | project(1)
pred, last = deep(x, lengths=n)
loss = mse(pred, y, lengths=n)
output pred
output last
train { optimizer adam(lr=0.01) batch 4 steps 3 }
"""
RANDOM_OPS = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
              "Bernoulli", "Dropout")


# ----- where dropout lives -----
@pytest.mark.parametrize("unroll", ["auto", "loop", "static"])
def test_infer_and_eval_models_have_no_dropout_at_all(tmp_path, unroll):
    with_drop = model(tmp_path, ALL)
    without = model(tmp_path, ALL.replace("| dropout(input_keep=0.8, output_keep=0.7, state_keep=0.6)", "")
                    .replace("| dropout(state_keep=0.5, output_keep=0.9, variational=true)", ""), "plain.rnn")
    pairs = [(build_infer(with_drop, unroll).onnx, build_infer(without, unroll).onnx),
             (build_infer(with_drop, unroll, stateful=True).onnx, build_infer(without, unroll, stateful=True).onnx),
             (build_eval(with_drop, unroll), build_eval(without, unroll))]
    for got, want in pairs:
        assert ops(got) == ops(want)             # no mask computation either
        assert not {"Mod", *RANDOM_OPS} & set(ops(got))
        assert {i.name for i in got.graph.input} == {i.name for i in want.graph.input}
        assert "seed" not in {i.name for i in got.graph.input}


@pytest.mark.parametrize("unroll", ["loop", "static"])
def test_train_model_has_dropout_made_of_plain_integer_ops(tmp_path, unroll):
    m = model(tmp_path, ALL)
    tm = build_train(m, unroll)
    kinds = set(ops(tm.onnx))
    assert "Mod" in kinds
    assert not kinds & set(RANDOM_OPS)
    assert not [k for k in kinds if k.startswith(("Bitwise", "BitShift", "Random"))]
    inputs = {i.name: i for i in tm.onnx.graph.input}
    for name in ("seed", "step"):
        t = inputs[name].type.tensor_type
        assert t.elem_type == TensorProto.INT64 and len(t.shape.dim) == 0
    onnx.checker.check_model(tm.onnx)


def _feeds(tm, rng, B=4, seed=0, step=0):
    feeds = {"x": rng.normal(size=(B, 6, 3)).astype(np.float32), "n": np.array([6, 3, 0, 5][:B]),
             "y": rng.normal(size=(B, 6, 1)).astype(np.float32), "lr": np.array(0.01, np.float32),
             "step": np.array(step, np.int64), "seed": np.array(seed, np.int64)}
    return feeds | tm.params | tm.slots


def test_train_model_loss_is_a_function_of_seed_and_step(tmp_path):
    tm = build_train(model(tmp_path, ALL), "loop")
    static = session(build_train(model(tmp_path, ALL), "static").onnx)
    sess = session(tm.onnx)
    base = _feeds(tm, np.random.default_rng(0))
    run = lambda s, **kw: float(s.run(["loss"], base | {k: np.array(v, np.int64) for k, v in kw.items()})[0])
    a = run(sess, seed=0, step=0)
    assert run(sess, seed=0, step=0) == a
    assert run(static, seed=0, step=0) == pytest.approx(a, rel=1e-6)   # lowerings draw the same masks
    assert run(sess, seed=0, step=1) != a
    assert run(sess, seed=1, step=0) != a
    assert run(sess, seed=-5, step=2**40) == run(sess, seed=-5, step=2**40)


# ----- the masks, read out of train.onnx -----
def _observe(proto, keep: float):
    """train.onnx with the masked tensors of each `x * mask` (mask = 1/keep or 0) added as
    outputs, in graph order: [(masked output, mask) names]."""
    p = onnx.ModelProto()
    p.CopyFrom(proto)
    g = p.graph
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    is_val = lambda n, v: n in consts and consts[n].size == 1 and float(consts[n]) == pytest.approx(v)
    masks = [n.output[0] for n in g.node if n.op_type == "Where" and is_val(n.input[1], 1 / keep)
             and is_val(n.input[2], 0.0)]
    found = []
    for n in g.node:
        if n.op_type == "Mul" and any(i in masks for i in n.input):
            m = next(i for i in n.input if i in masks)
            found.append((n.output[0], m))
            for name in (n.output[0], m):
                g.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return p, found


BIG = """\
model big
input x: f32[batch, time, 100]
input y: f32[batch, 1]
cell c = basic(2) | dropout(input_keep=0.8{opts})
_, last = c(x)
loss = mse(dense(last, 1), y)
output last
train {{ optimizer sgd(lr=0.1) batch 10 steps 1 }}
"""


def _masked_input(tmp_path, seed, step, opts="", x=None, T=100, B=10):
    tm = build_train(model(tmp_path, BIG.format(opts=opts)), "loop")
    proto, found = _observe(tm.onnx, 0.8)
    assert len(found) == 1
    rng = np.random.default_rng(7)
    x = np.ones((B, T, 100), np.float32) if x is None else x
    feeds = {"x": x, "y": np.zeros((B, 1), np.float32), "lr": np.array(0.1, np.float32),
             "step": np.array(step, np.int64), "seed": np.array(seed, np.int64)} | tm.params
    dropped, mask = session(proto).run([found[0][0], found[0][1]], feeds)
    return dropped, mask


def test_keep_08_zeroes_a_fifth_and_scales_the_rest_by_1_25(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 2.0, size=(10, 100, 100)).astype(np.float32)   # 10⁵ elements, none zero
    dropped, mask = _masked_input(tmp_path, seed=0, step=0, x=x)
    xt = x.transpose(1, 0, 2)                                       # the recurrence is time-major
    assert dropped.shape == xt.shape and dropped.size >= 10 ** 5
    zero = dropped == 0
    assert abs(zero.mean() - 0.20) <= 0.01, zero.mean()
    np.testing.assert_array_equal(dropped[~zero], xt[~zero] * np.float32(1.25))
    # the graph draws exactly the numpy twin's mask
    want = reference_mask(0, 0, stream_id(0, "input"), xt.shape, 0.8)
    np.testing.assert_array_equal(~zero, want)


def test_same_seed_and_step_same_mask_other_steps_and_seeds_differ(tmp_path):
    masks = {(seed, step): _masked_input(tmp_path, seed, step, T=20)[1] != 0
             for seed, step in [(0, 0), (0, 1), (0, 2), (1, 0)]}
    again = _masked_input(tmp_path, 0, 1, T=20)[1] != 0
    np.testing.assert_array_equal(again, masks[(0, 1)])
    keys = list(masks)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            agree = (masks[a] == masks[b]).mean()
            assert agree < 0.75, (a, b, agree)     # independent masks agree on 0.8² + 0.2² = 0.68
    # neighbouring elements are not correlated
    m = masks[(0, 0)].reshape(-1).astype(float)
    assert abs(np.corrcoef(m[:-1], m[1:])[0, 1]) < 0.02


def test_variational_reuses_one_mask_at_every_step(tmp_path):
    x = np.ones((10, 30, 100), np.float32)
    dropped, _ = _masked_input(tmp_path, 0, 0, ", variational=true", x=x, T=30)
    kept = dropped != 0                                        # [T, B, F]
    assert (kept == kept[:1]).all()                            # the same at every time step
    assert abs(1 - kept[0].mean() - 0.2) < 0.05
    assert (kept[0] != kept[0][:1]).any()                      # per example, not shared by the batch
    plain, _ = _masked_input(tmp_path, 0, 0, x=x, T=30)
    assert not ((plain != 0) == (plain[:1] != 0)).all()        # non-variational: fresh every step


# ----- semantics: a numpy TF1 reference -----
SEM = """\
model sem
input x: f32[batch, 5, 3]
input n: i64[batch]
input y: f32[batch, 5, 4]
cell c = lstm(4) | dropout(input_keep=0.7, output_keep=0.8, state_keep=0.6{var})
seq, last = c(x, lengths=n)
loss = mse(seq, y, lengths=n)
output seq
"""


def _reference_loss(p, x, n, y, seed, step, variational):
    B, T, _ = x.shape
    mask = lambda kind, shape, keep, part=0: reference_mask(seed, step, stream_id(0, kind, part), shape, keep) / keep
    if variational:
        im = np.broadcast_to(mask("input", (1, B, 3), 0.7), (T, B, 3))
        sm = np.broadcast_to(mask("state", (B, 4), 0.6, part=1), (T, B, 4))      # part 1: h (never c)
        om = np.broadcast_to(mask("output", (1, B, 4), 0.8), (T, B, 4))
    else:
        im, sm, om = mask("input", (T, B, 3), 0.7), mask("state", (T, B, 4), 0.6, 1), mask("output", (T, B, 4), 0.8)
    t = [0]

    def step(xt, state):
        k = t[0]
        t[0] += 1
        c, m = R.lstm_step(xt * im[k], state, p["c.W"], p["c.U"], p["c.b"], forget_bias=1.0)
        return m, (c, m * sm[k])         # the state passed on is dropped; the output is not

    zeros = np.zeros((B, 4))
    seq, _ = R.run(step, x, (zeros, zeros), lengths=n)
    return R.mse(seq * om.transpose(1, 0, 2), y, lengths=n)


@pytest.mark.parametrize("variational", [False, True])
@pytest.mark.parametrize("unroll", ["loop", "static"])
def test_forward_matches_tf1_dropout_wrapper_semantics(tmp_path, unroll, variational):
    m = model(tmp_path, SEM.format(var=", variational=true" if variational else ""))
    proto = build_grad(m, unroll=unroll, fdtype="f64")
    rng = np.random.default_rng(11)
    feeds = {"x": rng.normal(size=(3, 5, 3)), "n": np.array([5, 2, 0]), "y": rng.normal(size=(3, 5, 4)),
             "seed": np.array(9, np.int64), "step": np.array(4, np.int64)}
    params = {i.name: rng.normal(scale=0.5, size=[d.dim_value for d in i.type.tensor_type.shape.dim])
              for i in proto.graph.input if i.name.startswith("c.")}
    loss = session(proto).run(["loss"], feeds | params)[0]
    want = _reference_loss(params, feeds["x"], feeds["n"], feeds["y"], 9, 4, variational)
    assert float(loss) == pytest.approx(float(want), rel=1e-10)


GRAD = """\
model g
input x: f32[batch, 4, 3]
input n: i64[batch]
input y: i64[batch]
cell c = stack(lstm(3) | dropout(input_keep=0.7, output_keep=0.8, state_keep=0.6),
               gru(3) | dropout(state_keep=0.5, input_keep=0.9, variational=true),
               basic(3) | dropout(state_keep=0.7))
_, last = c(x, lengths=n)
loss = softmax_cross_entropy(dense(last, 3), y)
output last
"""


@pytest.mark.parametrize("unroll", ["loop", "static"])
def test_gradients_match_finite_differences_with_the_mask_fixed(tmp_path, unroll):
    m = model(tmp_path, GRAD)
    proto = build_grad(m, unroll=unroll, fdtype="f64", wrt_inputs=("x",))
    sess = session(proto)
    rng = np.random.default_rng(5)
    feeds = {"x": rng.normal(size=(3, 4, 3)), "n": np.array([4, 2, 0]), "y": np.array([0, 2, 1]),
             "seed": np.array(3, np.int64), "step": np.array(17, np.int64)}
    names = [i.name for i in proto.graph.input if i.name not in feeds]
    for i in proto.graph.input:
        if i.name in names:
            feeds[i.name] = rng.normal(scale=0.5, size=[d.dim_value for d in i.type.tensor_type.shape.dim])
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    loss = lambda f: float(sess.run(["loss"], f)[0])
    eps = 1e-6
    for name in names + ["x"]:
        got = outs[f"grad.{name}"]
        fd = np.zeros_like(feeds[name])
        for idx in np.ndindex(fd.shape):
            plus, minus = dict(feeds), dict(feeds)
            plus[name], minus[name] = feeds[name].copy(), feeds[name].copy()
            plus[name][idx] += eps
            minus[name][idx] -= eps
            fd[idx] = (loss(plus) - loss(minus)) / (2 * eps)
        err = np.abs(got - fd).max() / max(1e-6, np.abs(fd).max())
        assert err <= 1e-5, (name, err)
    assert np.abs(outs["grad.x"][1, 2:]).max() == 0      # padded steps get no gradient


# ----- training -----
DIGITS = """\
model digits_rows
input x: f32[batch, 8, 8]
input y: i64[batch]
cell rnn = basic(150) | dropout(input_keep=0.8)
seq, last = rnn(x)
logits = dense(last, 10)
loss = softmax_cross_entropy(logits, y)
metric accuracy(logits, y)
output probs = softmax(logits)
train {
  optimizer adam(lr=0.001)
  batch 150
  epochs 100
}
"""


def test_digits_with_input_dropout_trains(tmp_path):
    from rnnc import datasets

    datasets.write("digits", tmp_path, seed=0)
    spec = tmp_path / "digits.rnn"
    spec.write_text(DIGITS)
    tr = Trainer(str(spec), str(tmp_path / "digits_train.npz"), str(tmp_path / "run"), threads=2,
                 progress=False, steps=60)
    rec = tr.train()
    first = [float(line.split('"loss": ')[1].split(",")[0])
             for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in line][0]
    assert rec["loss"] < 0.6 * first
    infer = onnx.load(str(tmp_path / "run" / "infer.onnx"))
    assert "Mod" not in ops(infer) and "seed" in {i.name for i in onnx.load(str(tmp_path / "run" / "train.onnx")).graph.input}


RESUME = """\
model resumable
input x: f32[batch, time, 2]
input y: f32[batch, time, 1]
cell rnn = gru(8) | dropout(input_keep=0.8, state_keep=0.7, output_keep=0.9) | project(1)
pred, _ = rnn(x)
loss = mse(pred, y)
output pred
train { optimizer adam(lr=0.01)  batch 8  steps 12 }
"""
TOTAL = 200


def test_killed_and_resumed_with_dropout_equals_uninterrupted(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 16, 2)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=(0.3 * np.cumsum(x[..., :1], axis=1)).astype(np.float32))
    spec, data = tmp_path / "spec.rnn", tmp_path / "data.npz"
    spec.write_text(RESUME)
    tr = Trainer(str(spec), str(data), str(tmp_path / "A"), threads=1, checkpoint_every=2, progress=False,
                 steps=TOTAL)
    tr.train()
    want = dict(tr.state.params)

    run_b = tmp_path / "B"
    cmd = [sys.executable, "-m", "rnnc.cli", "train", str(spec), "--data", str(data), "-o", str(run_b),
           "--steps", str(TOTAL), "--threads", "1", "--checkpoint-every", "2", "--quiet"]
    kill_after = random.Random(99).randint(4, TOTAL // 3)
    proc = kill_after_checkpoint(cmd, run_b / "checkpoints", kill_after)
    assert proc.returncode == -signal.SIGKILL and not (run_b / "model.onnx").exists()
    res = subprocess.run(cmd + ["--resume"], check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    arrays, _ = ckpt.load(ckpt.latest(run_b / "checkpoints"))
    for k, v in want.items():
        assert np.abs(arrays[f"param/{k}"] - v).max() <= 1e-6, k
