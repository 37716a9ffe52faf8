"""Syntax tree -> model IR: names, cells, shapes and dtypes checked once, every error collected.

`resolve(module)` returns a `Model` or raises one `SpecError` listing every mistake.
Constructs that later issues compile (dropout, placement, fused unrolling) are checked here
and listed in `Model.unsupported`. Vocabularies and seq2seq blocks: rnnc/seq2seq/resolve.py.
"""
from __future__ import annotations

from . import syntax as S
from .errors import ErrorCollector, did_you_mean
from .ir import Bi, Expr, Leaf, Model, Run, Seq2SeqBlock, Stack, StateType, TensorType, state_layout, top_h_paths
from .resolve_cells import CellResolver, _literal
from .resolve_train import default_train, resolve_train
from .seq2seq import resolve as s2s
from .vocab import Vocab

DTYPES = {"f32", "f64", "i64", "i32", "bool"}
FLOATS = {"f32", "f64"}
INTS = {"i64", "i32"}
UNARY = {"softmax", "sigmoid", "tanh", "relu", "exp", "log", "log_softmax"}
LOSSES = {"mse", "softmax_cross_entropy"}
FUNCTIONS = UNARY | LOSSES | {"dense", "concat", "accuracy"}
UNROLLS = ("static", "loop", "fused", "auto")


class Opaque:
    """The value of a construct that failed to resolve: checked no further (no cascade)."""


class Resolver:
    def __init__(self, module: S.Module, default_unroll: str):
        self.m = module
        self.errors = ErrorCollector()
        self.unsupported: list = []
        self.default_unroll = default_unroll
        self.env: dict[str, object] = {}           # value names -> Expr | tuple | Opaque | Seq2SeqBlock | Vocab
        self.inputs: list[tuple[str, TensorType]] = []
        self.defs = {s.name: s for s in module.statements if isinstance(s, S.CellDef)}
        self.decls: dict[str, S.CellDecl] = {}
        self.cells = CellResolver(self.errors, self.defs, self.decls, self.unsupported)
        self.instances: dict[str, object] = {}     # cell name -> cell tree (shared weights)
        self.runs: list[Run] = []
        self.dense_count = 0
        self.opaque_outputs = False
        self.vocabs: list[Vocab] = []
        self.n_targets: int | None = None          # names on the left of the statement being resolved

    def error(self, message, span, hint=None):
        self.errors.error(message, span, hint)

    # ----- statements -----
    def run(self) -> Model:
        models = [s for s in self.m.statements if isinstance(s, S.ModelDecl)]
        if not models:
            self.error("the spec declares no model", None, "start it with `model NAME`")
        for extra in models[1:]:
            self.error("a spec declares one model", extra.span)
        outputs: list[tuple[str, Expr]] = []
        loss, metrics, train = None, [], default_train()
        seen_defs: set[str] = set()
        for s in self.m.statements:
            self.n_targets = None
            if isinstance(s, S.InputDecl):
                self._input(s)
            elif isinstance(s, S.VocabDecl):
                v = s2s.vocab_decl(self, s)
                if v is not None:
                    self.vocabs.append(v)
                self._bind(s.name, v if v is not None else Opaque(), s.span)
            elif isinstance(s, S.CellDecl):
                self._cell_decl(s)
            elif isinstance(s, S.CellDef):
                if s.name in seen_defs or s.name in self.decls:
                    self.error(f"cell '{s.name}' is defined twice", s.span)
                seen_defs.add(s.name)
            elif isinstance(s, S.Assign):
                self._assign(s)
            elif isinstance(s, S.LossStmt):
                if loss is not None:
                    self.error("a model has one loss", s.span, "add the terms: loss = a + b")
                loss = self._loss(s)
            elif isinstance(s, S.MetricStmt):
                m = self._metric(s)
                if m is not None:
                    metrics.append(m)
            elif isinstance(s, S.OutputStmt):
                outputs += self._output(s, {n for n, _ in outputs})
            elif isinstance(s, S.TrainBlock):
                train = resolve_train(s, self.errors)
            elif isinstance(s, S.Seq2SeqBlock):
                self._seq2seq(s)
        if models and not outputs and not self.opaque_outputs and not self.errors:
            self.error("the model has no output", models[0].span,
                       "add e.g. `output probs = softmax(logits)`: the inference model computes the outputs")
        self.errors.raise_if_any(self.m.source)
        return Model(models[0].name, self.m.file, self.m.source, tuple(self.inputs), tuple(outputs), loss,
                     tuple(metrics), train, tuple(self.runs), tuple(self.unsupported), tuple(self.vocabs))

    def _bind(self, name: str, value, span) -> None:
        if name in self.env or name in self.decls or name in self.defs:
            self.error(f"'{name}' is already defined", span, "each name is bound once")
            return
        self.env[name] = value

    def _input(self, s: S.InputDecl) -> None:
        if s.dtype not in DTYPES:
            hint = {"float32": "f32", "float": "f32", "float64": "f64", "int64": "i64", "int": "i64",
                    "int32": "i32", "double": "f64", "long": "i64"}.get(s.dtype)
            self.error(f"unknown dtype '{s.dtype}'", s.span,
                       f"did you mean '{hint}'?" if hint else "dtypes are f32, f64, i64, i32, bool")
            self._bind(s.name, Opaque(), s.span)
            return
        dims = []
        for d in s.dims:
            if isinstance(d, S.Number):
                if not isinstance(d.value, int) or d.value <= 0:
                    self.error("a dimension must be a positive whole number or a name", d.span)
                    self._bind(s.name, Opaque(), s.span)
                    return
                dims.append(d.value)
            else:
                dims.append(d.name)
        t = TensorType(s.dtype, tuple(dims))
        self.inputs.append((s.name, t))
        self._bind(s.name, Expr("input", (), {"name": s.name}, t, s.span), s.span)

    def _cell_decl(self, s: S.CellDecl) -> None:
        if s.name in self.decls or s.name in self.env or s.name in self.defs:
            self.error(f"'{s.name}' is already defined", s.span)
            return
        self.decls[s.name] = s
        self.cells.instantiate(s.cell, None, (s.name,))     # report option mistakes even if unused

    def _targets(self, targets, values, span) -> None:
        if len(targets) != len(values):
            self.error(f"{len(targets)} name(s) on the left, but the right side gives {len(values)} value(s)", span)
            values = [Opaque()] * len(targets)     # bound anyway: no cascade of 'unknown name' errors
        for t, v in zip(targets, values):
            if t.name != "_":
                self._bind(t.name, v, t.span)

    def _assign(self, s: S.Assign) -> None:
        self.n_targets = len(s.targets)
        value = self.expr(s.value, target=s.targets[0].name if len(s.targets) == 1 else None)
        if value is None:
            for t in s.targets:
                if t.name != "_" and t.name not in self.env:
                    self.env[t.name] = Opaque()   # no cascade of 'unknown name' errors
            return
        values = value if isinstance(value, tuple) else (value,)
        if isinstance(value, Opaque):
            values = (value,) * len(s.targets)
        self._targets(s.targets, values, s.span)

    def _output(self, s: S.OutputStmt, taken: set[str]) -> list[tuple[str, Expr]]:
        if s.value is None:
            values = [self.expr(n) for n in s.names]
        else:
            self.n_targets = len(s.names)
            v = self.expr(s.value)
            if v is None:
                return []
            values = list(v) if isinstance(v, tuple) else [v] * (len(s.names) if isinstance(v, Opaque) else 1)
            if len(values) != len(s.names):
                self.error(f"{len(s.names)} output name(s), but the right side gives {len(values)} value(s)", s.span)
                return []
        out = []
        for n, v in zip(s.names, values):
            if n.name in taken:
                self.error(f"output '{n.name}' is declared twice", n.span)
                continue
            if isinstance(v, Opaque):
                self.opaque_outputs = True      # an output of a construct compiled later
                continue
            if v is None:
                continue
            t = self.tensor(v, n.span)
            if t is None:
                continue
            if s.value is not None:
                self._bind(n.name, t, n.span)
            out.append((n.name, t))
        return out

    def _seq2seq(self, s: S.Seq2SeqBlock) -> None:
        blk = s2s.block(self, s)
        self._bind(s.name, blk if blk is not None else Opaque(), s.span)

    # ----- losses and metrics -----
    def _loss(self, s: S.LossStmt):
        v = self.expr(s.value)
        if v is None or isinstance(v, Opaque):
            return None
        t = self.tensor(v, s.value.span)
        if t is not None and (t.type.shape != () or t.type.dtype not in FLOATS):
            self.error(f"the loss must be a scalar, this is {t.type}", s.value.span,
                       "use mse(...) or softmax_cross_entropy(...)")
            return None
        return t

    def _metric(self, s: S.MetricStmt):
        call = s.value
        if not isinstance(call, S.Call) or call.func != "accuracy":
            name = call.func if isinstance(call, S.Call) else "this"
            self.error(f"unknown metric '{name}'", s.value.span,
                       did_you_mean(name, ("accuracy",)) or "metrics: accuracy(logits, labels)")
            return None
        v = self._classify("accuracy", call)
        return ("accuracy", v) if v is not None else None

    # ----- expressions -----
    def expr(self, e, target: str | None = None):
        if isinstance(e, S.Name):
            return self._name(e)
        if isinstance(e, S.Number):
            return Expr("const", (), {"value": float(e.value)}, TensorType("f32", ()), e.span)
        if isinstance(e, S.Unary):
            v = self.tensor(self.expr(e.operand), e.operand.span)
            return None if v is None else Expr("neg", (v,), {}, v.type, e.span)
        if isinstance(e, S.BinOp):
            return self._binop(e)
        if isinstance(e, S.Attr):
            return self._attr(e)
        if isinstance(e, S.Index):
            return self._index(e)
        if isinstance(e, S.Call):
            return self._call(e, target)
        if isinstance(e, (S.TupleExpr, S.ListExpr)):
            self.error("a tuple or list is only allowed as initial=...", e.span)
            return None
        self.error("this expression is not allowed here", getattr(e, "span", None))
        return None

    def _name(self, e: S.Name):
        if e.name in self.env:
            return self.env[e.name]
        if e.name in self.decls or e.name in self.defs:
            self.error(f"'{e.name}' is a cell: apply it to a sequence, e.g. {e.name}(x)", e.span)
            return None
        self.error(f"unknown name '{e.name}'", e.span, did_you_mean(e.name, list(self.env)))
        return None

    def tensor(self, v, span) -> Expr | None:
        """v as a tensor: a final state stands for its top layer's h."""
        if v is None or isinstance(v, Opaque):
            return None
        if isinstance(v, tuple):
            self.error(f"this gives {len(v)} values; name them, e.g. `seq, last = ...`", span)
            return None
        if isinstance(v, Seq2SeqBlock):
            self.error(f"'{v.name}' is a seq2seq block, not a tensor", span,
                       f"call it: {v.name}(src, src_len, tgt) or {v.name}.decode(src, src_len)")
            return None
        if isinstance(v, Vocab):
            self.error(f"'{v.name}' is a vocabulary, not a tensor", span)
            return None
        if isinstance(v.type, StateType):
            paths = top_h_paths(v.type.cell)
            size = sum(dict(state_layout(v.type.cell))[p] for p in paths)
            return Expr("state_tensor", (v,), {"paths": tuple(paths)}, TensorType("f32", (v.type.batch, size)),
                        v.span)
        return v

    def _binop(self, e: S.BinOp):
        a = self.tensor(self.expr(e.left), e.left.span)
        b = self.tensor(self.expr(e.right), e.right.span)
        if a is None or b is None:
            return None
        for side, t in (("left", a), ("right", b)):
            if t.type.dtype not in FLOATS:
                self.error(f"'{e.op}' works on float tensors; the {side} side is {t.type}", e.span)
                return None
        if e.op == "@":
            if len(b.type.shape) != 2 or not a.type.shape or a.type.shape[-1] != b.type.shape[0]:
                self.error(f"'@' cannot multiply {a.type} by {b.type}", e.span)
                return None
            return Expr("matmul", (a, b), {}, TensorType("f32", a.type.shape[:-1] + b.type.shape[1:]), e.span)
        shape = _broadcast(a.type.shape, b.type.shape)
        if shape is None:
            self.error(f"'{e.op}' needs shapes that broadcast: {a.type} and {b.type}", e.span)
            return None
        op = {"+": "add", "-": "sub", "*": "mul", "/": "div"}[e.op]
        return Expr(op, (a, b), {}, TensorType("f32", shape), e.span)

    def _attr(self, e: S.Attr):
        v = self.expr(e.value)
        if v is None or isinstance(v, Opaque):
            return None
        if not isinstance(v, Expr) or not isinstance(v.type, StateType):
            self.error(f"'.{e.attr}' applies to a final state", e.span)
            return None
        cell = _strip(v.type.cell)
        prefix = ""
        while isinstance(cell, Stack):           # on a stack, .h/.c mean the top layer's
            prefix += f"{len(cell.layers) - 1}."
            cell = _strip(cell.layers[-1])
        if isinstance(cell, Bi):
            parts = [p for p in state_layout(cell) if p[0].split(".")[-1] == e.attr]
        elif isinstance(cell, Leaf):
            parts = [p for p in state_layout(cell) if p[0] == e.attr]
        else:
            parts = []
        if not parts:
            names = sorted({p.split(".")[-1] for p, _ in state_layout(cell)})
            self.error(f"this state has no part '{e.attr}'", e.span, f"its parts: {', '.join(names)}")
            return None
        layout = dict(state_layout(v.type.cell))
        paths = tuple(prefix + p for p, _ in parts)
        size = sum(layout[p] for p in paths)
        return Expr("state_tensor", (v,), {"paths": paths}, TensorType("f32", (v.type.batch, size)), e.span)

    def _index(self, e: S.Index):
        v = self.expr(e.value)
        if v is None or isinstance(v, Opaque):
            return None
        cell = _strip(v.type.cell) if isinstance(v, Expr) and isinstance(v.type, StateType) else None
        if not isinstance(cell, Stack):
            self.error("[i] picks a layer of a stack's final state", e.span)
            return None
        i = _literal(e.index)
        if isinstance(i, bool) or not isinstance(i, int) or not -len(cell.layers) <= i < len(cell.layers):
            self.error(f"layer index must be a whole number from 0 to {len(cell.layers) - 1}", e.index.span)
            return None
        i %= len(cell.layers)
        return Expr("state_layer", (v,), {"layer": i}, StateType(cell.layers[i], v.type.batch), e.span)

    def _call(self, e: S.Call, target: str | None):
        f = e.func
        head = f.split(".")[0]
        if isinstance(self.env.get(head), Seq2SeqBlock):
            want, self.n_targets = self.n_targets, None
            return s2s.call(self, self.env[head], e, want)
        if isinstance(self.env.get(head), Opaque):       # a block that failed: no cascade
            for a in e.args:
                self.expr(a)
            return Opaque()
        if "." in f:
            self.error(f"unknown function '{f}'", e.func_span or e.span)
            return None
        if f in self.decls:
            return self._run(e)
        if f in self.defs or f in ("stack", "bi", "basic", "lstm", "gru"):
            self.error(f"'{f}' must be declared with `cell NAME = {f}(...)` before it runs on data", e.span)
            return None
        if f in UNARY:
            if len(e.args) != 1 or e.kwargs:
                self.error(f"{f}(t) takes one tensor", e.span)
                return None
            t = self.tensor(self.expr(e.args[0]), e.args[0].span)
            if t is None:
                return None
            if t.type.dtype not in FLOATS:
                self.error(f"{f}(t) needs a float tensor, got {t.type}", e.args[0].span)
                return None
            return Expr(f, (t,), {}, t.type, e.span)
        if f == "dense":
            return self._dense(e, target)
        if f == "concat":
            ts = [self.tensor(self.expr(a), a.span) for a in e.args]
            if any(t is None for t in ts):
                return None
            if len(ts) < 2 or any(t.type.shape[:-1] != ts[0].type.shape[:-1] for t in ts):
                self.error("concat(a, b, ...) joins tensors that differ only in their last axis", e.span)
                return None
            last = [t.type.shape[-1] for t in ts]
            size = sum(last) if all(isinstance(d, int) for d in last) else "?"
            return Expr("concat", tuple(ts), {}, TensorType("f32", ts[0].type.shape[:-1] + (size,)), e.span)
        if f == "mse":
            return self._mse(e)
        if f == "softmax_cross_entropy":
            return self._classify(f, e)
        if f == "accuracy":
            self.error("accuracy(...) is a metric: write `metric accuracy(logits, y)`", e.span)
            return None
        known = FUNCTIONS | set(self.decls)
        self.error(f"unknown function '{f}'", e.func_span or e.span, did_you_mean(f, known))
        return None

    def _dense(self, e: S.Call, target):
        if len(e.args) != 2 or e.kwargs:
            self.error("dense(t, n) takes a tensor and a number of units", e.span)
            return None
        t = self.tensor(self.expr(e.args[0]), e.args[0].span)
        n = _literal(e.args[1])
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            self.error("dense(t, n): n must be a positive whole number", e.args[1].span)
            return None
        if t is None:
            return None
        if t.type.dtype not in FLOATS or not t.type.shape or not isinstance(t.type.shape[-1], int):
            self.error(f"dense(t, n) needs a float tensor with a fixed last axis, got {t.type}", e.args[0].span)
            return None
        name = target or f"dense_{self.dense_count}"
        self.dense_count += 1
        return Expr("dense", (t,), {"units": n, "name": name}, TensorType("f32", t.type.shape[:-1] + (n,)), e.span)

    # ----- running a cell -----
    def _run(self, e: S.Call):
        name = e.func
        if len(e.args) != 1:
            self.error(f"{name}(x, ...) takes one input sequence", e.span)
            return None
        x = self.tensor(self.expr(e.args[0]), e.args[0].span)
        kw = {}
        for k in e.kwargs:
            if k.name not in ("lengths", "initial", "unroll"):
                self.error(f"running a cell takes lengths=, initial= and unroll=, not '{k.name}'", k.span,
                           did_you_mean(k.name, ("lengths", "initial", "unroll")))
                return None
            kw[k.name] = k
        if x is None:
            return None
        shape = x.type.shape
        if x.type.dtype not in FLOATS or len(shape) != 3 or not isinstance(shape[2], int):
            self.error(f"cell '{name}' runs on a float sequence [batch, time, features] with a fixed number "
                       f"of features; '{_src(e.args[0])}' is {x.type}", e.args[0].span)
            return None
        cell = self.instances.get(name)
        if cell is None:
            cell = self.cells.instantiate(self.decls[name].cell, shape[2], (name,))
            if cell is None:
                return None
            self.instances[name] = cell
        elif cell.input_size != shape[2]:
            self.error(f"cell '{name}' shares its weights between runs, so its inputs need the same size: "
                       f"{cell.input_size} before, {shape[2]} here", e.args[0].span)
            return None
        lengths = None
        if "lengths" in kw:
            lengths = self.tensor(self.expr(kw["lengths"].value), kw["lengths"].value.span)
            if lengths is None:
                return None
            if lengths.type.dtype not in INTS or len(lengths.type.shape) != 1 or \
                    not _same_dim(lengths.type.shape[0], shape[0]):
                self.error(f"lengths= needs integers [{shape[0]}], got {lengths.type}", kw["lengths"].value.span)
                return None
        initial = ()
        if "initial" in kw:
            initial = self._initial(cell, kw["initial"].value, shape[0])
            if initial is None:
                return None
        unroll = None
        if "unroll" in kw:
            u = kw["unroll"].value
            unroll = u.name if isinstance(u, S.Name) else None
            if unroll not in UNROLLS:
                self.error(f"unroll= must be one of {', '.join(UNROLLS)}", u.span)
                return None
        effective = unroll or self.default_unroll
        if effective == "static" and not isinstance(shape[1], int):
            where = "unroll=static" if unroll else "--unroll static"
            self.error(f"{where} needs a fixed number of steps, but '{_src(e.args[0])}' has a time dim "
                       f"'{shape[1]}'", (kw["unroll"].value.span if unroll else e.span),
                       "use unroll=loop, or declare the input with a fixed time size")
            return None
        self.runs.append(Run(name, cell, unroll, e.span))
        out = cell.output_size
        run = Expr("run", (x, lengths) + initial, {"cell": cell, "instance": name, "unroll": unroll},
                   None, e.span)
        seq = Expr("run_seq", (run,), {}, TensorType("f32", (shape[0], shape[1], out)), e.span)
        final = Expr("run_final", (run,), {}, StateType(cell, shape[0]), e.span)
        return (seq, final)

    def _initial(self, cell, node, batch):
        """initial= as a flat tuple of tensors in state_layout order, checked against the
        cell's structure: h0 | (c0, h0) | [layer states] | (fw state, bw state)."""
        flat: list = []

        def walk(c, n) -> bool:
            c = _strip(c)
            if isinstance(c, Stack):
                if not isinstance(n, S.ListExpr) or len(n.items) != len(c.layers):
                    self.error(f"initial= for a stack of {len(c.layers)} needs a list of {len(c.layers)} layer "
                               "states, e.g. [(c0, h0), (c1, h1)]", n.span)
                    return False
                return all(walk(layer, item) for layer, item in zip(c.layers, n.items))
            if isinstance(c, Bi):
                if not isinstance(n, S.TupleExpr) or len(n.items) != 2:
                    self.error("initial= for bi(...) needs (forward state, backward state)", n.span)
                    return False
                return walk(c.fw, n.items[0]) and walk(c.bw, n.items[1])
            parts = c.cell.state
            items = n.items if isinstance(n, S.TupleExpr) else (n,)
            if len(items) != len(parts):
                want = "(" + ", ".join(f"{p}0" for p, _ in parts) + ")" if len(parts) > 1 else "h0"
                self.error(f"initial= for this {c.cell.kind} cell needs {want}", n.span)
                return False
            for (p, size), item in zip(parts, items):
                t = self.tensor(self.expr(item), item.span)
                if t is None:
                    return False
                if t.type.dtype not in FLOATS or len(t.type.shape) != 2 or t.type.shape[1] != size or \
                        not _same_dim(t.type.shape[0], batch):
                    self.error(f"initial state '{p}' must be f32[{batch}, {size}], '{_src(item)}' is {t.type}",
                               item.span)
                    return False
                flat.append(t)
            return True

        return tuple(flat) if walk(cell, node) else None

    # ----- losses -----
    def _loss_args(self, e: S.Call):
        if len(e.args) != 2:
            self.error(f"{e.func}(a, b) takes two tensors", e.span)
            return None
        a = self.tensor(self.expr(e.args[0]), e.args[0].span)
        b = self.tensor(self.expr(e.args[1]), e.args[1].span)
        opts = {}
        for k in e.kwargs:
            if k.name not in ("lengths", "weights"):
                self.error(f"{e.func}(...) takes lengths= or weights=, not '{k.name}'", k.span)
                return None
            opts[k.name] = (self.tensor(self.expr(k.value), k.value.span), k.value)
        if len(opts) == 2:
            self.error(f"{e.func}(...) takes lengths= or weights=, not both", e.span)
            return None
        if a is None or b is None or any(v is None for v, _ in opts.values()):
            return None
        return a, b, opts

    def _weights(self, e, rows, opts):
        """The lengths/weights tensor, checked against the batch (and time) of the loss."""
        if not opts:
            return None, None
        kind, (t, node) = next(iter(opts.items()))
        if kind == "lengths":
            if len(rows) < 2:
                self.error(f"lengths= needs per-step values [batch, time, ...]; these are [{', '.join(map(str, rows))}]",
                           node.span)
                return None, None
            if t.type.dtype not in INTS or len(t.type.shape) != 1 or not _same_dim(t.type.shape[0], rows[0]):
                self.error(f"lengths= needs integers [{rows[0]}], '{_src(node)}' is {t.type}", node.span)
                return None, None
        else:
            ok = t.type.dtype in FLOATS and 1 <= len(t.type.shape) <= len(rows) and \
                all(_same_dim(x, y) for x, y in zip(t.type.shape, rows))
            if not ok:
                self.error(f"weights= needs floats [{', '.join(map(str, rows))}] or [{rows[0]}], "
                           f"'{_src(node)}' is {t.type}", node.span)
                return None, None
        return kind, t

    def _mse(self, e: S.Call):
        got = self._loss_args(e)
        if got is None:
            return None
        a, b, opts = got
        if a.type.dtype not in FLOATS or b.type.dtype not in FLOATS or not _same_shape(a.type.shape, b.type.shape):
            self.error(f"mse(a, b) needs two float tensors of one shape: '{_src(e.args[0])}' is {a.type}, "
                       f"'{_src(e.args[1])}' is {b.type}", e.span)
            return None
        rows = a.type.shape[:-1] if len(a.type.shape) > 1 else a.type.shape
        kind, w = self._weights(e, rows, opts)
        if opts and kind is None:
            return None
        args = (a, b) + ((w,) if w is not None else ())
        return Expr("mse", args, {"weighting": kind}, TensorType("f32", ()), e.span)

    def _classify(self, f: str, e: S.Call):
        got = self._loss_args(e)
        if got is None:
            return None
        logits, labels, opts = got
        ls, ys = logits.type.shape, labels.type.shape
        if logits.type.dtype not in FLOATS or len(ls) not in (2, 3) or not isinstance(ls[-1], int):
            self.error(f"{f}(logits, labels): logits must be float [batch, classes] or [batch, time, classes], "
                       f"'{_src(e.args[0])}' is {logits.type}", e.args[0].span)
            return None
        want = ls[:-1]
        if labels.type.dtype not in INTS or not _same_shape(ys, want):
            self.error(f"{f}({_src(e.args[0])}, {_src(e.args[1])}): logits [{', '.join(map(str, ls))}] need "
                       f"labels [{', '.join(map(str, want))}], '{_src(e.args[1])}' is "
                       + ("" if labels.type.dtype in INTS else labels.type.dtype) + f"[{', '.join(map(str, ys))}]",
                       e.args[1].span, "labels are integer class ids" if labels.type.dtype not in INTS else None)
            return None
        kind, w = self._weights(e, want, opts)
        if opts and kind is None:
            return None
        op = "accuracy" if f == "accuracy" else "softmax_xent"
        args = (logits, labels) + ((w,) if w is not None else ())
        return Expr(op, args, {"weighting": kind}, TensorType("f32", ()), e.span)


def _strip(cell):
    """A cell without wrappers that keep its state structure (project, residual, dropout, placement)."""
    while hasattr(cell, "inner"):
        cell = cell.inner
    return cell


def _same_dim(a, b) -> bool:
    return a == b or not (isinstance(a, int) == isinstance(b, int))


def _same_shape(a, b) -> bool:
    return len(a) == len(b) and all(_same_dim(x, y) for x, y in zip(a, b))


def _broadcast(a, b):
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            return None
    return tuple(out)


def _src(node) -> str:
    """A short rendering of an expression for messages."""
    if isinstance(node, S.Name):
        return node.name
    if isinstance(node, S.Call):
        return f"{node.func}(...)"
    if isinstance(node, S.Attr):
        return f"{_src(node.value)}.{node.attr}"
    if isinstance(node, S.Number):
        return str(node.value)
    return "expression"


def resolve(module: S.Module, default_unroll: str = "auto") -> Model:
    return Resolver(module, default_unroll).run()
