"""`--device` (rnnc/devices.py) and resident training state (rnnc/resident.py).

On a machine without a usable GPU (onnxruntime-gpu installed or not): `--device cuda` is one
clear error line and exit code 5, with no onnxruntime provider log on stderr; with
`--allow-cpu` one warning line and a CPU run; `auto` runs on the CPU silently. Resident
state: parameters and optimizer slots are OrtValues bound with I/O binding across steps
(two sets taking turns), only the loss and the logged scalars are fetched per step, and the
numbers equal the plain `session.run` path exactly.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from rnnc import devices
from rnnc.train import Trainer

SPEC = """\
model tiny
input x: f32[batch, 5, 3]
input y: i64[batch]
cell rnn = lstm(6) | dropout(input_keep=0.8, state_keep=0.9)
seq, last = rnn(x)
logits = dense(last, 2)
loss = softmax_cross_entropy(logits, y)
metric accuracy(logits, y)
output probs = softmax(logits)
train { optimizer adam(lr=0.01)  batch 8  steps 6 }
"""
TBPTT = """\
model stream
input x: f32[batch, time, 2]
input y: f32[batch, time, 1]
cell rnn = gru(5) | project(1)
pred, _ = rnn(x)
loss = mse(pred, y)
output pred
train { optimizer sgd(lr=0.1)  batch 4  steps 4  tbptt 3 }
"""
NO_CUDA = devices.cuda_problem(0) is not None
needs_no_cuda = pytest.mark.skipif(not NO_CUDA, reason="a usable CUDA device is here")
LOG_NOISE = ("[E:", "[W:", "onnxruntime", "provider_bridge", "Failed to load", "Traceback")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    rng = np.random.default_rng(0)
    np.savez(root / "data.npz", x=rng.normal(size=(24, 5, 3)).astype(np.float32), y=rng.integers(0, 2, 24))
    (root / "tiny.rnn").write_text(SPEC)
    np.save(root / "x.npy", rng.normal(size=(2, 5, 3)).astype(np.float32))
    p = rnnc("train", "tiny.rnn", "--data", "data.npz", "-o", "run", "--quiet", cwd=root)
    assert p.returncode == 0, p.stderr
    return root


def rnnc(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnnc.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


COMMANDS = {
    "train": ("train", "tiny.rnn", "--data", "data.npz", "-o", "run2", "--quiet"),
    "run": ("run", "run", "x=x.npy"),
    "eval": ("eval", "run", "--data", "data.npz"),
}


@needs_no_cuda
@pytest.mark.parametrize("command", list(COMMANDS))
def test_cuda_without_a_gpu_is_one_clear_error(files, command):
    p = rnnc(*COMMANDS[command], "--device", "cuda", cwd=files)
    assert p.returncode == 5, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: --device cuda: no usable CUDA device")
    assert "--allow-cpu" in lines[0] and "--device cpu" in lines[0]
    assert not any(s in p.stderr for s in LOG_NOISE), p.stderr
    assert not (files / "run2").exists()


@needs_no_cuda
@pytest.mark.parametrize("command", list(COMMANDS))
def test_allow_cpu_warns_once_and_runs_on_the_cpu(files, command):
    p = rnnc(*COMMANDS[command], "--device", "cuda:1", "--allow-cpu", cwd=files)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: cuda:1 is not available"), p.stderr
    assert "running on the CPU" in lines[0]
    assert not any(s in p.stderr for s in LOG_NOISE if s != "Failed to load"), p.stderr
    if command == "train":
        assert (files / "run2" / "model.onnx").is_file()
    else:
        assert p.stdout.strip()


@needs_no_cuda
def test_auto_is_the_cpu_without_a_word(files):
    p = rnnc("run", "run", "x=x.npy", "--device", "auto", cwd=files)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert "probs" in p.stdout


def test_unknown_device_is_a_usage_error(files):
    p = rnnc("run", "run", "x=x.npy", "--device", "gpu", cwd=files)
    assert p.returncode == 2 and "unknown device 'gpu'" in p.stderr


@needs_no_cuda
def test_api_select_and_the_probe_is_cached():
    before = devices.current()
    try:
        with pytest.raises(devices.DeviceError, match="no usable CUDA device"):
            devices.select("cuda:0")
        said = []
        assert devices.select("cuda", allow_cpu=True, warn=said.append) == devices.CPU
        assert len(said) == 1 and "\n" not in said[0]
        assert devices.select("auto") == devices.CPU
        hits = devices.cuda_problem.cache_info().hits
        devices.cuda_problem(0)
        assert devices.cuda_problem.cache_info().hits == hits + 1
    finally:
        devices.use(before)


def test_sessions_are_made_in_one_place_on_the_selected_device(files):
    from rnnc.runtime import session

    sess = session(files / "run" / "infer.onnx")
    assert sess.get_providers() == ["CPUExecutionProvider"]


# ----- resident training state -----
class RecordingBinding:
    def __init__(self, real, log, index):
        self._b, self.log, self.index = real, log, index

    def __getattr__(self, name):
        fn = getattr(self._b, name)

        def call(*args):
            self.log.append((self.index, name) + args)
            return fn(*args)
        return call


class RecordingSession:
    """A session that records what the trainer binds, fetches and runs."""

    def __init__(self, real):
        self._s, self.log, self.bindings = real, [], []

    def __getattr__(self, name):
        return getattr(self._s, name)

    def io_binding(self):
        b = RecordingBinding(self._s.io_binding(), self.log, len(self.bindings))
        self.bindings.append(b)
        return b

    def run_with_iobinding(self, io, *rest):
        self.log.append((io.index, "RUN"))
        return self._s.run_with_iobinding(io._b, *rest)

    def run(self, *args, **kwargs):
        self.log.append((None, "PLAIN_RUN"))
        return self._s.run(*args, **kwargs)


def _trainer(root, spec, out, **kw):
    (root / f"{out}.rnn").write_text(spec)
    return Trainer(str(root / f"{out}.rnn"), str(root / "data.npz"), str(root / out), threads=1,
                   progress=False, **kw)


def test_parameters_and_slots_stay_bound_and_only_the_loss_comes_back(files, tmp_path):
    np.savez(tmp_path / "data.npz", **dict(np.load(files / "data.npz")))
    tr = _trainer(tmp_path, SPEC, "resident")
    tr.sess = RecordingSession(tr.sess)
    resident_names = list(tr.state.params) + list(tr.state.slots)
    losses = []
    for k in range(5):
        values = tr.run_step({"x": np.load(files / "data.npz")["x"][:8], "y": np.load(files / "data.npz")["y"][:8]},
                             0.01, {})
        losses.append(values["loss"])
        assert set(values) == {"loss", "grad_norm", "accuracy"}       # nothing else came back
    log = tr.sess.log
    assert not [e for e in log if e[1] == "PLAIN_RUN"]
    runs = [e[0] for e in log if e[1] == "RUN"]
    assert runs == [0, 1, 0, 1, 0]                                   # two bindings take turns
    # every parameter and slot: bound once per binding as an OrtValue, input and output
    for i in (0, 1):
        ins = {e[2]: e[3] for e in log if e[0] == i and e[1] == "bind_ortvalue_input"}
        outs = {e[2]: e[3] for e in log if e[0] == i and e[1] == "bind_ortvalue_output"}
        assert set(ins) == set(resident_names)
        assert set(outs) == {f"{n}.next" for n in resident_names}
        assert all(isinstance(v, ort.OrtValue) for v in list(ins.values()) + list(outs.values()))
    in0 = {e[2]: e[3] for e in log if e[0] == 0 and e[1] == "bind_ortvalue_input"}
    out1 = {e[2][:-5]: e[3] for e in log if e[0] == 1 and e[1] == "bind_ortvalue_output"}
    assert all(in0[n] is out1[n] for n in resident_names)               # ping-pong: B writes what A reads
    assert len([e for e in log if e[1] in ("bind_ortvalue_input", "bind_ortvalue_output")]) == 4 * len(resident_names)
    # per step: only the batch and the scalars are bound from the host, only loss and metrics fetched
    host_in = {e[2] for e in log if e[1] == "bind_cpu_input"}
    assert host_in == {"x", "y", "lr", "step", "seed"}
    fetched = [e for e in log if e[1] == "bind_output"]
    assert {e[2] for e in fetched} == {"loss", "grad_norm", "accuracy"} and all(e[3] == "cpu" for e in fetched)
    assert not [e for e in log if e[1] == "copy_outputs_to_cpu"]

    # the same numbers as the plain session.run path, exactly
    plain = _trainer(tmp_path, SPEC, "plain", resident=False)
    for k in range(5):
        values = plain.run_step({"x": np.load(files / "data.npz")["x"][:8], "y": np.load(files / "data.npz")["y"][:8]},
                                0.01, {})
        assert values["loss"] == losses[k]
    for n in tr.state.params:
        np.testing.assert_array_equal(tr.state.params[n], plain.state.params[n])
    for n in tr.state.slots:
        np.testing.assert_array_equal(tr.state.slots[n], plain.state.slots[n])


def test_whole_runs_equal_the_plain_path_with_tbptt_state_kept_bound(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 7, 2)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=np.cumsum(x[..., :1], axis=1).astype(np.float32))
    a = _trainer(tmp_path, TBPTT, "a")
    a.sess = RecordingSession(a.sess)
    ra = a.train()
    b = _trainer(tmp_path, TBPTT, "b", resident=False)
    rb = b.train()
    assert ra["loss"] == rb["loss"] and a.state.step == b.state.step == 4
    for n in b.state.params:
        np.testing.assert_array_equal(a.state.params[n], b.state.params[n])
    # the carried state goes back in as the OrtValue the previous window left on the device
    carried = [e for e in a.sess.log if e[1] == "bind_ortvalue_input" and e[2] == "state.rnn.h"]
    assert carried and all(isinstance(e[3], ort.OrtValue) for e in carried)
