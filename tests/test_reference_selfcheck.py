"""Self-checks of the numpy oracle in tests/reference.py.

Each check compares the reference with something written in a different form (a second
numpy implementation in another gate order / layout, PyTorch when importable, or values
computed by hand), so a wrong equation in the reference makes a test fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

try:
    from tests import reference as R
except ImportError:  # tests/ itself on sys.path (rootdir-less pytest runs)
    import reference as R

RNG = np.random.default_rng(1234)


def rnd(*shape, scale=0.5, dtype=np.float64):
    return (RNG.standard_normal(shape) * scale).astype(dtype)


def lstm_params(I, H, P=None, dtype=np.float64):
    Rr = P if P is not None else H
    d = dict(W=rnd(I, 4 * H, dtype=dtype), U=rnd(Rr, 4 * H, dtype=dtype),
             b=rnd(4 * H, dtype=dtype))
    if P is not None:
        d["P"] = rnd(H, P, dtype=dtype)
    return d


def lstm_state0(B, H, P=None, dtype=np.float64):
    return (rnd(B, H, dtype=dtype), rnd(B, P if P is not None else H, dtype=dtype))


# ======================================================================================
# A second LSTM, written the ONNX way: gate order i, o, f, c; weights [4H, I] applied
# as W·x per example (column vectors); peepholes P[3H] in order i, o, f; forget_bias
# folded into the forget bias (SEMANTICS.md b1); TF1 cell clip; projection.
# ======================================================================================


def tf_to_onnx_lstm(W, U, b, forget_bias):
    """TF1 blocks (i, j, f, o) along the last axis -> ONNX (i, o, f, c) rows."""
    def blocks(a):
        i, j, f, o = np.split(a, 4, axis=-1)
        return i, j, f, o

    Wi, Wj, Wf, Wo = blocks(W)
    Ui, Uj, Uf, Uo = blocks(U)
    bi, bj, bf, bo = blocks(b)
    Wx = np.concatenate([Wi, Wo, Wf, Wj], axis=1).T      # [4H, I]
    Rh = np.concatenate([Ui, Uo, Uf, Uj], axis=1).T      # [4H, R]
    Bb = np.concatenate([bi, bo, bf + forget_bias, bj])  # [4H]
    return Wx, Rh, Bb


def onnx_style_lstm(x, c0, h0, W, U, b, forget_bias=0.0, wi=None, wf=None, wo=None,
                    P=None, clip=None, lengths=None):
    B, T, _ = x.shape
    H = c0.shape[1]
    Wx, Rh, Bb = tf_to_onnx_lstm(W, U, b, forget_bias)
    zeros = np.zeros(H)
    Pi = zeros if wi is None else wi
    Pf = zeros if wf is None else wf
    Po = zeros if wo is None else wo
    out_dim = H if P is None else P.shape[1]
    Y = np.zeros((B, T, out_dim))
    cs, hs = [], []
    for n in range(B):
        L = T if lengths is None else int(lengths[n])
        C = c0[n].astype(np.float64).copy()
        Hh = h0[n].astype(np.float64).copy()
        for t in range(L):
            g = Wx @ x[n, t] + Rh @ Hh + Bb
            gi, go, gf, gc = g[:H], g[H:2 * H], g[2 * H:3 * H], g[3 * H:]
            i = 1 / (1 + np.exp(-(gi + Pi * C)))
            f = 1 / (1 + np.exp(-(gf + Pf * C)))
            C = f * C + i * np.tanh(gc)
            if clip is not None:
                C = np.minimum(np.maximum(C, -clip), clip)
            o = 1 / (1 + np.exp(-(go + Po * C)))
            Hh = o * np.tanh(C)
            if P is not None:
                Hh = P.T @ Hh
            Y[n, t] = Hh
        cs.append(C)
        hs.append(Hh)
    return Y, (np.stack(cs), np.stack(hs))


@pytest.mark.parametrize("opts", [
    dict(),
    dict(forget_bias=1.0),
    dict(forget_bias=1.0, peep=True),
    dict(forget_bias=0.5, clip=0.4),
    dict(forget_bias=1.0, proj=3),
    dict(forget_bias=1.0, peep=True, proj=3, clip=0.3),
])
def test_lstm_matches_onnx_style_implementation(opts):
    B, T, I, H = 3, 6, 4, 5
    P = opts.get("proj")
    p = lstm_params(I, H, P)
    peep = {}
    if opts.get("peep"):
        peep = dict(wi=rnd(H), wf=rnd(H), wo=rnd(H))
    x = rnd(B, T, I, scale=1.5)
    s0 = lstm_state0(B, H, P)
    lengths = np.array([6, 2, 4])
    fb = opts.get("forget_bias", 0.0)
    step = R.lstm_cell(p["W"], p["U"], p["b"], forget_bias=fb, P=p.get("P"),
                       clip=opts.get("clip"), **peep)
    out, (c, h) = R.run(step, x, s0, lengths)
    Y, (c2, h2) = onnx_style_lstm(x, s0[0], s0[1], p["W"], p["U"], p["b"], fb,
                                  P=p.get("P"), clip=opts.get("clip"),
                                  lengths=lengths, **peep)
    np.testing.assert_allclose(out, Y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c, c2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h, h2, rtol=1e-12, atol=1e-12)
    if opts.get("clip") is not None:
        assert np.max(np.abs(c)) <= opts["clip"] + 1e-15


def test_lstm_clip_actually_binds_and_peephole_uses_new_c():
    # guard against a test set-up where clip/peepholes never matter
    B, I, H = 2, 3, 4
    p = lstm_params(I, H)
    x = rnd(B, I, scale=3.0)
    s0 = (rnd(B, H, scale=3.0), rnd(B, H))
    c_free, _ = R.lstm_step(x, s0, p["W"], p["U"], p["b"])
    assert np.max(np.abs(c_free)) > 0.2
    c_clip, m_clip = R.lstm_step(x, s0, p["W"], p["U"], p["b"], clip=0.2)
    np.testing.assert_allclose(c_clip, np.clip(c_free, -0.2, 0.2))
    # o's peephole on NEW c: by hand
    wo = rnd(H)
    c, m = R.lstm_step(x, s0, p["W"], p["U"], p["b"], forget_bias=0.0, wo=wo)
    z = x @ p["W"] + s0[1] @ p["U"] + p["b"]
    zo = z[:, 3 * H:]
    np.testing.assert_allclose(m, 1 / (1 + np.exp(-(zo + wo * c))) * np.tanh(c), rtol=1e-13)


def test_forget_bias_is_added_every_step():
    B, T, I, H = 2, 5, 3, 4
    p = lstm_params(I, H)
    x = rnd(B, T, I)
    s0 = lstm_state0(B, H)
    o1, s1 = R.run(R.lstm_cell(p["W"], p["U"], p["b"], forget_bias=1.0), x, s0)
    b2 = p["b"].copy()
    b2[2 * H:3 * H] += 1.0       # the f block (TF1 order i, j, f, o)
    o2, s2 = R.run(R.lstm_cell(p["W"], p["U"], b2, forget_bias=0.0), x, s0)
    np.testing.assert_allclose(o1, o2, rtol=1e-13)
    o3, _ = R.run(R.lstm_cell(p["W"], p["U"], p["b"], forget_bias=0.0), x, s0)
    assert np.max(np.abs(o1 - o3)) > 1e-3


# ======================================================================================
# GRU, reset before the matmul, written the TF1 GRUCell way (concat kernels)
# ======================================================================================


def tf1_gru_cell(x, h, W, U, b):
    H = h.shape[1]
    I = x.shape[1]
    Wr, Wz, Wh = np.split(W, 3, axis=1)
    Ur, Uz, Uh = np.split(U, 3, axis=1)
    br, bz, bh = np.split(b, 3)
    gates_kernel = np.concatenate([np.concatenate([Wr, Wz], 1),
                                   np.concatenate([Ur, Uz], 1)], 0)   # [I+H, 2H]
    gates_bias = np.concatenate([br, bz])
    cand_kernel = np.concatenate([Wh, Uh], 0)                         # [I+H, H]
    value = 1 / (1 + np.exp(-(np.concatenate([x, h], 1) @ gates_kernel + gates_bias)))
    r, u = value[:, :H], value[:, H:]
    c = np.tanh(np.concatenate([x, r * h], 1) @ cand_kernel + bh)
    assert gates_kernel.shape == (I + H, 2 * H)
    return u * h + (1 - u) * c


def test_gru_tf1_form():
    B, T, I, H = 3, 5, 4, 6
    W, U, b = rnd(I, 3 * H), rnd(H, 3 * H), rnd(3 * H)
    x = rnd(B, T, I, scale=1.0)
    h0 = rnd(B, H)
    out, hT = R.run(R.gru_cell(W, U, b), x, h0)
    h = h0
    for t in range(T):
        h = tf1_gru_cell(x[:, t], h, W, U, b)
        np.testing.assert_allclose(out[:, t], h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(hT, h, rtol=1e-12)
    # the two reset conventions must really differ
    out2, _ = R.run(R.gru_cell(W, U, b, reset_after=True), x, h0)
    assert np.max(np.abs(out - out2)) > 1e-3


def test_gru_reset_after_by_hand():
    B, I, H = 2, 3, 4
    W, U, b, bU = rnd(I, 3 * H), rnd(H, 3 * H), rnd(3 * H), rnd(3 * H)
    x, h = rnd(B, I), rnd(B, H)
    got = R.gru_step(x, h, W, U, b, reset_after=True, bU=bU)
    sl = [slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H)]
    exp = np.empty((B, H))
    for n in range(B):   # PyTorch's equations, per example, column-vector form
        xi = W.T @ x[n] + b
        hi = U.T @ h[n] + bU
        r = 1 / (1 + np.exp(-(xi[sl[0]] + hi[sl[0]])))
        z = 1 / (1 + np.exp(-(xi[sl[1]] + hi[sl[1]])))
        nn_ = np.tanh(xi[sl[2]] + r * hi[sl[2]])
        exp[n] = (1 - z) * nn_ + z * h[n]
    np.testing.assert_allclose(got, exp, rtol=1e-13)


def test_mgu_elementwise_loop():
    B, I, H = 2, 3, 4
    Wf, Uf, Wh, Uh = rnd(I, H), rnd(H, H), rnd(I, H), rnd(H, H)
    bf, bh = np.ones(H), rnd(H)
    x, h = rnd(B, I), rnd(B, H)
    got = R.mgu_step(x, h, Wf, Uf, Wh, Uh, bf, bh)
    for n in range(B):
        f = [1 / (1 + math.exp(-(sum(x[n, a] * Wf[a, k] for a in range(I))
                                 + sum(h[n, a] * Uf[a, k] for a in range(H)) + bf[k])))
             for k in range(H)]
        for k in range(H):
            g = math.tanh(sum(x[n, a] * Wh[a, k] for a in range(I))
                          + sum(f[a] * h[n, a] * Uh[a, k] for a in range(H)) + bh[k])
            assert abs(got[n, k] - ((1 - f[k]) * h[n, k] + f[k] * g)) < 1e-13


def test_basic_step_by_hand():
    x = np.array([[1.0, -2.0]])
    h = np.array([[0.5, 0.25, -1.0]])
    W = np.arange(6.0).reshape(2, 3) / 10
    U = np.eye(3)
    b = np.array([0.1, -2.0, 0.3])
    pre = x @ W + h @ U + b
    np.testing.assert_allclose(R.basic_step(x, h, W, U, b), np.tanh(pre))
    np.testing.assert_allclose(R.basic_step(x, h, W, U, b, "relu"), np.maximum(pre, 0))
    assert (pre < 0).any() and (pre > 0).any()


# ======================================================================================
# lengths, reverse, stacks
# ======================================================================================

BOOK_X = np.array([
    [[0, 1, 2], [9, 8, 7]],   # instance 0
    [[3, 4, 5], [0, 0, 0]],   # instance 1 (padded with a zero vector)
    [[6, 7, 8], [6, 5, 4]],   # instance 2
    [[9, 0, 1], [3, 2, 1]],   # instance 3
], dtype=np.float64)
BOOK_LEN = np.array([2, 1, 2, 2])


@pytest.mark.parametrize("kind", ["basic", "lstm", "gru"])
def test_book_lengths_example(kind):
    I, H = 3, 5
    if kind == "basic":
        step = R.basic_cell(rnd(I, H, scale=0.3), rnd(H, H, scale=0.3), rnd(H))
        s0 = np.zeros((4, H))
    elif kind == "lstm":
        p = lstm_params(I, H)
        step = R.lstm_cell(p["W"] * 0.3, p["U"], p["b"])
        s0 = (np.zeros((4, H)), np.zeros((4, H)))
    else:
        step = R.gru_cell(rnd(I, 3 * H, scale=0.3), rnd(H, 3 * H), rnd(3 * H))
        s0 = np.zeros((4, H))
    out, final = R.run(step, BOOK_X, s0, BOOK_LEN)
    h_final = R.final_tensor(final)
    assert out.shape == (4, 2, H)
    np.testing.assert_array_equal(out[1, 1], np.zeros(H))          # zero vector
    np.testing.assert_array_equal(h_final[1], out[1, 0])          # step-0 state
    for n in (0, 2, 3):
        np.testing.assert_array_equal(h_final[n], out[n, 1])
        assert np.all(out[n, 1] != 0)
    # instance 1 alone, unpadded, gives the same numbers
    o1, f1 = R.run(step, BOOK_X[1:2, :1], R._tree_map(lambda a: a[1:2], s0))
    np.testing.assert_allclose(out[1:2, :1], o1, rtol=1e-14)
    np.testing.assert_allclose(R.final_tensor(f1), h_final[1:2], rtol=1e-14)
    if kind == "lstm":
        # the c part is copied through too
        c_only, _ = R.lstm_step(BOOK_X[:, 0], s0, p["W"] * 0.3, p["U"], p["b"])
        np.testing.assert_allclose(final[0][1], c_only[1], rtol=1e-14)
    # without lengths, instance 1's step 1 is computed (and nonzero)
    out_nolen, _ = R.run(step, BOOK_X, s0)
    assert np.any(out_nolen[1, 1] != 0)


def test_length_zero_keeps_initial_state():
    B, T, I, H = 3, 4, 2, 3
    p = lstm_params(I, H)
    x = rnd(B, T, I)
    s0 = lstm_state0(B, H)
    out, (c, h) = R.run(R.lstm_cell(**p), x, s0, lengths=[0, 4, 0])
    np.testing.assert_array_equal(out[0], 0)
    np.testing.assert_array_equal(out[2], 0)
    np.testing.assert_array_equal(c[[0, 2]], s0[0][[0, 2]])
    np.testing.assert_array_equal(h[[0, 2]], s0[1][[0, 2]])
    out_r, (cr, hr) = R.run(R.lstm_cell(**p), x, s0, lengths=[0, 4, 0], reverse=True)
    np.testing.assert_array_equal(out_r[0], 0)
    np.testing.assert_array_equal(hr[0], s0[1][0])


def test_reverse_sequence_explicit():
    x = np.arange(2 * 4).reshape(2, 4, 1).astype(float)
    got = R.reverse_sequence(x, [3, 0])
    np.testing.assert_array_equal(got[0, :, 0], [2, 1, 0, 3])
    np.testing.assert_array_equal(got[1, :, 0], [4, 5, 6, 7])


def test_reverse_within_length():
    B, T, I, H = 4, 5, 3, 4
    W, U, b = rnd(I, 3 * H), rnd(H, 3 * H), rnd(3 * H)
    step = R.gru_cell(W, U, b)
    x = rnd(B, T, I)
    h0 = rnd(B, H)
    lengths = np.array([3, 0, 5, 1])
    out, hT = R.run(step, x, h0, lengths, reverse=True)
    for n in range(B):
        L = lengths[n]
        exp = np.zeros((T, H))
        h = h0[n:n + 1]
        for t in reversed(range(L)):        # walk the valid prefix backwards
            h = R.gru_step(x[n:n + 1, t], h, W, U, b)
            exp[t] = h[0]
        np.testing.assert_allclose(out[n], exp, rtol=1e-13, atol=0)
        np.testing.assert_allclose(hT[n], h[0], rtol=1e-13)


def test_stack_run_equals_stacked_step():
    B, T, I, H1, H2 = 3, 4, 3, 5, 2
    p1 = lstm_params(I, H1)
    W2, U2, b2 = rnd(H1, 3 * H2), rnd(H2, 3 * H2), rnd(3 * H2)
    steps = [R.lstm_cell(**p1), R.gru_cell(W2, U2, b2)]
    s0 = [lstm_state0(B, H1), rnd(B, H2)]
    x = rnd(B, T, I)
    lengths = [4, 1, 3]
    top, finals = R.stack_run(steps, x, s0, lengths)

    def multi(xt, states):          # TF1 MultiRNNCell: one step through every layer
        new = []
        for st, s in zip(steps, states):
            xt, s2 = st(xt, s)
            new.append(s2)
        return xt, new

    top2, finals2 = R.run(multi, x, s0, lengths)
    np.testing.assert_allclose(top, top2, rtol=1e-14)
    np.testing.assert_allclose(finals[0][0], finals2[0][0], rtol=1e-14)
    np.testing.assert_allclose(finals[0][1], finals2[0][1], rtol=1e-14)
    np.testing.assert_allclose(finals[1], finals2[1], rtol=1e-14)
    np.testing.assert_array_equal(R.final_tensor(finals), finals[1])


def test_bi_project_residual():
    B, T, I, H = 3, 4, 2, 3
    x = rnd(B, T, I)
    lengths = [4, 2, 0]
    fw = R.basic_cell(rnd(I, H), rnd(H, H), rnd(H))
    bw = R.basic_cell(rnd(I, H), rnd(H, H), rnd(H))
    s0 = np.zeros((B, H))
    out, (ff, fb) = R.bi_run(fw, bw, x, s0, s0, lengths)
    of, _ = R.run(fw, x, s0, lengths)
    ob, _ = R.run(bw, x, s0, lengths, reverse=True)
    np.testing.assert_array_equal(out, np.concatenate([of, ob], -1))
    Wp, bp = rnd(2 * H, 2), rnd(2)
    pr = R.project(out, Wp, bp, lengths)
    np.testing.assert_allclose(pr[0], out[0] @ Wp + bp)
    np.testing.assert_array_equal(pr[1, 2:], 0)
    np.testing.assert_array_equal(pr[2], 0)
    assert np.all(pr[1, :2] != 0)
    rs = R.residual(pr, x, lengths)
    np.testing.assert_allclose(rs[1, :2], pr[1, :2] + x[1, :2])
    np.testing.assert_array_equal(rs[1, 2:], 0)


def test_float32_in_float32_out():
    B, T, I, H = 2, 3, 4, 5
    f32 = np.float32
    p = lstm_params(I, H, P=2, dtype=f32)
    x = rnd(B, T, I, dtype=f32)
    s0 = lstm_state0(B, H, P=2, dtype=f32)
    out, (c, h) = R.run(R.lstm_cell(**p, wi=rnd(H, dtype=f32), clip=0.5), x, s0, [3, 1])
    assert out.dtype == f32 and c.dtype == f32 and h.dtype == f32
    W, U, b = rnd(I, 3 * H, dtype=f32), rnd(H, 3 * H, dtype=f32), rnd(3 * H, dtype=f32)
    out, h = R.run(R.gru_cell(W, U, b, reset_after=True, bU=b), x,
                   np.zeros((B, H), f32), reverse=True)
    assert out.dtype == f32 and h.dtype == f32
    out, _ = R.run(R.basic_cell(rnd(I, H, dtype=f32), rnd(H, H, dtype=f32),
                                rnd(H, dtype=f32), "relu"), x, np.zeros((B, H), f32))
    assert out.dtype == f32
    logits = rnd(B, T, 3, dtype=f32)
    assert R.softmax_cross_entropy(logits, np.zeros((B, T), int), [3, 1]).dtype == f32
    assert R.mse(out, np.zeros_like(out), [3, 1]).dtype == f32
    assert R.sigmoid(np.float32(-100.0)).dtype == f32


# ======================================================================================
# losses and metrics
# ======================================================================================


def test_softmax_cross_entropy_direct_formula():
    logits = rnd(5, 4, scale=2.0)
    labels = np.array([0, 3, 1, 1, 2])
    direct = np.mean([-math.log(math.exp(logits[n, labels[n]])
                                / sum(math.exp(v) for v in logits[n])) for n in range(5)])
    assert abs(float(R.softmax_cross_entropy(logits, labels)) - direct) < 1e-13
    w = np.array([1.0, 0.0, 2.0, 1.0, 0.5])
    per = [-math.log(math.exp(logits[n, labels[n]])
                     / sum(math.exp(v) for v in logits[n])) for n in range(5)]
    exp = sum(w[n] * per[n] for n in range(5)) / w.sum()
    assert abs(float(R.softmax_cross_entropy(logits, labels, weights=w)) - exp) < 1e-13
    # stable with huge logits
    big = np.array([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 999.0]])
    v = float(R.softmax_cross_entropy(big, np.array([0, 2])))
    assert abs(v - (0.0 + math.log1p(math.exp(1.0))) / 2) < 1e-12
    np.testing.assert_allclose(R.softmax(big).sum(-1), 1.0)


def test_sequence_losses_with_lengths():
    B, T, C = 3, 4, 5
    logits = rnd(B, T, C, scale=2.0)
    labels = RNG.integers(0, C, size=(B, T))
    lengths = [4, 1, 2]
    num = den = 0.0
    for n in range(B):
        for t in range(lengths[n]):
            z = logits[n, t]
            num += -(z[labels[n, t]] - math.log(sum(math.exp(v) for v in z)))
            den += 1
    assert abs(float(R.softmax_cross_entropy(logits, labels, lengths)) - num / den) < 1e-13
    wt = np.array([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]], float)
    assert abs(float(R.softmax_cross_entropy(logits, labels, weights=wt)) - num / den) < 1e-13

    pred, tgt = rnd(B, T, 2), rnd(B, T, 2)
    num = den = 0.0
    for n in range(B):
        for t in range(lengths[n]):
            num += ((pred[n, t] - tgt[n, t]) ** 2).mean()
            den += 1
    assert abs(float(R.mse(pred, tgt, lengths)) - num / den) < 1e-13
    assert abs(float(R.mse(pred, tgt)) - ((pred - tgt) ** 2).mean()) < 1e-13
    # per-batch weights on rank 3 broadcast over time
    wb = np.array([2.0, 0.0, 1.0])
    per = ((pred - tgt) ** 2).mean(-1)
    exp = (per * wb[:, None]).sum() / (wb.sum() * T)
    assert abs(float(R.mse(pred, tgt, weights=wb)) - exp) < 1e-13
    # rank 2: per row
    p2, t2 = rnd(3, 2), rnd(3, 2)
    exp = (((p2 - t2) ** 2).mean(-1) * wb).sum() / wb.sum()
    assert abs(float(R.mse(p2, t2, weights=wb)) - exp) < 1e-13

    acc_logits = np.zeros((B, T, C))
    acc_labels = np.zeros((B, T), int)
    acc_logits[..., 0] = 1.0
    acc_labels[0, 3] = 2       # wrong, counts
    acc_labels[1, 3] = 2       # wrong, padded: does not count
    assert R.accuracy(acc_logits, acc_labels, lengths) == pytest.approx(6 / 7)
    assert R.accuracy(acc_logits, acc_labels) == pytest.approx(10 / 12)


# ======================================================================================
# optimizers, schedules, numeric_grad, tbptt
# ======================================================================================


def test_adam_first_step_by_hand():
    p = {"w": np.array([1.0, -2.0, 0.5]), "b": np.array([[0.0]])}
    g = {"w": np.array([0.3, -4.0, 1e-3]), "b": np.array([[-2.0]])}
    lr = 0.01
    newp, st = R.adam(p, g, {}, lr)
    for k in p:  # m̂ = g, v̂ = g² on the first step
        np.testing.assert_allclose(newp[k], p[k] - lr * g[k] / (np.abs(g[k]) + 1e-8),
                                   rtol=1e-14)
    assert st["step"] == 1
    # second step by hand
    g2 = {"w": np.array([0.1, 0.2, -0.3]), "b": np.array([[1.0]])}
    newp2, st2 = R.adam(newp, g2, st, lr)
    for k in p:
        m = 0.9 * 0.1 * g[k] + 0.1 * g2[k]
        v = 0.999 * 0.001 * g[k] ** 2 + 0.001 * g2[k] ** 2
        mh, vh = m / (1 - 0.9 ** 2), v / (1 - 0.999 ** 2)
        np.testing.assert_allclose(newp2[k], newp[k] - lr * mh / (np.sqrt(vh) + 1e-8),
                                   rtol=1e-12)
    # AdamW first step: decay first, then the same step
    wp, _ = R.adamw(p, g, None, lr, weight_decay=0.1)
    for k in p:
        np.testing.assert_allclose(
            wp[k], p[k] * (1 - lr * 0.1) - lr * g[k] / (np.abs(g[k]) + 1e-8), rtol=1e-14)


def test_sgd_momentum_by_hand():
    p = {"w": np.array([1.0, 2.0])}
    g1 = {"w": np.array([0.5, -1.0])}
    g2 = {"w": np.array([1.0, 1.0])}
    p1, s1 = R.sgd(p, g1, {}, 0.1, momentum=0.9)
    np.testing.assert_allclose(p1["w"], [0.95, 2.1])        # first step buf = g
    p2, s2 = R.sgd(p1, g2, s1, 0.1, momentum=0.9)
    np.testing.assert_allclose(p2["w"], [0.95 - 0.1 * 1.45, 2.1 - 0.1 * 0.1])
    p3, s3 = R.sgd(p, g1, None, 0.1)
    np.testing.assert_allclose(p3["w"], [0.95, 2.1])
    assert s3 == {}


def test_clip_by_global_norm():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}   # norm 5
    c, n = R.clip_by_global_norm(g, 2.5)
    assert n == pytest.approx(5.0)
    np.testing.assert_allclose(c["a"], [1.5, 0.0])
    np.testing.assert_allclose(c["b"], [[2.0]])
    c, n = R.clip_by_global_norm(g, 10.0)
    np.testing.assert_allclose(c["a"], g["a"])
    np.testing.assert_allclose(c["b"], g["b"])


def test_schedules():
    assert R.exponential(0.1, 0.5, 10, 0) == pytest.approx(0.1)
    assert R.exponential(0.1, 0.5, 10, 5) == pytest.approx(0.1 * 0.5 ** 0.5)
    assert R.exponential(0.1, 0.5, 10, 20) == pytest.approx(0.025)
    assert R.exponential(0.1, 0.5, 10, 15, staircase=True) == pytest.approx(0.05)
    assert R.step_schedule(0.1, 10, 0.5, 9) == pytest.approx(0.1)
    assert R.step_schedule(0.1, 10, 0.5, 10) == pytest.approx(0.05)
    assert R.step_schedule(0.1, 10, 0.5, 25) == pytest.approx(0.025)
    assert R.cosine(0.1, 100, step=0) == pytest.approx(0.1)
    assert R.cosine(0.1, 100, 0.01, 50) == pytest.approx(0.055)
    assert R.cosine(0.1, 100, 0.01, 100) == pytest.approx(0.01)
    assert R.cosine(0.1, 100, 0.01, 500) == pytest.approx(0.01)
    assert R.cosine(0.1, 100, 0.01, 150) == pytest.approx(0.01)   # held after total
    assert R.cosine(0.1, 100, step=25) == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)) / 2)


def test_numeric_grad_vs_analytic():
    a, b = rnd(3, 2), rnd(2)

    def f(p):
        return float(np.sum(p["a"] ** 2 @ p["b"]) + np.sin(p["b"]).sum())

    g = R.numeric_grad(f, {"a": a, "b": b})
    np.testing.assert_allclose(g["a"], 2 * a * b[None, :], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g["b"], (a ** 2).sum(0) + np.cos(b), rtol=1e-6, atol=1e-8)
    # params are not modified
    assert g["a"].shape == a.shape


def test_numeric_grad_of_a_sequence_loss():
    # d loss / d b for a 1-unit basic cell, T=2, compared with a hand-derived gradient
    x = np.array([[[0.5], [-1.0]]])
    y = np.array([[[0.2], [0.1]]])

    def loss(p):
        out, _ = R.run(R.basic_cell(p["W"], p["U"], p["b"]), x, np.zeros((1, 1)))
        return float(R.mse(out, y))

    p = {"W": np.array([[0.7]]), "U": np.array([[0.4]]), "b": np.array([0.1])}
    g = R.numeric_grad(loss, p)
    W, U, b = 0.7, 0.4, 0.1
    h1 = math.tanh(0.5 * W + b)
    h2 = math.tanh(-1.0 * W + U * h1 + b)
    dh2 = (h2 - 0.1)            # d/dh2 of ((h1-.2)^2 + (h2-.1)^2)/2
    dh1 = (h1 - 0.2) + dh2 * (1 - h2 ** 2) * U
    db = dh2 * (1 - h2 ** 2) + dh1 * (1 - h1 ** 2)
    assert g["b"][0] == pytest.approx(db, rel=1e-6)


def test_tbptt_windows():
    assert R.tbptt_windows(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert R.tbptt_windows(8, 4) == [(0, 4), (4, 8)]
    assert R.tbptt_windows(3, 35) == [(0, 3)]
    assert R.tbptt_windows(0, 5) == []


def test_tbptt_windows_carry_state_equals_full_run():
    B, T, I, H = 2, 10, 3, 4
    p = lstm_params(I, H)
    step = R.lstm_cell(**p)
    x = rnd(B, T, I)
    s0 = lstm_state0(B, H)
    lengths = np.array([10, 6])
    full, fs = R.run(step, x, s0, lengths)
    s = s0
    parts = []
    for a, e in R.tbptt_windows(T, 4):
        o, s = R.run(step, x[:, a:e], s, np.clip(lengths - a, 0, e - a))
        parts.append(o)
    np.testing.assert_allclose(np.concatenate(parts, 1), full, rtol=1e-14)
    np.testing.assert_allclose(s[1], fs[1], rtol=1e-14)


# ======================================================================================
# PyTorch, on permuted weights
# ======================================================================================


def _torch():
    return pytest.importorskip(
        "torch", reason="torch not installed: PyTorch cross-checks of the reference skipped")


def _pack_run(torch, mod, x, h0, lengths):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    xt = torch.from_numpy(x)
    packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=True,
                                  enforce_sorted=False)
    with torch.no_grad():
        out, hn = mod(packed, h0)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out.numpy(), hn


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_basic_vs_torch_rnn(act):
    torch = _torch()
    B, T, I, H = 3, 5, 4, 6
    W, U, b = rnd(I, H), rnd(H, H), rnd(H)
    x, h0 = rnd(B, T, I), rnd(B, H)
    lengths = [5, 2, 3]
    m = torch.nn.RNN(I, H, nonlinearity=act, batch_first=True).double()
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(W.T))
        m.weight_hh_l0.copy_(torch.from_numpy(U.T))
        m.bias_ih_l0.copy_(torch.from_numpy(b))
        m.bias_hh_l0.zero_()
    out_t, hn = _pack_run(torch, m, x, torch.from_numpy(h0)[None], lengths)
    out, hT = R.run(R.basic_cell(W, U, b, act), x, h0, lengths)
    np.testing.assert_allclose(out, out_t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hT, hn[0].numpy(), rtol=1e-10, atol=1e-12)


def _lstm_to_torch(torch, m, W, U, b, forget_bias, P=None, suffix="_l0"):
    def ifgo(a):                         # TF1 (i, j, f, o) -> PyTorch (i, f, g, o)
        i, j, f, o = np.split(a, 4, axis=-1)
        return np.concatenate([i, f, j, o], axis=-1)

    bb = b.copy()
    H = b.shape[0] // 4
    bb[2 * H:3 * H] += forget_bias
    with torch.no_grad():
        getattr(m, "weight_ih" + suffix).copy_(torch.from_numpy(ifgo(W).T.copy()))
        getattr(m, "weight_hh" + suffix).copy_(torch.from_numpy(ifgo(U).T.copy()))
        getattr(m, "bias_ih" + suffix).copy_(torch.from_numpy(ifgo(bb)))
        getattr(m, "bias_hh" + suffix).zero_()
        if P is not None:
            getattr(m, "weight_hr" + suffix).copy_(torch.from_numpy(P.T.copy()))


@pytest.mark.parametrize("proj", [None, 3])
def test_lstm_vs_torch(proj):
    torch = _torch()
    B, T, I, H = 4, 6, 3, 5
    p = lstm_params(I, H, proj)
    x = rnd(B, T, I, scale=1.5)
    c0, h0 = lstm_state0(B, H, proj)
    lengths = [6, 1, 3, 4]
    m = torch.nn.LSTM(I, H, batch_first=True, proj_size=proj or 0).double()
    _lstm_to_torch(torch, m, p["W"], p["U"], p["b"], 1.0, p.get("P"))
    out_t, (hn, cn) = _pack_run(torch, m, x, (torch.from_numpy(h0)[None],
                                              torch.from_numpy(c0)[None]), lengths)
    out, (c, h) = R.run(R.lstm_cell(**p, forget_bias=1.0), x, (c0, h0), lengths)
    np.testing.assert_allclose(out, out_t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h, hn[0].numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c, cn[0].numpy(), rtol=1e-10, atol=1e-12)


def test_gru_reset_after_vs_torch():
    torch = _torch()
    B, T, I, H = 3, 5, 4, 6
    W, U, b, bU = rnd(I, 3 * H), rnd(H, 3 * H), rnd(3 * H), rnd(3 * H)
    x, h0 = rnd(B, T, I), rnd(B, H)
    lengths = [2, 5, 4]
    m = torch.nn.GRU(I, H, batch_first=True).double()   # PyTorch order r, z, n = ours
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(W.T.copy()))
        m.weight_hh_l0.copy_(torch.from_numpy(U.T.copy()))
        m.bias_ih_l0.copy_(torch.from_numpy(b))
        m.bias_hh_l0.copy_(torch.from_numpy(bU))
    out_t, hn = _pack_run(torch, m, x, torch.from_numpy(h0)[None], lengths)
    out, hT = R.run(R.gru_cell(W, U, b, reset_after=True, bU=bU), x, h0, lengths)
    np.testing.assert_allclose(out, out_t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hT, hn[0].numpy(), rtol=1e-10, atol=1e-12)


def test_bidirectional_lstm_vs_torch():
    torch = _torch()
    B, T, I, H = 3, 5, 2, 4
    pf, pb = lstm_params(I, H), lstm_params(I, H)
    x = rnd(B, T, I)
    z = np.zeros((B, H))
    lengths = [5, 2, 3]
    m = torch.nn.LSTM(I, H, batch_first=True, bidirectional=True).double()
    _lstm_to_torch(torch, m, pf["W"], pf["U"], pf["b"], 0.0)
    _lstm_to_torch(torch, m, pb["W"], pb["U"], pb["b"], 0.0, suffix="_l0_reverse")
    out_t, (hn, cn) = _pack_run(torch, m, x, None, lengths)
    out, (ff, fb) = R.bi_run(R.lstm_cell(**pf, forget_bias=0.0),
                             R.lstm_cell(**pb, forget_bias=0.0), x, (z, z), (z, z), lengths)
    np.testing.assert_allclose(out, out_t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ff[1], hn[0].numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fb[1], hn[1].numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fb[0], cn[1].numpy(), rtol=1e-10, atol=1e-12)


def test_optimizers_vs_torch():
    torch = _torch()
    shapes = {"w": (3, 2), "b": (2,)}
    p0 = {k: rnd(*s) for k, s in shapes.items()}
    grads = [{k: rnd(*s, scale=2.0) for k, s in shapes.items()} for _ in range(5)]
    cases = [
        ("sgd", dict(lr=0.1, momentum=0.0), lambda ps: torch.optim.SGD(ps, lr=0.1)),
        ("sgd", dict(lr=0.1, momentum=0.9),
         lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
        ("adam", dict(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6),
         lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
        ("adamw", dict(lr=0.01, weight_decay=0.05),
         lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.05)),
    ]
    for name, kw, make in cases:
        tp = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in p0.items()}
        opt = make(list(tp.values()))
        p, st = dict(p0), {}
        for g in grads:
            for k in tp:
                tp[k].grad = torch.from_numpy(g[k].copy())
            opt.step()
            p, st = getattr(R, name)(p, g, st, **kw)
        for k in tp:
            np.testing.assert_allclose(p[k], tp[k].detach().numpy(), rtol=1e-12,
                                       atol=1e-14, err_msg=f"{name} {kw}")


def test_clip_by_global_norm_vs_torch():
    torch = _torch()
    g = {"a": rnd(3, 4, scale=3.0), "b": rnd(5, scale=3.0)}
    ts = [torch.nn.Parameter(torch.zeros(v.shape, dtype=torch.float64)) for v in g.values()]
    for t, v in zip(ts, g.values()):
        t.grad = torch.from_numpy(v.copy())
    n_t = float(torch.nn.utils.clip_grad_norm_(ts, 1.0))
    c, n = R.clip_by_global_norm(g, 1.0)
    assert n == pytest.approx(n_t, rel=1e-12)
    # torch scales by max_norm / (norm + 1e-6); TF1 by clip_norm / norm: close, not equal
    for t, v in zip(ts, c.values()):
        np.testing.assert_allclose(v, t.grad.numpy(), rtol=1e-5)
    assert math.sqrt(sum(float((v ** 2).sum()) for v in c.values())) == pytest.approx(1.0)
