"""The book's variable-length example (Géron, Hands-On Machine Learning, ch. 14,
"Handling Variable Length Input Sequences"): 4 instances, 2 steps, 3 inputs, a basic cell
of 5 units, ``sequence_length = [2, 1, 2, 2]``.

As in TF1's ``dynamic_rnn``: the outputs of instance 1 at step 1 (past its length) are
exactly zero, its final state is its step-0 output, and every other instance's final
state is its step-1 output.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from rnnc.api import build_infer, check

try:
    from tests import reference as R
except ImportError:  # tests/ itself on sys.path (rootdir-less pytest runs)
    import reference as R

SPEC = """model book_lengths
input x: f32[batch, 2, 3]
input seq_length: i64[batch]
cell rnn = basic(5)
outputs, states = rnn(x, lengths=seq_length)
output outputs
output states
"""

X_BATCH = np.array([
    # step 0     step 1
    [[0, 1, 2], [9, 8, 7]],  # instance 0
    [[3, 4, 5], [0, 0, 0]],  # instance 1 (padded with a zero vector)
    [[6, 7, 8], [6, 5, 4]],  # instance 2
    [[9, 0, 1], [3, 2, 1]],  # instance 3
], dtype=np.float32)
SEQ_LENGTH = np.array([2, 1, 2, 2], dtype=np.int64)


def _session(unroll, weights=None):
    built = build_infer(check("book.rnn", text=SPEC), unroll=unroll, fdtype="f32", weights=weights)
    assert built.strategies == [("rnn", unroll)]
    sess = ort.InferenceSession(built.onnx.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["x", "seq_length"]
    return built, sess


def _run(sess, x):
    outputs, states = sess.run(["outputs", "states"], {"x": x, "seq_length": SEQ_LENGTH})
    assert outputs.shape == (4, 2, 5) and states.shape == (4, 5)
    assert outputs.dtype == np.float32 and states.dtype == np.float32
    return outputs, states


def _book_asserts(outputs, states):
    # instance 1 past its length: exactly the zero vector
    np.testing.assert_array_equal(outputs[1, 1], np.zeros(5, np.float32))
    # its final state: the output of its last valid step (step 0)
    np.testing.assert_array_equal(states[1], outputs[1, 0])
    # the others: their step-1 output
    for i in (0, 2, 3):
        np.testing.assert_array_equal(states[i], outputs[i, 1])
    # the valid outputs are real ones (not zeroed by mistake)
    assert np.all(np.abs(outputs[[0, 2, 3], 1]).sum(-1) > 0)
    assert np.abs(outputs[1, 0]).sum() > 0


@pytest.mark.parametrize("random_weights", [False, True], ids=["init", "random"])
@pytest.mark.parametrize("unroll", ["static", "loop"])
def test_book_variable_length(unroll, random_weights):
    weights = None
    if random_weights:
        rng = np.random.default_rng(14)
        weights = {"rnn.W": rng.normal(scale=0.3, size=(3, 5)),
                   "rnn.U": rng.normal(scale=0.5, size=(5, 5)),
                   "rnn.b": rng.normal(scale=0.5, size=(5,))}
    built, sess = _session(unroll, weights)
    outputs, states = _run(sess, X_BATCH)
    _book_asserts(outputs, states)

    p = {k: np.asarray(v, np.float32) for k, v in built.params.items()}
    ref_out, ref_state = R.run(R.basic_cell(p["rnn.W"], p["rnn.U"], p["rnn.b"]), X_BATCH,
                               np.zeros((4, 5), np.float32), SEQ_LENGTH)
    np.testing.assert_allclose(outputs, ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(states, ref_state, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("unroll", ["static", "loop"])
def test_book_padding_content_is_ignored(unroll):
    """What sits in the padded step must not matter: garbage there changes nothing."""
    _, sess = _session(unroll)
    clean = _run(sess, X_BATCH)
    x = X_BATCH.copy()
    x[1, 1] = [100.0, -50.0, 7.0]
    dirty = _run(sess, x)
    _book_asserts(*dirty)
    for a, b in zip(clean, dirty):
        np.testing.assert_array_equal(a, b)
