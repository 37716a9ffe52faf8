"""gru(units, reset_after=false) — a gated recurrent unit; gate blocks r, z, candidate.

W [input, 3·units], U [units, 3·units], b [3·units] (blocks r, z, candidate along the last
axis). The r and z biases start at 1.0, as TF1's gates/bias does.

reset_after=false — TF1 GRUCell (the reset gate before the recurrent matmul; ONNX GRU
linear_before_reset=0, Keras reset_after=False):

    r  = σ(x·W_r + h·U_r + b_r)
    z  = σ(x·W_z + h·U_z + b_z)
    h̃  = tanh(x·W_h + (r⊙h)·U_h + b_h)
    h' = z⊙h + (1 − z)⊙h̃            (output h')

reset_after=true — PyTorch nn.GRU, Keras' default, cuDNN (ONNX linear_before_reset=1). It has
one more parameter, the recurrent bias bU [3·units] (blocks r, z, candidate; starts at 0),
so that both of PyTorch's biases (bias_ih → b, bias_hh → bU) and both rows of Keras' (2, 3H)
bias are kept as they are:

    r  = σ(x·W_r + b_r + h·U_r + bU_r)
    z  = σ(x·W_z + b_z + h·U_z + bU_z)
    h̃  = tanh(x·W_h + b_h + r⊙(h·U_h + bU_h))
    h' = z⊙h + (1 − z)⊙h̃
"""
from . import ParamSpec, StepCell, builtin, glorot, vector


@builtin("gru")
def gru(input_size: int, units: int, reset_after: bool = False) -> StepCell:
    def step(ops, p, x, state):
        (h,) = state
        xw = x @ p["W"] + p["b"]
        xr, xz, xh = ops.split(xw, 3)
        if reset_after:
            hr, hz, hh = ops.split(h @ p["U"] + p["bU"], 3)
            r = ops.sigmoid(xr + hr)
            z = ops.sigmoid(xz + hz)
            cand = ops.tanh(xh + r * hh)
        else:
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
    if reset_after:
        params["bU"] = vector(3 * units)
    kind = "gru"
    return StepCell(kind, input_size, (("h", units),), units, params, step, __doc__,
                    {"reset_after": reset_after})
