"""Checkpoints and `--resume`: a run killed with SIGKILL at a random moment and resumed ends
with exactly the weights of an uninterrupted run, and leaves no corrupted file behind."""
from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from rnnc import checkpoint as ckpt
from rnnc.cli import main as cli_main
from rnnc.metrics_log import read_metrics
from rnnc.train import Trainer
from support import kill_after_checkpoint

SPEC = """\
model resumable
input x: f32[batch, time, 2]
input y: f32[batch, time, 1]
cell rnn = gru(8) | project(1)
pred, _ = rnn(x)
loss = mse(pred, y)
output pred
train { optimizer adam(lr=0.01)  batch 8  steps 12 }
"""
# 40 rows, batch 8: 5 steps per epoch, so checkpoints fall mid-epoch and at epoch ends.
TOTAL = 200       # long enough that the CLI run is still going when it is killed


def cli(*args):
    r = CliRunner().invoke(cli_main, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    assert "Traceback" not in r.output
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture()
def setup(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 16, 2)).astype(np.float32)
    y = (0.3 * np.cumsum(x[..., :1], axis=1)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    (tmp_path / "spec.rnn").write_text(SPEC)
    return tmp_path / "spec.rnn", tmp_path / "data.npz"


def _params_of(path: Path) -> dict:
    arrays, _ = ckpt.load(path)
    return {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _check_every_file_loads(run: Path) -> list[str]:
    """Load every file of the run folder; return the names of leftover temporary files."""
    leftovers = []
    for p in sorted(run.rglob("*")):
        if not p.is_file():
            continue
        if p.name.startswith("."):
            leftovers.append(str(p.relative_to(run)))
            continue
        if p.suffix == ".npz":
            ckpt.load(p)  # raises CheckpointError on a torn file
        elif p.suffix == ".onnx":
            onnx.checker.check_model(onnx.load(str(p)))
        elif p.name == "metrics.jsonl":
            for line in p.read_text().splitlines():
                json.loads(line)
        elif p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            raise AssertionError(f"unexpected file {p}")
    return leftovers


def test_killed_and_resumed_equals_uninterrupted(setup, tmp_path):
    spec, data = setup
    # A: uninterrupted, in process
    run_a = tmp_path / "A"
    tr = Trainer(str(spec), str(data), str(run_a), threads=1, checkpoint_every=2, progress=False, steps=TOTAL)
    tr.train()
    want = tr.state.params
    assert tr.state.step == TOTAL

    # B: the command line, killed with SIGKILL at a random moment after a checkpoint
    run_b = tmp_path / "B"
    cmd = [sys.executable, "-m", "rnnc.cli", "train", str(spec), "--data", str(data), "-o", str(run_b),
           "--steps", str(TOTAL), "--threads", "1", "--checkpoint-every", "2", "--quiet"]
    rnd = random.Random(1234)
    kill_after = rnd.randint(4, TOTAL // 3)        # kill once a checkpoint at/after this step exists
    extra_delay = rnd.uniform(0.0, 0.02)           # ... and a little later, anywhere within a step
    proc = kill_after_checkpoint(cmd, run_b / "checkpoints", kill_after, extra_delay)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_b / "model.onnx").exists(), "the first run finished before it was killed"
    killed_at = ckpt.list_checkpoints(run_b / "checkpoints")[-1][0]
    assert killed_at < TOTAL
    _check_every_file_loads(run_b)

    res = subprocess.run(cmd + ["--resume"], check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"trained {TOTAL} steps" in res.stdout

    leftovers = _check_every_file_loads(run_b)
    # rnnc's atomic writes may leave a hidden temporary file when killed mid-write; it is
    # never taken for a checkpoint. Anything else must be a complete file.
    assert all(name.rsplit("/", 1)[-1].startswith(".tmp-") or ".tmp" in name for name in leftovers), leftovers

    got_ckpt = _params_of(ckpt.latest(run_b / "checkpoints"))
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(run_b / "model.onnx")).graph.initializer}
    for k, v in want.items():
        assert np.abs(got_ckpt[k] - v).max() <= 1e-6, k
        assert np.abs(inits[k] - v).max() <= 1e-6, k
    inits_a = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(run_a / "model.onnx")).graph.initializer}
    assert set(inits) == set(inits_a)
    for k, v in inits.items():
        assert np.abs(v - inits_a[k]).max() <= 1e-6, k

    recs_b = [r for r in read_metrics(run_b) if "loss" in r]
    steps = [r["step"] for r in recs_b]
    assert len(steps) == len(set(steps)), "duplicate steps in metrics.jsonl"
    assert steps == list(range(1, TOTAL + 1))
    recs_a = [r for r in read_metrics(run_a) if "loss" in r]
    np.testing.assert_allclose([r["loss"] for r in recs_b], [r["loss"] for r in recs_a], rtol=1e-6)
    assert [r["epoch"] for r in recs_b] == [r["epoch"] for r in recs_a]


def test_resume_of_a_finished_run_changes_nothing(setup, tmp_path):
    spec, data = setup
    run = tmp_path / "run"
    code, _, err = cli("train", spec, "--data", data, "-o", run, "--threads", "1", "--checkpoint-every", "2",
                       "--quiet")
    assert code == 0, err
    before = _params_of(ckpt.latest(run / "checkpoints"))
    code, _out, err = cli("train", spec, "--data", data, "-o", run, "--threads", "1", "--resume", "--quiet")
    assert code == 0, err
    after = _params_of(ckpt.latest(run / "checkpoints"))
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    steps = [r["step"] for r in read_metrics(run) if "loss" in r]
    assert steps == list(range(1, 13))


def test_resume_continues_to_more_steps(setup, tmp_path):
    spec, data = setup
    # 12 steps straight vs 6 steps, then --resume to 12
    straight = Trainer(str(spec), str(data), str(tmp_path / "A"), threads=1, progress=False)
    straight.train()
    code, _, err = cli("train", spec, "--data", data, "-o", tmp_path / "B", "--steps", "6", "--threads", "1",
                       "--quiet")
    assert code == 0, err
    code, _out, err = cli("train", spec, "--data", data, "-o", tmp_path / "B", "--resume", "--threads", "1",
                         "--quiet")
    assert code == 0, err
    got = _params_of(ckpt.latest(tmp_path / "B" / "checkpoints"))
    for k, v in straight.state.params.items():
        assert np.abs(got[k] - v).max() <= 1e-6, k


def test_corrupted_latest_checkpoint(setup, tmp_path):
    spec, data = setup
    run = tmp_path / "run"
    code, _, err = cli("train", spec, "--data", data, "-o", run, "--steps", "6", "--threads", "1",
                       "--checkpoint-every", "2", "--quiet")
    assert code == 0, err
    last = ckpt.latest(run / "checkpoints")
    assert last.name == "step-000000006.npz"
    raw = last.read_bytes()
    last.write_bytes(raw[: len(raw) // 2])
    before = _snapshot(run)
    code, out, err = cli("train", spec, "--data", data, "-o", run, "--steps", "10", "--threads", "1", "--resume",
                         "--quiet")
    # rnnc does not fall back to an older checkpoint: it refuses, naming the torn file
    assert code == 4, (out, err)
    assert "step-000000006.npz" in err
    assert "corrupt" in err or "truncated" in err
    assert _snapshot(run) == before


@pytest.mark.parametrize("change", ["spec", "seed"])
def test_resume_with_another_spec_or_seed(setup, tmp_path, change):
    spec, data = setup
    run = tmp_path / "run"
    code, _, err = cli("train", spec, "--data", data, "-o", run, "--steps", "4", "--threads", "1", "--quiet")
    assert code == 0, err
    before = _snapshot(run)
    args = ["train", spec, "--data", data, "-o", run, "--steps", "8", "--resume", "--quiet"]
    if change == "spec":
        other = tmp_path / "other.rnn"
        other.write_text(SPEC.replace("adam(lr=0.01)", "adam(lr=0.02)"))
        args[1] = other
    else:
        args += ["--seed", "1"]
    code, out, err = cli(*args)
    assert code == 4, (out, err)
    assert ("different spec" if change == "spec" else "--seed") in err
    assert _snapshot(run) == before


def test_resume_without_checkpoint_is_a_usage_error(setup, tmp_path):
    spec, data = setup
    code, out, err = cli("train", spec, "--data", data, "-o", tmp_path / "none", "--resume", "--quiet")
    assert code == 2, (out, err)
    assert "no checkpoint" in err
