"""seq2seq models as files and commands: vocabulary metadata round trip, the decode model in
a process that cannot import rnnc, `rnnc run` text in and out, `rnnc train` on .tsv and
`rnnc eval` metrics, pretrained and frozen embeddings, and located spec errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from rnnc.api import check, compile
from rnnc.errors import SpecError
from rnnc.training_graph import build_train
from rnnc.vocab import Vocab

SPEC = """model rev                              # reverse a string of letters
vocab letters = chars("abcdef")
input src: i64[batch, src_time]
input src_len: i64[batch]
input tgt: i64[batch, tgt_time]
input tgt_len: i64[batch]
seq2seq tr {
  source   embed(letters, 4) reversed
  encoder  lstm(8)
  target   embed(letters, 4)
  decoder  lstm(8)
  attention luong
  decode   greedy(max_len=9)
}
logits = tr(src, src_len, tgt)
loss = softmax_cross_entropy(logits, tgt, lengths=tgt_len)
output tokens, token_len = tr.decode(src, src_len)
train { optimizer adam(lr=0.01)  batch 8  steps 3 }
"""
PAIRS = ["abc\tcba", "fed\tdef", "a\ta", "bbad\tdabb", "ecf\tfce"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("s2s")
    (root / "rev.rnn").write_text(SPEC)
    (root / "pairs.tsv").write_text("\n".join(PAIRS) + "\n")
    compile(root / "rev.rnn", out=root / "out", seed=4)     # random weights that decode varied strings
    return root


def rnnc(*args):
    """The command line, in this process (tests/test_cli.py runs it as a subprocess)."""
    from click.testing import CliRunner

    from rnnc.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout


def test_every_model_carries_the_vocabularies(compiled):
    files = sorted(p.name for p in (compiled / "out").glob("*.onnx"))
    assert files == ["decoder_step.onnx", "encoder.onnx", "eval.onnx", "infer.onnx", "train.onnx"]
    for name in files:
        meta = {p.key: p.value for p in onnx.load(compiled / "out" / name).metadata_props}
        io = json.loads(meta["rnnc.vocab"])
        assert io["vocabularies"]["letters"]["tokens"] == ["<pad>", "<go>", "<eos>", "<unk>", *"abcdef"]
        assert io["inputs"]["src"] == {"vocab": "letters", "lengths": "src_len", "eos": False}
        assert io["inputs"]["tgt"] == {"vocab": "letters", "lengths": "tgt_len", "eos": True}
        assert io["outputs"] == {"tokens": {"vocab": "letters", "lengths": "token_len"}}
        assert Vocab.from_json("letters", io["vocabularies"]["letters"]).encode("fab") == [9, 4, 5]
    step = {p.key: p.value for p in onnx.load(compiled / "out" / "decoder_step.onnx").metadata_props}
    assert json.loads(step["rnnc.seq2seq"])["go"] == 1 and json.loads(step["rnnc.state"])[0]["input"] == "state.c"


NO_RNNC = textwrap.dedent("""\
    import sys; sys.modules['rnnc'] = None
    import json
    import numpy as np, onnxruntime as ort
    sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    io = json.loads(sess.get_modelmeta().custom_metadata_map["rnnc.vocab"])
    src = io["inputs"]["src"]; voc = io["vocabularies"][src["vocab"]]
    index = {t: i for i, t in enumerate(voc["tokens"])}
    rows = [[index.get(ch, voc["unk"]) for ch in text] for text in sys.argv[2:]]
    ids = np.zeros((len(rows), max(map(len, rows))), np.int64)
    for i, r in enumerate(rows): ids[i, :len(r)] = r
    out = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {"src": ids, src["lengths"]: np.array([len(r) for r in rows])})))
    spec = io["outputs"]["tokens"]; tv = io["vocabularies"][spec["vocab"]]
    for toks, n in zip(out["tokens"], out[spec["lengths"]]):
        print("".join(tv["tokens"][t] for t in toks[:n] if t not in (tv["pad"], tv["go"], tv["eos"])))
    assert sorted(m for m in sys.modules if m.startswith("rnnc")) == ["rnnc"]
""")


def test_decode_model_runs_without_rnnc_from_text_to_text(compiled):
    from rnnc.seq2seq.textio import decoded_outputs, feeds
    from rnnc.runtime import run_session, session

    texts = ["abc", "fedcba", "b"]
    sess = session(compiled / "out" / "infer.onnx")
    want = decoded_outputs(sess, run_session(sess, feeds(sess, [f"src={t}" for t in texts[:1]])))["tokens"]
    (compiled / "texts.txt").write_text("\n".join(texts) + "\n")
    batch = decoded_outputs(sess, run_session(sess, feeds(sess, [], str(compiled / "texts.txt"))))["tokens"]
    assert batch[0] == want[0]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    p = subprocess.run([sys.executable, "-c", NO_RNNC, str(compiled / "out" / "infer.onnx"), *texts],
                       cwd=compiled, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == batch


def test_train_eval_and_run_commands(compiled):
    run, data = compiled / "run", compiled / "pairs.tsv"
    code, out = rnnc("train", compiled / "rev.rnn", "--data", data, "-o", run, "--quiet")
    assert code == 0, out
    assert {"encoder.onnx", "decoder_step.onnx", "model.onnx"} <= {q.name for q in run.iterdir()}
    code, out = rnnc("eval", run, "--data", data)
    assert code == 0, out
    got = dict(line.split(": ") for line in out.splitlines())
    assert set(got) == {"loss", "exact_match", "token_accuracy"} and 0 <= float(got["exact_match"]) <= 1
    code, out = rnnc("eval", run, "--data", data, "--decode", "beam(width=2, max_len=9)")
    assert code == 0 and "token_accuracy" in out, out
    code, out = rnnc("eval", run, "--data", data, "--decode", "beam(width=0)")
    assert code == 4
    code, out = rnnc("run", run, "src=fab")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "tokens: text[1]" and lines[2] == "token_len: int64[1]"


def test_pretrained_and_frozen_embeddings(tmp_path):
    vec = np.random.default_rng(0).normal(size=(6, 4))        # the 6 symbols; reserved rows start at 0
    np.save(tmp_path / "vec.npy", vec)
    for frozen in ("false", "true"):
        text = SPEC.replace("source   embed(letters, 4) reversed",
                            f'source   embed(letters, 4, pretrained="vec.npy", frozen={frozen})')
        (tmp_path / "p.rnn").write_text(text)
        model = check(tmp_path / "p.rnn")
        tm = build_train(model)
        table = "tr.source.embed"
        proto = tm.onnx
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
        value = tm.params.get(table, inits.get(table))
        np.testing.assert_allclose(value[4:], vec, rtol=1e-6)
        assert not value[:4].any()
        assert (table in tm.params) == (frozen == "false")      # frozen: a constant, never updated


@pytest.mark.parametrize("change, message", [
    (("decoder  lstm(8)", "decoder  gru(8)"), "states must match: encoder (c[8], h[8]), decoder (h[8])"),
    (("decoder  lstm(8)", "decoder  stack(lstm(8), lstm(8))"), "the encoder's final state starts the decoder"),
    (("attention luong", "attention luong(score=cosine)"), "luong(score=...) is general or dot"),
    (("attention luong", "attention bahdanaw"), "attention is luong"),
    (("greedy(max_len=9)", "beam(width=11)"), "beam width 11 is larger than the target vocabulary"),
    (("decoder  lstm(8)", "decoder  bi(lstm(8))"), "bi(...) cannot decode"),
    (("embed(letters, 4) reversed", "embed(lettres, 4) reversed"), "unknown vocabulary 'lettres'"),
    (("output tokens, token_len = tr.decode", "output tokens = tr.decode"), "name 2 to 4 results"),
    (("loss = softmax_cross_entropy(logits, tgt, lengths=tgt_len)",
      "loss = tr.sampled_loss(src, src_len, tgt, lengths=tgt_len, samples=10)"), "samples=10 must be smaller"),
    (("logits = tr(src, src_len, tgt)", "logits = tr.translate(src, src_len, tgt)"), "unknown function"),
])
def test_seq2seq_mistakes_are_located(tmp_path, change, message):
    text = SPEC.replace(*change)
    assert text != SPEC
    (tmp_path / "bad.rnn").write_text(text)
    with pytest.raises(SpecError) as info:
        check(tmp_path / "bad.rnn")
    d = info.value.diagnostics[0]
    assert message in d.message, info.value.report()
    assert d.span is not None


def test_static_unroll_needs_fixed_lengths():
    with pytest.raises(SpecError, match="--unroll static needs a fixed number of steps"):
        check("t.rnn", text=SPEC, unroll="static")
    fixed = SPEC.replace("src_time", "5").replace("tgt_time", "4")
    model = check("t.rnn", text=fixed, unroll="static")
    x = {"src": np.array([[4, 5, 6, 0, 0]]), "src_len": np.array([3])}
    from rnnc.api import build_infer

    outs = [ort.InferenceSession(build_infer(model, u).onnx.SerializeToString()).run(None, x) for u in ("static", "loop")]
    np.testing.assert_array_equal(outs[0][0], outs[1][0])


def test_dropout_in_the_decoder_is_refused_located():
    model = check("t.rnn", text=SPEC.replace("decoder  lstm(8)", "decoder  lstm(8) | dropout(output_keep=0.9)"))
    where = [span for what, span in model.unsupported if what == "dropout inside a seq2seq decoder"]
    assert where and (where[0].line, where[0].column) == (11, 12)
