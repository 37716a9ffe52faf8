"""Placement (`cell on DEVICE`): segments in order, each a valid model; placed runs and
placed training give the unplaced numbers; pipelined segments work at the same time."""
import json

import numpy as np
import onnx
import pytest

from rnnc import runtime
from rnnc.api import compile
from rnnc.train import Trainer

PLACED = """model placed
input x: f32[batch, time, 5]
input n: i64[batch]
input y: f32[batch, time, 1]
cell deep = stack(lstm(6) on cpu, gru(4) on cpu, basic(3) on cpu) | project(1)
pred, _ = deep(x, lengths=n)
loss = mse(pred, y, lengths=n)
output pred
train { optimizer adam(lr=0.01)  batch 4  steps 6 }
"""
UNPLACED = PLACED.replace(" on cpu", "")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("placed")
    (root / "p.rnn").write_text(PLACED)
    (root / "u.rnn").write_text(UNPLACED)
    compile(root / "p.rnn", out=root / "p")
    compile(root / "u.rnn", out=root / "u")
    return root


def _feeds(batch=6, steps=7, seed=0):
    rng = np.random.default_rng(seed)
    n = rng.integers(0, steps + 1, size=batch)
    n[0] = steps
    return {"x": rng.normal(size=(batch, steps, 5)).astype(np.float32), "n": n,
            "y": rng.normal(size=(batch, steps, 1)).astype(np.float32)}


def test_manifest_lists_the_segments_in_order_and_each_is_a_valid_model(compiled):
    manifest = json.loads((compiled / "p" / "manifest.json").read_text())
    infer = manifest["infer"]["segments"]
    assert [s["device"] for s in infer] == ["run", "cpu", "cpu", "cpu", "run"]
    assert [s["placement"] for s in infer if s["device"] == "cpu"] == ["1:cpu", "2:cpu", "3:cpu"]
    produced = set(manifest["infer"]["inputs"])
    for seg in infer + manifest["train"]["segments"]:
        model = onnx.load(compiled / "p" / seg["file"])
        onnx.checker.check_model(model, full_check=True)
        assert [i.name for i in model.graph.input] == seg["inputs"]
    for seg in infer:                    # each reads only what is given or made before it
        assert set(seg["inputs"]) <= produced
        produced |= set(seg["outputs"])
    # training: forward segments in order, then the backward ones in reverse, on the same devices
    placements = [s["placement"] for s in manifest["train"]["segments"] if s["placement"]]
    assert placements[:6] == ["1:cpu", "2:cpu", "3:cpu", "3:cpu", "2:cpu", "1:cpu"]
    # infer.onnx stays the whole, unplaced model
    assert not (compiled / "u" / "manifest.json").exists()


def test_placed_run_equals_the_unplaced_model(compiled):
    feeds = _feeds()
    whole = runtime.run(compiled / "u", feeds)["pred"]
    np.testing.assert_array_equal(runtime.run(compiled / "p" / "infer.onnx", feeds)["pred"], whole)
    np.testing.assert_allclose(runtime.run(compiled / "p", feeds)["pred"], whole, atol=1e-6)
    np.testing.assert_allclose(runtime.run(compiled / "p", feeds, pipeline=3)["pred"], whole, atol=1e-6)


def test_placed_training_gives_the_unplaced_losses_and_weights(compiled, tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, **_feeds(batch=8, steps=6, seed=1))
    runs = {}
    for name in ("p", "u"):
        t = Trainer(str(compiled / f"{name}.rnn"), str(data), str(tmp_path / f"run-{name}"), threads=1,
                    progress=False)
        assert (t.placed is not None) == (name == "p")
        t.train()
        losses = [json.loads(line)["loss"] for line in (tmp_path / f"run-{name}" / "metrics.jsonl").open()
                  if "loss" in line]
        runs[name] = (losses, {k: np.array(v) for k, v in t.state.params.items()})
    np.testing.assert_allclose(runs["p"][0], runs["u"][0], rtol=1e-5)
    assert len(runs["p"][0]) == 6
    for k, v in runs["u"][1].items():
        np.testing.assert_allclose(runs["p"][1][k], v, atol=1e-5, err_msg=k)


def test_pipelined_segments_work_at_the_same_time(tmp_path):
    spec = tmp_path / "two.rnn"
    spec.write_text("model two\ninput x: f32[batch, 40, 32]\n"
                    "cell deep = stack(lstm(96) on cpu, lstm(96) on cpu)\nseq, _ = deep(x)\noutput seq\n")
    compile(spec, out=tmp_path / "two")
    from rnnc.placement import PlacedModel

    placed = PlacedModel(tmp_path / "two", threads=1)
    # micro-batches big enough (ms each) that the GIL-held binding work does not dominate;
    # thread scheduling is the OS's, so a busy machine gets up to three tries
    x = np.random.default_rng(0).normal(size=(512, 40, 32)).astype(np.float32)
    for _ in range(3):
        trace: list = []
        out = placed.run_pipelined({"x": x}, 4, trace)
        spans = {}
        for k, j, a, b in trace:
            if placed.segments[k]["device"] == "cpu":
                spans.setdefault(k, []).append((a, b))
        first, second = sorted(spans)[:2]
        if any(a1 < b2 and a2 < b1 for a1, b1 in spans[first] for a2, b2 in spans[second]):
            break
    else:
        raise AssertionError("the two placed segments never ran at the same time")
    np.testing.assert_allclose(out["seq"], placed.run({"x": x})["seq"], atol=1e-6)


def test_a_cuda_segment_without_a_gpu_is_one_clear_error(tmp_path):
    from rnnc.devices import DeviceError, cuda_problem
    from rnnc.placement import PlacedModel

    if cuda_problem(0) is None:
        pytest.skip("this machine has a usable GPU")
    spec = tmp_path / "g.rnn"
    spec.write_text("model g\ninput x: f32[batch, 3, 2]\ncell rnn = gru(3) on cuda:0\nseq, _ = rnn(x)\noutput seq\n")
    compile(spec, out=tmp_path / "g")           # compiling never needs the device
    with pytest.raises(DeviceError, match="cuda:0"):
        PlacedModel(tmp_path / "g")
    placed = PlacedModel(tmp_path / "g", allow_cpu=True)
    x = np.ones((2, 3, 2), np.float32)
    np.testing.assert_allclose(placed.run({"x": x})["seq"], runtime.run(tmp_path / "g" / "infer.onnx", {"x": x})["seq"],
                               atol=1e-6)


def test_a_placed_run_folder_holds_trained_segments(compiled, tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, **_feeds(batch=8, steps=6, seed=2))
    run = tmp_path / "run"
    Trainer(str(compiled / "p.rnn"), str(data), str(run), threads=1, progress=False).train()
    manifest = json.loads((run / "manifest.json").read_text())
    assert [s["device"] for s in manifest["infer"]["segments"]] == ["run", "cpu", "cpu", "cpu", "run"]
    feeds = _feeds(seed=3)
    np.testing.assert_allclose(runtime.run(run, feeds)["pred"], runtime.run(run / "model.onnx", feeds)["pred"],
                               atol=1e-6)
    # the trained weights, not the initial ones
    assert not np.allclose(runtime.run(run, feeds)["pred"], runtime.run(compiled / "p", feeds)["pred"])
