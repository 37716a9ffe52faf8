"""The gradient of a Scan is a second Scan running the other way.

For a forward loop

    for t in range(T):  S, y[t] = body(S, x[t])          # weights W read from outside

the forward Scan is made to also emit the state entering each step (S_t). The backward
Scan runs t = T-1 … 0 over (S_t, x[t], dy[t]) and applies the step's gradient:

    dS_t, dx[t] = grad(body)(S_t, x[t]; dS_{t+1}, dy[t])

carrying dS. What the gradient reads of the step's values (gate activations, products) is
either stored by the forward Scan as extra per-step outputs (memory="store", the default:
no work is done twice; ops that only move data, like Split, are redone from what is
stored) or recomputed from S_t and x[t] in the backward body (memory="recompute": only the
states are kept, for long sequences). Weights used only as `a @ W` get their gradient after the loop as one MatMul
over all steps, dW = Σ_t a_tᵀ·dz_t = A_allᵀ·dZ_all (the body emits a_t and dz_t per step);
other loop-invariant values read by the body get theirs accumulated in the carry. Padded
steps (masked with Where in the body) pass zero gradient.

memory="checkpoint" is the outer loop over chunks of lower/chunked.py: recomputed like
"recompute", but every weight's gradient is accumulated in the carry (emitting (a, dz) per
chunk would keep O(T) values again); the inner Scan it reruns carries its own policy
(`Node.memory`, "store"), so its weight pairs become one MatMul per chunk.
"""
from __future__ import annotations

from ..builder import Builder, Tensor
from ..graph import FLOAT_DTYPES, Graph, Node, Value
from ..lower.hoist import hoist_invariants
from ..lower.recurrence import inline
from .reverse import backprop
from .stepwise import lift_stepwise


def _expose_step_states(b: Builder, node: Node, n_state: int, time) -> list[Tensor]:
    """Make the forward Scan also output each step's incoming state, [T, B, size]."""
    body = node.body
    bb = Builder(body, b.fdtype, b._ids, b.root)
    saved = []
    for v in body.inputs[:n_state]:
        ident = bb.identity(bb.tensor(v.name))
        body.outputs.append(ident.v)
        name = b.fresh(v.name.rsplit("_", 1)[0] + "_steps")
        b.g.values[name] = Value(name, v.dtype, (time,) + tuple(v.shape))
        node.outputs.append(name)
        node.attrs["scan_output_axes"] = list(node.attrs["scan_output_axes"]) + [0]
        saved.append(b.tensor(name))
    return saved


def _matmul_only(body_nodes: list[Node], name: str) -> bool:
    uses = [(n, i) for n in body_nodes for i, x in enumerate(n.inputs) if x == name]
    return bool(uses) and all(n.op == "MatMul" and i == 1 for n, i in uses)


CHEAP = {"Split", "Slice", "Identity", "Squeeze", "Unsqueeze", "Concat", "Neg"}


def _store(b: Builder, node: Node, sub: Builder, first: int, n_recomputed: int, rename: dict[str, str],
           stored: list[Tensor], time) -> None:
    """Turn values the backward body recomputes into values the forward Scan emits: each one
    the gradient nodes (or the body's outputs) read becomes a new per-step input of the
    backward body, and the recomputation of it is dropped."""
    body = sub.g
    recomputed = body.nodes[first:first + n_recomputed]
    grad_nodes = body.nodes[first + n_recomputed:]
    made_by = {o: n for n in recomputed for o in n.outputs}
    original = {new: old for old, new in rename.items()}
    reads = {i for n in grad_nodes for i in n.inputs} | {v.name for v in body.outputs}
    need = {r for r in reads if r in made_by}
    keep: set[int] = set()             # cheap recomputed nodes, redone from stored values
    frontier = list(need)
    store: list[str] = []
    while frontier:
        r = frontier.pop()
        producer = made_by[r]
        if producer.op in CHEAP:
            if id(producer) not in keep:
                keep.add(id(producer))
                frontier += [i for i in producer.inputs if i in made_by]
        elif r not in store:
            store.append(r)
    fwd_body = node.body
    fb = Builder(fwd_body, b.fdtype, b._ids, b.root)
    swap: dict[str, str] = {}
    for r in store:
        v = body.values[r]
        src = fb.tensor(original[r])
        taken = {x.name for x in fwd_body.inputs} | {x.name for x in fwd_body.outputs}
        # a value the body computes is emitted as it is (an Identity would be one more node a step);
        # an input, or a value already emitted, needs its own name
        fwd_body.outputs.append((fb.identity(src) if src.name in taken else src).v)
        outer = b.fresh(r.rsplit("_", 1)[0] + "_stored")
        b.g.values[outer] = Value(outer, v.dtype, (time,) + tuple(v.shape))
        node.outputs.append(outer)
        node.attrs["scan_output_axes"] = list(node.attrs["scan_output_axes"]) + [0]
        stored.append(b.tensor(outer))
        swap[r] = sub.input(sub.fresh(r.rsplit("_", 1)[0] + "_t"), v.dtype, v.shape).name
    kept = [n for n in recomputed if id(n) in keep]
    for n in kept + grad_nodes:
        n.inputs = [swap.get(i, i) for i in n.inputs]
    body.outputs = [body.values[swap[v.name]] if v.name in swap else v for v in body.outputs]
    body.nodes = body.nodes[:first] + kept + grad_nodes
    dead = {o for n in recomputed if id(n) not in keep for o in n.outputs}
    for name in dead:
        body.values.pop(name, None)


def scan_grad(b: Builder, node: Node, ins: list[Tensor], outs: list[Tensor], gouts: list, dep: set[str],
              memory: str = "store"):
    m = node.attrs["num_scan_inputs"]
    n = len(node.inputs) - m
    body = node.body
    xs = ins[n:]
    time = xs[0].shape[0]
    saved = _expose_step_states(b, node, n, time)

    captures = [c for c in body.captures() if c in dep and b.g.lookup(c).dtype in FLOAT_DTYPES]
    factored = [c for c in captures if b.g.lookup(c).rank == 2 and _matmul_only(body.nodes, c)
                and memory != "checkpoint"]
    accumulated = [c for c in captures if c not in factored]
    want_x = [j for j in range(m) if node.inputs[n + j] in dep and xs[j].dtype in FLOAT_DTYPES]
    dy_index = [k for k, g in enumerate(gouts[n:]) if g is not None]

    # ----- the backward body -----
    sub = b.subgraph()
    d_state = [sub.input(sub.fresh("dS"), v.dtype, v.shape) for v in body.inputs[:n]]
    acc = [sub.input(sub.fresh("acc"), b.g.lookup(c).dtype, b.g.lookup(c).shape) for c in accumulated]
    s_t = [sub.input(sub.fresh("S_t"), v.dtype, v.shape) for v in body.inputs[:n]]
    x_t = [sub.input(sub.fresh("x_t"), v.dtype, v.shape) for v in body.inputs[n:]]
    dy_t = [sub.input(sub.fresh("dy_t"), body.outputs[n + k].dtype, body.outputs[n + k].shape) for k in dy_index]
    start = len(sub.g.nodes)
    step_body = Graph(inputs=body.inputs, outputs=body.outputs[: len(body.outputs) - n],
                      nodes=body.nodes[: len(body.nodes) - n], values=body.values, parent=body.parent)
    rename: dict[str, str] = {}
    recomputed = inline(sub, step_body, s_t + x_t, rename)       # the step, recomputed from S_t
    step_nodes = sub.g.nodes[start:]
    seeds: dict[str, Tensor] = {}
    for i in range(n):
        seeds[recomputed[i].name] = d_state[i]
    for k, dy in zip(dy_index, dy_t):
        name = recomputed[n + k].name
        seeds[name] = sub.add(seeds[name], dy) if name in seeds else dy
    wrt = {t.name for t in s_t} | {x_t[j].name for j in want_x} | set(captures)
    pairs: dict[str, list] = {}
    inner = "store" if memory == "checkpoint" else memory      # for nested Scans without a policy of their own
    grads = backprop(sub, step_nodes, seeds, wrt, intercept=set(factored), pairs=pairs, memory=inner)

    carries: list[Tensor] = []
    for t in s_t:
        carries.append(grads.get(t.name) or sub.zeros_like(t))
    for c, a in zip(accumulated, acc):
        carries.append(sub.add(a, grads[c]) if c in grads else sub.identity(a))
    per_step = [grads.get(x_t[j].name) or sub.zeros_like(x_t[j]) for j in want_x]
    pair_list = [(c, a, g) for c in factored for a, g in pairs.get(c, [])]
    for _, a, g in pair_list:
        per_step += [a, g]
    sub.g.outputs = [t.v for t in carries + per_step]
    stored: list[Tensor] = []
    if memory == "store":
        _store(b, node, sub, start, len(step_nodes), rename, stored, time)
    hoist_invariants(b, sub.g)
    names = [v.name for v in sub.g.outputs]
    carry_names, step_names = names[:len(carries)], names[len(carries):]

    # a per-step value the backward body received as input is the outer tensor it came from;
    # one emitted per distinct value (dz of the input projection is also the dz of U's pairs)
    body_in = [v.name for v in sub.g.inputs]
    n_carry = n + len(accumulated)
    outer_scans = saved + xs + [gouts[n + k] for k in dy_index] + stored
    outer_of = dict(zip(body_in[n_carry:], outer_scans))
    seen: set[str] = set(body_in)
    final_carries = []
    for name in carry_names:          # carried values must be distinct and not inputs
        t = sub.tensor(name)
        if name in seen:
            t = sub.identity(t)
        seen.add(t.name)
        final_carries.append(t)
    emitted: list[Tensor] = []
    where: list = []                  # per request: ("outer", Tensor) or ("out", index)
    for name in step_names:
        if name in outer_of:
            where.append(("outer", outer_of[name]))
            continue
        known = [i for i, t in enumerate(emitted) if t.name == name]
        if not known:
            emitted.append(sub.tensor(name))
            known = [len(emitted) - 1]
        where.append(("out", known[0]))
    sub.g.outputs = [t.v for t in final_carries + emitted]

    # ----- the backward Scan, in reverse, outputs written back in time order -----
    init = [gouts[i] if gouts[i] is not None else b.zeros_like(outs[i]) for i in range(n)]
    init += [b.zeros_like(b.tensor(c)) for c in accumulated]
    out_types = [(t.dtype, tuple(x.shape)) for t, x in zip(final_carries, init)]
    out_types += [(t.dtype, (time,) + tuple(t.shape)) for t in emitted]
    attrs = {"num_scan_inputs": len(outer_scans), "scan_input_axes": [0] * len(outer_scans),
             "scan_input_directions": [1] * len(outer_scans)}
    if emitted:      # a chunked loop's backward may emit nothing per step (weights in the carry)
        attrs |= {"scan_output_axes": [0] * len(emitted), "scan_output_directions": [1] * len(emitted)}
    from ..lower.unroll import UNROLL
    if node.attrs.get(UNROLL):        # unrolled with its forward loop, after differentiation
        attrs[UNROLL] = 1
    results = b.node("Scan", init + outer_scans, out_types, attrs, sub.g)
    if memory == "store":
        # what reads no carried gradient: all steps at once (then mostly back into the forward
        # loop, grad/sink.py: W6 T=500, 134 -> 105 ms a step and 147 -> 113 MiB; bench/)
        lift_stepwise(b, b.g.nodes[-1])

    d_init = results[:n]
    d_acc = dict(zip(accumulated, results[n:n_carry]))
    per_step_out = [t if kind == "outer" else results[n_carry + t] for kind, t in where]
    d_xs = dict(zip(want_x, per_step_out[: len(want_x)]))
    rest = per_step_out[len(want_x):]
    gcaps: dict[str, Tensor] = dict(d_acc)
    for i, (c, _, _) in enumerate(pair_list):
        a_all, g_all = rest[2 * i], rest[2 * i + 1]
        dw = b.matmul(b.transpose(b.flatten_leading(a_all), [1, 0]), b.flatten_leading(g_all))
        gcaps[c] = b.add(gcaps[c], dw) if c in gcaps else dw
    gins = list(d_init) + [d_xs.get(j) for j in range(m)]
    return gins, gcaps
