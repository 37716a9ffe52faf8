"""Shorten the backward loop: what a backward step computes from the stored forward values
alone is computed for all steps at once, before the loop.

The backward body of an LSTM, as reverse mode writes it, has ~22 nodes per step, but only
the ones that read the carried gradients (dh, dc) must run step by step; the rest (σ' = s(1−s),
1 − tanh², products of stored gates) depend only on per-step inputs of the loop and run
fine on the whole [T, B, ...] sequences. Two rewrites first move work out of the carried
chain (v: reads a carry; i: does not):

    (v·i₁)·i₂                  ->  v·(i₁·i₂)
    Concat(v₁·i₁, …, vₖ·iₖ)    ->  Concat(v₁, …, vₖ) · Concat(i₁, …, iₖ)     (equal shapes)

and then every node that does not read a carry, and means the same on the stacked sequence
(hoist.py's rules), becomes one op over all steps, its result a new sliced input of the
loop. An LSTM's backward step is then Add, Mul, Add, Concat, Mul, MatMul, Mul.
"""
from __future__ import annotations

from ..builder import Builder
from ..graph import Graph, Node, Value
from ..lower.hoist import lift_out


def lift_stepwise(b: Builder, node: Node) -> None:
    """Rewrite the Scan `node` (in b's graph) in place."""
    body = node.body
    m = node.attrs["num_scan_inputs"]
    n_carry = len(node.inputs) - m
    carried = {v.name for v in body.inputs[:n_carry]}
    drop_dead(body)
    _reassociate(body, carried, b.fresh)
    directions = list(node.attrs.get("scan_input_directions", [0] * m))
    outer_seq = {v.name: b.tensor(o) for v, o in zip(body.inputs[n_carry:], node.inputs[n_carry:])}
    if len(set(directions)) > 1:
        return
    start = len(b.g.nodes)
    needed = lift_out(b, body, n_carry, outer_seq)
    lifted = b.g.nodes[start:]             # made after the loop node: they go in front of it
    del b.g.nodes[start:]
    at = b.g.nodes.index(node)
    b.g.nodes[at:at] = lifted
    node.inputs = node.inputs[:n_carry] + [outer_seq[r].name for r in needed]
    node.attrs["num_scan_inputs"] = len(needed)
    node.attrs["scan_input_axes"] = [0] * len(needed)
    if "scan_input_directions" in node.attrs:
        node.attrs["scan_input_directions"] = directions[:1] * len(needed)


def drop_dead(body: Graph) -> None:
    live = {v.name for v in body.outputs}
    kept = []
    for n in reversed(body.nodes):
        if n.body is not None or any(o in live for o in n.outputs):
            kept.append(n)
            live.update(i for i in n.inputs if i)
            if n.body is not None:
                live.update(n.body.captures())
    body.nodes = kept[::-1]


def _reassociate(body: Graph, carried: set[str], fresh_name) -> None:
    """The two rewrites above, until nothing changes; nodes keep topological order."""
    while _rewrite_once(body, carried, fresh_name):
        pass


def _uses(body: Graph) -> dict[str, int]:
    count: dict[str, int] = {}
    for n in body.nodes:
        for i in n.inputs:
            count[i] = count.get(i, 0) + 1
    for v in body.outputs:
        count[v.name] = count.get(v.name, 0) + 2    # an output is never rewritten away
    return count


def _variant(body: Graph, carried: set[str]) -> set[str]:
    v = set(carried)
    for n in body.nodes:
        if n.body is not None or any(i in v for i in n.inputs):
            v.update(n.outputs)
    return v


def _rewrite_once(body: Graph, carried: set[str], fresh_name) -> bool:
    variant = _variant(body, carried)
    uses = _uses(body)
    made_by = {o: n for n in body.nodes for o in n.outputs}

    def fresh(hint: str, like: Value, shape) -> str:
        name = fresh_name(hint)
        body.values[name] = Value(name, like.dtype, tuple(shape))
        return name

    def split_mul(name: str):
        """(variant factor, invariant factor) of a single-use Mul v·i, or None."""
        n = made_by.get(name)
        if n is None or n.op != "Mul" or uses.get(name, 0) != 1:
            return None
        a, c = n.inputs
        if a in variant and c not in variant:
            return a, c
        if c in variant and a not in variant:
            return c, a
        return None

    for pos, n in enumerate(body.nodes):
        if n.op == "Mul" and n.outputs[0] in variant:
            pair = split_mul(n.inputs[0]) if n.inputs[0] in variant else split_mul(n.inputs[1])
            other = n.inputs[1] if n.inputs[0] in variant else n.inputs[0]
            if pair is None or other in variant:
                continue
            v, i1 = pair
            inner = made_by[n.inputs[0] if n.inputs[0] in variant else n.inputs[1]]
            out = body.values[n.outputs[0]]
            prod = fresh("factor", out, _bshape(body.lookup(i1).shape, body.lookup(other).shape))
            body.nodes.remove(inner)
            idx = body.nodes.index(n)
            body.nodes.insert(idx, Node("Mul", [i1, other], [prod], placement=n.placement))
            n.inputs = [v, prod]
            body.values.pop(inner.outputs[0], None)
            return True
        if n.op == "Concat" and n.outputs[0] in variant and len(n.inputs) > 1:
            parts = []
            for x in n.inputs:
                p = split_mul(x) if x in variant else None
                if p is None:
                    break
                v, i = p
                shape = body.lookup(x).shape
                if body.lookup(v).shape != shape or body.lookup(i).shape != shape:
                    break
                parts.append((x, v, i))
            else:
                out = body.values[n.outputs[0]]
                axis = n.attrs.get("axis", -1)
                for x, _, _ in parts:
                    body.nodes.remove(made_by[x])
                    body.values.pop(x, None)
                vs = _flatten_concat(body, [v for _, v, _ in parts], axis, made_by, uses)
                v_cat = fresh("vcat", out, out.shape)
                i_cat = fresh("icat", out, out.shape)
                idx = body.nodes.index(n)
                body.nodes[idx:idx + 1] = [
                    Node("Concat", vs, [v_cat], {"axis": axis}, placement=n.placement),
                    Node("Concat", [i for _, _, i in parts], [i_cat], {"axis": axis}, placement=n.placement),
                    Node("Mul", [v_cat, i_cat], [out.name], placement=n.placement)]
                return True
    return False


def _flatten_concat(body: Graph, names: list[str], axis: int, made_by: dict, uses: dict) -> list[str]:
    """Inline the inputs of single-use Concats along the same axis."""
    out = []
    for x in names:
        n = made_by.get(x)
        if n is not None and n.op == "Concat" and n.attrs.get("axis", -1) == axis and uses.get(x, 0) == 1 \
                and n in body.nodes:
            body.nodes.remove(n)
            body.values.pop(x, None)
            out += n.inputs
        else:
            out.append(x)
    return out


def _bshape(a, b):
    from ..builder import broadcast
    return broadcast(tuple(a), tuple(b))
