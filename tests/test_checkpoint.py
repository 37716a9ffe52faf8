import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rnnc import checkpoint as ck
from rnnc.checkpoint import CheckpointError


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "W": rng.standard_normal((4, 3)).astype(np.float32),
        "b": np.arange(3, dtype=np.float64),
        "opt.m/W": np.zeros((4, 3), np.float32),
        "count": np.array(7, dtype=np.int64),
    }


def _meta(step=5):
    rng = np.random.default_rng(1)
    return {
        "step": step,
        "epoch": 2,
        "rng": rng.bit_generator.state,  # nested dict with 128-bit ints
        "spec_sha256": "ab" * 32,
        "config": {"lr": 0.01, "batch": np.int64(32), "loss": np.float32(0.5)},
    }


def test_roundtrip(tmp_path):
    p = ck.save(tmp_path / "step-000000005.npz", _arrays(), _meta())
    arrays, meta = ck.load(p)
    assert set(arrays) == set(_arrays())
    for k, v in _arrays().items():
        assert arrays[k].dtype == v.dtype and arrays[k].shape == v.shape
        np.testing.assert_array_equal(arrays[k], v)
    assert meta["step"] == 5 and meta["epoch"] == 2
    assert meta["config"] == {"lr": 0.01, "batch": 32, "loss": 0.5}
    # The RNG state survives exactly (128-bit ints through JSON) and restores the stream.
    g = np.random.default_rng()
    g.bit_generator.state = meta["rng"]
    assert g.integers(1 << 60) == np.random.default_rng(1).integers(1 << 60)
    # Stored without pickle: the meta entry is a unicode array readable with allow_pickle=False.
    with np.load(p, allow_pickle=False) as npz:
        assert npz[ck.META_KEY].dtype.kind == "U"
        assert json.loads(str(npz[ck.META_KEY]))["version"] == ck.FORMAT_VERSION


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError):
        ck.save(tmp_path / "a.npz", {"x": np.array([object()])}, {})
    with pytest.raises(ValueError):
        ck.save(tmp_path / "a.npz", {"__meta__": np.zeros(1)}, {})
    with pytest.raises(TypeError):
        ck.save(tmp_path / "a.npz", {"x": np.zeros(1)}, {"f": object()})
    assert list(tmp_path.iterdir()) == []  # nothing written, no temp files left


def test_interrupted_write_keeps_previous(tmp_path, monkeypatch):
    final = ck.checkpoint_path(tmp_path, 10)
    ck.save(final, _arrays(0), _meta(10))
    before = final.read_bytes()

    def broken_writer(f, arrays):
        f.write(b"PK\x03\x04 partial data")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(ck, "_write_npz", broken_writer)
    with pytest.raises(RuntimeError, match="killed"):
        ck.save(final, _arrays(1), _meta(11))  # overwrite the same name
    with pytest.raises(RuntimeError):
        ck.save(ck.checkpoint_path(tmp_path, 20), _arrays(1), _meta(20))
    assert final.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]
    assert ck.latest(tmp_path) == final
    arrays, meta = ck.load(final)
    assert meta["step"] == 10
    np.testing.assert_array_equal(arrays["W"], _arrays(0)["W"])


def test_process_killed_mid_write_leaves_only_temp_file(tmp_path):
    """A real hard kill (os._exit) leaves a temp file that is never taken for a checkpoint."""
    prev = ck.save(ck.checkpoint_path(tmp_path, 3), _arrays(0), _meta(3))
    before = prev.read_bytes()
    code = textwrap.dedent(
        f"""
        import os, numpy as np
        from rnnc import checkpoint as ck
        def dying(f, arrays):
            f.write(b"PK\\x03\\x04" + b"x" * 1000)
            f.flush()
            os._exit(9)
        ck._write_npz = dying
        ck.save(ck.checkpoint_path({str(tmp_path)!r}, 4), {{"a": np.zeros(3)}}, {{"step": 4}})
        """
    )
    repo = str(Path(ck.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], env=env)
    assert r.returncode == 9
    names = sorted(p.name for p in tmp_path.iterdir())
    assert prev.name in names and "step-000000004.npz" not in names
    assert len(names) == 2 and any(n.endswith(".partial") for n in names)
    assert ck.latest(tmp_path) == prev
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [3]
    assert prev.read_bytes() == before
    ck.prune(tmp_path, keep=1)
    assert ck.latest(tmp_path) == prev


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint") as e:
        ck.load(tmp_path / "nope.npz")
    assert e.value.path == tmp_path / "nope.npz"
    assert "nope.npz" in str(e.value)


@pytest.mark.parametrize("cut", [0, 10, 200, -30])
def test_truncated_file(tmp_path, cut):
    good = ck.save(tmp_path / "good.npz", _arrays(), _meta())
    data = good.read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(data[:cut])
    with pytest.raises(CheckpointError) as e:
        ck.load(bad)
    assert "bad.npz" in str(e.value)


def test_corrupt_array_bytes(tmp_path):
    good = ck.save(tmp_path / "good.npz", {"W": np.arange(1000, dtype=np.float32)}, _meta())
    data = bytearray(good.read_bytes())
    # Flip bytes inside W's stored data (uncompressed npz: find the array payload).
    payload = np.arange(1000, dtype=np.float32).tobytes()
    at = bytes(data).find(payload[400:432])
    assert at > 0
    data[at : at + 8] = b"\xff" * 8
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="bad.npz"):
        ck.load(bad)


def test_not_a_zip(tmp_path):
    p = tmp_path / "step-000000001.npz"
    p.write_text("hello")
    with pytest.raises(CheckpointError, match="not a valid .npz"):
        ck.load(p)


def test_missing_meta(tmp_path):
    p = tmp_path / "plain.npz"
    np.savez(p, W=np.zeros(3))
    with pytest.raises(CheckpointError, match="missing the '__meta__'"):
        ck.load(p)


def test_pickled_data_refused(tmp_path):
    p = tmp_path / "pickled.npz"
    np.savez(p, W=np.array([{"a": 1}], dtype=object), __meta__=np.array("{}"))
    with pytest.raises(CheckpointError, match="pickle"):
        ck.load(p)


def _write_raw(p, meta_text):
    np.savez(p, W=np.zeros(2), __meta__=np.array(meta_text))


def test_wrong_version_and_bad_meta(tmp_path):
    p = tmp_path / "v99.npz"
    _write_raw(p, json.dumps({"format": "rnnc-checkpoint", "version": 99, "meta": {}}))
    with pytest.raises(CheckpointError, match="version 99 is not supported"):
        ck.load(p)
    _write_raw(p, "{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ck.load(p)
    _write_raw(p, json.dumps({"format": "something-else", "version": 1, "meta": {}}))
    with pytest.raises(CheckpointError, match="not an rnnc checkpoint"):
        ck.load(p)


def test_latest_and_prune(tmp_path):
    assert ck.latest(tmp_path / "missing") is None
    assert ck.latest(tmp_path) is None
    for step in (1, 20, 3, 100, 7):
        ck.save(ck.checkpoint_path(tmp_path, step), {"a": np.full(1, step)}, {"step": step})
    # Things that must be ignored:
    (tmp_path / ".tmp-step-000000999.npz.abc.partial").write_bytes(b"junk")
    (tmp_path / "step-12.npz").write_bytes(b"junk")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "step-000000500.npz").mkdir()
    assert ck.latest(tmp_path) == tmp_path / "step-000000100.npz"
    removed = ck.prune(tmp_path, keep=3)
    assert sorted(p.name for p in removed) == ["step-000000001.npz", "step-000000003.npz"]
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [7, 20, 100]
    assert (tmp_path / "notes.txt").exists() and (tmp_path / ".tmp-step-000000999.npz.abc.partial").exists()
    assert ck.load(ck.latest(tmp_path))[1]["step"] == 100
    with pytest.raises(ValueError):
        ck.prune(tmp_path, keep=0)
    assert ck.checkpoint_path("d", 123).name == "step-000000123.npz"


def test_atomic_write_mode_follows_umask(tmp_path):
    p = ck.atomic_write(tmp_path / "f.bin", lambda f: f.write(b"abc"))
    assert p.read_bytes() == b"abc"
    assert p.stat().st_mode & 0o777 == ck._FILE_MODE
