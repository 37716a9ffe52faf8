"""Numeric tests of compiled inference models: onnxruntime vs the numpy oracle.

Every model is compiled by rnnc (``build_infer``) with *random* weights baked in (so
that zero-initialized vectors and GRU's ones-initialized biases cannot hide a wrong
term), run with onnxruntime on the CPU, and compared with ``tests/reference.py`` — an
independent implementation of the published equations, never rnnc's own cell code.

Parametrized over the lowering (static, loop), the batch size (1, 3) and the presence
of ``lengths=`` (lengths include 0 and the full length).  float64 graphs are compared at
1e-10, float32 graphs at 1e-5.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
import onnxruntime as ort
import pytest

from rnnc.api import build_infer, check

try:
    from tests import reference as R
except ImportError:  # tests/ itself on sys.path (rootdir-less pytest runs)
    import reference as R

T = 5          # time steps of the fixed-length specs
I = 3          # input features
TOL = {"f64": 1e-10, "f32": 1e-5}
NP = {"f64": np.float64, "f32": np.float32}
UNROLLS = ["static", "loop"]

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


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


class Compiled:
    """A built model with random weights baked in, and its onnxruntime session."""

    def __init__(self, spec: str, unroll: str, fdtype: str, scale: float = 0.5):
        model = check("test.rnn", text=spec)
        shapes = {k: v.shape for k, v in build_infer(model, unroll=unroll, fdtype=fdtype).params.items()}
        rng = np.random.default_rng(_seed(spec, "weights"))    # same weights for every lowering
        weights = {k: rng.normal(scale=scale, size=shapes[k]) for k in sorted(shapes)}
        self.built = build_infer(model, unroll=unroll, fdtype=fdtype, weights=weights)
        self.fdtype = fdtype
        self.dtype = NP[fdtype]
        # the weights baked in are the ones given (cast to the graph's float type)
        assert set(self.built.params) == set(weights)
        for k, v in weights.items():
            got = np.asarray(self.built.params[k])
            assert got.dtype == self.dtype, (k, got.dtype)
            np.testing.assert_array_equal(got, v.astype(self.dtype), err_msg=k)
        self.p = {k: np.asarray(v, dtype=self.dtype) for k, v in self.built.params.items()}
        self.sess = ort.InferenceSession(self.built.onnx.SerializeToString(),
                                         providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.sess.get_inputs()]
        self.output_names = [o.name for o in self.sess.get_outputs()]

    def __call__(self, **feeds) -> dict[str, np.ndarray]:
        assert set(feeds) == set(self.input_names), (sorted(feeds), self.input_names)
        outs = self.sess.run(None, feeds)
        return dict(zip(self.output_names, outs))


@functools.lru_cache(maxsize=None)
def compiled(spec: str, unroll: str, fdtype: str) -> Compiled:
    return Compiled(spec, unroll, fdtype)


def close(got, want, fdtype, what=""):
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != reference {want.shape}"
    tol = TOL[fdtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=what)


def lengths_for(batch: int, time: int = T) -> np.ndarray:
    # batch 3: an empty sequence, a full one and a partial one; batch 1: a partial one
    return np.array([0, time, 2] if batch == 3 else [3], dtype=np.int64)


def zeros(batch, n, dtype):
    return np.zeros((batch, n), dtype=dtype)


def lstm_args(p, prefix, forget_bias=1.0, peepholes=False, proj=False, clip=None):
    kw = dict(forget_bias=forget_bias, clip=clip)
    if peepholes:
        kw.update(wi=p[prefix + "wi"], wf=p[prefix + "wf"], wo=p[prefix + "wo"])
    if proj:
        kw["P"] = p[prefix + "P"]
    return R.lstm_cell(p[prefix + "W"], p[prefix + "U"], p[prefix + "b"], **kw)


def lstm_zero_state(batch, units, dtype, proj=None):
    return (zeros(batch, units, dtype), zeros(batch, proj or units, dtype))


# --------------------------------------------------------------------------------------
# the cells: (cell expression, extra output lines, reference)
# reference(p, x, n) -> {output name: array}
# --------------------------------------------------------------------------------------


def _basic(act):
    def ref(p, x, n):
        B = x.shape[0]
        seq, h = R.run(R.basic_cell(p["rnn.W"], p["rnn.U"], p["rnn.b"], act), x,
                       zeros(B, 4, x.dtype), n)
        return {"seq": seq, "last": h}
    return ref


def _lstm(**opts):
    proj = 3 if opts.get("proj") else None

    def ref(p, x, n):
        B = x.shape[0]
        step = lstm_args(p, "rnn.", **opts)
        seq, (c, h) = R.run(step, x, lstm_zero_state(B, 4, x.dtype, proj), n)
        return {"seq": seq, "last": h, "c": c, "h": h}
    return ref


def _gru(p, x, n):
    B = x.shape[0]
    seq, h = R.run(R.gru_cell(p["rnn.W"], p["rnn.U"], p["rnn.b"]), x, zeros(B, 4, x.dtype), n)
    return {"seq": seq, "last": h}


def _mgu(p, x, n):
    B = x.shape[0]
    step = R.mgu_cell(*(p["rnn." + k] for k in ("Wf", "Uf", "Wh", "Uh", "bf", "bh")))
    seq, h = R.run(step, x, zeros(B, 4, x.dtype), n)
    return {"seq": seq, "last": h}


def _stack_lstm_gru(p, x, n):
    B = x.shape[0]
    steps = [lstm_args(p, "rnn.0."), R.gru_cell(p["rnn.1.W"], p["rnn.1.U"], p["rnn.1.b"])]
    s0 = [lstm_zero_state(B, 4, x.dtype), zeros(B, 3, x.dtype)]
    seq, finals = R.stack_run(steps, x, s0, n)
    (c0, h0), h1 = finals
    return {"seq": seq, "last": R.final_tensor(finals), "c0": c0, "h0": h0, "h1": h1}


def _stack_gru_lstm(p, x, n):
    B = x.shape[0]
    steps = [R.gru_cell(p["rnn.0.W"], p["rnn.0.U"], p["rnn.0.b"]), lstm_args(p, "rnn.1.")]
    s0 = [zeros(B, 3, x.dtype), lstm_zero_state(B, 4, x.dtype)]
    seq, finals = R.stack_run(steps, x, s0, n)
    h0, (c1, h1) = finals
    assert R.final_tensor(finals) is h1
    return {"seq": seq, "last": h1, "c": c1, "h": h1, "h0": h0}


def _project(p, x, n):
    B = x.shape[0]
    out, (c, h) = R.run(lstm_args(p, "rnn."), x, lstm_zero_state(B, 4, x.dtype), n)
    seq = R.project(out, p["rnn.project.W"], p["rnn.project.b"], n)
    return {"seq": seq, "last": h, "c": c}


def _residual(p, x, n):
    B = x.shape[0]
    out, h = R.run(R.gru_cell(p["rnn.W"], p["rnn.U"], p["rnn.b"]), x, zeros(B, 3, x.dtype), n)
    return {"seq": R.residual(out, x, n), "last": h}


def _bi(p, x, n):
    B = x.shape[0]
    seq, (ffw, fbw) = R.bi_run(lstm_args(p, "rnn.fw."), lstm_args(p, "rnn.bw."), x,
                               lstm_zero_state(B, 4, x.dtype), lstm_zero_state(B, 4, x.dtype), n)
    last = np.concatenate([R.final_tensor(ffw), R.final_tensor(fbw)], axis=-1)
    return {"seq": seq, "last": last}


def _deep(p, x, n):
    B = x.shape[0]
    steps = [R.basic_cell(p[f"rnn.{k}.W"], p[f"rnn.{k}.U"], p[f"rnn.{k}.b"]) for k in (0, 1)]
    out, finals = R.stack_run(steps, x, [zeros(B, 4, x.dtype)] * 2, n)
    seq = R.project(out, p["rnn.project.W"], p["rnn.project.b"], n)
    return {"seq": seq, "last": R.final_tensor(finals), "h0": finals[0]}


LSTM_OUT = "output c = last.c\noutput h = last.h\n"

CASES = {
    # name: (prelude, cell expression, extra output lines, reference, param names)
    "basic_tanh": ("", "basic(4)", "", _basic("tanh"), {"rnn.W", "rnn.U", "rnn.b"}),
    "basic_relu": ("", "basic(4, activation=relu)", "", _basic("relu"), {"rnn.W", "rnn.U", "rnn.b"}),
    "lstm": ("", "lstm(4)", LSTM_OUT, _lstm(), {"rnn.W", "rnn.U", "rnn.b"}),
    "lstm_forget_bias": ("", "lstm(4, forget_bias=0.5)", LSTM_OUT, _lstm(forget_bias=0.5),
                         {"rnn.W", "rnn.U", "rnn.b"}),
    "lstm_peepholes": ("", "lstm(4, peepholes=true)", LSTM_OUT, _lstm(peepholes=True),
                       {"rnn.W", "rnn.U", "rnn.b", "rnn.wi", "rnn.wf", "rnn.wo"}),
    "lstm_proj": ("", "lstm(4, proj=3)", LSTM_OUT, _lstm(proj=True),
                  {"rnn.W", "rnn.U", "rnn.b", "rnn.P"}),
    "lstm_clip": ("", "lstm(4, clip=0.2)", LSTM_OUT, _lstm(clip=0.2), {"rnn.W", "rnn.U", "rnn.b"}),
    "lstm_all": ("", "lstm(4, forget_bias=0.5, peepholes=true, proj=3, clip=0.2)", LSTM_OUT,
                 _lstm(forget_bias=0.5, peepholes=True, proj=True, clip=0.2),
                 {"rnn.W", "rnn.U", "rnn.b", "rnn.wi", "rnn.wf", "rnn.wo", "rnn.P"}),
    "gru": ("", "gru(4)", "", _gru, {"rnn.W", "rnn.U", "rnn.b"}),
    "mgu": (MGU, "mgu(4)", "", _mgu,
            {"rnn.Wf", "rnn.Uf", "rnn.Wh", "rnn.Uh", "rnn.bf", "rnn.bh"}),
    "stack_lstm_gru": ("", "stack(lstm(4), gru(3))",
                       "output c0 = last[0].c\noutput h0 = last[0].h\noutput h1 = last[1]\n",
                       _stack_lstm_gru,
                       {f"rnn.{k}.{w}" for k in (0, 1) for w in ("W", "U", "b")}),
    "stack_gru_lstm": ("", "stack(gru(3), lstm(4))", LSTM_OUT + "output h0 = last[0]\n",
                       _stack_gru_lstm,
                       {f"rnn.{k}.{w}" for k in (0, 1) for w in ("W", "U", "b")}),
    "project": ("", "lstm(4) | project(2)", "output c = last.c\n", _project,
                {"rnn.W", "rnn.U", "rnn.b", "rnn.project.W", "rnn.project.b"}),
    "residual": ("", "gru(3) | residual", "", _residual, {"rnn.W", "rnn.U", "rnn.b"}),
    "bi_lstm": ("", "bi(lstm(4))", "", _bi,
                {f"rnn.{d}.{w}" for d in ("fw", "bw") for w in ("W", "U", "b")}),
    "stack2_basic_project": ("", "stack(2 * basic(4)) | project(1)", "output h0 = last[0]\n", _deep,
                             {f"rnn.{k}.{w}" for k in (0, 1) for w in ("W", "U", "b")}
                             | {"rnn.project.W", "rnn.project.b"}),
}

F32_CASES = ["basic_tanh", "lstm_all", "gru", "stack_lstm_gru", "bi_lstm"]


def cell_spec(case: str, fdtype: str, with_lengths: bool, time=T) -> str:
    prelude, expr, extra, _, _ = CASES[case]
    lines = [prelude, "model numeric", f"input x: {fdtype}[batch, {time}, {I}]"]
    if with_lengths:
        lines.append("input n: i64[batch]")
    lines.append(f"cell rnn = {expr}")
    lines.append("seq, last = rnn(x, lengths=n)" if with_lengths else "seq, last = rnn(x)")
    lines.append("output seq\noutput last\n" + extra)
    return "\n".join(lines)


PARAMS = ([pytest.param(c, "f64", id=f"{c}-f64") for c in CASES]
          + [pytest.param(c, "f32", id=f"{c}-f32") for c in F32_CASES])


# --------------------------------------------------------------------------------------
# the cells, against the reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("batch", [1, 3], ids=["b1", "b3"])
@pytest.mark.parametrize("unroll", UNROLLS)
@pytest.mark.parametrize("case,fdtype", PARAMS)
def test_cell_matches_reference(case, fdtype, unroll, batch, with_lengths):
    m = compiled(cell_spec(case, fdtype, with_lengths), unroll, fdtype)
    assert m.built.strategies and all(p.startswith("rnn") and s == unroll for p, s in m.built.strategies)
    assert set(m.p) == CASES[case][4]
    rng = np.random.default_rng(_seed(case, batch, with_lengths))
    x = rng.normal(size=(batch, T, I)).astype(m.dtype)
    feeds = {"x": x}
    n = None
    if with_lengths:
        n = lengths_for(batch)
        feeds["n"] = n
    got = m(**feeds)
    want = CASES[case][3](m.p, x, n)
    assert set(got) <= set(want), (sorted(got), sorted(want))
    for name in got:
        assert got[name].dtype == m.dtype, (name, got[name].dtype)
        close(got[name], want[name], fdtype, f"{case}/{unroll}: output '{name}'")
    if n is not None:
        # past each sequence's length, outputs are exactly zero (wrappers included)
        for i, L in enumerate(n):
            assert not np.any(got["seq"][i, L:]), f"output past length {L} of row {i} is not zero"


@pytest.mark.parametrize("unroll", UNROLLS)
@pytest.mark.parametrize("case", ["lstm_all", "bi_lstm", "stack2_basic_project"])
def test_all_lengths_zero(case, unroll):
    """A batch where every sequence is empty: zero outputs, the initial (zero) state."""
    m = compiled(cell_spec(case, "f64", True), unroll, "f64")
    x = np.random.default_rng(7).normal(size=(2, T, I))
    got = m(x=x, n=np.zeros(2, dtype=np.int64))
    for name, v in got.items():
        assert not np.any(v), f"{case}/{unroll}: '{name}' is not zero for empty sequences"


@pytest.mark.parametrize("case", ["lstm_all", "bi_lstm", "stack_lstm_gru", "mgu"])
def test_lowerings_agree(case):
    """static and loop compute the same numbers (same weights baked into both)."""
    ms = {u: compiled(cell_spec(case, "f64", True), u, "f64") for u in UNROLLS}
    x = np.random.default_rng(3).normal(size=(3, T, I))
    n = lengths_for(3)
    a, b = (ms[u](x=x, n=n) for u in UNROLLS)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-12, err_msg=name)


# --------------------------------------------------------------------------------------
# time axis: symbolic time with a loop; auto's choice
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fdtype", ["f32", "f64"])
@pytest.mark.parametrize("case", ["lstm_all", "gru", "bi_lstm"])
def test_symbolic_time_loop_runs_any_length(case, fdtype):
    spec = cell_spec(case, fdtype, True, time="time")
    m = compiled(spec, "loop", fdtype)
    assert m.built.strategies and all(p.startswith("rnn") and s == "loop" for p, s in m.built.strategies)
    ref = CASES[case][3]
    rng = np.random.default_rng(11)
    for steps in (2, 7):
        x = rng.normal(size=(3, steps, I)).astype(m.dtype)
        n = np.array([0, steps, 1], dtype=np.int64)
        got = m(x=x, n=n)
        want = ref(m.p, x, n)
        assert got["seq"].shape[1] == steps
        for name in got:
            close(got[name], want[name], fdtype, f"{case} T={steps}: output '{name}'")


@pytest.mark.parametrize("time,expected", [(1, "static"), (5, "static"), (64, "static"),
                                           (65, "loop"), ("time", "loop")])
def test_auto_strategy(time, expected):
    """Where ONNX's fused operators cannot run (float64 here), auto is static up to 64 fixed
    steps, else a loop; in float32 inference it fuses (tests/test_fused.py)."""
    spec = cell_spec("gru", "f64", False, time=time)
    built = build_infer(check("test.rnn", text=spec), unroll="auto", fdtype="f64")
    assert built.strategies == [("rnn", expected)]
    spec32 = cell_spec("gru", "f32", False, time=time)      # auto fuses only LSTMs (tests/test_fused.py)
    assert build_infer(check("test.rnn", text=spec32), unroll="auto").strategies == [("rnn", expected)]


def test_auto_strategy_runs_correctly_past_64():
    """auto on 65 fixed steps picks the loop, and it computes the reference."""
    spec = cell_spec("gru", "f64", True, time=65)
    m = Compiled(spec, "auto", "f64")
    assert m.built.strategies == [("rnn", "loop")]
    x = np.random.default_rng(5).normal(size=(3, 65, I))
    n = np.array([0, 65, 40], dtype=np.int64)
    got = m(x=x, n=n)
    want = _gru(m.p, x, n)
    for name in got:
        close(got[name], want[name], "f64", name)


# --------------------------------------------------------------------------------------
# initial=
# --------------------------------------------------------------------------------------

INITIAL_LSTM = """model init_lstm
input x: f64[batch, 5, 3]
input n: i64[batch]
input c0: f64[batch, 4]
input h0: f64[batch, 3]
cell rnn = lstm(4, proj=3, peepholes=true)
seq, last = rnn(x, lengths=n, initial=(c0, h0))
output seq
output last
output c = last.c
"""

INITIAL_STACK = """model init_stack
input x: f64[batch, 5, 3]
input n: i64[batch]
input c0: f64[batch, 4]
input h0: f64[batch, 4]
input c1: f64[batch, 2]
input h1: f64[batch, 2]
cell enc = stack(lstm(4), lstm(2))
seq, last = enc(x, lengths=n, initial=[(c0, h0), (c1, h1)])
output seq
output last
output top_c = last.c
output c_0 = last[0].c
output h_0 = last[0].h
"""


@pytest.mark.parametrize("unroll", UNROLLS)
def test_initial_state_lstm(unroll):
    m = compiled(INITIAL_LSTM, unroll, "f64")
    assert set(m.input_names) == {"x", "n", "c0", "h0"}
    rng = np.random.default_rng(21)
    x = rng.normal(size=(3, 5, 3))
    c0, h0 = rng.normal(size=(3, 4)), rng.normal(size=(3, 3))
    n = lengths_for(3)
    got = m(x=x, n=n, c0=c0, h0=h0)
    step = lstm_args(m.p, "rnn.", peepholes=True, proj=True)
    seq, (c, h) = R.run(step, x, (c0, h0), n)
    close(got["seq"], seq, "f64", "seq")
    close(got["last"], h, "f64", "last")
    close(got["c"], c, "f64", "c")
    # a length-0 sequence ends in its initial state
    np.testing.assert_array_equal(got["c"][0], c0[0])
    np.testing.assert_array_equal(got["last"][0], h0[0])


@pytest.mark.parametrize("unroll", UNROLLS)
def test_initial_state_stack(unroll):
    m = compiled(INITIAL_STACK, unroll, "f64")
    assert set(m.input_names) == {"x", "n", "c0", "h0", "c1", "h1"}
    rng = np.random.default_rng(22)
    x = rng.normal(size=(3, 5, 3))
    s = {k: rng.normal(size=(3, 4 if k.endswith("0") else 2)) for k in ("c0", "h0", "c1", "h1")}
    n = lengths_for(3)
    got = m(x=x, n=n, **s)
    steps = [lstm_args(m.p, "enc.0."), lstm_args(m.p, "enc.1.")]
    seq, finals = R.stack_run(steps, x, [(s["c0"], s["h0"]), (s["c1"], s["h1"])], n)
    (fc0, fh0), (fc1, fh1) = finals
    close(got["seq"], seq, "f64", "seq")
    close(got["last"], fh1, "f64", "last")
    close(got["top_c"], fc1, "f64", "top_c")
    close(got["c_0"], fc0, "f64", "c_0")
    close(got["h_0"], fh0, "f64", "h_0")
    np.testing.assert_array_equal(got["last"][0], s["h1"][0])
    np.testing.assert_array_equal(got["c_0"][0], s["c0"][0])


# --------------------------------------------------------------------------------------
# instances and weight sharing (LANGUAGE.md section 1)
# --------------------------------------------------------------------------------------

SHARED = """model shared
input x: f64[batch, 5, 3]
input x2: f64[batch, 4, 3]
cell rnn = gru(4)
a, _ = rnn(x)
b, lb = rnn(x2)
output a
output b
output lb
"""

TEMPLATE = """model template
input x: f64[batch, 5, 3]
cell layer = lstm(4)
cell deep = stack(layer, layer)
seq, last = deep(x)
output seq
output last
"""


@pytest.mark.parametrize("unroll", UNROLLS)
def test_same_cell_applied_twice_shares_weights(unroll):
    m = compiled(SHARED, unroll, "f64")
    assert set(m.p) == {"rnn.W", "rnn.U", "rnn.b"}
    assert set(m.input_names) == {"x", "x2"}
    rng = np.random.default_rng(31)
    x, x2 = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 4, 3))
    got = m(x=x, x2=x2)
    step = R.gru_cell(m.p["rnn.W"], m.p["rnn.U"], m.p["rnn.b"])
    a, _ = R.run(step, x, np.zeros((2, 4)))
    b, lb = R.run(step, x2, np.zeros((2, 4)))
    close(got["a"], a, "f64", "a")
    close(got["b"], b, "f64", "b")
    close(got["lb"], lb, "f64", "lb")
    # same input -> same outputs: the second application really is the same cell
    got2 = m(x=x, x2=x[:, :4])
    np.testing.assert_allclose(got2["b"], got2["a"][:, :4], rtol=0, atol=1e-12)


@pytest.mark.parametrize("unroll", UNROLLS)
def test_template_in_stack_makes_two_instances(unroll):
    m = compiled(TEMPLATE, unroll, "f64")
    assert set(m.p) == {f"deep.{k}.{w}" for k in (0, 1) for w in ("W", "U", "b")}
    assert m.p["deep.0.W"].shape == (3, 16) and m.p["deep.1.W"].shape == (4, 16)
    # two independent sets (the default initializer too gives them different values)
    default = build_infer(check("t.rnn", text=TEMPLATE), unroll=unroll, fdtype="f64").params
    assert not np.array_equal(default["deep.0.U"], default["deep.1.U"])
    x = np.random.default_rng(32).normal(size=(3, 5, 3))
    got = m(x=x)
    steps = [lstm_args(m.p, "deep.0."), lstm_args(m.p, "deep.1.")]
    seq, finals = R.stack_run(steps, x, [lstm_zero_state(3, 4, np.float64)] * 2)
    close(got["seq"], seq, "f64", "seq")
    close(got["last"], R.final_tensor(finals), "f64", "last")


# --------------------------------------------------------------------------------------
# dense / softmax on the final state; inputs of the inference model
# --------------------------------------------------------------------------------------

DENSE = """model dense_head
input x: f64[batch, 5, 3]
input n: i64[batch]
cell rnn = bi(gru(4))
seq, last = rnn(x, lengths=n)
logits = dense(last, 3)
output logits
output probs = softmax(logits)
output per_step = dense(seq, 2)
"""

BOOK_FIG_14_6 = """model digits_rows                       # rows of an 8x8 digit image, one row per step

input x: f32[batch, 8, 8]               # [batch, time, features]
input y: i64[batch]                     # class label

cell rnn = basic(150)                   # tanh by default; basic(150, activation=relu)
seq, last = rnn(x)                      # run over time: outputs [batch, 8, 150], final state
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


@pytest.mark.parametrize("unroll", UNROLLS)
def test_dense_softmax_on_final_state(unroll):
    m = compiled(DENSE, unroll, "f64")
    names = set(m.p)
    assert {"logits.W", "logits.b"} <= names
    dense_seq = sorted(k for k in names if not k.startswith(("rnn.", "logits.")))
    assert len(dense_seq) == 2, names       # the unnamed dense(seq, 2) is its own layer
    W2 = next(m.p[k] for k in dense_seq if m.p[k].ndim == 2)
    b2 = next(m.p[k] for k in dense_seq if m.p[k].ndim == 1)
    x = np.random.default_rng(41).normal(size=(3, 5, 3))
    n = lengths_for(3)
    got = m(x=x, n=n)
    gru = {d: R.gru_cell(m.p[f"rnn.{d}.W"], m.p[f"rnn.{d}.U"], m.p[f"rnn.{d}.b"]) for d in ("fw", "bw")}
    seq, (ffw, fbw) = R.bi_run(gru["fw"], gru["bw"], x, np.zeros((3, 4)), np.zeros((3, 4)), n)
    last = np.concatenate([ffw, fbw], axis=-1)
    logits = R.dense(last, m.p["logits.W"], m.p["logits.b"])
    close(got["logits"], logits, "f64", "logits")
    close(got["probs"], R.softmax(logits), "f64", "probs")
    close(got["per_step"], R.dense(seq, W2, b2), "f64", "per_step")


@pytest.mark.parametrize("unroll", UNROLLS)
def test_book_classifier_inference_takes_only_x(unroll):
    model = check("digits.rnn", text=BOOK_FIG_14_6)
    m = Compiled(BOOK_FIG_14_6, unroll, "f32")
    assert m.input_names == ["x"]                       # y feeds only the loss
    assert m.output_names == ["probs"]
    assert set(m.p) == {"rnn.W", "rnn.U", "rnn.b", "logits.W", "logits.b"}
    assert m.p["logits.W"].shape == (150, 10)
    x = np.random.default_rng(42).normal(size=(4, 8, 8)).astype(np.float32)
    got = m(x=x)["probs"]
    _, h = R.run(R.basic_cell(m.p["rnn.W"], m.p["rnn.U"], m.p["rnn.b"]), x,
                 np.zeros((4, 150), np.float32))
    close(got, R.softmax(R.dense(h, m.p["logits.W"], m.p["logits.b"])), "f32", "probs")
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)
    del model


def test_unused_declared_input_is_not_an_input():
    spec = """model unused
input x: f64[batch, 5, 3]
input n: i64[batch]
input z: f64[batch, 4]
cell rnn = basic(4)
_, last = rnn(x)
output last
"""
    built = build_infer(check("t.rnn", text=spec), unroll="static", fdtype="f64")
    assert [i.name for i in built.onnx.graph.input] == ["x"]
    assert [o.name for o in built.onnx.graph.output] == ["last"]


# --------------------------------------------------------------------------------------
# KNOWN RNNC BUG: the loop lowering on an empty time axis
# --------------------------------------------------------------------------------------

_EMPTY_TIME_SCRIPT = r"""
import numpy as np, onnxruntime as ort
from rnnc.api import build_infer, check
spec = '''model empty_time
input x: f64[batch, time, 3]
input c0: f64[batch, 4]
input h0: f64[batch, 4]
cell rnn = lstm(4)
seq, last = rnn(x, initial=(c0, h0))
output seq
output last
'''
built = build_infer(check("t.rnn", text=spec), unroll="loop", fdtype="f64")
sess = ort.InferenceSession(built.onnx.SerializeToString(), providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
c0, h0 = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
seq, last = sess.run(["seq", "last"], {"x": np.zeros((2, 0, 3)), "c0": c0, "h0": h0})
assert seq.shape == (2, 0, 4), seq.shape
np.testing.assert_array_equal(last, h0)
print("OK")
"""


def test_loop_on_empty_time_axis_returns_initial_state():
    """onnxruntime's Scan dies (SIGFPE) on zero steps; rnnc guards each inference loop with an
    If (rnnc/lower/guard.py). Run in a subprocess so a regression cannot take pytest down."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", _EMPTY_TIME_SCRIPT], cwd=root, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "OK" in r.stdout, (
        f"exit status {r.returncode} (-8 = SIGFPE)\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
