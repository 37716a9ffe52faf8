"""Syntax tree of a spec, as written: what `parser.parse` returns.

Every node is a frozen dataclass whose last field is its source `span` (`Call` alone has
`func_span` after it). Nothing here is resolved: names are strings, cells are templates.
The grammar is `grammars/rnn.lark`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .errors import Span

# ----- expressions -----


@dataclass(frozen=True)
class Name:
    """An identifier; `h'` (a next state) keeps its prime, `_` discards a result."""

    name: str
    span: Span


@dataclass(frozen=True)
class Number:
    """`int` when written without '.' or exponent, else `float`."""

    value: int | float
    span: Span


@dataclass(frozen=True)
class String:
    value: str  # unescaped
    span: Span


@dataclass(frozen=True)
class Literal:
    """`true`, `false` or `none`."""

    value: bool | None
    span: Span


@dataclass(frozen=True)
class Device:
    """`cpu`, `cuda` or `cuda:N`, as written after `on`."""

    name: str
    span: Span


@dataclass(frozen=True)
class Kwarg:
    name: str
    value: "Expr"
    span: Span


@dataclass(frozen=True)
class Call:
    """`f(a, k=v)`; `func` may be dotted (`translate.decode`)."""

    func: str
    args: tuple["Expr", ...]
    kwargs: tuple[Kwarg, ...]
    span: Span
    func_span: Span | None = None


@dataclass(frozen=True)
class BinOp:
    op: str  # + - * / @
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class Unary:
    op: str  # -
    operand: "Expr"
    span: Span


@dataclass(frozen=True)
class Attr:
    """`last.h`"""

    value: "Expr"
    attr: str
    span: Span


@dataclass(frozen=True)
class Index:
    """`last[0]`"""

    value: "Expr"
    index: "Expr"
    span: Span


@dataclass(frozen=True)
class TupleExpr:
    """`(c0, h0)`"""

    items: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True)
class ListExpr:
    """`[(c0, h0), (c1, h1)]`"""

    items: tuple["Expr", ...]
    span: Span


Expr = Union[Name, Number, String, Literal, Device, Call, BinOp, Unary, Attr, Index,
             TupleExpr, ListExpr]

# ----- cell expressions -----


@dataclass(frozen=True)
class CellCall:
    """`lstm(100, forget_bias=1.0)`, `stack(a, b)`; positional args are cell expressions
    or plain values (Number, String, Literal, Unary)."""

    name: str
    args: tuple
    kwargs: tuple[Kwarg, ...]
    span: Span


@dataclass(frozen=True)
class CellName:
    """A bare cell or wrapper name: `layer`, `residual`, `lstm`."""

    name: str
    span: Span


@dataclass(frozen=True)
class Repeat:
    """`3 * lstm(100)`"""

    count: int
    cell: "CellExpr"
    span: Span


@dataclass(frozen=True)
class Wrapped:
    """`cell | wrapper`; left-associative."""

    cell: "CellExpr"
    wrapper: CellCall | CellName
    span: Span


@dataclass(frozen=True)
class Placed:
    """`cell on cuda:0`"""

    cell: "CellExpr"
    device: Device
    span: Span


CellExpr = Union[CellCall, CellName, Repeat, Wrapped, Placed]

# ----- statements -----


@dataclass(frozen=True)
class ModelDecl:
    name: str
    span: Span


@dataclass(frozen=True)
class InputDecl:
    """`input x: f32[batch, 8, 8]`; a scalar is `f32[]` or `f32` (dims ())."""

    name: str
    dtype: str
    dims: tuple[Name | Number, ...]
    span: Span


@dataclass(frozen=True)
class VocabDecl:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class CellDecl:
    """`cell rnn = basic(150)`"""

    name: str
    cell: CellExpr
    span: Span


@dataclass(frozen=True)
class TensorDecl:
    """`bf[units] = ones` in a `state` or `param` line; `input` in dims is Name("input")."""

    name: str
    dims: tuple[Expr, ...]
    init: Expr | None
    span: Span


@dataclass(frozen=True)
class StateDecl:
    decls: tuple[TensorDecl, ...]
    span: Span


@dataclass(frozen=True)
class ParamDecl:
    decls: tuple[TensorDecl, ...]
    span: Span


@dataclass(frozen=True)
class Assign:
    """`seq, last = rnn(x)`; in a cell body `h' = ...`."""

    targets: tuple[Name, ...]
    value: Expr
    span: Span


@dataclass(frozen=True)
class OutputStmt:
    """`output pred`, `output probs = softmax(logits)`, `output a, b = f(x)`."""

    names: tuple[Name, ...]
    value: Expr | None
    span: Span


@dataclass(frozen=True)
class CellDef:
    """`cell mgu(units) { ... }`: body of StateDecl, ParamDecl, Assign, OutputStmt."""

    name: str
    params: tuple[Name, ...]
    body: tuple
    span: Span


@dataclass(frozen=True)
class LossStmt:
    value: Expr
    span: Span


@dataclass(frozen=True)
class MetricStmt:
    value: Call
    span: Span


@dataclass(frozen=True)
class TrainItem:
    """`optimizer adam(lr=0.001)`, `batch 150`, `optimizer sgd` (value a Name)."""

    key: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class TrainBlock:
    items: tuple[TrainItem, ...]
    span: Span


@dataclass(frozen=True)
class Seq2SeqItem:
    """`source embed(src, 32) reversed` (flags ("reversed",)); encoder/decoder values are
    cell expressions, the others plain expressions."""

    key: str
    value: object
    flags: tuple[str, ...]
    span: Span


@dataclass(frozen=True)
class Seq2SeqBlock:
    name: str
    items: tuple[Seq2SeqItem, ...]
    span: Span


@dataclass(frozen=True)
class Module:
    """A whole spec: its top-level statements in order."""

    statements: tuple
    source: str
    file: str
    span: Span
