"""The grammar: every LANGUAGE.md example parses, and the trees have the intended shape."""
import subprocess
import sys
from pathlib import Path

import pytest

from rnnc import syntax as S
from rnnc.errors import Span
from rnnc.parser import parse

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _examples(tmp_path_factory):
    tool = SHARED / "tools" / "language_examples.py"
    if not tool.is_file():
        return []
    out = tmp_path_factory.mktemp("language-examples")
    subprocess.run([sys.executable, str(tool), str(out)], check=True, capture_output=True)
    return sorted(out.glob("*.rnn"))


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    paths = _examples(tmp_path_factory)
    if not paths:
        reason = f"no LANGUAGE.md examples: {SHARED} is absent"
        print(reason)
        pytest.skip(reason)
    return paths


def test_every_language_example_parses(examples):
    assert len(examples) >= 6
    for path in examples:
        module = parse(path.read_text(), str(path))
        assert isinstance(module, S.Module)
        assert any(isinstance(s, S.ModelDecl) for s in module.statements), path


def stmt(text, kind, index=0):
    found = [s for s in parse(text).statements if isinstance(s, kind)]
    return found[index]


def cell_of(text):
    return stmt(f"cell c = {text}\n", S.CellDecl).cell


# ----- cell expressions -----


def test_repeat_binds_tighter_than_pipe_tighter_than_on():
    c = cell_of("3 * lstm(100) | project(1) | residual on cuda:0")
    assert isinstance(c, S.Placed) and c.device.name == "cuda:0"
    outer = c.cell
    assert isinstance(outer, S.Wrapped) and outer.wrapper == S.CellName("residual", outer.wrapper.span)
    inner = outer.cell
    assert isinstance(inner, S.Wrapped) and isinstance(inner.wrapper, S.CellCall)
    assert inner.wrapper.name == "project"
    assert isinstance(inner.cell, S.Repeat) and inner.cell.count == 3
    assert inner.cell.cell.name == "lstm" and inner.cell.cell.args[0].value == 100


def test_parentheses_group_cell_expressions():
    c = cell_of("(lstm(10) on cpu) | project(1)")
    assert isinstance(c, S.Wrapped) and isinstance(c.cell, S.Placed)
    assert c.cell.device.name == "cpu"


def test_stack_arguments_are_full_cell_expressions():
    c = cell_of("stack(layer on cpu, layer on cuda:0, gru(100) on cuda:0) | project(1)")
    assert isinstance(c, S.Wrapped)
    stack = c.cell
    assert isinstance(stack, S.CellCall) and stack.name == "stack" and len(stack.args) == 3
    assert all(isinstance(a, S.Placed) for a in stack.args)
    assert stack.args[0].cell == S.CellName("layer", stack.args[0].cell.span)
    assert [a.device.name for a in stack.args] == ["cpu", "cuda:0", "cuda:0"]
    assert isinstance(stack.args[2].cell, S.CellCall) and stack.args[2].cell.name == "gru"


def test_cell_call_kwargs_and_values():
    c = cell_of("lstm(100, forget_bias=1.0, proj=none, peepholes=true) | dropout(input_keep=0.5)")
    lstm = c.cell
    assert lstm.args[0] == S.Number(100, lstm.args[0].span)
    assert isinstance(lstm.args[0].value, int)
    kw = {k.name: k.value for k in lstm.kwargs}
    assert kw["forget_bias"].value == 1.0 and isinstance(kw["forget_bias"].value, float)
    assert kw["proj"].value is None and kw["peepholes"].value is True
    b = cell_of("basic(150, activation=relu)")
    assert b.kwargs[0].value == S.Name("relu", b.kwargs[0].value.span)
    assert cell_of("stack(3 * lstm(100))").args[0].count == 3
    assert cell_of("lstm") == S.CellName("lstm", cell_of("lstm").span)


def test_pipe_is_left_associative():
    c = cell_of("a | b | c")
    assert isinstance(c.cell, S.Wrapped) and c.wrapper.name == "c"
    assert c.cell.cell.name == "a" and c.cell.wrapper.name == "b"


# ----- statements -----


def test_train_block_on_one_line():
    block = stmt("train { optimizer adam(lr=0.001)  batch 50  steps 2000 }\n", S.TrainBlock)
    assert [i.key for i in block.items] == ["optimizer", "batch", "steps"]
    opt = block.items[0].value
    assert isinstance(opt, S.Call) and opt.func == "adam" and opt.kwargs[0].name == "lr"
    assert block.items[1].value.value == 50
    sgd = stmt("train { optimizer sgd\n schedule exponential(decay=0.95, every=100) validate 0.1 }",
               S.TrainBlock)
    assert sgd.items[0].value == S.Name("sgd", sgd.items[0].value.span)
    assert sgd.items[2].value.value == 0.1


def test_train_keywords_are_names_elsewhere():
    decl = stmt("input tgt: i64[batch, tgt_time]\n", S.InputDecl)
    assert [d.name for d in decl.dims] == ["batch", "tgt_time"]
    assign = stmt("steps, target = f(batch)\n", S.Assign)
    assert [t.name for t in assign.targets] == ["steps", "target"]


SEQ2SEQ = """
seq2seq translate {
  source   embed(src_chars, 32) reversed
  encoder  stack(lstm(128), lstm(128))
  target   embed(out_chars, 32)
  decoder  lstm(128) | project(3)
  attention luong(score=dot)
  decode   greedy(max_len=12)
}
"""


def test_seq2seq_items():
    block = stmt(SEQ2SEQ, S.Seq2SeqBlock)
    assert block.name == "translate"
    items = {i.key: i for i in block.items}
    assert list(items) == ["source", "encoder", "target", "decoder", "attention", "decode"]
    assert items["source"].flags == ("reversed",) and items["target"].flags == ()
    assert isinstance(items["source"].value, S.Call) and items["source"].value.func == "embed"
    assert isinstance(items["encoder"].value, S.CellCall) and items["encoder"].value.name == "stack"
    assert isinstance(items["decoder"].value, S.Wrapped)
    assert items["attention"].value.kwargs[0].value.name == "dot"
    assert items["decode"].value.func == "greedy"
    bare = stmt("seq2seq t { attention luong }", S.Seq2SeqBlock)
    assert bare.items[0].value == S.Name("luong", bare.items[0].value.span)


CELL_DEF = """
cell mgu(units) {                       # minimal gated unit
  state h[units]
  param Wf[input, units], Uf[units, 2 * units]
  param bf[units] = ones, bh[units] = zeros
  f = sigmoid(x @ Wf + h @ Uf + bf)
  h' = (1 - f) * h + f * -g
  output h'
}
"""


def test_user_cell_body():
    d = stmt(CELL_DEF, S.CellDef)
    assert d.name == "mgu" and [p.name for p in d.params] == ["units"]
    state, p1, p2, f, h_next, out = d.body
    assert isinstance(state, S.StateDecl) and state.decls[0].name == "h"
    wf, uf = p1.decls
    assert wf.dims[0] == S.Name("input", wf.dims[0].span) and wf.init is None
    assert isinstance(uf.dims[1], S.BinOp) and uf.dims[1].op == "*"
    assert [(t.name, t.init.name) for t in p2.decls] == [("bf", "ones"), ("bh", "zeros")]
    assert isinstance(f.value, S.Call) and f.value.func == "sigmoid"
    plus = f.value.args[0]
    assert plus.op == "+" and plus.left.op == "+" and plus.left.left.op == "@"
    assert h_next.targets[0].name == "h'"
    rhs = h_next.value
    assert rhs.op == "+" and rhs.left.op == "*" and rhs.left.left.op == "-"
    assert isinstance(rhs.right.right, S.Unary) and rhs.right.right.op == "-"
    assert out == S.OutputStmt((S.Name("h'", out.names[0].span),), None, out.span)
    assert stmt("cell foo() { output x }", S.CellDef).params == ()
    assert stmt("cell foo { output x }", S.CellDef).params == ()


def test_initial_states_tuples_and_lists():
    a = stmt("seq, last = enc(x, lengths=n, initial=[(c0, h0), (c1, h1)], unroll=loop)\n", S.Assign)
    call = a.value
    assert [k.name for k in call.kwargs] == ["lengths", "initial", "unroll"]
    initial = call.kwargs[1].value
    assert isinstance(initial, S.ListExpr) and len(initial.items) == 2
    assert all(isinstance(t, S.TupleExpr) and len(t.items) == 2 for t in initial.items)
    assert initial.items[1].items[0].name == "c1"
    single = stmt("s = f(x, initial=(c0, h0))", S.Assign).value.kwargs[0].value
    assert isinstance(single, S.TupleExpr)
    assert isinstance(stmt("s = (x)", S.Assign).value, S.Name)  # grouping, not a tuple


def test_outputs_and_discarded_targets():
    out = stmt("output tokens, token_len = translate.decode(src, src_len)\n", S.OutputStmt)
    assert [n.name for n in out.names] == ["tokens", "token_len"]
    assert isinstance(out.value, S.Call) and out.value.func == "translate.decode"
    plain = stmt("output pred\n", S.OutputStmt)
    assert plain.value is None and plain.names[0].name == "pred"
    probs = stmt("output probs = softmax(logits)\n", S.OutputStmt)
    assert probs.value.func == "softmax"
    pred = stmt("pred, _ = rnn(x)\n", S.Assign)
    assert [t.name for t in pred.targets] == ["pred", "_"]
    under = stmt("_, last = rnn(x)\n", S.Assign)
    assert under.targets[0] == S.Name("_", under.targets[0].span)


def test_dotted_calls_attributes_and_indexing():
    loss = stmt("loss = translate.sampled_loss(src, src_len, tgt, lengths=tgt_len, samples=64)",
                S.LossStmt)
    assert loss.value.func == "translate.sampled_loss" and loss.value.kwargs[1].value.value == 64
    assert loss.value.func_span == Span("<spec>", 1, 8, 1, 30)
    h = stmt("a = dense(last.h, 10) + last[0]", S.Assign).value
    assert isinstance(h.left.args[0], S.Attr) and h.left.args[0].attr == "h"
    assert isinstance(h.right, S.Index) and h.right.index.value == 0
    m = stmt("metric accuracy(logits, y)", S.MetricStmt)
    assert isinstance(m.value, S.Call) and m.value.func == "accuracy"


def test_declarations():
    module = parse('model m\ninput s: f32\ninput t: bool[]\nvocab v = chars(" ,0-9\\"")\n')
    model, s, t, v = module.statements
    assert model.name == "m"
    assert (s.dtype, s.dims) == ("f32", ()) and (t.dtype, t.dims) == ("bool", ())
    assert v.value.args[0] == S.String(' ,0-9"', v.value.args[0].span)
    assert stmt("cell rnn = basic(150)", S.CellDecl).name == "rnn"


def test_numbers():
    values = [a.value for a in stmt("x = f(1, 1.0, 1e-3, .5, 2.)", S.Assign).value.args]
    assert values == [1, 1.0, 1e-3, 0.5, 2.0]
    assert [type(v) for v in values] == [int, float, float, float, float]


def test_comments_and_newlines():
    text = "# heading\nmodel m  # trailing\n\n   # indented\ninput x: f32[batch,  # split\n  8]\n"
    model, x = parse(text).statements
    assert model.name == "m" and [d.value if isinstance(d, S.Number) else d.name for d in x.dims] == ["batch", 8]


def test_cell_definitions_before_or_after_model():
    module = parse(CELL_DEF + "model m\ncell r = mgu(4)\n" + CELL_DEF.replace("mgu", "other"))
    kinds = [type(s) for s in module.statements]
    assert kinds == [S.CellDef, S.ModelDecl, S.CellDecl, S.CellDef]


def test_spans():
    text = "model m\n\ncell rnn = basic(150) | project(1)\nseq, last = rnn(x)\n"
    module = parse(text, "spec.rnn")
    assert module.file == "spec.rnn" and module.source == text
    model, cell, assign = module.statements
    assert model.span == Span("spec.rnn", 1, 1, 1, 8)
    assert cell.span == Span("spec.rnn", 3, 1, 3, 35)
    assert cell.cell.span == Span("spec.rnn", 3, 12, 3, 35)
    assert cell.cell.cell.span == Span("spec.rnn", 3, 12, 3, 22)
    assert cell.cell.wrapper.span == Span("spec.rnn", 3, 25, 3, 35)
    assert assign.targets[1].span == Span("spec.rnn", 4, 6, 4, 10)
    assert assign.value.span == Span("spec.rnn", 4, 13, 4, 19)
    assert assign.value.args[0].span == Span("spec.rnn", 4, 17, 4, 18)
    block = stmt("model m\ntrain {\n  batch 5\n}\n", S.TrainBlock)
    assert block.span == Span("<spec>", 2, 1, 4, 2)
    assert block.items[0].span == Span("<spec>", 3, 3, 3, 10)


def test_parse_is_fast():
    import time
    body = CELL_DEF * 20 + SEQ2SEQ
    start = time.perf_counter()
    for _ in range(10):
        parse(body)
    assert time.perf_counter() - start < 2.0
