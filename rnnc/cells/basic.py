"""basic(units, activation=tanh|relu) — TF1 BasicRNNCell.

    h' = act(x·W + h·U + b)          W [input, units], U [units, units], b [units]
    output = h'
"""
from . import StepCell, builtin, glorot, vector

ACTIVATIONS = ("tanh", "relu")


@builtin("basic")
def basic(input_size: int, units: int, activation: str = "tanh") -> StepCell:
    def step(ops, p, x, state):
        (h,) = state
        pre = x @ p["W"] + p["b"] + h @ p["U"]
        h2 = ops.tanh(pre) if activation == "tanh" else ops.relu(pre)
        return h2, (h2,)

    params = {"W": glorot(input_size, units), "U": glorot(units, units), "b": vector(units)}
    return StepCell("basic", input_size, (("h", units),), units, params, step, __doc__,
                    {"activation": activation})
