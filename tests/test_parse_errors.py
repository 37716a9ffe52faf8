"""Malformed specs give one located SpecError report, never a lark exception."""
import pytest

from rnnc.errors import EXIT_SPEC_ERROR, Diagnostic, ErrorCollector, Span, SpecError, did_you_mean
from rnnc.parser import parse

HEAD = "model m\ninput x: f32[batch, time, 8]\n"  # two lines: errors below start on line 3

# (spec, "line:col", key phrase of the message, hint phrase or None)
CASES = [
    # missing '=' in a cell declaration
    (HEAD + "cell rnn basic(10)\n", "3:10", "unexpected 'basic' — expected '='", "cell rnn = basic"),
    # missing ':' between input name and type
    (HEAD + "input y f32[batch]\n", "3:9", "unexpected 'f32' — expected ':'", "input y: f32"),
    # unknown dtype spelled the numpy way
    (HEAD + "input y: float32[batch]\n", "3:10", "unknown dtype 'float32'", "did you mean 'f32'?"),
    # an unclosed '(' noticed at the next statement
    (HEAD + "seq, last = rnn(x, lengths=n\nloss = mse(seq, x)\n", "4:1",
     "missing ')' to close the '(' opened at 3:16", None),
    # an unclosed '(' at the end of the file
    (HEAD + "seq, last = rnn(x", "3:18", "unexpected end of file — missing ')'", None),
    # an unclosed train block
    (HEAD + "train {\n  batch 5\n", "4:10",
     "unexpected end of file — missing '}' to close the train block opened at 3:1", None),
    # an unclosed cell body, noticed at the next top-level keyword
    ("cell mgu(u) {\n  state h[u]\nmodel m\n", "3:1",
     "missing '}' to close the body of cell 'mgu' opened at 1:1", None),
    # nothing where a cell expression must be
    (HEAD + "cell deep = stack(a, )\n", "3:22", "unexpected ')' — expected a cell expression", None),
    (HEAD + "cell deep = )\n", "3:13", "unexpected ')' — expected a cell expression", None),
    # a reserved word as a name, in several positions
    (HEAD + "cell model = lstm(3)\n", "3:6", "'model' is a reserved word", None),
    (HEAD + "input = 3\n", "3:1", "'input' is a reserved word", None),
    (HEAD + "loss, y = f(x)\n", "3:1", "'loss' is a reserved word", None),
    (HEAD + "a, on = f(x)\n", "3:4", "'on' is a reserved word", None),
    (HEAD + "a = f(input)\n", "3:7", "'input' is a reserved word", None),
    # an illegal character
    (HEAD + "a = x $ 2\n", "3:7", "unexpected character '$'", None),
    (HEAD + 'vocab v = chars("abc\n', "3:17", "unterminated string", None),
    # a misspelt train setting
    (HEAD + "train { optimizer adam(lr=0.1)  batches 3 }\n", "3:33",
     "unknown train setting 'batches'", "did you mean 'batch'?"),
    # a bad device, a bad repeat count, a metric that is not a call
    (HEAD + "cell a = lstm(3) on gpu\n", "3:21", "unknown device 'gpu'", None),
    (HEAD + "cell a = 2.5 * lstm(3)\n", "3:10", "repeat count must be a whole number", None),
    (HEAD + "metric 3\n", "3:8", "a metric must be a call", None),
    # a wrapper missing after '|'
    (HEAD + "cell a = lstm(3) |\noutput y\n", "4:1", "expected a wrapper", None),
    # a seq2seq block with an item missing its cell
    (HEAD + "seq2seq t {\n  encoder\n}\n", "5:1", "unexpected '}' — expected a cell expression", None),
]


def _error(text, file="bad.rnn") -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(text, file)
    assert info.value.__cause__ is None or not info.value.__cause__.__class__.__module__.startswith("lark")
    return info.value


@pytest.mark.parametrize("text, where, phrase, hint", CASES, ids=[c[2][:40] for c in CASES])
def test_malformed_spec_is_located(text, where, phrase, hint):
    error = _error(text)
    first = error.diagnostics[0]
    line, col = map(int, where.split(":"))
    assert (first.span.file, first.span.line, first.span.column) == ("bad.rnn", line, col)
    assert phrase in first.message
    if hint is not None:
        assert hint in (first.hint or "")
    report = error.report()
    assert report.startswith(f"bad.rnn:{where}: error: ")
    lines = report.splitlines()
    source_line = text.split("\n")[line - 1]
    assert lines[1] == source_line
    assert lines[2].index("^") == col - 1
    assert "Traceback" not in report and "lark" not in report.lower()


def test_caret_underlines_the_whole_token():
    error = _error(HEAD + "input y: float32[batch]\n")
    assert error.report().splitlines()[2] == " " * 9 + "^~~~~~~"
    assert error.report().splitlines()[3] == "  hint: did you mean 'f32'?"
    assert str(error) == error.report()


def test_several_errors_in_one_report():
    text = (HEAD
            + "cell rnn basic(10)\n"           # line 3
            + "seq, last = rnn(x\n"            # line 4
            + "logits = dense(last, 10)\n"
            + "input y f32[batch]\n"           # line 6
            + "train {\n  batch 50 $\n}\n"     # line 8
            + "output logits\n")
    error = _error(text)
    where = [(d.span.line, d.span.column) for d in error.diagnostics]
    assert where == [(3, 10), (5, 1), (6, 9), (8, 12)]
    report = error.report()
    assert report.count("error:") == 4
    assert report.index("bad.rnn:3:10") < report.index("bad.rnn:5:1") < report.index("bad.rnn:8:12")


def test_errors_from_tree_building_are_all_collected():
    error = _error(HEAD + "cell model = lstm(3)\ninput y: float32[batch]\ncell a = 0 * lstm(3)\n")
    assert [d.span.line for d in error.diagnostics] == [3, 4, 5]


def test_no_lark_exception_leaks_on_garbage():
    for text in ["}", "((((", "model", "cell", "train {", "x = ", "x = [1, 2", "'", "h''",
                 "cell a = lstm(", "seq2seq {", "input x: f32[", "\x00", "model m\n" * 3 + "@"]:
        with pytest.raises(SpecError) as info:
            parse(text)
        assert info.value.diagnostics and info.value.diagnostics[0].span is not None
        assert info.value.report()


# ----- the error types themselves -----


def test_report_sorts_by_position_and_prints_hints():
    src = "ab\ncdef\n"
    diags = [Diagnostic("second", Span("f", 2, 2, 2, 4), hint="try this"),
             Diagnostic("whole spec"),
             Diagnostic("first", Span("f", 1, 1, 1, 2))]
    report = SpecError(diags, src).report()
    assert report.splitlines() == [
        "f:1:1: error: first", "ab", "^",
        "f:2:2: error: second", "cdef", " ^~", "  hint: try this",
        "error: whole spec"]


def test_collector_and_did_you_mean():
    errors = ErrorCollector()
    errors.raise_if_any("x")
    errors.error("unknown cell 'lstn'", Span("f", 1, 1, 1, 5), hint=did_you_mean("lstn", ["lstm", "gru"]))
    with pytest.raises(SpecError) as info:
        errors.raise_if_any("lstn(3)\n")
    assert "hint: did you mean 'lstm'?" in info.value.report()
    assert did_you_mean("zzz", ["lstm"]) is None
    assert EXIT_SPEC_ERROR == 3
