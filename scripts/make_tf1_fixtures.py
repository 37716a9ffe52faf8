"""Make tests/fixtures/tf1/*.npz with REAL TensorFlow 1 cells (tf.compat.v1, graph mode).

The oracle for tests/test_weights_tf1_real.py. Run once, in a venv with TensorFlow (never
the project's venv; the tests themselves do not import tensorflow):

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu tf-keras numpy
    TF_USE_LEGACY_KERAS=1 /tmp/tfenv/bin/python scripts/make_tf1_fixtures.py

Each case builds one TF1 model with `tf.compat.v1.nn.dynamic_rnn` (or
`bidirectional_dynamic_rnn`), sets every variable to fixed seeded random values, runs it
in a v1 Session and writes `<case>.npz` holding:

    <tf name>        every variable, named as tf.compat.v1.global_variables() names it
                     (minus ':0'), e.g. rnn/lstm_cell/kernel
    variables        the list of those names (str array)
    x                input [batch, time, features] f32
    lengths          sequence lengths [batch] i64 (absent in the *_full cases: no lengths)
    output           TF's outputs [batch, time, units] (bi: fw then bw, concatenated)
    state.<path>     TF's final states under rnnc's state paths: h, c, 0.c, 0.h, 1.h,
                     fw.c, fw.h, bw.c, bw.h
    tf_version       tf.__version__
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
v1.disable_eager_execution()
cells = v1.nn.rnn_cell

B, T, I, H = 3, 5, 3, 4
LENGTHS = np.array([5, 2, 0], dtype=np.int64)
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tf1"


def lstm_states(prefix, s):
    return {f"{prefix}c": s.c, f"{prefix}h": s.h}


def case_basic(x, n):
    out, s = v1.nn.dynamic_rnn(cells.BasicRNNCell(H, activation=tf.tanh), x, sequence_length=n, dtype=tf.float32)
    return out, {"h": s}


def case_basic_lstm(x, n):
    out, s = v1.nn.dynamic_rnn(cells.BasicLSTMCell(H, forget_bias=1.0), x, sequence_length=n, dtype=tf.float32)
    return out, lstm_states("", s)


def case_lstm_peep_proj_clip(x, n):
    cell = cells.LSTMCell(H, use_peepholes=True, num_proj=3, cell_clip=0.5, forget_bias=0.5)
    out, s = v1.nn.dynamic_rnn(cell, x, sequence_length=n, dtype=tf.float32)
    return out, lstm_states("", s)


def case_gru(x, n):
    out, s = v1.nn.dynamic_rnn(cells.GRUCell(H), x, sequence_length=n, dtype=tf.float32)
    return out, {"h": s}


def case_stack(x, n):
    cell = cells.MultiRNNCell([cells.LSTMCell(H), cells.GRUCell(H)])
    out, (s0, s1) = v1.nn.dynamic_rnn(cell, x, sequence_length=n, dtype=tf.float32)
    return out, lstm_states("0.", s0) | {"1.h": s1}


def case_bi(x, n):
    (of, ob), (sf, sb) = v1.nn.bidirectional_dynamic_rnn(cells.LSTMCell(H), cells.LSTMCell(H), x,
                                                         sequence_length=n, dtype=tf.float32)
    return tf.concat([of, ob], -1), lstm_states("fw.", sf) | lstm_states("bw.", sb)


CASES = {
    "basic_tanh": case_basic,
    "basic_lstm": case_basic_lstm,
    "lstm_peep_proj_clip": case_lstm_peep_proj_clip,
    "gru": case_gru,
    "stack_lstm_gru": case_stack,
    "bi_lstm": case_bi,
}


def make(name, build, lengths: bool):
    seed = sum(map(ord, name)) + (1000 if lengths else 0)
    rng = np.random.default_rng(seed)
    x_val = rng.normal(size=(B, T, I)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [B, T, I], name="x")
        n = v1.placeholder(tf.int32, [B], name="n") if lengths else None
        out, states = build(x, n)
        variables = v1.global_variables()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            values = {}
            for v in variables:
                val = rng.normal(scale=0.5, size=v.shape.as_list()).astype(np.float32)
                v.load(val, sess)
                values[v.name.removesuffix(":0")] = val
            feed = {x: x_val} | ({n: LENGTHS.astype(np.int32)} if lengths else {})
            got_out, got_states = sess.run((out, states), feed)
            # the values TF ran with are the ones stored
            for v in variables:
                assert np.array_equal(sess.run(v), values[v.name[:-2]]), v.name
    data = dict(values)
    data |= {"variables": np.array(sorted(values)), "x": x_val, "output": got_out.astype(np.float32),
             "tf_version": np.array(tf.__version__)}
    if lengths:
        data["lengths"] = LENGTHS
    data |= {f"state.{k}": v.astype(np.float32) for k, v in got_states.items()}
    fname = OUT / f"{name}{'' if lengths else '_full'}.npz"
    np.savez_compressed(fname, **data)
    print(f"{fname.name}: {len(values)} variables {sorted(values)}; "
          f"states {sorted(got_states)}; {fname.stat().st_size} bytes")
    if name == "lstm_peep_proj_clip":
        # cell_clip must actually bite somewhere for the case to test it
        print(f"  |final c| max = {np.abs(got_states['c']).max():.4f} (clip 0.5)")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"TensorFlow {tf.__version__}, python {sys.version.split()[0]}")
    for name, build in CASES.items():
        for lengths in (True, False):
            make(name, build, lengths)


if __name__ == "__main__":
    main()
