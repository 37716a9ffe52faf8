"""gru(units) — TF1 GRUCell (the reset gate before the recurrent matmul).

`reset_after=true` (the PyTorch/cuDNN form) is a later issue; the resolver refuses it.

W [input, 3·units], U [units, 3·units], b [3·units], gate blocks r, z, candidate.
The r and z biases start at 1.0, as TF1's gates/bias does.

    r  = σ(x·W_r + h·U_r + b_r)
    z  = σ(x·W_z + h·U_z + b_z)
    h̃  = tanh(x·W_h + (r⊙h)·U_h + b_h)
    h' = z⊙h + (1 − z)⊙h̃            (output h')
"""
from . import ParamSpec, StepCell, builtin, glorot


@builtin("gru")
def gru(input_size: int, units: int) -> StepCell:
    def step(ops, p, x, state):
        (h,) = state
        xw = x @ p["W"] + p["b"]
        xr, xz, xh = ops.split(xw, 3)
        u_rz = ops.slice(p["U"], 0, 2 * units)
        u_h = ops.slice(p["U"], 2 * units, 3 * units)
        hr, hz = ops.split(h @ u_rz, 2)
        r = ops.sigmoid(xr + hr)
        z = ops.sigmoid(xz + hz)
        cand = ops.tanh(xh + (r * h) @ u_h)
        h2 = z * h + (1.0 - z) * cand
        return h2, (h2,)

    bias_init = "gru_bias"   # ones for r and z, zeros for the candidate
    params = {"W": glorot(input_size, 3 * units), "U": glorot(units, 3 * units),
              "b": ParamSpec((3 * units,), bias_init)}
    return StepCell("gru", input_size, (("h", units),), units, params, step, __doc__)
