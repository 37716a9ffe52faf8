"""The gradient of ONNX's fused LSTM operator: the forward runs onnxruntime's LSTM kernel,
the backward recomputes what it needs from the hidden states the kernel returns.

Training graphs use this for plain LSTMs (LANGUAGE.md §3: "fused ... in training graphs
only where the backward recomputes every value it needs"). Gate order is ONNX's i, o, f, c;
W [1, 4H, I], R [1, 4H, H], B [1, 8H] (Wb ‖ Rb), Y [T, 1, B, H].

Recomputation, all steps at once (big GEMMs and elementwise ops, no per-step nodes):

    Hprev = [h0, Y[0..T-2]]            Z = X·Wᵀ + Hprev·Rᵀ + Wb + Rb
    i, o, f = σ(Z_i, Z_o, Z_f)         g = tanh(Z_c)

then one cheap chain per step for the cell state, c_t = f_t·c_{t-1} + i_t·g_t, and the
factors that make the backward step short:

    A = o·(1 − tanh²c)                 P = [g·σ'_i, tanh c·σ'_o, c_prev·σ'_f, i·(1 − g²)]

Backward, t = T-1 … 0 (per step: Add, Mul, Add, Concat, Mul, MatMul, Mul):

    dh_t = dY_t + dZ_{t+1}·R           dc_t = dc_{t+1}·f_{t+1} + dh_t·A_t
    dZ_t = [dc_t, dh_t, dc_t, dc_t]·P_t

and the weight gradients after it, one MatMul each over all steps: dW = dZᵀ·X,
dR = dZᵀ·Hprev, dB = Σ dZ (twice), dX = dZ·W. With sequence_lens, padded steps keep their
state and output zero (ONNX and rnnc agree): the chain holds c there, and the backward passes
dh and dc through them unchanged with no dZ. Up to `STATIC_MAX_STEPS` fixed steps the
chains are unrolled; otherwise each is one Scan.
"""
from __future__ import annotations

from ..builder import Builder, Tensor
from ..lower.recurrence import length_mask

STATIC_MAX_STEPS = 64


def supported(node) -> str | None:
    """Why this LSTM node has no gradient here, or None."""
    a = node.attrs
    if len(node.inputs) > 7 and node.inputs[7]:
        return "peepholes"
    if a.get("direction", "forward") != "forward":
        return f"direction {a['direction']}"
    if a.get("clip") is not None or a.get("input_forget") or a.get("activations") or a.get("layout"):
        return "non-default attributes"
    return None


def lstm_grad(b: Builder, node, ins: list, outs: list[Tensor], gouts: list) -> list:
    why = supported(node)
    if why is not None:
        raise ValueError(f"no gradient for a fused LSTM with {why}")
    X, W, R, B, lens, h0, c0 = (ins + [None] * 7)[:7]
    Y = outs[0]
    T, H = X.shape[0], node.attrs["hidden_size"]
    W2, R2 = b.squeeze(W, [0]), b.squeeze(R, [0])
    bias = b.reduce_sum(b.reshape_to(B, [2, 4 * H], (2, 4 * H)), [0])
    Ys = b.squeeze(Y, [1])                                            # [T, B, H]
    h0 = h0 if h0 is not None else b.zeros_like(b.slice(Ys, 0, 1, axis=0))
    c0 = c0 if c0 is not None else b.zeros_like(h0)
    hprev = b.slice(b.concat([h0, Ys], axis=0), 0, -1, axis=0)     # T rows, also when T = 0

    z = b.matmul(X, b.transpose(W2, [1, 0])) + b.matmul(hprev, b.transpose(R2, [1, 0])) + bias
    s = b.sigmoid(b.slice(z, 0, 3 * H))
    g = b.tanh(b.slice(z, 3 * H, 4 * H))
    i, o, f = b.split(s, 3)
    mask = length_mask(b, X, b.cast(lens, "i64")) if lens is not None else None

    static = isinstance(T, int) and T <= STATIC_MAX_STEPS
    c = _cell_chain(b, f, i * g, c0, mask, static)                     # [T, B, H]
    cprev = b.slice(b.concat([c0, c], axis=0), 0, -1, axis=0)
    tc = b.tanh(c)
    ds = s * (1.0 - s)
    dsi, dso, dsf = b.split(ds, 3)
    A = o * (1.0 - tc * tc)
    P = b.concat([g * dsi, tc * dso, cprev * dsf, i * (1.0 - g * g)], axis=-1)
    dY = b.squeeze(gouts[0], [1]) if gouts[0] is not None else None
    if mask is not None:       # padded steps: no output gradient, no dZ, dc passes through
        zero = b.const(0.0, X.dtype)
        dY = b.where(mask, dY, zero) if dY is not None else None
        A, P = b.where(mask, A, zero), b.where(mask, P, zero)
        f = b.where(mask, f, b.const(1.0, X.dtype))
    dh_last = b.squeeze(gouts[1], [0]) if gouts[1] is not None else None
    dc_last = b.squeeze(gouts[2], [0]) if gouts[2] is not None else None
    dz, dh0, dc0 = _backward_chain(b, dY, A, P, f, R2, dh_last, dc_last, mask, h0, static)

    flat_dz = b.flatten_leading(dz)
    dz_t = b.transpose(flat_dz, [1, 0])
    dW = b.unsqueeze(b.matmul(dz_t, b.flatten_leading(X)), [0])
    dR = b.unsqueeze(b.matmul(dz_t, b.flatten_leading(hprev)), [0])
    db = b.reduce_sum(flat_dz, [0])
    dB = b.unsqueeze(b.concat([db, db], axis=-1), [0])
    dX = b.matmul(dz, W2)
    return [dX, dW, dR, dB, None, b.unsqueeze(dh0, [0]) if ins[5] is not None else None,
            b.unsqueeze(dc0, [0]) if len(ins) > 6 and ins[6] is not None else None]


def _c_step(b: Builder, c_prev: Tensor, f_t: Tensor, ig_t: Tensor, m_t: Tensor | None) -> Tensor:
    c = f_t * c_prev + ig_t
    return b.where(m_t, c, c_prev) if m_t is not None else c


def _back_step(b: Builder, dh_rec, dc_rec, dy_t, a_t, p_t, f_t, R2, m_t, like: Tensor):
    """One step of the backward chain: (dZ_t, dh into t-1, dc into t-1)."""
    dh = dh_rec if dy_t is None else (dy_t if dh_rec is None else dh_rec + dy_t)
    if dh is None:
        dh = b.zeros_like(like)
    dc = dh * a_t if dc_rec is None else dc_rec + dh * a_t
    dz = b.concat([dc, dh, dc, dc], axis=-1) * p_t
    dh_next = b.matmul(dz, R2)
    if m_t is not None:
        dh_next = b.where(m_t, dh_next, dh)
    return dz, dh_next, dc * f_t


def _cell_chain(b: Builder, f: Tensor, ig: Tensor, c0: Tensor, mask, static: bool) -> Tensor:
    """c_t for t = 0 … T-1 (c0: [1, B, H]) as [T, B, H]."""
    if static:
        T = f.shape[0]
        fs, igs = b.split(f, T, axis=0), b.split(ig, T, axis=0)
        ms = b.split(mask, T, axis=0) if mask is not None else [None] * T
        cs, c = [], c0
        for t in range(T):
            c = _c_step(b, c, fs[t], igs[t], ms[t])
            cs.append(c)
        return b.concat(cs, axis=0) if T > 1 else cs[0]
    sub = b.subgraph()
    c_in = sub.input(sub.fresh("c"), c0.dtype, c0.shape[1:])
    f_t = sub.input(sub.fresh("f_t"), f.dtype, f.shape[1:])
    ig_t = sub.input(sub.fresh("ig_t"), ig.dtype, ig.shape[1:])
    m_t = sub.input(sub.fresh("m_t"), "bool", mask.shape[1:]) if mask is not None else None
    c = _c_step(sub, c_in, f_t, ig_t, m_t)
    c_out = sub.identity(c)
    sub.g.outputs = [c.v, c_out.v]
    seqs = [f, ig] + ([mask] if mask is not None else [])
    _, cs = b.node("Scan", [b.squeeze(c0, [0])] + seqs, [(c0.dtype, c0.shape[1:]), (f.dtype, f.shape)],
                   {"num_scan_inputs": len(seqs), "scan_input_axes": [0] * len(seqs), "scan_output_axes": [0]},
                   sub.g)
    return cs


def _backward_chain(b: Builder, dY, A, P, f, R2, dh_last, dc_last, mask, h0, static: bool):
    """(dZ [T, B, 4H], dh into h0 [B, H] or [1, B, H], dc into c0) from t = T-1 down to 0."""
    T = A.shape[0]
    if static:
        split = lambda t: b.split(t, T, axis=0) if T > 1 else [t]
        dys = split(dY) if dY is not None else [None] * T
        As, Ps, fs = split(A), split(P), split(f)
        ms = split(mask) if mask is not None else [None] * T
        dh = b.unsqueeze(dh_last, [0]) if dh_last is not None else None
        dc = b.unsqueeze(dc_last, [0]) if dc_last is not None else None
        dzs = [None] * T
        for t in reversed(range(T)):
            dzs[t], dh, dc = _back_step(b, dh, dc, dys[t], As[t], Ps[t], fs[t], R2, ms[t], h0)
        return (b.concat(dzs, axis=0) if T > 1 else dzs[0]), b.squeeze(dh, [0]), b.squeeze(dc, [0])
    sub = b.subgraph()
    shape = A.shape[1:]
    dh_in = sub.input(sub.fresh("dh"), A.dtype, shape)
    dc_in = sub.input(sub.fresh("dc"), A.dtype, shape)
    seqs = ([dY] if dY is not None else []) + [A, P, f] + ([mask] if mask is not None else [])
    xs = [sub.input(sub.fresh("s_t"), s.dtype, s.shape[1:]) for s in seqs]
    dy_t = xs.pop(0) if dY is not None else None
    a_t, p_t, f_t = xs[:3]
    m_t = xs[3] if mask is not None else None
    dz, dh, dc = _back_step(sub, dh_in, dc_in, dy_t, a_t, p_t, f_t, R2, m_t, dh_in)
    sub.g.outputs = [dh.v, dc.v, dz.v]
    zeros = b.squeeze(b.zeros_like(h0), [0])
    init = [dh_last if dh_last is not None else zeros, dc_last if dc_last is not None else zeros]
    n = len(seqs)
    outs = b.node("Scan", init + seqs, [(A.dtype, shape), (A.dtype, shape), (P.dtype, P.shape)],
                  {"num_scan_inputs": n, "scan_input_axes": [0] * n, "scan_input_directions": [1] * n,
                   "scan_output_axes": [0], "scan_output_directions": [1]},
                  sub.g)
    return outs[2], outs[0], outs[1]
