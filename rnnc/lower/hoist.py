"""Move the work that does not depend on the previous step out of a step body.

Each body node is classified by what it reads:
- invariant (only weights and constants): moved before the loop as is (e.g. slices of U);
- per-step but state-free (reads x_t, not the state): computed for all steps at once on the
  [T, B, ...] sequence before the loop, and its result becomes a new sliced input of the
  body — so `x·W + b` of every step is one MatMul over the whole sequence;
- everything else stays in the body.
A per-step node is only lifted when running it on the sequence means the same thing as
running it per step: elementwise ops whose other operands have rank ≤ 1, MatMul with a
rank-2 right operand, and ops along the last axis.
"""
from __future__ import annotations

from ..builder import Builder, Tensor
from ..graph import Graph, Node, Value
from .step import TracedStep

ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Neg", "Sigmoid", "Tanh", "Relu", "Exp", "Log", "Min", "Max",
               "Identity", "Sqrt", "Where", "Cast", "Not", "Less", "Greater", "Equal", "And"}
LAST_AXIS = {"Softmax", "LogSoftmax", "Concat", "Slice", "Split"}


def hoist(b: Builder, traced: TracedStep) -> TracedStep:
    body = traced.body
    outer_seq = {v.name: outer for v, outer in zip(body.inputs[traced.n_state:], traced.seq_inputs)}
    needed = lift_out(b, body, traced.n_state, outer_seq)
    return TracedStep(body, traced.n_state, [outer_seq[n] for n in needed])


def lift_out(b: Builder, body: Graph, n_carry: int, outer_seq: dict[str, Tensor]) -> list[str]:
    """Rewrite the loop body `body` in place: nodes that read no carried input (its first
    `n_carry`) go before the loop into b's graph, invariant ones as they are and per-step
    ones on the stacked sequences. `outer_seq` maps each sliced input (body name) to its
    stacked [T, ...] tensor and gains the lifted values; returns the body names of the sliced
    inputs the body keeps (every one a remaining node or an output reads)."""
    carried_dep = {v.name for v in body.inputs[:n_carry]}
    kept: list[Node] = []
    for node in body.nodes:
        ins = [i for i in node.inputs if i]
        if node.body is not None or any(i in carried_dep for i in ins):
            kept.append(node)
            carried_dep.update(node.outputs)
        elif not any(i in outer_seq for i in ins):
            _move_invariant(b, body, node)
        elif _liftable(node, body, outer_seq):
            _lift_per_step(b, body, node, outer_seq)
        else:
            kept.append(node)
            carried_dep.update(node.outputs)

    reads = [i for node in kept for i in node.inputs] + [v.name for v in body.outputs]
    needed: list[str] = []
    for r in reads:
        if r in outer_seq and r not in needed:
            needed.append(r)
    if not needed and len(body.inputs) > n_carry:    # a Scan counts its steps on a sliced input
        needed.append(body.inputs[n_carry].name)
    defined_inside = {o for node in kept for o in node.outputs}
    outputs = []
    for v in body.outputs:   # an output computed outside now is passed through an Identity
        if v.name not in defined_inside:
            alias = b.fresh(v.name.rsplit("_", 1)[0])
            kept.append(Node("Identity", [v.name], [alias]))
            body.values[alias] = Value(alias, v.dtype, v.shape)
            v = body.values[alias]
        outputs.append(v)
    body.inputs = body.inputs[:n_carry] + [body.values[n] for n in needed]
    body.nodes = kept
    body.outputs = outputs
    defined = {v.name for v in body.inputs} | {o for node in kept for o in node.outputs}
    body.values = {k: v for k, v in body.values.items() if k in defined}
    return needed


def _move_invariant(b: Builder, body: Graph, node: Node) -> None:
    node.placement = b.root.placement
    b.g.nodes.append(node)
    for o in node.outputs:
        b.g.values[o] = body.values[o]


def _liftable(node: Node, body: Graph, outer_seq: dict) -> bool:
    if len({body.lookup(i).rank for i in node.inputs if i in outer_seq}) > 1:
        return False      # per-step operands of different ranks would align wrongly once stacked
    if node.op == "MatMul":
        return node.inputs[0] in outer_seq and node.inputs[1] not in outer_seq \
            and body.lookup(node.inputs[1]).rank == 2
    if node.op in LAST_AXIS:
        axis = node.attrs.get("axis", -1)
        if node.op == "Slice":
            axis_value = body.lookup(node.inputs[3])
            return _const_is(body, axis_value.name, -1)
        return axis == -1
    if node.op in ELEMENTWISE:
        return all(i in outer_seq or body.lookup(i).rank <= 1 for i in node.inputs if i)
    return False


def _const_is(body: Graph, name: str, value: int) -> bool:
    g = body
    while g.parent is not None:
        g = g.parent
    arr = g.initializers.get(name)
    return arr is not None and arr.size == 1 and int(arr.reshape(-1)[0]) == value


def _lift_per_step(b: Builder, body: Graph, node: Node, outer_seq: dict[str, Tensor]) -> None:
    ins = [outer_seq[i].name if i in outer_seq else i for i in node.inputs]
    outs = []
    for o in node.outputs:
        v = body.values[o]
        time = next(iter(outer_seq.values())).shape[0]
        name = b.fresh(o.rsplit("_", 1)[0] + "_seq")
        ov = Value(name, v.dtype, (time,) + tuple(v.shape))
        b.g.values[name] = ov
        outer_seq[o] = Tensor(b, ov)
        outs.append(name)
    b.g.nodes.append(Node(node.op, ins, outs, dict(node.attrs), placement=b.root.placement))


def hoist_invariants(b: Builder, body: Graph) -> None:
    """Move the nodes of `body` that read only values from outside it (weights, their
    transposes) in front of the loop, into b's graph."""
    defined = {v.name for v in body.inputs}
    kept = []
    for node in body.nodes:
        if node.body is None and not any(i in defined for i in node.inputs if i):
            _move_invariant(b, body, node)
        else:
            kept.append(node)
            defined.update(node.outputs)
    body.nodes = kept
