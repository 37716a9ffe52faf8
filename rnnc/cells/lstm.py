"""lstm(units, forget_bias=1.0, peepholes=false, proj=none, clip=none) — TF1 LSTMCell.

Gate blocks of W [input, 4·units], U [R, 4·units] and b [4·units] are in TF1's order
i, j (candidate), f, o; R = proj if set, else units. With peepholes: wi, wf, wo [units].
With proj: P [units, proj]. State (c, h); h is the output m.

    i  = σ(x·W_i + h·U_i + b_i + wi⊙c)
    f  = σ(x·W_f + h·U_f + b_f + forget_bias + wf⊙c)      # forget_bias added at every step
    c' = f⊙c + i⊙tanh(x·W_j + h·U_j + b_j) ;  c' = clip(c', ±clip) if clip
    o  = σ(x·W_o + h·U_o + b_o + wo⊙c')                    # o's peephole reads the NEW c
    m  = o⊙tanh(c') ;  m = m·P if proj
    output m, next state (c', m)
(tensorflow/python/ops/rnn_cell_impl.py, LSTMCell.call)
"""
import numpy as np

from . import ParamSpec, StepCell, builtin, glorot, vector


def _regroup(ops, t, units: int):
    """Gate blocks i, j, f, o (TF1's layout) as i, f, o, j along the last axis."""
    i, j, f, o = ops.split(t, 4)
    return ops.concat([i, f, o, j], axis=-1)


def _forget_bias_vector(units: int, forget_bias: float) -> np.ndarray:
    """forget_bias on the f block of the regrouped i, f, o, j layout."""
    v = np.zeros(4 * units)
    v[units:2 * units] = forget_bias
    return v


@builtin("lstm")
def lstm(input_size: int, units: int, forget_bias: float = 1.0, peepholes: bool = False,
         proj: int | None = None, clip: float | None = None) -> StepCell:
    out = proj or units

    def step(ops, p, x, state):
        c, h = state
        if peepholes:
            return _peephole_step(ops, p, x, c, h)
        # TF1's blocks i, j, f, o regrouped as i, f, o | j, so one Sigmoid and one Tanh cover
        # the gates; the regrouping and forget_bias only touch weights, so they leave the loop
        W, U, b = (_regroup(ops, p[k], units) for k in ("W", "U", "b"))
        if forget_bias:
            b = b + _forget_bias_vector(units, forget_bias)
        z = x @ W + b + h @ U
        zs, zj = ops.split_sizes(z, [3 * units, units])
        i, f, o = ops.split(ops.sigmoid(zs), 3)
        c2 = f * c + i * ops.tanh(zj)
        if clip is not None:
            c2 = ops.clip(c2, -clip, clip)
        m = o * ops.tanh(c2)
        if proj:
            m = m @ p["P"]
        return m, (c2, m)

    def _peephole_step(ops, p, x, c, h):
        z = x @ p["W"] + p["b"] + h @ p["U"]
        zi, zj, zf, zo = ops.split(z, 4)
        i = ops.sigmoid(zi + p["wi"] * c)
        f = ops.sigmoid(zf + forget_bias + p["wf"] * c) if forget_bias else ops.sigmoid(zf + p["wf"] * c)
        c2 = f * c + i * ops.tanh(zj)
        if clip is not None:
            c2 = ops.clip(c2, -clip, clip)
        m = ops.sigmoid(zo + p["wo"] * c2) * ops.tanh(c2)
        if proj:
            m = m @ p["P"]
        return m, (c2, m)

    params = {"W": glorot(input_size, 4 * units), "U": glorot(out, 4 * units), "b": vector(4 * units)}
    if peepholes:
        params.update(wi=vector(units), wf=vector(units), wo=vector(units))
    if proj:
        params["P"] = ParamSpec((units, proj), "glorot")
    options = {"forget_bias": forget_bias, "peepholes": peepholes, "proj": proj, "clip": clip}
    return StepCell("lstm", input_size, (("c", units), ("h", out)), out, params, step, __doc__, options)
