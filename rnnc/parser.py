"""Spec text -> `syntax.Module`, or one `SpecError` listing every syntax error.

The grammar is `grammars/rnn.lark` (installed as `rnnc/grammars/rnn.lark`). lark is used
with LALR, the contextual lexer and `propagate_positions`; the parse tree is turned into
`syntax` nodes by `ToSyntax`, one method per grammar rule. lark's exceptions never leave
this module: they become located `Diagnostic`s, and after a syntax error parsing resumes at
the next line that starts a top-level statement, so one report lists several mistakes.
"""
from __future__ import annotations

import ast
import functools
import importlib.resources
import re
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from . import syntax as S
from .errors import Diagnostic, ErrorCollector, Span, did_you_mean

__all__ = ["parse", "DTYPES", "RESERVED"]

DTYPES = ("f32", "f64", "i32", "i64", "bool")
RESERVED = frozenset(
    "model input vocab cell state param output loss metric train seq2seq on true false none".split())
_DTYPE_ALIASES = {"f16": "f32", "half": "f32", "float16": "f32", "float32": "f32", "float": "f32", "float64": "f64", "double": "f64",
                  "int32": "i32", "int64": "i64", "int": "i64", "long": "i64",
                  "boolean": "bool", "bool_": "bool"}
_DEVICES = ("cpu", "cuda")


def parse(text: str, file: str = "<spec>") -> S.Module:
    """Parse a spec; raise `SpecError` (never a lark exception) when it is malformed."""
    errors = ErrorCollector()
    tree = None
    masked, resumed = text, False
    for _ in range(50):  # at most this many syntax errors in one report
        try:
            parsed = _lark().parse(masked)
        except UnexpectedInput as exc:
            diagnostic = _describe(exc, file)
            if not (resumed and _is_stray_close(exc)):  # a resumed parse may start mid-block
                errors.add(diagnostic)
            line = diagnostic.span.line if diagnostic.span else None
            resume = _resume_line(text, line)
            if resume is None:
                break
            masked, resumed = _mask_before(text, resume), True
            continue
        if resumed:  # the tail after an error: only look for more mistakes in it
            ToSyntax(file, text, errors).transform(parsed)
        else:
            tree = parsed
        break
    module = None
    if tree is not None:
        module = ToSyntax(file, text, errors).transform(tree)
    errors.raise_if_any(text)
    return module


# ----- the grammar -----


def _grammar_text() -> str:
    installed = importlib.resources.files("rnnc") / "grammars" / "rnn.lark"
    if installed.is_file():
        return installed.read_text(encoding="utf-8")
    # source checkout or editable install: the grammar sits at the repository's top level
    return (Path(__file__).resolve().parent.parent / "grammars" / "rnn.lark").read_text(encoding="utf-8")


@functools.cache
def _lark() -> Lark:
    """Built once per process, in memory."""
    return Lark(_grammar_text(), parser="lalr", lexer="contextual", propagate_positions=True,
                maybe_placeholders=False)


# ----- parse tree -> syntax nodes -----


class _Abort(Exception):
    """Raised inside the transformer for a node that cannot be built at all."""


@v_args(meta=True)
class ToSyntax(Transformer):
    """Builds `syntax` nodes; mistakes the grammar lets through go to `errors`."""

    def __init__(self, file: str, source: str, errors: ErrorCollector):
        super().__init__()
        self.file = file
        self.source = source
        self.errors = errors
        self._inputs: dict[int, S.Name] = {}  # `input` used as an expression, not yet in dims

    def transform(self, tree):
        try:
            result = super().transform(tree)
        except VisitError as exc:  # a bug in a method: do not hide it behind lark's wrapper
            raise exc.orig_exc from None
        for name in self._inputs.values():
            self.errors.error("'input' is a reserved word; inside a cell's [...] dims it is the "
                              "step input's size, elsewhere it cannot be used as a name", name.span)
        return result

    # --- helpers ---

    def _span(self, meta) -> Span:
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tspan(self, tok: Token) -> Span:
        return Span(self.file, tok.line, tok.column, tok.end_line, tok.end_column)

    def _name(self, tok: Token) -> str:
        """The text of a NAME token used as a name; a reserved word is an error."""
        if str(tok) in RESERVED:
            self.errors.error(f"'{tok}' is a reserved word and cannot be used as a name",
                              self._tspan(tok), hint=f"rename it, e.g. '{tok}_'")
        return str(tok)

    def _name_node(self, tok: Token) -> S.Name:
        return S.Name(self._name(tok), self._tspan(tok))

    def _split_args(self, items) -> tuple[tuple, tuple]:
        args, kwargs, seen = [], [], set()
        for item in items:
            if isinstance(item, S.Kwarg):
                if item.name in seen:
                    self.errors.error(f"argument '{item.name}' given twice", item.span)
                seen.add(item.name)
                kwargs.append(item)
            else:
                if kwargs:
                    self.errors.error("positional argument after a keyword argument", _node_span(item))
                args.append(item)
        return tuple(args), tuple(kwargs)

    # --- statements ---

    def start(self, meta, children):
        lines = self.source.split("\n")
        span = Span(self.file, 1, 1, len(lines), len(lines[-1]) + 1)
        return S.Module(tuple(children), self.source, self.file, span)

    def model_decl(self, meta, children):
        _, name = children
        return S.ModelDecl(self._name(name), self._span(meta))

    def input_decl(self, meta, children):
        _, name, dtype, *shape = children
        if str(dtype) not in DTYPES:
            hint = (f"did you mean '{_DTYPE_ALIASES[str(dtype)]}'?" if str(dtype) in _DTYPE_ALIASES
                    else did_you_mean(str(dtype), DTYPES))
            self.errors.error(f"unknown dtype '{dtype}' — expected one of {', '.join(DTYPES)}",
                              self._tspan(dtype), hint=hint)
        dims = shape[0] if shape else ()
        return S.InputDecl(self._name(name), str(dtype), dims, self._span(meta))

    def shape(self, meta, children):
        return tuple(children)

    def dim_name(self, meta, children):
        return self._name_node(children[0])

    def dim_number(self, meta, children):
        return self.number(meta, children)

    def vocab_decl(self, meta, children):
        _, name, value = children
        return S.VocabDecl(self._name(name), value, self._span(meta))

    def cell_decl(self, meta, children):
        _, name, cell = children
        return S.CellDecl(self._name(name), cell, self._span(meta))

    def cell_def(self, meta, children):
        _, name, *rest = children
        params = ()
        if rest and isinstance(rest[0], tuple):
            params, rest = rest[0], rest[1:]
        return S.CellDef(self._name(name), params, tuple(rest), self._span(meta))

    def cell_params(self, meta, children):
        return tuple(self._name_node(tok) for tok in children)

    def state_decl(self, meta, children):
        return S.StateDecl(tuple(children[1:]), self._span(meta))

    def param_decl(self, meta, children):
        return S.ParamDecl(tuple(children[1:]), self._span(meta))

    def tensor_decl(self, meta, children):
        name, dims, *init = children
        for dim in dims:  # `input` is the step input's size here
            for node in _walk(dim):
                self._inputs.pop(id(node), None)
        return S.TensorDecl(self._name(name), dims, init[0] if init else None, self._span(meta))

    def tensor_dims(self, meta, children):
        return tuple(children)

    def assign(self, meta, children):
        targets, value = children
        return S.Assign(targets, value, self._span(meta))

    def targets(self, meta, children):
        return tuple(self._name_node(tok) for tok in children)

    def loss_stmt(self, meta, children):
        _, value = children
        return S.LossStmt(value, self._span(meta))

    def metric_stmt(self, meta, children):
        _, value = children
        if not isinstance(value, S.Call):
            self.errors.error("a metric must be a call, as in 'metric accuracy(logits, y)'",
                              _node_span(value))
        return S.MetricStmt(value, self._span(meta))

    def output_stmt(self, meta, children):
        _, names, *value = children
        return S.OutputStmt(names, value[0] if value else None, self._span(meta))

    def train_block(self, meta, children):
        return S.TrainBlock(tuple(children[1:]), self._span(meta))

    def train_item(self, meta, children):
        key, value = children
        return S.TrainItem(str(key), value, self._span(meta))

    def seq2seq_block(self, meta, children):
        _, name, *items = children
        return S.Seq2SeqBlock(self._name(name), tuple(items), self._span(meta))

    def seq2seq_value(self, meta, children):
        key, value, *flags = children
        return S.Seq2SeqItem(str(key), value, tuple(str(f) for f in flags), self._span(meta))

    def seq2seq_cell(self, meta, children):
        key, cell = children
        return S.Seq2SeqItem(str(key), cell, (), self._span(meta))

    # --- cell expressions ---

    def placed(self, meta, children):
        cell, _, device = children
        return S.Placed(cell, device, self._span(meta))

    def wrapped(self, meta, children):
        cell, wrapper = children
        return S.Wrapped(cell, wrapper, self._span(meta))

    def repeat(self, meta, children):
        count, cell = children
        value = _number_value(count)
        if not isinstance(value, int) or value < 1:
            self.errors.error(f"a repeat count must be a whole number of at least 1, not {count}",
                              self._tspan(count))
            value = 1
        return S.Repeat(value, cell, self._span(meta))

    def cell_call(self, meta, children):
        name, *items = children
        args, kwargs = self._split_args(items)
        return S.CellCall(self._name(name), args, kwargs, self._span(meta))

    def cell_name(self, meta, children):
        return S.CellName(self._name(children[0]), self._span(meta))

    def neg_number(self, meta, children):
        operand = self.number(meta, children)
        return S.Unary("-", S.Number(operand.value, self._tspan(children[0])), self._span(meta))

    def device(self, meta, children):
        name, *index = children
        text = str(name)
        if name not in _DEVICES:
            self.errors.error(f"unknown device '{name}' — expected cpu, cuda or cuda:N",
                              self._tspan(name), hint=did_you_mean(text, _DEVICES))
        if index:
            if not isinstance(_number_value(index[0]), int) or name != "cuda":
                self.errors.error(f"bad device '{name}:{index[0]}' — expected cuda:N with N a "
                                  "whole number", self._span(meta))
            text = f"{name}:{index[0]}"
        return S.Device(text, self._span(meta))

    # --- expressions ---

    def _binop(self, op, meta, children):
        left, right = children
        return S.BinOp(op, left, right, self._span(meta))

    def add(self, meta, children):
        return self._binop("+", meta, children)

    def sub(self, meta, children):
        return self._binop("-", meta, children)

    def mul(self, meta, children):
        return self._binop("*", meta, children)

    def div(self, meta, children):
        return self._binop("/", meta, children)

    def matmul(self, meta, children):
        return self._binop("@", meta, children)

    def neg(self, meta, children):
        return S.Unary("-", children[0], self._span(meta))

    def call(self, meta, children):
        callee, *items = children
        func = _dotted(callee)
        if func is None:
            self.errors.error("only a named function can be called, as in 'f(x)' or "
                              "'translate.decode(x)'", _node_span(callee))
            func = "<error>"
        args, kwargs = self._split_args(items)
        return S.Call(func, args, kwargs, self._span(meta), _node_span(callee))

    def attr(self, meta, children):
        value, name = children
        return S.Attr(value, str(name), self._span(meta))

    def index(self, meta, children):
        value, index = children
        return S.Index(value, index, self._span(meta))

    def kwarg(self, meta, children):
        name, value = children
        return S.Kwarg(str(name), value, self._span(meta))

    def name(self, meta, children):
        return self._name_node(children[0])

    def input_name(self, meta, children):
        node = S.Name("input", self._tspan(children[0]))
        self._inputs[id(node)] = node
        return node

    def number(self, meta, children):
        return S.Number(_number_value(children[0]), self._tspan(children[0]))

    def string(self, meta, children):
        return S.String(ast.literal_eval(str(children[0])), self._tspan(children[0]))

    def true(self, meta, children):
        return S.Literal(True, self._span(meta))

    def false(self, meta, children):
        return S.Literal(False, self._span(meta))

    def none(self, meta, children):
        return S.Literal(None, self._span(meta))

    def tuple(self, meta, children):
        return S.TupleExpr(tuple(children), self._span(meta))

    def list(self, meta, children):
        return S.ListExpr(tuple(children), self._span(meta))


def _number_value(tok: Token) -> int | float:
    text = str(tok)
    return float(text) if any(c in text for c in ".eE") else int(text)


def _dotted(node) -> str | None:
    """`translate.decode` for Attr(Name('translate'), 'decode'); None if not a name chain."""
    if isinstance(node, S.Name):
        return node.name
    if isinstance(node, S.Attr):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _node_span(node) -> Span | None:
    return getattr(node, "span", None)


def _walk(node):
    """The node and every syntax node below it."""
    yield node
    for value in vars(node).values() if hasattr(node, "__dataclass_fields__") else ():
        children = value if isinstance(value, tuple) else (value,)
        for child in children:
            if hasattr(child, "__dataclass_fields__") and not isinstance(child, Span):
                yield from _walk(child)


# ----- syntax errors -----

_STATEMENT_START = re.compile(
    r"(model|input|vocab|cell|loss|metric|output|train|seq2seq)(?![\w'])|[A-Za-z_][\w]*'?\s*[,=]")

_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSER_TYPES = {"(": "RPAR", "[": "RSQB", "{": "RBRACE"}

# what the parser wanted, in words, for the expected-terminal sets that come up often
_STMT_KEYWORDS = {"MODEL", "INPUT", "VOCAB", "CELL", "LOSS", "METRIC", "OUTPUT", "TRAIN", "SEQ2SEQ"}
_TRAIN_KEYS = {"OPTIMIZER", "SCHEDULE", "BATCH", "EPOCHS", "STEPS", "TBPTT", "VALIDATE"}
_SEQ2SEQ_KEYS = {"SOURCE", "ENCODER", "TARGET", "DECODER", "ATTENTION", "DECODE"}
_BODY_KEYWORDS = {"STATE", "PARAM", "OUTPUT"}
_RESERVED_TYPES = {w.upper() for w in RESERVED}

# prefixes whose parser state expects the described thing (the same idea as lark's
# match_examples, computed once by feeding each prefix to an interactive parser)
_STATE_EXAMPLES = {
    "a cell expression": ["cell a =", "cell a = (", "seq2seq s { encoder", "seq2seq s { decoder"],
    "a cell expression or a value": ["cell a = b(", "cell a = b(c,"],
    "a wrapper, such as project(1), dropout(input_keep=0.5) or residual": ["cell a = b |"],
    "a cell to repeat, such as lstm(100)": ["cell a = 2 *"],
    "a device: cpu, cuda or cuda:N": ["cell a = b on"],
    "a dtype, such as f32 or i64": ["input a:"],
    "':' between the input's name and its type, as in 'input x: f32[batch, 8]'": ["input a"],
    "'=' after the cell's name, or its parameters and body in '(...) { ... }'": ["cell a"],
}


@functools.cache
def _state_descriptions() -> dict:
    table = {}
    for description, prefixes in _STATE_EXAMPLES.items():
        for prefix in prefixes:
            try:
                parser = _lark().parse_interactive(prefix)
                parser.exhaust_lexer()
            except UnexpectedInput:  # the grammar changed under an example: skip it
                continue
            table[parser.parser_state.position] = description
    return table


def _describe(exc: UnexpectedInput, file: str) -> Diagnostic:
    if isinstance(exc, UnexpectedCharacters):
        span = Span(file, exc.line, exc.column, exc.line, exc.column + 1)
        if exc.char == '"':
            return Diagnostic("unterminated string — a string ends with '\"' on the same line", span)
        if exc.char == "'":
            return Diagnostic("unexpected \"'\" — only a name may end with a prime, as in h'", span)
        return Diagnostic(f"unexpected character '{exc.char}'", span)
    if not isinstance(exc, UnexpectedToken):  # UnexpectedEOF is not raised by LALR
        line, column = getattr(exc, "line", 1), getattr(exc, "column", 1)
        return Diagnostic("syntax error", Span(file, line, column, line, column + 1))

    tok = exc.token
    at_end = tok.type == "$END"
    if at_end:  # lark places $END on the last token: point just past it
        line, column = tok.end_line or 1, tok.end_column or 1
        span = Span(file, line, column, line, column + 1)
        found = "end of file"
    else:
        span = Span(file, tok.line, tok.column, tok.end_line, tok.end_column)
        found = f"'{tok}'"
    # errors found by the contextual lexer carry the ParserState itself as `state`
    state = exc.state if hasattr(exc.state, "position") else exc.interactive_parser.parser_state
    stack = list(state.value_stack)
    accepts = set((exc.interactive_parser and exc.accepts) or exc.expected)
    previous = stack[-1] if stack and isinstance(stack[-1], Token) else None

    # a reserved word where a name was meant: `loss, x = f()`, `input = 3`, `model = ...`
    if previous is not None and previous.type in _RESERVED_TYPES and tok.type in ("EQUAL", "COMMA"):
        return Diagnostic(f"'{previous}' is a reserved word and cannot be used as a name",
                          Span(file, previous.line, previous.column, previous.end_line,
                               previous.end_column), hint=f"rename it, e.g. '{previous}_'")

    # a reserved word where a name was meant, on the same line: `cell model = ...`
    if tok.type in _RESERVED_TYPES and "NAME" in accepts and (
            previous is None or previous.end_line == tok.line):
        return Diagnostic(f"'{tok}' is a reserved word and cannot be used as a name", span,
                          hint=f"rename it, e.g. '{tok}_'")

    # a misspelt setting inside a train block: `batchsize 32`
    if tok.type == "NAME" and "BATCH" in accepts:
        keys = ("optimizer", "schedule", "batch", "epochs", "steps", "tbptt", "validate")
        return Diagnostic(f"unknown train setting '{tok}'", span,
                          did_you_mean(str(tok), keys) or f"train settings: {', '.join(keys)}")

    # an unclosed bracket, noticed at the end of the file or on a later line
    opener = _innermost_open(stack)
    if opener is not None and _CLOSER_TYPES[opener[0].value] in accepts and (
            at_end or tok.type in _STMT_KEYWORDS or tok.line > _last_line(stack, opener[0])):
        what = _opener_name(stack, opener)
        return Diagnostic(f"unexpected {found} — missing '{_OPENERS[opener[0].value]}' to close {what}",
                          span)

    expected = _state_descriptions().get(state.position) or _expected_words(accepts)
    hint = None
    if "dtype" in expected and not at_end:
        hint = (f"did you mean '{_DTYPE_ALIASES[str(tok)]}'?" if str(tok) in _DTYPE_ALIASES
                else did_you_mean(str(tok), DTYPES))
    elif expected.startswith("'='") and previous is not None and previous.type == "NAME":
        hint = f"write 'cell {previous} = {tok}...'"
    elif expected.startswith("':'") and previous is not None:
        hint = f"write 'input {previous}: {tok}...'"
    return Diagnostic(f"unexpected {found} — expected {expected}", span, hint)


def _innermost_open(stack):
    """(token, index) of the innermost bracket not closed yet, from the parser's stack."""
    open_ = []
    for i, item in enumerate(stack):
        if isinstance(item, Token) and item.type in ("LPAR", "LSQB", "LBRACE"):
            open_.append((item, i))
        elif isinstance(item, Token) and item.type in ("RPAR", "RSQB", "RBRACE") and open_:
            open_.pop()
    return open_[-1] if open_ else None


def _last_line(stack, opener) -> int:
    """The line of the last thing the parser took (where the bracket should have closed)."""
    for item in reversed(stack):
        if isinstance(item, Token):
            return item.end_line
        if isinstance(item, Tree) and not item.meta.empty:
            return item.meta.end_line
    return opener.line


def _opener_name(stack, opener) -> str:
    tok, i = opener
    before = stack[:i]
    if tok.value == "{":
        for j in range(len(before) - 1, -1, -1):
            item = before[j]
            if isinstance(item, Token) and item.type in ("TRAIN", "SEQ2SEQ", "CELL"):
                where = f"{item.line}:{item.column}"
                if item.type == "TRAIN":
                    return f"the train block opened at {where}"
                name = before[j + 1] if j + 1 < len(before) else ""
                if item.type == "SEQ2SEQ":
                    return f"the seq2seq block '{name}' opened at {where}"
                return f"the body of cell '{name}' opened at {where}"
    return f"the '{tok.value}' opened at {tok.line}:{tok.column}"


def _expected_words(accepts: set) -> str:
    """The expected terminals in words: 'an expression', 'a new statement', "')'"..."""
    left = set(accepts)
    words = []

    def take(group: set, word: str, need: set | None = None):
        nonlocal left
        if (need or group) <= left:
            words.append(word)
            left -= group

    take(_STMT_KEYWORDS | {"NAME", "$END"}, "a new statement", _STMT_KEYWORDS | {"NAME"})
    take(_TRAIN_KEYS, "a train setting (optimizer, schedule, batch, epochs, steps, tbptt, validate)")
    take(_SEQ2SEQ_KEYS, "a seq2seq item (source, encoder, target, decoder, attention, decode)")
    take(_BODY_KEYWORDS | {"NAME"}, "a cell body line (state, param, an assignment or output)")
    take({"PLUS", "MINUS", "STAR", "SLASH", "AT", "LPAR", "DOT", "LSQB"}, "an operator",
         {"PLUS", "STAR"})
    take({"NAME", "NUMBER", "STRING", "LPAR", "LSQB", "MINUS", "INPUT", "TRUE", "FALSE", "NONE"},
         "an expression", {"NAME", "NUMBER", "LPAR"})
    for name in sorted(left):
        words.append(_terminal_words(name))
    words = list(dict.fromkeys(words))
    if not words:
        return "something else"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _terminal_words(name: str) -> str:
    if name == "$END":
        return "end of file"
    if name == "NAME":
        return "a name"
    if name == "NUMBER":
        return "a number"
    if name == "STRING":
        return "a string"
    if name.upper() in {t for t in _RESERVED_TYPES | _TRAIN_KEYS | _SEQ2SEQ_KEYS | {"STATE", "PARAM", "REVERSED"}}:
        return f"'{name.lower()}'"
    try:
        pattern = _lark().get_terminal(name).pattern
    except KeyError:
        return name
    return f"'{pattern.value}'" if pattern.type == "str" else name


def _is_stray_close(exc: UnexpectedInput) -> bool:
    return isinstance(exc, UnexpectedToken) and exc.token.type == "RBRACE"


def _resume_line(text: str, after: int | None) -> int | None:
    """The first line after `after` that starts (at column 1) a top-level statement."""
    if after is None:
        return None
    for number, line in enumerate(text.split("\n"), start=1):
        if number > after and _STATEMENT_START.match(line):
            return number
    return None


def _mask_before(text: str, line: int) -> str:
    """The text with every line before `line` emptied, so positions stay the same."""
    lines = text.split("\n")
    return "\n" * (line - 1) + "\n".join(lines[line - 1:])
