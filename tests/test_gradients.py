"""Gradient checks of rnnc's own reverse-mode differentiation (``build_grad``).

Every case is a tiny spec with a loss. Its gradient model (float64) is run with
onnxruntime with *random* parameters fed as inputs (so zero/one-initialised biases cannot
hide a wrong term), and every ``grad.<name>`` output is compared with central finite
differences of onnxruntime's own forward pass (the ``loss`` output of the same model,
one element perturbed at a time):

    max|analytic − fd| / max(1e-6, max|fd|) ≤ 1e-5      for each parameter / input

for both lowerings (``static`` and ``loop``), and the two lowerings' gradients must agree to
1e-9. Gradients are also taken w.r.t. the data input ``x`` and the declared initial states,
and the gradient w.r.t. ``x`` at padded time steps (t ≥ lengths[b]) must be exactly 0.

``CASES`` is shared with tests/test_rule_coverage.py (which checks that these cases
exercise every gradient rule).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from rnnc.api import check
from rnnc.training_graph import build_grad

T = 4            # time steps
I = 3            # input features
B = 3            # batch
LENGTHS = np.array([0, T, 2], dtype=np.int64)     # an empty, a full and a partial sequence
FD_EPS = 1e-6
FD_TOL = 1e-5
LOWERING_TOL = 1e-9
UNROLLS = ("static", "loop")

MGU = """
cell mgu(units) {                       # minimal gated unit (LANGUAGE.md section 4)
  state h[units]
  param Wf[input, units], Uf[units, units], Wh[input, units], Uh[units, units]
  param bf[units] = ones, bh[units] = zeros
  f = sigmoid(x @ Wf + h @ Uf + bf)
  g = tanh(x @ Wh + (f * h) @ Uh + bh)
  h' = (1 - f) * h + f * g
  output h'
}
"""

# every operator a user cell may use: split, concat, softmax, exp, log, clip, min, max,
# relu, / and unary minus
ODD = """
cell odd(units) {
  state h[units]
  param W[input, 2 * units], U[units, 2 * units], V[2 * units, units]
  param b[2 * units], c[units] = ones
  a, g = split(x @ W + h @ U + b, 2)
  s = softmax(a)
  e = log(1 + exp(g))
  q = clip(e, 0.2, 0.9) / (1 + s)
  z = concat(s * h, q - min(h, 0.3) * 0.5)
  h' = tanh(z @ V + c) - max(h - 0.1, relu(g)) * 0.25
  output h'
}
"""


@dataclass(frozen=True)
class Case:
    name: str
    spec: str
    data: Callable            # rng -> {input name: array} (every data input of the grad model)
    wrt: tuple[str, ...] = ("x",)
    lengths: bool = False     # the cell run has lengths=n (LENGTHS)
    unrolls: tuple[str, ...] = UNROLLS   # a symbolic time dim can only be looped
    notes: str = ""


def _header(*inputs: str, x_dim: int = I) -> str:
    lines = ["model g", f"input x: f32[batch, {T}, {x_dim}]"]
    lines += [f"input {s}" for s in inputs]
    return "\n".join(lines) + "\n"


def _sym(*inputs: str) -> str:
    """A header with a symbolic time dim."""
    return "model g\ninput x: f32[batch, time, 3]\n" + "".join(f"input {s}\n" for s in inputs)


def _x(rng, scale=1.0, dim=I):
    return rng.normal(scale=scale, size=(B, T, dim))


def _labels(rng, k=3, per_step=False):
    return rng.integers(0, k, size=(B, T) if per_step else (B,)).astype(np.int64)


def _d(**kw):
    """data(rng) from a dict of rng -> array functions."""
    def data(rng):
        return {k: f(rng) for k, f in kw.items()}
    return data


def _n(rng):
    return LENGTHS.copy()


def _final_xent(cell: str, run_args: str = "", extra_inputs=(), defs: str = "") -> str:
    """dense on the final state + softmax_cross_entropy with class labels [batch]."""
    return (defs + _header("y: i64[batch]", *extra_inputs) +
            f"cell rnn = {cell}\n"
            f"seq, last = rnn(x{run_args})\n"
            "logits = dense(last, 3)\n"
            "loss = softmax_cross_entropy(logits, y)\n"
            "output probs = softmax(logits)\n")


def _seq_mse(cell: str, run_args: str = "", loss_args: str = "", extra_inputs=(), defs: str = "",
             out: int = 2) -> str:
    """dense on every step's output + mse against a [batch, time, out] target."""
    return (defs + _header(f"y: f32[batch, {T}, {out}]", *extra_inputs) +
            f"cell rnn = {cell}\n"
            f"seq, last = rnn(x{run_args})\n"
            f"pred = dense(seq, {out})\n"
            f"loss = mse(pred, y{loss_args})\n"
            "output pred\n")


def _seq_xent(cell: str, run_args: str = "", loss_args: str = "", extra_inputs=(), defs: str = "") -> str:
    """per-step softmax_cross_entropy on [batch, time, classes] logits."""
    return (defs + _header(f"y: i64[batch, {T}]", *extra_inputs) +
            f"cell rnn = {cell}\n"
            f"seq, last = rnn(x{run_args})\n"
            "logits = dense(seq, 3)\n"
            f"loss = softmax_cross_entropy(logits, y{loss_args})\n"
            "output probs = softmax(logits)\n")


N_IN = ("n: i64[batch]",)
LEN = ", lengths=n"
XENT_DATA = _d(x=_x, y=_labels)
XENT_LEN_DATA = _d(x=_x, y=_labels, n=_n)
MSE_DATA = _d(x=_x, y=lambda r: r.normal(size=(B, T, 2)))
MSE_LEN_DATA = _d(x=_x, y=lambda r: r.normal(size=(B, T, 2)), n=_n)
SEQX_LEN_DATA = _d(x=_x, y=lambda r: _labels(r, per_step=True), n=_n)

CASES: list[Case] = [
    # ---- basic ----
    Case("basic_tanh", _final_xent("basic(3)"), XENT_DATA),
    Case("basic_tanh_lengths", _final_xent("basic(3)", LEN, N_IN), XENT_LEN_DATA, lengths=True),
    Case("basic_relu", _seq_mse("basic(4, activation=relu)"), MSE_DATA,
         notes="relu kinks: every pre-activation is checked to be ≥ 1e-3 away from 0"),
    Case("basic_relu_lengths", _seq_mse("basic(4, activation=relu)", LEN, LEN, N_IN), MSE_LEN_DATA,
         lengths=True),
    # ---- lstm ----
    Case("lstm", _final_xent("lstm(3)"), XENT_DATA),
    Case("lstm_lengths", _final_xent("lstm(3)", LEN, N_IN), XENT_LEN_DATA, lengths=True),
    Case("lstm_fb_peep", _seq_mse("lstm(3, forget_bias=0.5, peepholes=true)", LEN, LEN, N_IN),
         MSE_LEN_DATA, lengths=True),
    Case("lstm_proj", _final_xent("lstm(3, proj=2)", LEN, N_IN), XENT_LEN_DATA, lengths=True),
    Case("lstm_clip", _seq_mse("lstm(3, clip=0.5)"), _d(x=lambda r: _x(r, 2.0),
                                                          y=lambda r: r.normal(size=(B, T, 2))),
         notes="x scaled up so that the cell clip is active"),
    # ---- gru ----
    Case("gru", _final_xent("gru(3)"), XENT_DATA),
    Case("gru_lengths", _seq_xent("gru(3)", LEN, LEN, N_IN), SEQX_LEN_DATA, lengths=True),
    # ---- user-defined cells ----
    Case("mgu", _final_xent("mgu(3)", defs=MGU), XENT_DATA),
    Case("mgu_lengths", _final_xent("mgu(3)", LEN, N_IN, defs=MGU), XENT_LEN_DATA, lengths=True),
    Case("odd", _seq_mse("odd(3)", defs=ODD), MSE_DATA,
         notes="relu/min/max/clip kinks are checked to be ≥ 1e-3 away"),
    Case("odd_lengths", _final_xent("odd(3)", LEN, N_IN, defs=ODD), XENT_LEN_DATA, lengths=True),
    # ---- stacks and wrappers ----
    Case("stack", _final_xent("stack(lstm(3), gru(2))"), XENT_DATA),
    Case("stack_lengths", _seq_mse("stack(gru(3), lstm(2))", LEN, LEN, N_IN), MSE_LEN_DATA,
         lengths=True),
    Case("project", _seq_mse("lstm(3) | project(2)", LEN, LEN, N_IN), MSE_LEN_DATA, lengths=True),
    Case("project_nolen", _seq_mse("gru(3) | project(2)"), MSE_DATA),
    Case("residual", _seq_mse("gru(3) | residual", LEN, LEN, N_IN), MSE_LEN_DATA, lengths=True),
    Case("residual_nolen", _final_xent("basic(3) | residual"), XENT_DATA),
    Case("bi", _final_xent("bi(lstm(2))"), XENT_DATA),
    Case("bi_lengths", _seq_xent("bi(gru(2))", LEN, LEN, N_IN), SEQX_LEN_DATA, lengths=True),
    # ---- losses ----
    Case("mse_weights_batch", _seq_mse("gru(3)", loss_args=", weights=w", extra_inputs=("w: f32[batch]",)),
         _d(x=_x, y=lambda r: r.normal(size=(B, T, 2)), w=lambda r: np.array([0.5, 2.0, 0.0]))),
    Case("mse_weights_bt", _seq_mse("lstm(2)", LEN, ", weights=w", ("w: f32[batch, 4]",) + N_IN),
         _d(x=_x, y=lambda r: r.normal(size=(B, T, 2)), n=_n, w=lambda r: r.uniform(0.1, 2.0, size=(B, T))),
         lengths=True),
    Case("seq_xent_weights", _seq_xent("basic(3)", loss_args=", weights=w", extra_inputs=("w: f32[batch]",)),
         _d(x=_x, y=lambda r: _labels(r, per_step=True), w=lambda r: np.array([1.0, 0.25, 3.0]))),
    # ---- initial states from declared inputs (gradients w.r.t. them too) ----
    Case("basic_initial", _final_xent("basic(3)", ", initial=h0" + LEN, ("h0: f32[batch, 3]",) + N_IN),
         _d(x=_x, y=_labels, n=_n, h0=lambda r: r.normal(size=(B, 3))), wrt=("x", "h0"), lengths=True),
    Case("lstm_initial", _seq_mse("lstm(3)", ", initial=(c0, h0)" + LEN, LEN,
                                  ("c0: f32[batch, 3]", "h0: f32[batch, 3]") + N_IN),
         _d(x=_x, y=lambda r: r.normal(size=(B, T, 2)), n=_n, c0=lambda r: r.normal(size=(B, 3)),
            h0=lambda r: r.normal(size=(B, 3))), wrt=("x", "c0", "h0"), lengths=True),
    Case("lstm_initial_final", _final_xent("lstm(3)", ", initial=(c0, h0)",
                                           ("c0: f32[batch, 3]", "h0: f32[batch, 3]")),
         _d(x=_x, y=_labels, c0=lambda r: r.normal(size=(B, 3)), h0=lambda r: r.normal(size=(B, 3))),
         wrt=("x", "c0", "h0")),
    Case("stack_initial", _final_xent("stack(lstm(3), gru(2))", ", initial=[(c0, h0), h1]" + LEN,
                                      ("c0: f32[batch, 3]", "h0: f32[batch, 3]", "h1: f32[batch, 2]") + N_IN),
         _d(x=_x, y=_labels, n=_n, c0=lambda r: r.normal(size=(B, 3)), h0=lambda r: r.normal(size=(B, 3)),
            h1=lambda r: r.normal(size=(B, 2))), wrt=("x", "c0", "h0", "h1"), lengths=True),
    # ---- a symbolic time dim (only the loop lowering can run it) ----
    Case("sym_basic", _sym("y: i64[batch]", "n: i64[batch]") +
         "cell rnn = basic(3)\nseq, last = rnn(x, lengths=n)\nlogits = dense(last, 3)\n"
         "loss = softmax_cross_entropy(logits, y)\noutput probs = softmax(logits)\n",
         XENT_LEN_DATA, lengths=True, unrolls=("loop",)),
    Case("sym_project_mse", _sym("y: f32[batch, time, 2]", "n: i64[batch]") +
         "cell rnn = lstm(3) | project(2)\nseq, last = rnn(x, lengths=n)\nloss = mse(seq, y, lengths=n)\n"
         "output seq\n", MSE_LEN_DATA, lengths=True, unrolls=("loop",)),
    Case("sym_bi", _sym("y: i64[batch, time]", "n: i64[batch]") +
         "cell rnn = bi(gru(2))\nseq, last = rnn(x, lengths=n)\nlogits = dense(seq, 3)\n"
         "loss = softmax_cross_entropy(logits, y, lengths=n)\noutput probs = softmax(logits)\n",
         SEQX_LEN_DATA, lengths=True, unrolls=("loop",)),
    Case("sym_stack_residual", _sym("y: f32[batch, time, 2]") +
         "cell rnn = stack(gru(3) | residual, lstm(3)) | project(2)\nseq, last = rnn(x)\nloss = mse(seq, y)\n"
         "output seq\n", MSE_DATA, unrolls=("loop",)),
    # ---- more structure ----
    Case("shared_weights", _header("x2: f32[batch, 4, 3]", "y: i64[batch]") +
         "cell rnn = gru(3)\n_, a = rnn(x)\n_, b = rnn(x2)\nlogits = dense(concat(a, b), 3)\n"
         "loss = softmax_cross_entropy(logits, y)\noutput probs = softmax(logits)\n",
         _d(x=_x, x2=_x, y=_labels), wrt=("x", "x2"), notes="one cell applied twice: one set of weights"),
    Case("stack_repeat", _final_xent("stack(3 * lstm(2))"), XENT_DATA),
    Case("bi_final_lengths", _final_xent("bi(lstm(2))", LEN, N_IN), XENT_LEN_DATA, lengths=True),
    Case("lstm_c_and_h", _header("y: i64[batch]", *N_IN) +
         "cell rnn = lstm(3)\n_, last = rnn(x, lengths=n)\nlogits = dense(concat(last.c, last.h), 3)\n"
         "loss = softmax_cross_entropy(logits, y)\noutput probs = softmax(logits)\n",
         XENT_LEN_DATA, lengths=True),
    Case("loss_sum", _header(f"y: f32[batch, {T}, 2]", "y2: f32[batch, 2]") +
         "cell rnn = gru(3)\nseq, last = rnn(x)\npred = dense(seq, 2)\n"
         "loss = mse(pred, y) + 0.5 * mse(dense(last, 2), y2)\noutput pred\n",
         _d(x=_x, y=lambda r: r.normal(size=(B, T, 2)), y2=lambda r: r.normal(size=(B, 2)))),
    Case("wrt_targets_and_weights", _seq_mse("gru(3)", loss_args=", weights=w", extra_inputs=("w: f32[batch, 4]",)),
         _d(x=_x, y=lambda r: r.normal(size=(B, T, 2)), w=lambda r: r.uniform(0.1, 2.0, size=(B, T))),
         wrt=("x", "y", "w")),
    Case("one_step", "model g\ninput x: f32[batch, 1, 3]\ninput n: i64[batch]\ninput y: f32[batch, 1, 2]\n"
         "input c0: f32[batch, 3]\ninput h0: f32[batch, 3]\n"
         "cell rnn = lstm(3) | project(2)\nseq, last = rnn(x, lengths=n, initial=(c0, h0))\n"
         "loss = mse(seq, y, lengths=n)\noutput seq\n",
         _d(x=lambda r: r.normal(size=(B, 1, I)), y=lambda r: r.normal(size=(B, 1, 2)),
            n=lambda r: np.array([0, 1, 1], np.int64), c0=lambda r: r.normal(size=(B, 3)),
            h0=lambda r: r.normal(size=(B, 3))), wrt=("x", "c0", "h0"), lengths=True,
         notes="T = 1: no Concat of steps"),
]
CASE_BY_NAME = {c.name: c for c in CASES}


# --------------------------------------------------------------------------------------
# running a gradient model
# --------------------------------------------------------------------------------------


def _seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def session(proto: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def loss_only(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with only its `loss` output (onnxruntime drops the backward nodes)."""
    fwd = onnx.ModelProto()
    fwd.CopyFrom(proto)
    keep = [o for o in fwd.graph.output if o.name == "loss"]
    del fwd.graph.output[:]
    fwd.graph.output.extend(keep)
    return fwd


@functools.lru_cache(maxsize=None)
def model_of(spec: str):
    return check("t.rnn", text=spec)


@functools.lru_cache(maxsize=None)
def grad_proto(name: str, unroll: str) -> onnx.ModelProto:
    case = CASE_BY_NAME[name]
    return build_grad(model_of(case.spec), unroll=unroll, fdtype="f64", wrt_inputs=case.wrt)


@functools.lru_cache(maxsize=None)
def feeds_of(name: str) -> dict[str, np.ndarray]:
    """Data inputs and random parameters, the same for both lowerings."""
    case = CASE_BY_NAME[name]
    rng = np.random.default_rng(_seed(name, "data"))
    data = case.data(rng)
    proto = grad_proto(name, case.unrolls[0])
    feeds = {}
    prng = np.random.default_rng(_seed(name, "params"))
    for inp in proto.graph.input:
        dims = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
        if inp.name in data:
            feeds[inp.name] = data[inp.name]
        else:
            assert all(d > 0 for d in dims), inp
            feeds[inp.name] = prng.normal(scale=0.5, size=dims)
    for k, v in feeds.items():
        feeds[k] = np.asarray(v, dtype=np.int64 if v.dtype.kind in "iu" else np.float64)
    return feeds


def param_names(name: str) -> list[str]:
    proto = grad_proto(name, CASE_BY_NAME[name].unrolls[0])
    return [o.name[len("grad."):] for o in proto.graph.output if o.name.startswith("grad.")]


@functools.lru_cache(maxsize=None)
def analytic(name: str, unroll: str) -> dict[str, np.ndarray]:
    proto = grad_proto(name, unroll)
    sess = session(proto)
    feeds = feeds_of(name)
    in_names = {i.name for i in sess.get_inputs()}
    outs = sess.run(None, {k: v for k, v in feeds.items() if k in in_names})
    return dict(zip([o.name for o in sess.get_outputs()], outs))


@functools.lru_cache(maxsize=None)
def finite_differences(name: str, unroll: str) -> dict[str, np.ndarray]:
    """Central differences of onnxruntime's forward (the same model's `loss` output)."""
    sess = session(loss_only(grad_proto(name, unroll)))
    in_names = {i.name for i in sess.get_inputs()}
    base = {k: v.copy() for k, v in feeds_of(name).items() if k in in_names}

    def loss(feeds):
        return float(sess.run(["loss"], feeds)[0])

    out = {}
    for p in param_names(name):
        if p not in base:       # a wrt input the loss does not read
            out[p] = np.zeros_like(feeds_of(name)[p])
            continue
        arr = base[p]
        g = np.zeros_like(arr)
        flat, gflat = arr.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + FD_EPS
            fp = loss(base)
            flat[i] = old - FD_EPS
            fm = loss(base)
            flat[i] = old
            gflat[i] = (fp - fm) / (2 * FD_EPS)
        out[p] = g
    return out


def rel_err(got, want) -> float:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got - want)) / max(1e-6, float(np.max(np.abs(want)))))


# --------------------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------------------

NAMES = [c.name for c in CASES]


@pytest.mark.parametrize("name,unroll", [(c.name, u) for c in CASES for u in c.unrolls])
def test_gradient_matches_finite_differences(name, unroll):
    case = CASE_BY_NAME[name]
    got = analytic(name, unroll)
    fd = finite_differences(name, unroll)
    assert np.isfinite(got["loss"]) and got["loss"].shape == ()
    names = param_names(name)
    for w in case.wrt:
        assert w in names, f"grad.{w} missing"
    errors = {p: rel_err(got[f"grad.{p}"], fd[p]) for p in names}
    bad = {p: e for p, e in errors.items() if not e <= FD_TOL}
    assert not bad, f"{name}/{unroll}: analytic vs finite differences, relative errors {bad}"
    # every parameter takes part (random params: no gradient is identically zero)
    for p in names:
        if p not in case.wrt:
            assert np.max(np.abs(fd[p])) > 1e-8, f"{p}: the loss does not depend on it?"


@pytest.mark.parametrize("name", [c.name for c in CASES if len(c.unrolls) == 2])
def test_loop_equals_static(name):
    s, l = analytic(name, "static"), analytic(name, "loop")
    assert set(s) == set(l)
    for k in s:
        np.testing.assert_allclose(l[k], s[k], rtol=0, atol=LOWERING_TOL * max(1.0, np.max(np.abs(s[k]))),
                                   err_msg=f"{name}: {k} loop vs static")


@pytest.mark.parametrize("name,unroll", [(c.name, u) for c in CASES if c.lengths for u in c.unrolls])
def test_padded_steps_get_zero_gradient(name, unroll):
    gx = analytic(name, unroll)["grad.x"]
    n = feeds_of(name)["n"]
    for b in range(B):
        assert np.all(gx[b, n[b]:] == 0.0), f"{name}/{unroll}: grad.x[{b}, {n[b]}:] = {gx[b, n[b]:]}"
        if n[b] > 0:
            assert np.any(gx[b, :n[b]] != 0.0)


def test_zero_length_sequence_passes_initial_state_gradient_straight_through():
    """A sequence of length 0 has final state = initial state: d loss / d h0[b] is the
    gradient of the loss w.r.t. the final state; for the full and partial ones it flows
    through the steps. Either way x of the empty sequence gets nothing."""
    got = analytic("basic_initial", "loop")
    assert np.all(got["grad.x"][0] == 0.0)
    assert np.any(got["grad.h0"][0] != 0.0)


def test_case_preconditions_no_kinks_and_clip_active():
    """The FD checks of the piecewise cases are meaningful: the relu pre-activations stay
    away from 0, and the LSTM clip really clips."""
    from tests.reference import basic_cell, run  # noqa: PLC0415

    for name in ("basic_relu", "basic_relu_lengths"):
        f = feeds_of(name)
        n = f.get("n")
        h = np.zeros((B, 4))
        for t in range(T):
            pre = f["x"][:, t] @ f["rnn.W"] + h @ f["rnn.U"] + f["rnn.b"]
            live = np.ones(B, bool) if n is None else (t < n)
            assert np.min(np.abs(pre[live])) > 1e-3, (name, t)
            h = np.where(live[:, None], np.maximum(pre, 0), h)
        # the reference agrees with our replay
        seq, _ = run(basic_cell(f["rnn.W"], f["rnn.U"], f["rnn.b"], "relu"), f["x"], np.zeros((B, 4)), n)
        assert np.any(seq > 0)

    # lstm clip: replay the reference LSTM; the unclipped c stays away from ±0.5, both sides
    # occur (the clip is active), and the replay gives the model's loss
    from tests.reference import dense, lstm_step, mse  # noqa: PLC0415

    f = feeds_of("lstm_clip")
    W, U, b = f["rnn.W"], f["rnn.U"], f["rnn.b"]
    state, raw, seq = (np.zeros((B, 3)), np.zeros((B, 3))), [], []
    for t in range(T):
        raw.append(np.abs(lstm_step(f["x"][:, t], state, W, U, b)[0]))
        state = lstm_step(f["x"][:, t], state, W, U, b, clip=0.5)
        seq.append(state[1])
    raw = np.concatenate(raw)
    assert np.min(np.abs(raw - 0.5)) > 1e-3
    assert np.any(raw > 0.5) and np.any(raw < 0.5)
    want = mse(dense(np.stack(seq, 1), f["pred.W"], f["pred.b"]), f["y"])
    for unroll in UNROLLS:
        np.testing.assert_allclose(analytic("lstm_clip", unroll)["loss"], want, rtol=1e-12)


def _odd_kinks(name: str) -> dict[str, np.ndarray]:
    """Replay the `odd` cell in numpy; the signed distance of every piecewise op's
    argument from its kink, over the live steps."""
    from tests.reference import softmax  # noqa: PLC0415

    f = feeds_of(name)
    n = f.get("n")
    h = np.zeros((B, 3))
    out: dict[str, list] = {"relu g": [], "clip lo": [], "clip hi": [], "min": [], "max": []}
    for t in range(T):
        live = np.ones(B, bool) if n is None else (t < n)
        pre = f["x"][:, t] @ f["rnn.W"] + h @ f["rnn.U"] + f["rnn.b"]
        a, g = pre[:, :3], pre[:, 3:]
        s = softmax(a)
        e = np.log1p(np.exp(g))
        q = np.clip(e, 0.2, 0.9) / (1 + s)
        z = np.concatenate([s * h, q - np.minimum(h, 0.3) * 0.5], -1)
        h2 = np.tanh(z @ f["rnn.V"] + f["rnn.c"]) - np.maximum(h - 0.1, np.maximum(g, 0)) * 0.25
        for k, v in (("relu g", g), ("clip lo", e - 0.2), ("clip hi", e - 0.9), ("min", h - 0.3),
                     ("max", h - 0.1 - np.maximum(g, 0))):
            out[k].append(v[live].ravel())
        h = np.where(live[:, None], h2, h)
    return {k: np.concatenate(v) for k, v in out.items()}, h


def test_odd_cell_stays_off_its_kinks_and_takes_every_branch():
    both = {}
    for name in ("odd", "odd_lengths"):
        for k, v in _odd_kinks(name)[0].items():
            assert np.min(np.abs(v)) > 1e-3, (name, k)
            both.setdefault(k, []).append(v)
    for k, vs in both.items():      # each side of every kink is exercised by some case
        v = np.concatenate(vs)
        assert np.any(v > 0) and np.any(v < 0), k
    # the replay is the model: its final state gives the model's loss
    from tests.reference import dense, softmax_cross_entropy  # noqa: PLC0415

    f = feeds_of("odd_lengths")
    last = _odd_kinks("odd_lengths")[1]
    want = softmax_cross_entropy(dense(last, f["logits.W"], f["logits.b"]), f["y"])
    for unroll in UNROLLS:
        np.testing.assert_allclose(analytic("odd_lengths", unroll)["loss"], want, rtol=1e-12)


_EMPTY_RUN = r"""
import sys
import numpy as np
import onnxruntime as ort
from rnnc.api import check
from rnnc.training_graph import build_grad

SPEC = '''model z
input x: f32[batch, time, 2]
input y: f32[batch, time, 2]
cell rnn = basic(2)
seq, last = rnn(x)
loss = mse(seq, y)
output seq
'''
B, T = int(sys.argv[1]), int(sys.argv[2])
proto = build_grad(check("z.rnn", text=SPEC), unroll="loop", fdtype="f64", wrt_inputs=("x",))
sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
feeds = {"x": np.zeros((B, T, 2)), "y": np.zeros((B, T, 2)), "rnn.W": np.ones((2, 2)),
         "rnn.U": np.ones((2, 2)), "rnn.b": np.ones(2)}
outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
assert outs["grad.x"].shape == (B, T, 2), outs["grad.x"].shape
assert outs["loss"] == 0, outs["loss"]                       # a mean over no elements is 0
assert all(np.all(v == 0) for k, v in outs.items() if k.startswith("grad.")), outs
print("ok")
"""


@pytest.mark.parametrize("batch,time", [(2, 0), (0, 3)])
def test_loop_gradient_model_survives_empty_input(batch, time, tmp_path):
    """Zero time steps or an empty batch: the gradient model runs, with loss 0 and zero
    gradients shaped like their inputs. (onnxruntime's Scan dies with SIGFPE on zero
    iterations, and its reductions over some axes of an empty tensor return it unreduced;
    rnnc/lower/guard.py wraps both.) Run in a subprocess so that a crash fails this test
    instead of the whole pytest run."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    script = tmp_path / "empty.py"
    script.write_text(_EMPTY_RUN)
    root = __file__.rsplit("/tests/", 1)[0]
    proc = subprocess.run([sys.executable, str(script), str(batch), str(time)], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode} (batch {batch}, time {time})"
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
