"""Specs that parse but are wrong (and a few that do not parse) give one located SpecError.

Each case is a small complete spec; the test checks the error's line:col, a key phrase of
its message (and of its hint), and that the report shows the offending line with a caret
under the right column. LANGUAGE.md, "Errors": a spec with mistakes never produces a
traceback, but one report listing every error.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from rnnc.api import check, compile
from rnnc.errors import SpecError

FILE = "bad.rnn"
SHARED = Path(__file__).resolve().parents[2] / "shared"


def _error(text: str, **kwargs) -> SpecError:
    with pytest.raises(SpecError) as info:
        check(FILE, text=text, **kwargs)
    return info.value


def _assert_located(error: SpecError, text: str, where: str, index: int = 0) -> None:
    """Diagnostic `index` sits at `where`; the report shows its line with a caret under it."""
    d = error.diagnostics[index]
    line, col = map(int, where.split(":"))
    assert d.span is not None, d
    assert (d.span.file, d.span.line, d.span.column) == (FILE, line, col), d
    lines = error.report().splitlines()
    header = f"{FILE}:{where}: error: {d.message}"
    assert header in lines, error.report()
    i = lines.index(header)
    assert lines[i + 1] == text.split("\n")[line - 1]
    assert lines[i + 2].index("^") == col - 1
    assert lines[i + 2].rstrip("^~").strip() == ""
    if d.hint:
        assert lines[i + 3] == f"  hint: {d.hint}"
    assert "Traceback" not in error.report()


SEQ = "model m\ninput x: f32[batch, 8, 3]\ninput y: i64[batch]\n"   # three lines
OUT = "output o = x\n"

# (id, spec, "line:col" of the first diagnostic, phrase of its message, phrase of its hint or None)
CASES = [
    # ----- syntax -----
    ("unclosed paren", SEQ + "cell r = lstm(10\n" + OUT, "5:1",
     "missing ')' to close the '(' opened at 4:14", None),
    ("missing =", SEQ + "logits dense(x, 3)\n" + OUT, "4:8", "unexpected 'dense' — expected '='", None),
    ("reserved word as a name", SEQ + "cell r = basic(8)\nseq, state = r(x)\noutput seq\n", "5:6",
     "'state' is a reserved word and cannot be used as a name", "state_"),
    ("bad dtype", "model m\ninput x: f16[batch, 8, 3]\n" + OUT, "2:10", "unknown dtype 'f16'", None),
    # ----- names and functions -----
    ("unknown cell", SEQ + "cell r = lstn(10)\n" + OUT, "4:10", "unknown cell 'lstn'",
     "did you mean 'lstm'?"),
    ("unknown function", SEQ + "p = softmx(x)\n" + OUT, "4:5", "unknown function 'softmx'",
     "did you mean 'softmax'?"),
    ("unknown name", SEQ + "p = softmax(xx)\n" + OUT, "4:13", "unknown name 'xx'", "did you mean 'x'?"),
    ("duplicate name", SEQ + "cell r = basic(8)\nseq, _ = r(x)\nseq = dense(x, 2)\noutput seq\n", "6:1",
     "'seq' is already defined", None),
    ("cell used as a tensor", "model m\ninput x: f32[batch, 3]\ncell r = basic(3)\noutput o = r\n", "4:12",
     "'r' is a cell: apply it to a sequence", None),
    ("no output", SEQ + "cell r = basic(8)\nseq, _ = r(x)\n", "1:1", "the model has no output", "output probs"),
    ("two models", "model a\nmodel b\ninput x: f32[batch, 3]\noutput x\n", "2:1", "a spec declares one model",
     None),
    # ----- arity -----
    ("dense with one argument", SEQ + "p = dense(x)\n" + OUT, "4:5",
     "dense(t, n) takes a tensor and a number of units", None),
    ("dense with negative units", SEQ + "output o = dense(x, -2)\n", "4:21",
     "dense(t, n): n must be a positive whole number", None),
    ("cell run with two positional args", SEQ + "cell r = basic(4)\ns, l = r(x, x)\n" + OUT, "5:8",
     "r(x, ...) takes one input sequence", None),
    ("unknown run option", SEQ + "cell r = basic(4)\ns, l = r(x, length=y)\n" + OUT, "5:13",
     "not 'length'", "did you mean 'lengths'?"),
    ("bad unroll", SEQ + "cell r = basic(4)\ns, l = r(x, unroll=fast)\n" + OUT, "5:20",
     "unroll= must be one of static, loop, fused, auto", None),
    ("unpacking count", SEQ + "cell r = basic(8)\na, b, c = r(x)\n" + OUT, "5:1",
     "3 name(s) on the left, but the right side gives 2 value(s)", None),
    ("two values used as one tensor", SEQ + "cell r = basic(4)\no2 = dense(r(x), 3)\n" + OUT, "5:12",
     "this gives 2 values; name them", None),
    # ----- cell options -----
    ("unknown option", SEQ + "cell r = lstm(10, forgetbias=1.0)\n" + OUT, "4:19",
     "lstm(...) has no option 'forgetbias'", "did you mean 'forget_bias'?"),
    ("units 0", SEQ + "cell r = lstm(0)\n" + OUT, "4:15", "lstm(units=...) must be a positive whole number",
     None),
    ("units -3", SEQ + "cell r = gru(-3)\n" + OUT, "4:14", "gru(units=...) must be a positive whole number",
     None),
    ("units 2.5", SEQ + "cell r = basic(2.5)\n" + OUT, "4:16",
     "basic(units=...) must be a positive whole number", None),
    ("option given twice", SEQ + "cell r = lstm(8, units=4)\n" + OUT, "4:18", "'units' is given twice", None),
    ("bad activation", SEQ + "cell r = basic(10, activation=sigmoid)\n" + OUT, "4:31",
     "basic(activation=...) must be one of tanh, relu", None),
    ("residual size mismatch", SEQ + "cell r = basic(8) | residual\nseq, _ = r(x)\noutput seq\n", "4:21",
     "residual needs the cell's output size 8 to equal its input size 3", None),
    # ----- running cells on data -----
    ("cell on a rank-2 input", "model m\ninput x: f32[batch, 3]\ncell r = basic(4)\nseq, _ = r(x)\noutput seq\n",
     "4:12", "runs on a float sequence [batch, time, features]", None),
    ("cell on an integer sequence", "model m\ninput x: i64[batch, 8, 3]\ncell r = basic(4)\nseq, _ = r(x)\n"
     "output seq\n", "4:12", "'x' is i64[batch, 8, 3]", None),
    ("lengths of the wrong dtype", "model m\ninput x: f32[batch, 8, 3]\ninput n: f32[batch]\ncell r = basic(4)\n"
     "seq, _ = r(x, lengths=n)\noutput seq\n", "5:23", "lengths= needs integers [batch], got f32[batch]", None),
    ("static unroll over a symbolic time dim", "model m\ninput x: f32[batch, time, 3]\ncell r = basic(4)\n"
     "seq, _ = r(x, unroll=static)\noutput seq\n", "4:22",
     "unroll=static needs a fixed number of steps, but 'x' has a time dim 'time'", "unroll=loop"),
    ("shared weights, different input sizes", "model m\ninput x: f32[batch, 8, 3]\ninput z: f32[batch, 8, 5]\n"
     "cell r = basic(4)\na, _ = r(x)\nb, _ = r(z)\noutput a\n", "6:10",
     "shares its weights between runs, so its inputs need the same size: 3 before, 5 here", None),
    ("initial= of the wrong structure", "model m\ninput x: f32[batch, 8, 3]\ninput h0: f32[batch, 8]\n"
     "cell r = lstm(8)\nseq, last = r(x, initial=h0)\noutput seq\n", "5:26",
     "initial= for this lstm cell needs (c0, h0)", None),
    ("initial= for a stack given one layer", "model m\ninput x: f32[batch, 8, 3]\ninput c0: f32[batch, 8]\n"
     "input h0: f32[batch, 8]\ncell r = stack(lstm(8), lstm(8))\nseq, last = r(x, initial=(c0, h0))\n"
     "output seq\n", "6:26", "initial= for a stack of 2 needs a list of 2 layer states", None),
    ("initial state of the wrong size", "model m\ninput x: f32[batch, 8, 3]\ninput c0: f32[batch, 4]\n"
     "input h0: f32[batch, 8]\ncell r = lstm(8)\nseq, last = r(x, initial=(c0, h0))\noutput seq\n", "6:27",
     "initial state 'c' must be f32[batch, 8], 'c0' is f32[batch, 4]", None),
    # ----- final states -----
    (".c on a basic cell", SEQ + "cell r = basic(8)\nseq, last = r(x)\noutput o = last.c\n", "6:12",
     "this state has no part 'c'", "its parts: h"),
    ("last[5] on a 2-layer stack", SEQ + "cell r = stack(basic(8), basic(8))\nseq, last = r(x)\n"
     "output o = last[5]\n", "6:17", "layer index must be a whole number from 0 to 1", None),
    # ----- losses and metrics -----
    ("softmax_cross_entropy shape", SEQ + "cell r = basic(4)\nseq, _ = r(x)\nlogits = dense(seq, 10)\n"
     "loss = softmax_cross_entropy(logits, y)\noutput logits\n", "7:38",
     "softmax_cross_entropy(logits, y): logits [batch, 8, 10] need labels [batch, 8], 'y' is [batch]", None),
    ("softmax_cross_entropy float labels", "model m\ninput x: f32[batch, 10]\ninput y: f32[batch]\n"
     "loss = softmax_cross_entropy(x, y)\noutput x\n", "4:33", "need labels [batch]",
     "labels are integer class ids"),
    ("mse shape", SEQ + "cell r = basic(4)\nseq, _ = r(x)\nloss = mse(seq, x)\noutput seq\n", "6:8",
     "mse(a, b) needs two float tensors of one shape: 'seq' is f32[batch, 8, 4], 'x' is f32[batch, 8, 3]", None),
    ("mse lengths dtype", "model m\ninput x: f32[batch, 8, 3]\ninput y: f32[batch, 8, 3]\ninput n: f32[batch]\n"
     "loss = mse(x, y, lengths=n)\noutput x\n", "5:26", "lengths= needs integers [batch], 'n' is f32[batch]", None),
    ("unknown metric", SEQ + "metric precision(x, y)\n" + OUT, "4:8", "unknown metric", "accuracy(logits, labels)"),
    # ----- user cells -----
    ("user cell shape error", "cell bad(units) {\n  state h[units]\n  param Wf[input, units]\n"
     "  h' = tanh(h @ Wf)\n}\nmodel m\ninput x: f32[batch, 8, 3]\ncell r = bad(5)\nseq, _ = r(x)\noutput seq\n",
     "4:13", "@ needs matching sizes", None),
    ("user cell without a next state", "cell bad(units) {\n  state h[units]\n  param W[input, units]\n"
     "  g = tanh(x @ W)\n  output g\n}\nmodel m\ninput x: f32[batch, 8, 3]\ncell r = bad(5)\nseq, _ = r(x)\n"
     "output seq\n", "1:1", "state 'h' has no next value: define h' = ...", None),
    # ----- train block -----
    ("bad optimizer", SEQ + OUT + "train {\n  optimizer adamm(lr=0.1)\n}\n", "6:13", "unknown optimizer 'adamm'",
     "did you mean 'adam'?"),
    ("unknown optimizer option", SEQ + OUT + "train {\n  optimizer adam(learning_rate=0.1)\n}\n", "6:18",
     "adam(...) has no option 'learning_rate'", None),
    ("lr = 0", SEQ + OUT + "train {\n  optimizer adam(lr=0)\n}\n", "6:21", "adam(lr=0) is out of range", None),
    ("lr < 0", SEQ + OUT + "train {\n  optimizer sgd(lr=-0.1)\n}\n", "6:20", "sgd(lr=-0.1) is out of range", None),
    ("epochs and steps", SEQ + OUT + "train {\n  epochs 3\n  steps 10\n}\n", "5:1",
     "give epochs or steps, not both", None),
    ("epochs 0", SEQ + OUT + "train {\n  epochs 0\n}\n", "6:10", "epochs must be a positive whole number", None),
    ("unknown schedule", SEQ + OUT + "train {\n  schedule expo(decay=0.9, every=10)\n}\n", "6:12",
     "unknown schedule 'expo'", "exponential"),
    ("unknown train option on one line", SEQ + OUT + "train { optimizer adam  batchsize 3 }\n", "5:25",
     "unknown train setting 'batchsize'", "did you mean 'batch'?"),
]


@pytest.mark.parametrize("text, where, phrase, hint", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_spec_is_reported_at_its_place(text, where, phrase, hint):
    error = _error(text)
    first = error.diagnostics[0]
    assert phrase in first.message, first
    if hint is not None:
        assert first.hint is not None and hint in first.hint, first
    _assert_located(error, text, where)


def test_messages_quoted_in_language_md_are_exact():
    text = dict((c[0], c[1]) for c in CASES)
    sce = _error(text["softmax_cross_entropy shape"]).diagnostics[0]
    assert sce.message == ("softmax_cross_entropy(logits, y): logits [batch, 8, 10] need labels [batch, 8], "
                           "'y' is [batch]")
    res = _error(text["residual size mismatch"]).diagnostics[0]
    assert res.message == "residual needs the cell's output size 8 to equal its input size 3"
    lstn = _error(text["unknown cell"]).diagnostics[0]
    assert (lstn.message, lstn.hint) == ("unknown cell 'lstn'", "did you mean 'lstm'?")


def test_command_line_unroll_static_over_symbolic_time_is_located():
    text = "model m\ninput x: f32[batch, time, 3]\ncell r = basic(4)\nseq, _ = r(x)\noutput seq\n"
    check(FILE, text=text)                       # auto: fine
    error = _error(text, unroll="static")
    assert "--unroll static needs a fixed number of steps" in error.diagnostics[0].message
    _assert_located(error, text, "4:10")
    # an unroll= written in the spec wins over the default
    check(FILE, text=text.replace("r(x)", "r(x, unroll=loop)"), unroll="static")


def test_three_independent_errors_in_one_report_sorted():
    text = ("model m\n"
            "input x: f32[batch, 8, 3]\n"
            "cell r = late(4)\n"                # the resolver finds 9:21 (inside late) first
            "p = softmx(x)\n"                   # 4:5
            "output o = dense(x, 0)\n"          # 5:21
            "cell late(units) {\n"
            "  state h[units]\n"
            "  param W[input, units]\n"
            "  h' = tanh(x @ W + zz)\n"         # 9:21
            "}\n")
    error = _error(text)
    where = [(d.span.line, d.span.column) for d in error.diagnostics]
    assert where == [(4, 5), (5, 21), (9, 21)]
    assert [d.message for d in error.diagnostics] == [
        "unknown function 'softmx'", "dense(t, n): n must be a positive whole number", "unknown name 'zz'"]
    report = error.report()
    assert report.count(": error: ") == 3
    assert report.index("bad.rnn:4:5") < report.index("bad.rnn:5:21") < report.index("bad.rnn:9:21")
    for i, w in enumerate(["4:5", "5:21", "9:21"]):
        _assert_located(error, text, w, index=i)


def test_semantic_errors_from_several_statements_are_all_collected():
    text = (SEQ
            + "cell a = lstm(10, forgetbias=1.0)\n"   # 4:19
            + "cell b = basic(0)\n"                   # 5:16
            + "output o = dense(x, 2)\n"
            + "train {\n  optimizer adam(lr=-1)\n  epochs 0\n}\n")   # 8:21, 9:10
    error = _error(text)
    assert [(d.span.line, d.span.column) for d in error.diagnostics] == [(4, 19), (5, 16), (8, 21), (9, 10)]


def test_spec_as_a_whole_error_has_no_location_but_a_hint():
    error = _error("input x: f32[batch, 3]\noutput x\n")
    d = error.diagnostics[0]
    assert d.span is None and "declares no model" in d.message and "model NAME" in d.hint
    assert error.report().startswith("error: the spec declares no model")


# ----- known weaknesses: written as they should behave -----

def test_unpacking_mismatch_does_not_cascade():
    error = _error(SEQ + "cell r = basic(8)\na, b, c = r(x)\noutput a\n")
    assert len(error.diagnostics) == 1


def test_bad_input_dimension_does_not_cascade():
    error = _error("model m\ninput x: f32[batch, 0, 3]\noutput x\n")
    assert len(error.diagnostics) == 1
    assert "a dimension must be a positive whole number" in error.diagnostics[0].message


def test_user_cell_valid_for_its_actual_input_size_passes():
    check(FILE, text="cell sq(units) {\n  state h[units]\n  param W[input, units]\n  h' = tanh(h @ W)\n}\n"
                     "model m\ninput x: f32[batch, 8, 5]\ncell r = sq(5)\nseq, _ = r(x)\noutput seq\n")


def test_user_cell_shape_error_reported_once_with_real_sizes():
    text = dict((c[0], c[1]) for c in CASES)["user cell shape error"]
    error = _error(text)
    assert len(error.diagnostics) == 1
    assert "[3, 5]" in error.diagnostics[0].message


def test_unknown_train_option_on_its_own_line():
    text = SEQ + OUT + "train {\n  optimizer adam(lr=0.1)\n  batchsize 3\n}\n"
    error = _error(text)
    d = error.diagnostics[0]
    assert "missing '}'" not in d.message and "batchsize" in d.message
    assert d.hint is not None and "did you mean 'batch'?" in d.hint
    _assert_located(error, text, "7:3")


# ----- LANGUAGE.md's own examples -----

@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[str, Path]:
    tool = SHARED / "tools" / "language_examples.py"
    if not tool.is_file():
        print(f"skipping: {tool} is missing")
        pytest.skip(f"LANGUAGE.md's example tool is missing ({tool}); needs ../shared beside the repo")
    out = tmp_path_factory.mktemp("language_examples")
    subprocess.run([sys.executable, str(tool), str(out)], check=True, capture_output=True, timeout=60)
    files = {p.stem: p for p in sorted(out.glob("*.rnn"))}
    assert files, "the tool found no examples"
    return files


def test_every_language_md_example_passes_check(examples):
    for name, path in examples.items():
        model = check(path)
        assert model.name, name


def _section(examples, n: int) -> Path:
    found = [p for stem, p in examples.items() if stem.startswith(f"s{n}_")]
    assert found, f"no example in section {n}"
    return found[0]


def _where(text: str, needle: str) -> tuple[int, int]:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number, line.index(needle) + 1
    raise AssertionError(f"{needle!r} not in the example")


def test_compiling_section_3_works_without_a_gpu(examples, tmp_path):
    # dropout and placement both compile (issue 5); compiling never needs the device
    path = _section(examples, 3)
    result = compile(path, out=tmp_path / "out")
    assert {"infer.onnx", "eval.onnx", "train.onnx"} <= {p.name for p in result.files}


def test_compiling_section_5_writes_the_seq2seq_models(examples, tmp_path):
    path = _section(examples, 5)
    result = compile(path, out=tmp_path / "out")
    assert sorted(p.name for p in result.files) == ["decoder_step.onnx", "encoder.onnx", "eval.onnx",
                                                     "infer.onnx", "train.onnx"]
