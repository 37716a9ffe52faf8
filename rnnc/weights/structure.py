"""The parameters of a model, grouped the way frameworks group them.

A model's parameters come in units:
- a `CellUnit` is one built-in cell (a leaf of a cell tree) with its rnnc path (`rnn`,
  `deep.1`, `enc.fw`, `deep.1.bw`) — its parameters are `<path>.W`, `<path>.U`, ...;
- a `DenseUnit` is a `dense` layer (`logits.W`, `logits.b`) or a `project` wrapper
  (`deep.project.W`, `deep.project.b`);
- an `Instance` is one cell run's whole tree (a PyTorch module holds a stack and both
  directions: `instance.layers[k]` = [forward leaf] or [forward leaf, backward leaf]).
Options the IR does not keep (lstm forget_bias, clip) are read back from the spec's syntax.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import syntax as S
from ..errors import Span
from ..ir import Bi, Dropout, Leaf, Model, Placed, Project, Residual, Stack, walk
from ..parser import parse

BUILTIN_KINDS = ("basic", "lstm", "gru")


@dataclass
class CellUnit:
    path: str
    leaf: Leaf
    options: dict

    @property
    def kind(self) -> str:
        return self.leaf.cell.kind

    @property
    def span(self) -> Span | None:
        return self.leaf.span

    @property
    def builtin(self) -> bool:
        return self.kind in BUILTIN_KINDS and not self.leaf.cell.doc.startswith("user cell")

    @property
    def units(self) -> int:
        return self.leaf.cell.state[0][1]

    @property
    def input_size(self) -> int:
        return self.leaf.cell.input_size

    def shape(self, p: str) -> tuple[int, ...]:
        return self.leaf.cell.params[p].shape

    def describe(self) -> str:
        o = self.options
        if self.kind == "lstm":
            extra = "".join([f", forget_bias={o['forget_bias']:g}",
                             ", peepholes=true" if o["peepholes"] else "",
                             f", proj={o['proj']}" if o["proj"] else "",
                             f", clip={o['clip']:g}" if o["clip"] is not None else ""])
        elif self.kind == "gru":
            extra = ", reset_after=true" if o["reset_after"] else ""
        else:
            extra = ""
        return f"{self.kind}({self.units}{extra}) '{self.path}'"


@dataclass
class DenseUnit:
    path: str
    in_size: int
    out_size: int
    span: Span | None

    def describe(self) -> str:
        return f"dense '{self.path}' [{self.in_size} -> {self.out_size}]"


@dataclass
class Instance:
    name: str
    core: object                       # the tree under its outer wrappers
    span: Span | None
    layers: list[list[CellUnit]] | None = None   # PyTorch's view; None when not one module
    problem: str | None = None                   # why it is not one PyTorch module
    leaves: list[CellUnit] = field(default_factory=list)


@dataclass
class Structure:
    model: Model
    instances: list[Instance]
    cells: list[CellUnit]
    denses: list[DenseUnit]

    def param_names(self) -> list[str]:
        names = [f"{c.path}.{p}" for c in self.cells for p in c.leaf.cell.params]
        return names + [n for d in self.denses for n in (f"{d.path}.W", f"{d.path}.b")]


def structure(model: Model) -> Structure:
    options = _CallOptions(model)
    instances, cells, denses, seen = [], [], [], set()
    for run in model.runs:
        if run.instance in seen:
            continue
        seen.add(run.instance)
        inst = Instance(run.instance, None, run.span)
        inst.core = _collect(run.cell, run.instance, inst, denses, options)
        inst.layers, inst.problem = _module_layers(inst.core, run.instance, inst.leaves)
        instances.append(inst)
        cells += inst.leaves
    dense_seen = set()
    for e in sorted(walk(model), key=lambda e: (e.span.line, e.span.column) if e.span else (0, 0)):
        if e.op == "dense" and e.attrs["name"] not in dense_seen:
            dense_seen.add(e.attrs["name"])
            denses.append(DenseUnit(e.attrs["name"], e.args[0].type.shape[-1], e.attrs["units"], e.span))
    return Structure(model, instances, cells, denses)


def _collect(node, path, inst, denses, options, outer=True):
    """Leaves (in order) into inst.leaves and project wrappers into denses; returns the
    node under the outer wrappers."""
    if isinstance(node, Leaf):
        inst.leaves.append(CellUnit(path, node, options.of(node)))
        return node
    if isinstance(node, Stack):
        for i, layer in enumerate(node.layers):
            _collect(layer, f"{path}.{i}", inst, denses, options, False)
        return node
    if isinstance(node, Bi):
        _collect(node.fw, f"{path}.fw", inst, denses, options, False)
        _collect(node.bw, f"{path}.bw", inst, denses, options, False)
        return node
    if isinstance(node, Project):
        inner = _collect(node.inner, path, inst, denses, options, outer)
        denses.append(DenseUnit(f"{path}.project", node.inner.output_size, node.units, node.span))
        return inner if outer else node
    if isinstance(node, (Residual, Dropout, Placed)):
        inner = _collect(node.inner, path, inst, denses, options, outer)
        return inner if outer else node
    raise ValueError(f"unknown cell node {type(node).__name__}")


def _strip(node):
    while isinstance(node, (Residual, Dropout, Placed)):
        node = node.inner
    return node


def _module_layers(core, path, leaves):
    """The layers of the one PyTorch module a cell tree stands for: [[fw]] or [[fw, bw]]
    per layer; or None and the reason it stands for none."""
    by_id = {id(u.leaf): u for u in leaves}

    def layer(node):
        node = _strip(node)
        if isinstance(node, Leaf):
            return [by_id[id(node)]]
        if isinstance(node, Bi) and isinstance(_strip(node.fw), Leaf) and isinstance(_strip(node.bw), Leaf):
            return [by_id[id(_strip(node.fw))], by_id[id(_strip(node.bw))]]
        return None

    if isinstance(core, Stack):
        layers = [layer(x) for x in core.layers]
        if any(x is None for x in layers):
            return None, ("a layer of this stack is not a cell or bi(cell) (a project wrapper or a nested "
                          "stack inside a stack has no place in one PyTorch module)")
    else:
        one = layer(core)
        if one is None:
            return None, "bi(stack(...)) has no PyTorch form: write stack(bi(...), bi(...))"
        layers = [one]
    if len({len(x) for x in layers}) != 1:
        return None, "some layers of this stack are bi(...) and some are not: one PyTorch module has one direction count"
    units = [u for x in layers for u in x]
    if len({(u.kind, u.units, tuple(sorted((k, v) for k, v in u.options.items()))) for u in units}) != 1:
        return None, "the cells of one PyTorch module must be the same kind with the same options and size"
    return layers, None


class _CallOptions:
    """Options of built-in cell calls, found by the span of the call (the IR's Leaf.span)."""

    def __init__(self, model: Model):
        self.calls: dict = {}
        self._visit(parse(model.source, model.file))   # it resolved, so it parses

    def _visit(self, node):
        if isinstance(node, S.CellCall):
            self.calls[node.span] = node
        if isinstance(node, (list, tuple)):
            for x in node:
                self._visit(x)
        elif hasattr(node, "__dataclass_fields__"):
            for f in node.__dataclass_fields__:
                self._visit(getattr(node, f))

    def of(self, leaf: Leaf) -> dict:
        from ..resolve_cells import OPTIONS, _literal

        cell = leaf.cell
        call = self.calls.get(leaf.span)
        given = {}
        if call is not None:
            for kw in call.kwargs:
                given[kw.name] = _literal(kw.value)
        if cell.kind == "lstm":
            fb = given.get("forget_bias", OPTIONS["lstm"]["forget_bias"][1])
            clip = given.get("clip")
            return {"forget_bias": float(fb), "peepholes": "wi" in cell.params,
                    "proj": cell.params["P"].shape[1] if "P" in cell.params else None,
                    "clip": float(clip) if isinstance(clip, (int, float)) and not isinstance(clip, bool) else None}
        if cell.kind == "gru":
            return {"reset_after": "bU" in cell.params}
        return {}
