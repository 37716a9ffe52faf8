"""The `rnnc` command line end to end, in subprocesses: exit codes, messages, files.

Exit codes (rnnc/cli.py): 0 ok, 2 usage, 3 bad spec, 4 bad data, inputs or model files.
No user mistake may print a traceback.
"""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from rnnc import __version__

GOOD = """\
model tiny
input x: f32[batch, time, 3]
input y: i64[batch]
cell rnn = basic(4)
seq, last = rnn(x)
logits = dense(last, 2)
loss = softmax_cross_entropy(logits, y)
output probs = softmax(logits)
train { optimizer adam(lr=0.01)  batch 4  epochs 1 }
"""
NO_TRAIN_BLOCK = GOOD[:GOOD.index("train {")]
BAD = GOOD.replace("basic(4)", "lstn(4)")          # 4:12: unknown cell 'lstn'
BAD_UNITS = GOOD.replace("basic(4)", "basic(0)")       # resolves, then fails a check


def rnnc(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnnc.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def assert_clean(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr + p.stdout, p.stderr


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """A folder compiled from GOOD, and an input file for it (shared by the run tests)."""
    root = tmp_path_factory.mktemp("cli")
    (root / "tiny.rnn").write_text(GOOD)
    p = rnnc("compile", "tiny.rnn", "-o", "model", cwd=root)
    assert p.returncode == 0, p.stderr
    np.save(root / "x.npy", np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32))
    return root, p


# ----- check -----

def test_check_good_spec(tmp_path):
    (tmp_path / "tiny.rnn").write_text(GOOD)
    p = rnnc("check", "tiny.rnn", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "ok" in p.stdout and "tiny" in p.stdout and "probs" in p.stdout
    assert_clean(p)


def test_check_bad_spec_exits_3_with_located_report(tmp_path):
    (tmp_path / "bad.rnn").write_text(BAD)
    p = rnnc("check", "bad.rnn", cwd=tmp_path)
    assert p.returncode == 3
    lines = p.stderr.splitlines()
    assert lines[0] == "bad.rnn:4:12: error: unknown cell 'lstn'"
    assert lines[1] == "cell rnn = lstn(4)"
    assert lines[2].index("^") == 11
    assert "hint: did you mean 'lstm'?" in p.stderr
    assert p.stdout == ""
    assert_clean(p)


def test_nonexistent_spec(tmp_path):
    for command in ("check", "compile"):
        p = rnnc(command, "nope.rnn", cwd=tmp_path)
        assert p.returncode != 0
        assert "nope.rnn" in p.stderr and "no such" in p.stderr.lower()
        assert_clean(p)


def test_version():
    p = rnnc("--version")
    assert p.returncode == 0
    assert "rnnc" in p.stdout and __version__ in p.stdout


# ----- compile -----

def test_compile_writes_model_and_prints_summary(compiled):
    root, p = compiled
    model = onnx.load(root / "model" / "infer.onnx")
    assert [i.name for i in model.graph.input] == ["x"]          # y is not needed for inference
    assert [o.name for o in model.graph.output] == ["probs"]
    out = p.stdout
    assert re.search(r"inputs:\s+x: f32\[batch, time, 3\]", out), out
    assert re.search(r"outputs:\s+probs: f32\[batch, 2\]", out), out
    # basic(4) on 3 features: 3*4 + 4*4 + 4; dense(4 -> 2): 4*2 + 2
    assert re.search(r"parameters: 42\b", out), out
    assert "run of cell 'rnn': loop" in out
    assert "wrote model/infer.onnx" in out
    assert_clean(p)


def test_compile_default_output_folder_is_the_model_name(tmp_path):
    (tmp_path / "spec.rnn").write_text(GOOD)
    p = rnnc("compile", "spec.rnn", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "tiny" / "infer.onnx").is_file()
    onnx.checker.check_model(onnx.load(tmp_path / "tiny" / "infer.onnx"))


def test_compile_unroll_static_over_symbolic_time_is_a_located_spec_error(tmp_path):
    (tmp_path / "tiny.rnn").write_text(GOOD)
    p = rnnc("compile", "tiny.rnn", "--unroll", "static", "-o", "out", cwd=tmp_path)
    assert p.returncode == 3
    assert p.stderr.startswith("tiny.rnn:5:13: error: --unroll static needs a fixed number of steps")
    assert "seq, last = rnn(x)\n            ^" in p.stderr
    assert not (tmp_path / "out").exists()
    assert_clean(p)


@pytest.mark.parametrize("text, code", [(BAD, 3), (BAD_UNITS, 3), ("model tiny\noutput (\n", 3)],
                         ids=["bad spec", "bad units", "syntax error"])
def test_failed_compile_keeps_the_existing_model(compiled, tmp_path, text, code):
    root, _ = compiled
    before = (root / "model" / "infer.onnx").read_bytes()
    out = tmp_path / "model"
    out.mkdir()
    (out / "infer.onnx").write_bytes(before)
    (tmp_path / "bad.rnn").write_text(text)
    p = rnnc("compile", "bad.rnn", "-o", "model", cwd=tmp_path)
    assert p.returncode == code
    assert re.match(r"bad\.rnn:\d+:\d+: error: ", p.stderr), p.stderr
    assert (out / "infer.onnx").read_bytes() == before
    assert sorted(q.name for q in out.iterdir()) == ["infer.onnx"]      # no temporary files left
    assert_clean(p)


@pytest.mark.parametrize("args", [("compile", "tiny.rnn", "-o", "x.npy/sub"),
                                  ("run", "model", "x=x.npy", "-o", "x.npy/o.npz")], ids=["compile", "run"])
def test_output_path_that_cannot_be_created_is_a_clear_error(compiled, args):
    root, _ = compiled
    p = rnnc(*args, cwd=root)
    assert p.returncode != 0
    assert "x.npy" in p.stderr
    assert_clean(p)


def test_compile_spec_with_loss_and_no_train_block(tmp_path):
    (tmp_path / "tiny.rnn").write_text(NO_TRAIN_BLOCK)
    p = rnnc("compile", "tiny.rnn", "-o", "out", cwd=tmp_path)
    assert_clean(p)
    assert p.returncode == 0
    assert (tmp_path / "out" / "infer.onnx").is_file()


# ----- run -----

def test_run_prints_outputs(compiled):
    root, _ = compiled
    p = rnnc("run", "model", "x=x.npy", cwd=root)
    assert p.returncode == 0, p.stderr
    assert "probs: float32[2, 2]" in p.stdout
    assert_clean(p)


def test_run_writes_npz(compiled, tmp_path):
    root, _ = compiled
    out = tmp_path / "o.npz"
    p = rnnc("run", root / "model" / "infer.onnx", f"x={root / 'x.npy'}", "-o", out)
    assert p.returncode == 0, p.stderr
    assert str(out) in p.stdout
    with np.load(out) as z:
        assert list(z.keys()) == ["probs"]
        probs = z["probs"]
    assert probs.shape == (2, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("args, phrase", [
    ((), "needs input 'x'"),
    (("x=x2.npy",), "needs rank 3"),
    (("x=nope.npy",), "nope.npy: no such file"),
    (("x=text.npy",), "text.npy: not a .npy or .npz file"),
    (("x.npy",), "give inputs as name=file.npy"),
], ids=["missing input", "wrong rank", "nonexistent file", "not an npy file", "no name="])
def test_run_bad_inputs_exit_4(compiled, args, phrase):
    root, _ = compiled
    np.save(root / "x2.npy", np.zeros((2, 5), np.float32))
    (root / "text.npy").write_text("hello, not numpy\n")
    p = rnnc("run", "model", *args, cwd=root)
    assert p.returncode == 4, p.stderr
    assert p.stderr.startswith("error: ") and phrase in p.stderr, p.stderr
    assert_clean(p)


def test_run_missing_model_exits_4(compiled):
    root, _ = compiled
    p = rnnc("run", "no_such_model", "x=x.npy", cwd=root)
    assert p.returncode == 4
    assert "no model at no_such_model" in p.stderr
    assert_clean(p)


def test_run_non_npy_message_is_for_command_line_users(compiled):
    root, _ = compiled
    (root / "text2.npy").write_text("hello, not numpy\n")
    p = rnnc("run", "model", "x=text2.npy", cwd=root)
    assert p.returncode == 4
    assert "allow_pickle" not in p.stderr and "pickle" not in p.stderr
