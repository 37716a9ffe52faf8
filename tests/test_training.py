"""`rnnc train` / `rnnc eval`: short trainings that must learn, schedules, option overrides,
the run folder, data errors, and the train model run without rnnc.

Everything runs with one onnxruntime thread (deterministic) on tiny models and few steps.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as R

import rnnc.api
from rnnc import checkpoint as ckpt
from rnnc import datasets
from rnnc.cli import main as cli_main
from rnnc.train import Trainer

ROOT = Path(__file__).resolve().parent.parent

DIGITS32 = """\
model digits_rows
input x: f32[batch, 8, 8]
input y: i64[batch]
cell rnn = basic(32)
seq, last = rnn(x)
logits = dense(last, 10)
loss = softmax_cross_entropy(logits, y)
metric accuracy(logits, y)
output probs = softmax(logits)
train {
  optimizer adam(lr=0.01)
  batch 32
  epochs 3
}
"""

# LANGUAGE.md §2, verbatim (trained with --steps 200 below).
SINE = """\
model sine_next

input x: f32[batch, time, 1]
input y: f32[batch, time, 1]            # x shifted one step into the future

cell rnn = basic(100, activation=relu) | project(1)
pred, _ = rnn(x)
loss = mse(pred, y)
output pred

train { optimizer adam(lr=0.001)  batch 50  steps 2000 }
"""

REBER16 = """\
model reber
input x: f32[batch, time, 7]
input n: i64[batch]
input y: i64[batch]
cell rnn = lstm(16)
_, last = rnn(x, lengths=n)
logits = dense(last, 2)
loss = softmax_cross_entropy(logits, y)
metric accuracy(logits, y)
output probs = softmax(logits)
train { optimizer adam(lr=0.01)  batch 64  epochs 3 }
"""

# A tiny classifier for the option / folder / data tests.
TINY = """\
model tiny
input x: f32[batch, 8, 8]
input y: i64[batch]
cell rnn = basic(6)
_, last = rnn(x)
logits = dense(last, 10)
loss = softmax_cross_entropy(logits, y)
metric accuracy(logits, y)
output probs = softmax(logits)
train { optimizer adam(lr=0.01)  batch 16  epochs 2 }
"""


def cli(*args):
    """Run the rnnc command line in-process; (exit code, stdout, stderr)."""
    r = CliRunner().invoke(cli_main, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    assert "Traceback" not in r.output
    return r.exit_code, r.stdout, r.stderr


def eval_numbers(text: str) -> dict:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+): ([-+0-9.eE]+|nan)$", text, re.MULTILINE)}


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    for name in ("digits", "sine", "reber"):
        train, test = getattr(datasets, name)(0)
        np.savez(d / f"{name}_train.npz", **train)
        np.savez(d / f"{name}_test.npz", **test)
    train, _ = datasets.digits(0)
    np.savez(d / "small.npz", **{k: v[:64] for k, v in train.items()})
    for name, text in (("digits32", DIGITS32), ("sine", SINE), ("reber16", REBER16), ("tiny", TINY)):
        (d / f"{name}.rnn").write_text(text)
    return d


@pytest.fixture(scope="module")
def digits_run(data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "digits"
    code, out, err = cli("train", data_dir / "digits32.rnn", "--data", data_dir / "digits_train.npz",
                         "-o", run, "--threads", "1", "--quiet")
    assert code == 0, err
    assert "trained 135 steps" in out  # ceil(1438 / 32) = 45 per epoch, 3 epochs
    return run


# ----------------------------------------------------------------------------- learning


def test_digits_learns(digits_run, data_dir):
    code, out, err = cli("eval", digits_run, "--data", data_dir / "digits_test.npz")
    assert code == 0, err
    nums = eval_numbers(out)
    assert set(nums) == {"loss", "accuracy"}
    print(f"digits basic(32), 3 epochs: test accuracy {nums['accuracy']:.4f}, loss {nums['loss']:.4f}")
    assert nums["accuracy"] > 0.70


def test_sine_learns(data_dir, tmp_path):
    run = tmp_path / "sine"
    code, out, err = cli("train", data_dir / "sine.rnn", "--data", data_dir / "sine_train.npz", "-o", run,
                         "--steps", "200", "--threads", "1", "--quiet")
    assert code == 0, err
    code, out, err = cli("eval", run, "--data", data_dir / "sine_test.npz")
    assert code == 0, err
    mse = eval_numbers(out)["loss"]
    y = np.load(data_dir / "sine_test.npz")["y"].astype(np.float64)
    zero_mse = float(R.mse(np.zeros_like(y), y))
    print(f"sine §2, 200 steps: test mse {mse:.4f}; predicting zeros: {zero_mse:.4f}")
    assert mse < 0.05 * zero_mse


def test_reber_learns(data_dir, tmp_path):
    run = tmp_path / "reber"
    code, out, err = cli("train", data_dir / "reber16.rnn", "--data", data_dir / "reber_train.npz", "-o", run,
                         "--threads", "1", "--quiet")
    assert code == 0, err
    code, out, err = cli("eval", run, "--data", data_dir / "reber_test.npz")
    assert code == 0, err
    acc = eval_numbers(out)["accuracy"]
    print(f"reber lstm(16), 3 epochs: test accuracy {acc:.4f}")
    assert acc > 0.60


# ----------------------------------------------------------------------------- schedule


def test_exponential_schedule_logged_per_step(data_dir, tmp_path):
    spec = tmp_path / "sched.rnn"
    spec.write_text(TINY.replace("train { optimizer adam(lr=0.01)  batch 16  epochs 2 }",
                                 "train { optimizer adam(lr=0.01)  schedule exponential(decay=0.5, every=2)"
                                 "  batch 16  steps 7 }"))
    tr = Trainer(str(spec), str(data_dir / "small.npz"), str(tmp_path / "run"), threads=1, progress=False)
    tr.train()
    recs = [r for r in metrics(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in recs] == list(range(1, 8))
    for r in recs:
        # the record's step counts updates made including this one; its lr used step - 1
        want = R.exponential(0.01, 0.5, 2, r["step"] - 1)
        assert r["lr"] == pytest.approx(want, rel=1e-9), r
    assert recs[0]["lr"] == pytest.approx(0.01)
    assert recs[2]["lr"] == pytest.approx(0.005)


# ----------------------------------------------------------------------------- overrides


def test_set_overrides_the_spec(data_dir, tmp_path):
    tr = Trainer(str(data_dir / "tiny.rnn"), str(data_dir / "small.npz"), str(tmp_path / "run"), threads=1,
                 progress=False, sets=("optimizer=sgd", "lr=0.5", "schedule.decay=0.5"))
    assert tr.cfg.optimizer == "sgd"
    assert dict(tr.cfg.optimizer_args)["lr"] == 0.5
    assert tr.tm.slots == {}  # plain sgd has no slots
    meta = {p.key: p.value for p in tr.tm.onnx.metadata_props}
    assert meta["rnnc.optimizer"] == "sgd"


def test_set_sgd_trains_from_the_command_line(data_dir, tmp_path):
    run = tmp_path / "run"
    code, _out, err = cli("train", data_dir / "tiny.rnn", "--data", data_dir / "small.npz", "-o", run,
                         "--set", "optimizer=sgd", "--set", "lr=0.5", "--steps", "3", "--threads", "1", "--quiet")
    assert code == 0, err
    recs = [r for r in metrics(run) if "loss" in r]
    assert [r["lr"] for r in recs] == [0.5, 0.5, 0.5]


def test_batch_option_changes_steps_per_epoch(data_dir, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", data_dir / "tiny.rnn", "--data", data_dir / "small.npz", "-o", run,
                         "--batch", "7", "--threads", "1", "--quiet")
    assert code == 0, err
    recs = [r for r in metrics(run) if "loss" in r]
    # 64 rows, batch 7: 10 steps per epoch (the last batch has 1 row), 2 epochs
    assert len(recs) == 20
    assert [r["epoch"] for r in recs] == [0] * 10 + [1] * 10
    assert "trained 20 steps" in out
    # the spec's own batch 16: 4 steps per epoch
    tr = Trainer(str(data_dir / "tiny.rnn"), str(data_dir / "small.npz"), str(tmp_path / "r2"), progress=False)
    assert tr.steps_per_epoch() == 4 and tr.total_steps() == 8


def test_lr_and_epochs_options(data_dir, tmp_path):
    run = tmp_path / "run"
    code, _out, err = cli("train", data_dir / "tiny.rnn", "--data", data_dir / "small.npz", "-o", run,
                         "--lr", "2", "--epochs", "1", "--threads", "1", "--quiet")
    assert code == 0, err
    recs = [r for r in metrics(run) if "loss" in r]
    assert len(recs) == 4 and all(r["lr"] == 2.0 for r in recs)


def test_fractional_lr_option(data_dir, tmp_path):
    run = tmp_path / "run"
    code, _out, err = cli("train", data_dir / "tiny.rnn", "--data", data_dir / "small.npz", "-o", run,
                         "--lr", "0.05", "--steps", "2", "--threads", "1", "--quiet")
    assert code == 0, err
    tr = Trainer(str(data_dir / "tiny.rnn"), str(data_dir / "small.npz"), str(tmp_path / "r2"), progress=False,
                 lr=1.7)
    assert dict(tr.cfg.optimizer_args)["lr"] == 1.7


@pytest.mark.parametrize("args,message", [
    (["--set", "colour=1"], "unknown training option 'colour'"),
    (["--set", "batch"], "key=value"),
    (["--set", "batch=0"], "batch must be a positive whole number"),
    (["--set", "batch=2.5"], "batch must be a positive whole number"),
    (["--set", "optimizer=rmsprop"], "optimizer=rmsprop"),
    (["--set", "lr=fast"], "expected a number"),
    (["--set", "validate=1.5"], "validate"),
    (["--set", "schedule=exponential"], "schedule exponential needs decay"),
])
def test_bad_set_is_a_usage_error(data_dir, tmp_path, args, message):
    run = tmp_path / "run"
    code, out, err = cli("train", data_dir / "tiny.rnn", "--data", data_dir / "small.npz", "-o", run, *args,
                         "--quiet")
    assert code == 2, (out, err)
    assert message in err
    assert not run.exists()


def test_unknown_set_key_named_whatever_the_value(data_dir, tmp_path):
    code, _out, err = cli("train", data_dir / "tiny.rnn", "--data", data_dir / "small.npz", "-o",
                         tmp_path / "run", "--set", "colour=blue", "--quiet")
    assert code == 2
    assert "unknown training option 'colour'" in err


def test_validate_logs_val_loss_per_epoch(data_dir, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", data_dir / "tiny.rnn", "--data", data_dir / "small.npz", "-o", run,
                         "--set", "validate=0.2", "--epochs", "3", "--threads", "1", "--quiet")
    assert code == 0, err
    recs = metrics(run)
    val = [r for r in recs if "val_loss" in r]
    train_recs = [r for r in recs if "loss" in r]
    # 64 rows: 13 held out, 51 trained on -> 4 steps per epoch
    assert len(train_recs) == 12
    assert [r["epoch"] for r in val] == [1, 2, 3]
    assert [r["step"] for r in val] == [4, 8, 12]
    for r in val:
        assert np.isfinite(r["val_loss"]) and 0 <= r["val_accuracy"] <= 1
    assert "val_loss" in out


# ----------------------------------------------------------------------------- the run folder


def test_run_folder_contents(digits_run, data_dir):
    names = {p.name for p in digits_run.iterdir()}
    want = {"infer.onnx", "eval.onnx", "train.onnx", "model.onnx", "metrics.jsonl", "checkpoints"}
    try:
        import matplotlib  # noqa: F401
        want.add("loss.png")
    except ImportError:
        pass
    assert want <= names
    if "loss.png" in want:
        assert (digits_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (digits_run / "model.onnx").read_bytes() == (digits_run / "infer.onnx").read_bytes()
    for name in ("infer.onnx", "eval.onnx", "train.onnx", "model.onnx"):
        onnx.checker.check_model(onnx.load(str(digits_run / name)))
    cks = ckpt.list_checkpoints(digits_run / "checkpoints")
    assert cks and cks[-1][0] == 135
    recs = [r for r in metrics(digits_run) if "loss" in r]
    assert [r["step"] for r in recs] == list(range(1, 136))


def test_model_weights_are_the_trained_params(digits_run, data_dir):
    arrays, meta = ckpt.load(ckpt.latest(digits_run / "checkpoints"))
    assert meta["step"] == 135
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    assert len(params) == 5 and {"rnn.W", "rnn.U", "rnn.b"} <= set(params)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(digits_run / "model.onnx")).graph.initializer}
    evals = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(digits_run / "eval.onnx")).graph.initializer}
    for k, v in params.items():
        np.testing.assert_array_equal(inits[k], v)
        np.testing.assert_array_equal(evals[k], v)
    # and the trained weights are not the initial ones
    from rnnc.training_graph import build_train
    first = build_train(rnnc.api.check(data_dir / "digits32.rnn"), seed=0).params
    assert all(np.abs(first[k] - params[k]).max() > 1e-3 for k in params)
    # the model answers like the eval: accuracy from model.onnx's probabilities
    test = np.load(data_dir / "digits_test.npz")
    import onnxruntime as ort
    sess = ort.InferenceSession(str(digits_run / "model.onnx"), providers=["CPUExecutionProvider"])
    probs = sess.run(["probs"], {"x": test["x"]})[0]
    code, out, _ = cli("eval", digits_run, "--data", data_dir / "digits_test.npz")
    assert code == 0
    acc = float((probs.argmax(-1) == test["y"]).mean())
    assert acc == pytest.approx(eval_numbers(out)["accuracy"], abs=1e-6)


@pytest.mark.parametrize("kind", ["missing", "shape", "label", "nan"])
def test_bad_data_exit_4(data_dir, tmp_path, kind):
    d = dict(np.load(data_dir / "small.npz"))
    if kind == "missing":
        del d["y"]
    elif kind == "shape":
        d["x"] = d["x"][:, :, :7]
    elif kind == "label":
        d["y"] = d["y"].copy()
        d["y"][5] = 10
    elif kind == "nan":
        d["x"] = d["x"].copy()
        d["x"][2, 3, 4] = np.nan
    path = tmp_path / f"bad_{kind}.npz"
    np.savez(path, **d)
    run = tmp_path / "run"
    code, out, err = cli("train", data_dir / "tiny.rnn", "--data", path, "-o", run, "--quiet")
    assert code == 4, (out, err)
    assert err.startswith("error: ")
    assert {"missing": "'y'", "shape": "'x'", "label": "'y'", "nan": "NaN"}[kind] in err
    assert not run.exists()  # nothing written for a run that could not start
    if kind != "label":  # see test_bad_labels_name_the_file
        assert path.name in err


def test_bad_labels_name_the_file(data_dir, tmp_path):
    d = dict(np.load(data_dir / "small.npz"))
    d["y"] = d["y"].copy()
    d["y"][5] = 10
    path = tmp_path / "labels10.npz"
    np.savez(path, **d)
    code, _out, err = cli("train", data_dir / "tiny.rnn", "--data", path, "-o", tmp_path / "run", "--quiet")
    assert code == 4
    assert "labels10.npz" in err


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_existing_run_folder_needs_resume(data_dir, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli("train", data_dir / "tiny.rnn", "--data", data_dir / "small.npz", "-o", run,
                       "--steps", "3", "--threads", "1", "--quiet")
    assert code == 0, err
    before = _snapshot(run)
    assert "model.onnx" in before and "metrics.jsonl" in before
    code, out, err = cli("train", data_dir / "tiny.rnn", "--data", data_dir / "small.npz", "-o", run,
                         "--steps", "3", "--threads", "1", "--quiet")
    assert code == 2, (out, err)
    assert "--resume" in err
    assert _snapshot(run) == before


# ----------------------------------------------------------------------------- train model without rnnc

STANDALONE = textwrap.dedent("""\
    import sys
    sys.modules['rnnc'] = None          # `import rnnc` now fails
    try:
        import rnnc  # noqa
    except ImportError:
        pass
    else:
        raise SystemExit('rnnc is importable')
    import json
    import numpy as np
    import onnxruntime as ort
    model, inputs, out = sys.argv[1:4]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=['CPUExecutionProvider'])
    with np.load(inputs) as f:
        feeds = {k: f[k] for k in f.files}
    need = [i.name for i in sess.get_inputs()]
    missing = [n for n in need if n not in feeds]
    if missing:
        raise SystemExit(f'inputs missing: {missing}')
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(names, {n: feeds[n] for n in need})))
    np.savez(out, **values)
    print(json.dumps({'loss': float(values['loss']), 'n_outputs': len(names)}))
""")


def test_train_model_runs_without_rnnc(data_dir, tmp_path):
    spec = data_dir / "tiny.rnn"
    out = tmp_path / "compiled"
    rnnc.api.compile(spec, out=out)
    train_proto = onnx.load(str(out / "train.onnx"))
    meta = {p.key: p.value for p in train_proto.metadata_props}
    assert meta["rnnc.kind"] == "train"
    param_names = json.loads(meta["rnnc.params"])
    slot_kinds = json.loads(meta["rnnc.slots"])
    assert slot_kinds == ["m", "v"]
    assert all(n.domain in ("", "ai.onnx") for n in train_proto.graph.node)  # standard operators only
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out / "eval.onnx")).graph.initializer}

    d = np.load(data_dir / "small.npz")
    feeds = {"x": d["x"][:16], "y": d["y"][:16]}
    feeds |= {n: inits[n] for n in param_names}
    feeds |= {f"{n}.{k}": np.zeros_like(inits[n]) for n in param_names for k in slot_kinds}
    feeds["lr"] = np.asarray(0.01, np.float32)
    feeds["step"] = np.asarray(0, np.int64)
    np.savez(tmp_path / "inputs.npz", **feeds)
    res = subprocess.run([sys.executable, "-c", STANDALONE, str(out / "train.onnx"), str(tmp_path / "inputs.npz"),
                          str(tmp_path / "outputs.npz")], cwd=tmp_path, check=False, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    outside = np.load(tmp_path / "outputs.npz")

    # in process: the trainer's first step on the same rows, from the same initial weights
    tr = Trainer(str(spec), str(data_dir / "small.npz"), str(tmp_path / "run"), threads=1, progress=False)
    for n in param_names:
        np.testing.assert_array_equal(tr.state.params[n], inits[n])
    values = tr.run_step({"x": feeds["x"], "y": feeds["y"]}, 0.01, {})
    assert float(outside["loss"]) == pytest.approx(float(values["loss"]), rel=1e-6)
    for n in param_names:
        np.testing.assert_allclose(outside[f"{n}.next"], tr.state.params[n], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(outside[f"{n}.m.next"], tr.state.slots[f"{n}.m"], rtol=1e-6, atol=1e-9)
    assert np.abs(outside["rnn.W.next"] - inits["rnn.W"]).max() > 1e-4
    # and the loss is the independent cross-entropy of the initial model
    W, U, b = (inits[k].astype(np.float64) for k in ("rnn.W", "rnn.U", "rnn.b"))
    _, h = R.run(R.basic_cell(W, U, b), feeds["x"].astype(np.float64), np.zeros((16, U.shape[0])))
    dense_w = [n for n in param_names if not n.startswith("rnn.")]
    Wd = next(inits[n] for n in dense_w if inits[n].ndim == 2).astype(np.float64)
    bd = next(inits[n] for n in dense_w if inits[n].ndim == 1).astype(np.float64)
    logits = R.dense(h, Wd, bd)
    assert float(outside["loss"]) == pytest.approx(float(R.softmax_cross_entropy(logits, feeds["y"])), rel=1e-5)
