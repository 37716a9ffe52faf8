"""TF1 import against REAL TensorFlow 1 cells (fixtures in tests/fixtures/tf1/).

The fixtures were made once with tf.compat.v1 (graph mode, v1 Session) by
scripts/make_tf1_fixtures.py (the TF version is in each file's `tf_version`): every
variable under the name `tf.compat.v1.global_variables()` gives it, the input, the
lengths, and TF's outputs and final states of `dynamic_rnn` / `bidirectional_dynamic_rnn`.
Here each fixture's variables go through `import_weights` (what `rnnc weights import
--layout tf1` does) into a spec with the matching rnnc cells, and the compiled infer.onnx,
run by onnxruntime on the same input, must give TF's outputs and final states, under
each lowering. TensorFlow itself is not needed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from rnnc.weights import import_weights

FIXTURES = Path(__file__).parent / "fixtures" / "tf1"
TOL = 1e-5

# fixture case -> (rnnc cell, rnnc path -> TF scope maps)
CASES = {
    "basic_tanh": ("basic(4)", {}),
    "basic_lstm": ("lstm(4)", {}),
    "lstm_peep_proj_clip": ("lstm(4, forget_bias=0.5, peepholes=true, proj=3, clip=0.5)", {}),
    "gru": ("gru(4)", {}),
    "stack_lstm_gru": ("stack(lstm(4), gru(4))", {}),
    "bi_lstm": ("bi(lstm(4))", {"rnn": "bidirectional_rnn"}),
}
# TF state path (as stored in the fixture, `state.<path>`) -> rnnc expression on `last`
STATE_EXPR = {"h": "last.h", "c": "last.c", "0.c": "last[0].c", "0.h": "last[0].h", "1.h": "last[1].h"}
FIXTURE_NAMES = [f"{c}{s}" for c in CASES for s in ("", "_full")]


def load(name):
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def spec_text(cell, fx):
    T, I = fx["x"].shape[1:]
    lengths = "lengths" in fx
    states = sorted(k[len("state."):] for k in fx if k.startswith("state."))
    lines = ["model m", f"input x: f32[batch, {T}, {I}]"]
    if lengths:
        lines.append("input n: i64[batch]")
    lines += [f"cell rnn = {cell}", f"seq, last = rnn(x{', lengths=n' if lengths else ''})", "output seq",
              "output last"]
    if states[0].startswith(("fw.", "bw.")):
        # bi: `.c` / `.h` give forward then backward, concatenated
        lines += ["output s_c = last.c", "output s_h = last.h"]
    else:
        lines += [f"output s_{i} = {STATE_EXPR[s]}" for i, s in enumerate(states)]
    return "\n".join(lines) + "\n", states


def expected_states(fx, states):
    if states[0].startswith(("fw.", "bw.")):
        return {"s_c": np.concatenate([fx["state.fw.c"], fx["state.bw.c"]], -1),
                "s_h": np.concatenate([fx["state.fw.h"], fx["state.bw.h"]], -1)}
    return {f"s_{i}": fx[f"state.{s}"] for i, s in enumerate(states)}


def test_fixtures_are_real_tf1():
    names = sorted(p.stem for p in FIXTURES.glob("*.npz"))
    assert names == sorted(FIXTURE_NAMES)
    for name in names:
        fx = load(name)
        assert str(fx["tf_version"]).split(".")[0] in ("1", "2"), name
        assert all("/" in v for v in fx["variables"]), name


@pytest.mark.parametrize("unroll", ["auto", "static", "loop", "fused"])
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_import_matches_real_tf1(name, unroll, tmp_path):
    fx = load(name)
    cell, maps = CASES[name.removesuffix("_full")]
    text, states = spec_text(cell, fx)
    spec = tmp_path / "t.rnn"
    spec.write_text(text)
    # exactly the TF variables, under their TF names: every one must be used
    np.savez(tmp_path / "w.npz", **{str(v): fx[str(v)] for v in fx["variables"]})
    res = import_weights(spec, tmp_path / "w.npz", "tf1", tmp_path / "m", maps, unroll=unroll)
    sess = ort.InferenceSession(str(res.out / "infer.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"x": fx["x"]} | ({"n": fx["lengths"].astype(np.int64)} if "lengths" in fx else {})
    want = {"seq": fx["output"]} | expected_states(fx, states)
    # a final state used as a tensor: the top layer's h (bi: forward then backward)
    want["last"] = want["s_h"] if "s_h" in want else fx[f"state.{'1.h' if '1.h' in states else 'h'}"]
    got = dict(zip(list(want), sess.run(list(want), feeds)))
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=TOL, rtol=0, err_msg=f"{name} [{unroll}] {k}")
