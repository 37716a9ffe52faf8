"""Move the per-step work that the backward pass put after a forward loop back into it.

The stepwise pass (stepwise.py) computes what a backward step reads of the stored forward
values for all steps at once: σ·(1−σ), 1−tanh², products of gates, their concatenation.
Each of those ops is then one pass over a [T, B, k·H] tensor, and for long loops each is
also a [T, B, k·H] temporary (W6, T=500: 32 MB apiece). Run inside the forward loop
instead, the same ops read the step's values while they are still in cache, their
temporaries are one step's, and the stored inputs they replace are often read by nothing
else and are no longer emitted at all.

A node after a forward Scan moves into the Scan's body when it is elementwise or works along
the last axis (hoist.py's rules, in the other direction), reads at least one per-step output
of that Scan and otherwise only values of rank ≤ 1 defined before the Scan, and runs on the
same device. Its results become per-step outputs of the Scan under their old names, so
nothing downstream changes.
"""
from __future__ import annotations

from ..graph import Graph, Node, Value
from ..lower.hoist import ELEMENTWISE, LAST_AXIS
from .stepwise import drop_dead


def sink_into_loops(g: Graph, fresh) -> None:
    """Rewrite the top-level graph `g` in place; `fresh(hint)` makes a new unique name."""
    i = 0
    while i < len(g.nodes):
        node = g.nodes[i]
        if _forward_scan(node) and _sink_after(g, i, fresh):
            _drop_unread_outputs(g, node)
            _merge_repeats(node.body)
        i += 1


def _forward_scan(node: Node) -> bool:
    if node.op != "Scan" or node.memory not in (None, "store"):
        return False
    n_carry = len(node.inputs) - node.attrs["num_scan_inputs"]
    n_out = len(node.outputs) - n_carry
    axes = list(node.attrs.get("scan_output_axes", [0] * n_out))
    directions = list(node.attrs.get("scan_output_directions", [0] * n_out))
    return n_out > 0 and not any(axes) and not any(directions)


def _sink_after(g: Graph, at: int, fresh) -> bool:
    scan = g.nodes[at]
    body = scan.body
    n_carry = len(scan.inputs) - scan.attrs["num_scan_inputs"]
    per_step = {outer: inner.name for outer, inner in zip(scan.outputs[n_carry:], body.outputs[n_carry:])}
    before = {v.name for v in g.inputs} | set(g.initializers)
    for n in g.nodes[:at]:
        before.update(n.outputs)
    kept = g.nodes[: at + 1]
    for node in g.nodes[at + 1:]:
        if node.placement == scan.placement and _sinkable(node, g, per_step, before):
            _move(g, scan, node, per_step, fresh)
        else:
            kept.append(node)
    moved = len(kept) < len(g.nodes)
    g.nodes[:] = kept
    return moved


def _sinkable(node: Node, g: Graph, per_step: dict[str, str], before: set[str]) -> bool:
    ins = [i for i in node.inputs if i]
    stepped = [i for i in ins if i in per_step]
    if node.body is not None or not stepped or len({g.lookup(i).rank for i in stepped}) > 1:
        return False
    if any(i not in per_step and (i not in before or g.lookup(i).rank > 1) for i in ins):
        return False
    if node.op in ELEMENTWISE:
        return True
    if node.op == "Slice":
        axes = g.initializers.get(node.inputs[3]) if len(node.inputs) > 3 else None
        return axes is not None and axes.size == 1 and int(axes.reshape(-1)[0]) == -1
    return node.op in LAST_AXIS and node.attrs.get("axis", -1) == -1


def _move(g: Graph, scan: Node, node: Node, per_step: dict[str, str], fresh) -> None:
    body = scan.body
    n_carry = len(scan.inputs) - scan.attrs["num_scan_inputs"]
    n_out = len(scan.outputs) - n_carry
    scan.attrs["scan_output_axes"] = list(scan.attrs.get("scan_output_axes", [0] * n_out))
    outs = []
    for o in node.outputs:
        outer = g.values[o]
        inner = fresh(o.rsplit("_", 1)[0] + "_t")
        body.values[inner] = Value(inner, outer.dtype, tuple(outer.shape[1:]))
        body.outputs.append(body.values[inner])
        scan.outputs.append(o)
        scan.attrs["scan_output_axes"].append(0)
        if "scan_output_directions" in scan.attrs:
            scan.attrs["scan_output_directions"] = list(scan.attrs["scan_output_directions"]) + [0]
        per_step[o] = inner
        outs.append(inner)
    body.nodes.append(Node(node.op, [per_step.get(i, i) for i in node.inputs], outs, dict(node.attrs),
                           placement=node.placement))


def _drop_unread_outputs(g: Graph, scan: Node) -> None:
    """Per-step outputs nothing reads any more are no longer emitted (nor computed)."""
    read = {v.name for v in g.outputs}
    for n in g.nodes:
        read.update(n.inputs)
        if n.body is not None:
            read.update(n.body.captures())
    n_carry = len(scan.inputs) - scan.attrs["num_scan_inputs"]
    keep = list(range(n_carry)) + [k for k in range(n_carry, len(scan.outputs)) if scan.outputs[k] in read]
    if len(keep) == len(scan.outputs):
        return
    if len(keep) == n_carry:          # keep one per-step output: the time axis stays visible
        keep.append(n_carry)
    per_step_kept = [k - n_carry for k in keep[n_carry:]]
    scan.outputs = [scan.outputs[k] for k in keep]
    scan.body.outputs = [scan.body.outputs[k] for k in keep]
    for attr in ("scan_output_axes", "scan_output_directions"):
        if attr in scan.attrs:
            scan.attrs[attr] = [scan.attrs[attr][k] for k in per_step_kept]
    drop_dead(scan.body)


def _merge_repeats(body: Graph) -> None:
    """A sunk node may redo what the body already computes (the Split of the same gates) or
    read an Identity the body made only to emit a value that is no longer emitted: each
    such node goes, its readers read the original."""
    emitted = {v.name for v in body.outputs}
    alias: dict[str, str] = {}
    seen: dict[tuple, Node] = {}
    kept = []
    for n in body.nodes:
        n.inputs = [alias.get(i, i) for i in n.inputs]
        if n.body is None and n.op == "Identity" and n.outputs[0] not in emitted:
            alias[n.outputs[0]] = n.inputs[0]
            continue
        key = (n.op, tuple(n.inputs), repr(sorted(n.attrs.items()))) if n.body is None else None
        first = seen.get(key) if key is not None else None
        if first is not None and not any(o in emitted and f in emitted for o, f in zip(n.outputs, first.outputs)):
            alias.update(zip(n.outputs, first.outputs))
            emitted |= {f for o, f in zip(n.outputs, first.outputs) if o in emitted}
            continue
        if key is not None:
            seen[key] = n
        kept.append(n)
    body.nodes = kept
    body.outputs = [body.values[alias.get(v.name, v.name)] for v in body.outputs]
