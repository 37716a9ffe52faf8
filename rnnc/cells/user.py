"""Cells defined by their equations in a spec (LANGUAGE.md §4).

    cell mgu(units) {
      state h[units]
      param Wf[input, units], ...
      f = sigmoid(x @ Wf + h @ Uf + bf)
      h' = (1 - f) * h + f * g
      output h'
    }

`build_user_cell` checks the definition for one use (its arguments and input size) and
returns a StepCell whose step evaluates the equations with whatever builder it is given.
Shape mistakes are reported with the span of the offending expression.
"""
from __future__ import annotations

from .. import syntax as S
from ..errors import Span, did_you_mean
from . import ParamSpec, StepCell

UNARY = {"sigmoid", "tanh", "relu", "exp", "log", "softmax"}
FUNCTIONS = UNARY | {"clip", "min", "max", "concat", "split"}
INITS = {"zeros", "ones", "glorot", "uniform"}


class CellDefError(Exception):
    """A mistake in a cell's equations; `shape` marks the ones that depend on the input size."""

    def __init__(self, message: str, span: Span | None, hint: str | None = None, shape: bool = False):
        super().__init__(message)
        self.message, self.span, self.hint, self.shape = message, span, hint, shape


def _int_expr(e, env: dict[str, int], what: str) -> int:
    """Evaluate a size expression (`units`, `input`, `2 * units`) to a positive int."""
    if isinstance(e, S.Number) and isinstance(e.value, int):
        return e.value
    if isinstance(e, S.Name):
        if e.name not in env:
            raise CellDefError(f"unknown size '{e.name}' in {what}", e.span, did_you_mean(e.name, env))
        return env[e.name]
    if isinstance(e, S.BinOp) and e.op in "+-*/":
        a, b = _int_expr(e.left, env, what), _int_expr(e.right, env, what)
        return {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[e.op]
    raise CellDefError(f"a size in {what} must be a whole number or a size name", e.span)


def build_user_cell(defn: S.CellDef, args: dict[str, object], input_size: int, span: Span) -> StepCell:
    sizes = {k: v for k, v in args.items() if isinstance(v, int)}
    sizes["input"] = input_size
    states: list[tuple[str, int]] = []
    params: dict[str, ParamSpec] = {}
    equations: list[S.Assign] = []
    output: S.OutputStmt | None = None
    for stmt in defn.body:
        if isinstance(stmt, S.StateDecl):
            for d in stmt.decls:
                if len(d.dims) != 1:
                    raise CellDefError(f"state '{d.name}' must have one dimension, like {d.name}[units]", d.span)
                states.append((d.name, _size(d.dims[0], sizes, f"state '{d.name}'")))
        elif isinstance(stmt, S.ParamDecl):
            for d in stmt.decls:
                shape = tuple(_size(x, sizes, f"param '{d.name}'") for x in d.dims)
                if len(shape) not in (1, 2):
                    raise CellDefError(f"param '{d.name}' must be a vector or a matrix", d.span)
                init = "glorot" if len(shape) == 2 else "zeros"
                if d.init is not None:
                    if not isinstance(d.init, S.Name) or d.init.name not in INITS:
                        raise CellDefError(f"unknown initializer for param '{d.name}'", d.init.span,
                                           "use zeros, ones or glorot")
                    init = d.init.name
                params[d.name] = ParamSpec(shape, init)
        elif isinstance(stmt, S.Assign):
            equations.append(stmt)
        elif isinstance(stmt, S.OutputStmt):
            output = stmt
    if not states:
        raise CellDefError(f"cell '{defn.name}' declares no state", defn.span, "add e.g. `state h[units]`")
    nexts = {t.name for eq in equations for t in eq.targets}
    for name, _ in states:
        if name + "'" not in nexts:
            raise CellDefError(f"state '{name}' has no next value: define {name}' = ...", defn.span)
    if output is None and len(states) > 1:
        raise CellDefError(f"cell '{defn.name}' has several states: say which is the output, e.g. `output h'`",
                           defn.span)

    def step(ops, p, x, state):
        env = {"x": x, **{n: s for (n, _), s in zip(states, state)}, **p}
        env.update({k: v for k, v in args.items() if isinstance(v, (int, float))})
        for eq in equations:
            value = _eval(ops, eq.value, env)
            if len(eq.targets) > 1:
                if not isinstance(value, tuple) or len(value) != len(eq.targets):
                    raise CellDefError(f"{len(eq.targets)} names on the left, but the right side gives "
                                       f"{len(value) if isinstance(value, tuple) else 1} value(s)", eq.span)
                for t, v in zip(eq.targets, value):
                    env[t.name] = v
            else:
                if isinstance(value, tuple):
                    raise CellDefError("split(...) gives several values: name each of them", eq.span)
                env[eq.targets[0].name] = value
        nxt = tuple(env[n + "'"] for n, _ in states)
        for (n, size), v in zip(states, nxt):
            if not hasattr(v, "shape") or tuple(v.shape)[-1:] != (size,):
                raise CellDefError(f"{n}' has shape {_fmt(v)}, but state '{n}' is [{size}]", defn.span, shape=True)
        if output is None:
            out = nxt[0]
        elif output.value is not None:
            out = _eval(ops, output.value, env)
        else:
            out = _eval(ops, output.names[0], env)
        return out, nxt

    out_size = _output_size(states, output, sizes, params)
    return StepCell(defn.name, input_size, tuple(states), out_size, params, step,
                    f"user cell {defn.name}")


def _size(e, sizes, what) -> int:
    n = _int_expr(e, sizes, what)
    if n <= 0:
        raise CellDefError(f"{what}: sizes must be positive, got {n}", e.span)
    return n


def _output_size(states, output, sizes, params) -> int:
    """The output size; found for real by tracing the step (see resolve), this is the guess
    used before tracing: the size of the named state."""
    if output is None:
        return states[0][1]
    if output.value is None and isinstance(output.names[0], S.Name):
        name = output.names[0].name.rstrip("'")
        for n, size in states:
            if n == name:
                return size
    return -1  # decided by tracing


def _fmt(v) -> str:
    shape = getattr(v, "shape", ())
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _eval(ops, e, env):
    if isinstance(e, S.Name):
        if e.name not in env:
            raise CellDefError(f"unknown name '{e.name}'", e.span, did_you_mean(e.name, env))
        return env[e.name]
    if isinstance(e, S.Number):
        return float(e.value)
    if isinstance(e, S.Unary):
        v = _eval(ops, e.operand, env)
        return -v
    if isinstance(e, S.BinOp):
        a, b = _eval(ops, e.left, env), _eval(ops, e.right, env)
        if e.op == "@":
            if not (hasattr(a, "shape") and hasattr(b, "shape")) or len(b.shape) != 2:
                raise CellDefError("@ multiplies a vector by a matrix", e.span)
            if a.shape[-1] != b.shape[0]:
                raise CellDefError(f"@ needs matching sizes: left is {_fmt(a)}, right is {_fmt(b)}", e.span, shape=True)
            return a @ b
        if hasattr(a, "shape") and hasattr(b, "shape"):
            da, db = a.shape[-1] if a.shape else 1, b.shape[-1] if b.shape else 1
            if da != db and 1 not in (da, db):
                raise CellDefError(f"'{e.op}' needs matching sizes: {_fmt(a)} and {_fmt(b)}", e.span, shape=True)
        if not hasattr(a, "shape") and not hasattr(b, "shape"):
            return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[e.op]
        return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b}[e.op]()
    if isinstance(e, S.Call):
        return _call(ops, e, env)
    raise CellDefError("this expression is not allowed in a cell's equations", e.span)


def _call(ops, e: S.Call, env):
    f = e.func
    if f not in FUNCTIONS:
        raise CellDefError(f"unknown function '{f}'", e.func_span or e.span, did_you_mean(f, FUNCTIONS))
    if e.kwargs:
        raise CellDefError(f"{f}(...) takes no named arguments", e.kwargs[0].span)
    args = [_eval(ops, a, env) for a in e.args]
    arity = {"clip": 3, "min": 2, "max": 2, "split": 2}.get(f, 1)
    if f == "concat":
        if len(args) < 2:
            raise CellDefError("concat(...) needs at least two tensors", e.span)
        return ops.concat(list(args), axis=-1)
    if len(args) != arity:
        raise CellDefError(f"{f}(...) takes {arity} argument{'s' if arity > 1 else ''}, got {len(args)}", e.span)
    if f in UNARY:
        return getattr(ops, f)(args[0])
    if f == "clip":
        return ops.clip(args[0], args[1], args[2])
    if f in ("min", "max"):
        a, b = args
        if not hasattr(a, "shape"):
            a, b = b, a
        return ops.minimum(a, b) if f == "min" else ops.maximum(a, b)
    # split(t, k)
    k = e.args[1]
    if not isinstance(k, S.Number) or not isinstance(k.value, int) or k.value < 1:
        raise CellDefError("split(t, k): k must be a whole number", k.span)
    size = args[0].shape[-1]
    if not isinstance(size, int) or size % k.value:
        raise CellDefError(f"split(t, {k.value}): the size {size} is not divisible by {k.value}", e.span, shape=True)
    return tuple(ops.split(args[0], k.value))
