"""Cell expressions -> cell trees of the model IR, with every option checked.

A name bound with `cell` is a template: each occurrence inside another cell expression is a
fresh instance (own weights). `instantiate` builds a tree for one input size; the resolver
calls it once when the cell is declared (to report mistakes even in unused cells) and again
when the cell is applied to data (when the input size is known).
"""
from __future__ import annotations

from dataclasses import replace

from . import syntax as S
from .cells import BUILTINS
from .cells.user import CellDefError, build_user_cell
from .errors import ErrorCollector, Span, did_you_mean
from .ir import Bi, Dropout, Leaf, Placed, Project, Residual, Stack

# option name -> (kind, default); kind: int, num, bool, opt_int, opt_num, or a tuple of names
OPTIONS = {
    "basic": {"units": ("int", None), "activation": (("tanh", "relu"), "tanh")},
    "lstm": {"units": ("int", None), "forget_bias": ("num", 1.0), "peepholes": ("bool", False),
             "proj": ("opt_int", None), "clip": ("opt_num", None)},
    "gru": {"units": ("int", None), "reset_after": ("bool", False)},
}
WRAPPERS = {
    "project": {"units": ("int", None)},
    "dropout": {"input_keep": ("prob", 1.0), "output_keep": ("prob", 1.0), "state_keep": ("prob", 1.0),
                "variational": ("bool", False)},
    "residual": {},
}
COMBINATORS = ("stack", "bi")
DEVICES_DOC = "cpu, cuda or cuda:N"


class CellResolver:
    def __init__(self, errors: ErrorCollector, defs: dict[str, S.CellDef], decls: dict[str, S.CellDecl],
                 unsupported: list):
        self.errors, self.defs, self.decls, self.unsupported = errors, defs, decls, unsupported
        self._seen_errors: set = set()

    def error(self, message: str, span: Span | None, hint: str | None = None) -> None:
        key = (message, span)
        if key not in self._seen_errors:
            self._seen_errors.add(key)
            self.errors.error(message, span, hint)

    def not_yet(self, what: str, span: Span | None) -> None:
        if (what, span) not in self.unsupported:
            self.unsupported.append((what, span))

    def known_cells(self) -> list[str]:
        return list(BUILTINS) + list(COMBINATORS) + list(self.defs) + list(self.decls)

    # ----- entry -----
    def instantiate(self, expr, input_size: int | None, stack: tuple[str, ...] = ()):
        """The cell tree of `expr` for inputs of `input_size` (None: only check options)."""
        size = input_size if input_size is not None else 1
        if isinstance(expr, S.Placed):
            inner = self.instantiate(expr.cell, input_size, stack)
            device = expr.device.name
            if not _valid_device(device):
                self.error(f"unknown device '{device}'", expr.device.span, f"use {DEVICES_DOC}")
            return Placed(inner, device, expr.span) if inner is not None else None
        if isinstance(expr, S.Wrapped):
            inner = self.instantiate(expr.cell, input_size, stack)
            return self._wrap(inner, expr.wrapper, input_size, expr.span)
        if isinstance(expr, S.Repeat):
            self.error(f"'{expr.count} * ...' repeats a layer inside stack(...) only", expr.span,
                       f"write stack({expr.count} * ...)")
            return None
        if isinstance(expr, S.CellName):
            return self._named(expr.name, (), (), expr.span, size, input_size, stack)
        if isinstance(expr, S.CellCall):
            return self._named(expr.name, expr.args, expr.kwargs, expr.span, size, input_size, stack)
        self.error("expected a cell expression", getattr(expr, "span", None))
        return None

    # ----- names: builtins, combinators, templates, user cells -----
    def _named(self, name, args, kwargs, span, size, input_size, stack):
        if name in self.decls:
            if args or kwargs:
                self.error(f"cell '{name}' is already built and takes no arguments", span,
                           f"use '{name}' alone, or declare a cell with parameters: cell {name}(units) {{ ... }}")
                return None
            if name in stack:
                self.error(f"cell '{name}' refers to itself", span)
                return None
            return self.instantiate(self.decls[name].cell, input_size, stack + (name,))
        if name in BUILTINS:
            opts = self._options(name, OPTIONS[name], args, kwargs, span)
            if opts is None:
                return None
            if name == "lstm" and opts.get("clip") is not None and opts["clip"] <= 0:
                self.error("lstm(clip=...) must be positive", span)
                return None
            return Leaf(BUILTINS[name](size, **opts), span)
        if name == "stack":
            return self._stack(args, kwargs, span, input_size, stack)
        if name == "bi":
            if len(args) != 1 or kwargs:
                self.error("bi(...) takes one cell, e.g. bi(lstm(64))", span)
                return None
            fw = self.instantiate(args[0], input_size, stack)
            bw = self.instantiate(args[0], input_size, stack)
            return Bi(fw, bw, span) if fw is not None and bw is not None else None
        if name in self.defs:
            return self._user(self.defs[name], args, kwargs, span, size, traced=input_size is not None)
        if name in WRAPPERS:
            self.error(f"'{name}' is a wrapper: apply it to a cell with '|'", span,
                       f"e.g. cell c = lstm(100) | {name}{'(1)' if name == 'project' else ''}")
            return None
        self.error(f"unknown cell '{name}'", span, did_you_mean(name, self.known_cells()))
        return None

    def _stack(self, args, kwargs, span, input_size, stack):
        if kwargs:
            self.error("stack(...) takes cells only", kwargs[0].span)
        items = []
        for a in args:
            if isinstance(a, S.Repeat):
                if a.count < 1:
                    self.error("a repeat count must be at least 1", a.span)
                items += [a.cell] * max(a.count, 0)
            else:
                items.append(a)
        if not items:
            self.error("stack(...) needs at least one cell", span)
            return None
        layers, size = [], input_size
        for item in items:
            layer = self.instantiate(item, size, stack)
            if layer is None:
                return None
            layers.append(layer)
            size = layer.output_size if layer.output_size > 0 else None
        return Stack(tuple(layers), span)

    def _user(self, defn: S.CellDef, args, kwargs, span, size, traced: bool = True):
        """A user cell for inputs of `size`; its equations are traced (shape-checked) only
        once the real input size is known, when the cell is applied to data."""
        names = [p.name for p in defn.params]
        if len(args) > len(names):
            self.error(f"cell '{defn.name}' takes {len(names)} argument(s), got {len(args)}", span)
            return None
        bound: dict = {}
        for n, a in zip(names, args):
            bound[n] = a
        for kw in kwargs:
            if kw.name not in names:
                self.error(f"cell '{defn.name}' has no parameter '{kw.name}'", kw.span, did_you_mean(kw.name, names))
                return None
            bound[kw.name] = kw.value
        values = {}
        for n in names:
            if n not in bound:
                self.error(f"cell '{defn.name}' needs a value for '{n}'", span)
                return None
            v = bound[n]
            if not isinstance(v, S.Number) or not isinstance(v.value, int) or v.value <= 0:
                self.error(f"'{n}' of cell '{defn.name}' must be a positive whole number", getattr(v, "span", span))
                return None
            values[n] = v.value
        try:
            cell = build_user_cell(defn, values, size, span)
        except CellDefError as e:
            self.error(e.message, e.span, e.hint)
            return None
        try:
            out = _trace_output_size(cell)
        except CellDefError as e:
            if traced or not e.shape:   # before the input size is known, only names are checked
                self.error(e.message, e.span, e.hint)
            if traced:
                return None
            out = cell.output_size
        if out != cell.output_size:
            cell = replace(cell, output_size=out)
        return Leaf(cell, span)

    # ----- wrappers -----
    def _wrap(self, inner, wrapper, input_size, span):
        name = wrapper.name
        args = wrapper.args if isinstance(wrapper, S.CellCall) else ()
        kwargs = wrapper.kwargs if isinstance(wrapper, S.CellCall) else ()
        if name not in WRAPPERS:
            hint = did_you_mean(name, WRAPPERS) or "wrappers are project(n), dropout(...) and residual"
            self.error(f"unknown wrapper '{name}'", wrapper.span, hint)
            return None
        opts = self._options(name, WRAPPERS[name], args, kwargs, wrapper.span)
        if opts is None or inner is None:
            return None
        if name == "project":
            return Project(inner, opts["units"], span)
        if name == "dropout":
            return Dropout(inner, span=span, **opts)   # training graphs only (lower/dropout.py)
        if input_size is not None and inner.output_size != inner.input_size:
            self.error(f"residual needs the cell's output size {inner.output_size} to equal its input size "
                       f"{inner.input_size}", wrapper.span)
            return None
        return Residual(inner, span)

    # ----- options -----
    def _options(self, name, schema, args, kwargs, span):
        ok = True
        values = {k: d for k, (_, d) in schema.items()}
        order = list(schema)
        given: set[str] = set()
        if len(args) > 1 or (args and not order):
            self.error(f"{name}(...) takes at most {min(len(order), 1)} positional argument(s)", args[-1].span)
            return None
        for k, a in zip(order, args):
            given.add(k)
            ok &= self._option(name, k, schema[k][0], a, values)
        for kw in kwargs:
            if kw.name not in schema:
                hint = did_you_mean(kw.name, schema) or (f"{name} takes {', '.join(order)}" if order else None)
                self.error(f"{name}(...) has no option '{kw.name}'", kw.span, hint)
                ok = False
                continue
            if kw.name in given:
                self.error(f"'{kw.name}' is given twice", kw.span)
                ok = False
            given.add(kw.name)
            ok &= self._option(name, kw.name, schema[kw.name][0], kw.value, values)
        for k, (kind, default) in schema.items():
            if default is None and kind == "int" and k not in given:
                self.error(f"{name}(...) needs its number of {k}, e.g. {name}(100)", span)
                ok = False
        return values if ok else None

    def _option(self, cell, key, kind, node, values) -> bool:
        span = getattr(node, "span", None)
        v = _literal(node)
        if isinstance(kind, tuple):
            name = node.name if isinstance(node, (S.Name, S.CellName)) else None
            if name not in kind:
                self.error(f"{cell}({key}=...) must be one of {', '.join(kind)}", span,
                           did_you_mean(name, kind) if name else None)
                return False
            values[key] = name
            return True
        if kind == "int" or (kind == "opt_int" and v is not None):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                self.error(f"{cell}({key}=...) must be a positive whole number", span)
                return False
        elif kind in ("num", "opt_num") and not (kind == "opt_num" and v is None):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                self.error(f"{cell}({key}=...) must be a number", span)
                return False
            v = float(v)
        elif kind == "prob":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                self.error(f"{cell}({key}=...) is a keep probability in (0, 1]", span)
                return False
            v = float(v)
        elif kind == "bool" and not isinstance(v, bool):
            self.error(f"{cell}({key}=...) must be true or false", span)
            return False
        values[key] = v
        return True


_NOT_LITERAL = object()


def _literal(node):
    if isinstance(node, S.Number):
        return node.value
    if isinstance(node, S.Literal):
        return node.value
    if isinstance(node, S.Unary) and node.op == "-" and isinstance(node.operand, S.Number):
        return -node.operand.value
    return _NOT_LITERAL


def _valid_device(name: str) -> bool:
    if name in ("cpu", "cuda"):
        return True
    return name.startswith("cuda:") and name[5:].isdigit()


def _trace_output_size(cell) -> int:
    """Trace a user cell's step once on a scratch graph: checks its equations' shapes and
    finds its output size."""
    from .builder import Builder
    from .graph import Graph

    b = Builder(Graph(), "f32")
    x = b.input("x", "f32", ("batch", cell.input_size))
    states = tuple(b.input(n, "f32", ("batch", s)) for n, s in cell.state)
    params = {k: b.input(f"p.{k}", "f32", spec.shape) for k, spec in cell.params.items()}
    out, _ = cell.step(b, params, x, states)
    if not hasattr(out, "shape") or len(out.shape) != 2 or not isinstance(out.shape[-1], int):
        raise CellDefError("the cell's output must be a [units] vector per step", None)
    return out.shape[-1]
