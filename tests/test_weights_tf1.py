"""TF1 variable names into rnnc and back (`rnnc weights import/export --layout tf1`).

TensorFlow does not install within CI's limits, so the oracle here is `tests/reference.py`
(written from TF1's rnn_cell_impl.py / rnn.py equations, independently of rnnc): random
tensors under TF1's variable names (`rnn/basic_lstm_cell/kernel` = [x; h] @ kernel, gates
i, j, f, o; `gru_cell/gates` r, u and `gru_cell/candidate`; `lstm_cell/w_f_diag`,
`lstm_cell/projection/kernel`; `multi_rnn_cell/cell_k`; `bidirectional_rnn/fw|bw`) are
imported and the compiled model is compared with the reference run on the same
tensors, with and without lengths. The real-TF1 oracle is tests/test_weights_tf1_real.py
(fixtures made once with tf.compat.v1 by scripts/make_tf1_fixtures.py).
Nothing is folded in TF1's layout: import → export gives back every tensor bit for bit.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from rnnc.api import build_infer, check
from rnnc.errors import SpecError
from rnnc.weights import export_weights, import_params, import_weights

try:
    from tests import reference as R
except ImportError:  # pragma: no cover
    import reference as R

I, T, B = 3, 5, 4
LENGTHS = np.array([5, 2, 0, 4], dtype=np.int64)
TOL = 1e-5
X = np.random.default_rng(21).normal(size=(B, T, I)).astype(np.float32)


def _r(rng, *shape):
    return rng.normal(scale=0.5, size=shape).astype(np.float32)


def basic_tensors(rng, scope, i, h):
    return {f"{scope}/basic_rnn_cell/kernel": _r(rng, i + h, h), f"{scope}/basic_rnn_cell/bias": _r(rng, h)}


def lstm_tensors(rng, scope, i, h, peep=False, proj=None):
    name = "lstm_cell" if peep or proj else "basic_lstm_cell"
    t = {f"{scope}/{name}/kernel": _r(rng, i + (proj or h), 4 * h), f"{scope}/{name}/bias": _r(rng, 4 * h)}
    if peep:
        t |= {f"{scope}/{name}/w_{g}_diag": _r(rng, h) for g in "ifo"}
    if proj:
        t[f"{scope}/{name}/projection/kernel"] = _r(rng, h, proj)
    return t


def gru_tensors(rng, scope, i, h):
    return {f"{scope}/gru_cell/gates/kernel": _r(rng, i + h, 2 * h), f"{scope}/gru_cell/gates/bias": _r(rng, 2 * h),
            f"{scope}/gru_cell/candidate/kernel": _r(rng, i + h, h), f"{scope}/gru_cell/candidate/bias": _r(rng, h)}


# reference steps built from TF1 tensors: [x; h] @ kernel = x @ kernel[:I] + h @ kernel[I:]
def basic_step(t, scope, i, act="tanh"):
    k, b = t[f"{scope}/basic_rnn_cell/kernel"], t[f"{scope}/basic_rnn_cell/bias"]
    return R.basic_cell(k[:i], k[i:], b, act)


def lstm_step(t, scope, i, fb=1.0, peep=False, proj=None, clip=None):
    name = "lstm_cell" if peep or proj else "basic_lstm_cell"
    k, b = t[f"{scope}/{name}/kernel"], t[f"{scope}/{name}/bias"]
    pe = {f"w{g}": t[f"{scope}/{name}/w_{g}_diag"] for g in "ifo"} if peep else {}
    P = t[f"{scope}/{name}/projection/kernel"] if proj else None
    return R.lstm_cell(k[:i], k[i:], b, forget_bias=fb, P=P, clip=clip, **pe)


def gru_step(t, scope, i):
    gk, gb = t[f"{scope}/gru_cell/gates/kernel"], t[f"{scope}/gru_cell/gates/bias"]
    ck, cb = t[f"{scope}/gru_cell/candidate/kernel"], t[f"{scope}/gru_cell/candidate/bias"]
    return R.gru_cell(np.concatenate([gk[:i], ck[:i]], 1), np.concatenate([gk[i:], ck[i:]], 1),
                      np.concatenate([gb, cb]))


def z(*shape):
    return np.zeros(shape, np.float32)


def case_basic(rng, act):
    t = basic_tensors(rng, "rnn", I, 4)
    return t, lambda x, n: R.run(basic_step(t, "rnn", I, act), x, z(B, 4), n)


def case_lstm(rng):
    t = lstm_tensors(rng, "rnn", I, 4)
    return t, lambda x, n: _h(R.run(lstm_step(t, "rnn", I), x, (z(B, 4), z(B, 4)), n))


def case_lstm_full(rng):
    t = lstm_tensors(rng, "rnn", I, 4, peep=True, proj=3)
    return t, lambda x, n: _h(R.run(lstm_step(t, "rnn", I, 0.5, True, 3, 0.8), x, (z(B, 4), z(B, 3)), n))


def case_gru(rng):
    t = gru_tensors(rng, "rnn", I, 4)
    return t, lambda x, n: R.run(gru_step(t, "rnn", I), x, z(B, 4), n)


def case_stack(rng):
    s0, s1 = "rnn/multi_rnn_cell/cell_0", "rnn/multi_rnn_cell/cell_1"
    t = lstm_tensors(rng, s0, I, 4) | gru_tensors(rng, s1, 4, 3)

    def ref(x, n):
        seq, finals = R.stack_run([lstm_step(t, s0, I), gru_step(t, s1, 4)], x, [(z(B, 4), z(B, 4)), z(B, 3)], n)
        return seq, finals[-1]
    return t, ref


def case_bi(rng):
    fw, bw = "bidirectional_rnn/fw", "bidirectional_rnn/bw"
    t = lstm_tensors(rng, fw, I, 3, peep=True) | lstm_tensors(rng, bw, I, 3, peep=True)

    def ref(x, n):
        seq, (f, b) = R.bi_run(lstm_step(t, fw, I, peep=True), lstm_step(t, bw, I, peep=True), x,
                               (z(B, 3), z(B, 3)), (z(B, 3), z(B, 3)), n)
        return seq, np.concatenate([f[1], b[1]], -1)
    return t, ref


def _h(result):
    seq, (_c, h) = result
    return seq, h


CASES = {
    "basic_tanh": ("basic(4)", lambda r: case_basic(r, "tanh"), {}),
    "basic_relu": ("basic(4, activation=relu)", lambda r: case_basic(r, "relu"), {}),
    "basic_lstm": ("lstm(4)", case_lstm, {}),
    "lstm_peep_proj_clip": ("lstm(4, forget_bias=0.5, peepholes=true, proj=3, clip=0.8)", case_lstm_full, {}),
    "gru": ("gru(4)", case_gru, {}),
    "stack": ("stack(lstm(4), gru(3))", case_stack, {}),
    "bi": ("bi(lstm(3, peepholes=true))", case_bi, {"rnn": "bidirectional_rnn"}),
}


def spec_text(cell, lengths):
    return "\n".join([
        "model m", f"input x: f32[batch, {T}, {I}]", "input n: i64[batch]" if lengths else "",
        f"cell rnn = {cell}", f"seq, last = rnn(x{', lengths=n, unroll=loop' if lengths else ''})",
        "pred = dense(seq, 2)", "output seq", "output last", "output pred", ""])


def tensors_of(name):
    """The cell's TF1 tensors and its reference run."""
    return CASES[name][1](np.random.default_rng(sum(map(ord, name))))


def with_dense(t, model):
    """Plus the `pred = dense(seq, 2)` layer's tf.layers.dense tensors."""
    rng = np.random.default_rng(1)
    seq_size = build_infer(model).params["pred.W"].shape[0]
    return dict(t) | {"pred/kernel": _r(rng, seq_size, 2), "pred/bias": _r(rng, 2)}


@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("name", list(CASES))
def test_import_matches_reference(name, lengths, tmp_path):
    model = check("t.rnn", text=spec_text(CASES[name][0], lengths))
    t, ref = tensors_of(name)
    t = with_dense(t, model)
    np.savez(tmp_path / "w.npz", **t)
    params = import_params(model, tmp_path / "w.npz", "tf1", CASES[name][2])
    sess = ort.InferenceSession(build_infer(model, weights=params).onnx.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    n = LENGTHS if lengths else None
    seq, last, pred = sess.run(["seq", "last", "pred"], {"x": X} | ({"n": n} if lengths else {}))
    want_seq, want_last = ref(X, n)
    np.testing.assert_allclose(seq, want_seq, atol=TOL, rtol=0)
    np.testing.assert_allclose(last, want_last, atol=TOL, rtol=0)
    np.testing.assert_allclose(pred, R.dense(want_seq, t["pred/kernel"], t["pred/bias"]), atol=TOL, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_round_trips_bit_for_bit(name, tmp_path):
    spec = tmp_path / "t.rnn"
    spec.write_text(spec_text(CASES[name][0], True))
    t = with_dense(tensors_of(name)[0], check(str(spec)))
    np.savez(tmp_path / "w.npz", **t)
    maps = CASES[name][2]
    import_weights(spec, tmp_path / "w.npz", "tf1", tmp_path / "a", maps)
    e1 = export_weights(tmp_path / "a", "tf1", tmp_path / "e1.npz", maps)
    import_weights(spec, tmp_path / "e1.npz", "tf1", tmp_path / "b", maps)
    e2 = export_weights(tmp_path / "b", "tf1", tmp_path / "e2.npz", maps)
    assert sorted(e1) == sorted(e2) == sorted(t)
    for k in t:
        assert e1[k].tobytes() == e2[k].tobytes() == t[k].tobytes(), k


SIMPLE = "model m\ninput x: f32[batch, 6, 3]\ncell rnn = {}\nseq, last = rnn(x)\noutput seq\n"


def _err(cell, tensors, tmp_path, maps=None):
    np.savez(tmp_path / "w.npz", **tensors)
    with pytest.raises(SpecError) as e:
        import_params(check("t.rnn", text=SIMPLE.format(cell)), tmp_path / "w.npz", "tf1", maps)
    return e.value.report()


def test_errors_are_located_and_name_the_tensor(tmp_path):
    rng = np.random.default_rng(0)
    text = _err("gru(4, reset_after=true)", gru_tensors(rng, "rnn", 3, 4), tmp_path)
    assert "t.rnn:3:12" in text and "reset gate before" in text and "write gru(4)" in text
    text = _err("lstm(4)", lstm_tensors(rng, "rnn", 3, 4, peep=True), tmp_path)
    assert "'rnn/lstm_cell/w_f_diag'" in text and "matches no parameter" in text
    text = _err("lstm(4, peepholes=true)", lstm_tensors(rng, "rnn", 3, 4), tmp_path)
    assert "'rnn/basic_lstm_cell/w_i_diag' is missing" in text and "t.rnn:3:12" in text
    text = _err("stack(2 * basic(4))", basic_tensors(rng, "rnn", 3, 4), tmp_path)
    assert "'rnn/multi_rnn_cell/cell_0/basic_rnn_cell/kernel' is missing" in text


def test_export_refuses_what_the_layout_cannot_express(tmp_path):
    from rnnc.api import compile as compile_

    spec = tmp_path / "t.rnn"
    spec.write_text(SIMPLE.format("gru(4, reset_after=true)"))
    compile_(spec, out=tmp_path / "m")
    with pytest.raises(SpecError, match="reset gate before"):
        export_weights(tmp_path / "m", "tf1", tmp_path / "e.npz")
    assert not (tmp_path / "e.npz").exists()
    spec.write_text(SIMPLE.format("gru(4)"))
    compile_(spec, out=tmp_path / "m2")
    with pytest.raises(SpecError, match="reset_after=true"):
        export_weights(tmp_path / "m2", "torch", tmp_path / "e.npz")
    spec.write_text(SIMPLE.format("lstm(4, clip=1.0)"))
    compile_(spec, out=tmp_path / "m3")
    with pytest.raises(SpecError, match="clip"):
        export_weights(tmp_path / "m3", "keras", tmp_path / "e.npz")
