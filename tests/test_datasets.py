import numpy as np
import pytest

from rnnc import datasets as ds


def _same(a, b):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype
        np.testing.assert_array_equal(a[k], b[k])


# --------------------------------------------------------------------------- sine


def test_sine_shapes_and_values():
    train, test = ds.sine()
    assert train["x"].shape == (1000, 20, 1) and train["y"].shape == (1000, 20, 1)
    assert test["x"].shape == (200, 20, 1) and test["y"].shape == (200, 20, 1)
    for split in (train, test):
        assert split["x"].dtype == np.float32 and split["y"].dtype == np.float32
        assert np.isfinite(split["x"]).all()
        # y is x shifted one step into the future
        np.testing.assert_array_equal(split["y"][:, :-1], split["x"][:, 1:])


def _recover_starts(x, lo, hi):
    """Find each window's start t0 by matching the whole window to the series (coarse, then fine)."""
    steps = 0.1 * np.arange(x.shape[1])
    starts = []
    for w in x[:, :, 0].astype(np.float64):
        best = (lo + hi) / 2
        for width in ((hi - lo) / 2, 0.01, 1e-4):
            grid = np.linspace(best - width, best + width, 4001 if width > 1 else 401)
            err = ((ds.sine_series(grid[:, None] + steps[None, :]) - w[None, :]) ** 2).sum(axis=1)
            best = grid[np.argmin(err)]
        starts.append(best)
    return np.array(starts)


def test_sine_follows_formula_and_time_ranges():
    train, test = ds.sine()
    for split, (lo, hi) in ((train, (0.0, 30.0)), (test, (30.0, 40.0))):
        x = split["x"][:50]
        t0 = _recover_starts(x, lo - 1, hi + 1)
        t = t0[:, None] + 0.1 * np.arange(20)
        np.testing.assert_allclose(x[:, :, 0], ds.sine_series(t), atol=1e-4)
        assert (t0 >= lo - 1e-3).all() and (t0 + 2.1 <= hi + 1e-3).all()
    # Test windows come from a t-range not trained on: the sets of values differ.
    assert not np.isin(test["x"][:, 0, 0], train["x"][:, :, 0]).any()


def test_sine_deterministic():
    a, b = ds.sine(seed=0)
    c, d = ds.sine(seed=0)
    _same(a, c)
    _same(b, d)
    e, _ = ds.sine(seed=1)
    assert not np.array_equal(a["x"], e["x"])


# --------------------------------------------------------------------------- digits


def test_digits_vendored_file():
    with np.load(ds._DATA_DIR / "digits.npz", allow_pickle=False) as npz:
        images, labels = npz["images"], npz["labels"]
    assert images.dtype == np.uint8 and images.shape == (1797, 8, 8)
    assert labels.dtype == np.uint8 and labels.shape == (1797,)
    assert images.max() == 16 and images.min() == 0
    # Checksums of load_digits() at the time of vendoring.
    assert int(images.astype(np.int64).sum()) == 561718
    assert int(labels.astype(np.int64).sum()) == 8070
    assert list(labels[:10]) == list(range(10))
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert (ds._DATA_DIR / "DIGITS_LICENSE.txt").read_text().count("BSD") >= 1


def test_digits_split():
    train, test = ds.digits()
    assert train["x"].shape == (1438, 8, 8) and test["x"].shape == (359, 8, 8)
    assert train["x"].dtype == np.float32 and train["y"].dtype == np.int64
    for s in (train, test):
        assert s["x"].min() == 0.0 and s["x"].max() == 1.0
        assert set(np.unique(s["y"])) == set(range(10))
        assert np.all((s["x"] * 16) == np.round(s["x"] * 16))
    # Disjoint, and together exactly the 1797 images (as a multiset of (image, label)).
    with np.load(ds._DATA_DIR / "digits.npz", allow_pickle=False) as npz:
        images, labels = npz["images"], npz["labels"]

    def keys(x, y):
        return sorted(np.round(xi * 16).astype(np.uint8).tobytes() + bytes([yi]) for xi, yi in zip(x, y))

    all_keys = keys(images / 16.0, labels)
    assert sorted(keys(train["x"], train["y"]) + keys(test["x"], test["y"])) == all_keys
    # Disjoint by index: every image of the original appears in exactly one split.
    # (A few images are duplicated in the data set, so compare counts, not sets.)
    assert len(all_keys) == len(train["y"]) + len(test["y"])


def test_digits_deterministic():
    a, b = ds.digits(0)
    c, d = ds.digits(0)
    _same(a, c)
    _same(b, d)
    _, e = ds.digits(1)
    assert not np.array_equal(b["x"], e["x"])


# --------------------------------------------------------------------------- reber


def test_reber_automaton():
    rng = np.random.default_rng(0)
    for _ in range(200):
        s = ds.reber_string(rng)
        assert ds.is_reber(s)
        e = ds.embedded_reber_string(rng)
        assert ds.is_embedded_reber(e)
        assert e[1] == e[-2] and e[1] in "TP"
    assert ds.is_reber("BTXSE") and ds.is_reber("BPVVE") and ds.is_reber("BTSSXXTVVE")
    assert ds.is_reber("BPTTVPXVVE")
    for bad in ("", "BTE", "BTXSEE", "BTSSXXTVE", "TXSE", "BPVPE"):
        assert not ds.is_reber(bad)
    assert ds.is_embedded_reber("BTBTXSETE") and ds.is_embedded_reber("BPBPVVEPE")
    assert not ds.is_embedded_reber("BTBTXSEPE")
    assert not ds.is_embedded_reber("BTBTXXEPE")


def test_reber_dataset():
    train, test = ds.reber()
    assert train["x"].shape == (2000, ds.REBER_MAX_LEN, 7) and test["x"].shape == (500, ds.REBER_MAX_LEN, 7)
    for s in (train, test):
        assert s["x"].dtype == np.float32 and s["n"].dtype == np.int64 and s["y"].dtype == np.int64
        assert s["y"].sum() * 2 == len(s["y"])  # exactly half valid
        x, n = s["x"], s["n"]
        # one-hot up to the length, zeros after
        steps = np.arange(x.shape[1])[None, :]
        assert np.all(x.sum(-1) == (steps < n[:, None]))
        assert set(np.unique(x)) <= {0.0, 1.0}
        strings = ds.decode_reber(x, n)
        for string, label in zip(strings, s["y"]):
            assert ds.is_embedded_reber(string) == bool(label), string
            if not label:
                # corrupted exactly at the second-to-last symbol
                fixed = string[:-2] + {"T": "P", "P": "T"}[string[-2]] + string[-1]
                assert ds.is_embedded_reber(fixed)
        assert np.all(x[:, 0, ds.REBER_ALPHABET.index("B")] == 1)
    train_set = set(ds.decode_reber(train["x"], train["n"]))
    test_set = set(ds.decode_reber(test["x"], test["n"]))
    assert not train_set & test_set
    assert len(test_set) > 50  # a real variety of unseen strings


def test_reber_deterministic():
    a, b = ds.reber(0)
    c, d = ds.reber(0)
    _same(a, c)
    _same(b, d)
    e, _ = ds.reber(1)
    assert not np.array_equal(a["y"], e["y"])


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize("name", [n for n in ds.NAMES if ds.REGISTRY[n].suffix == ".npz"])   # .tsv: test_seq2seq_data
def test_write(tmp_path, name):
    paths = ds.write(name, tmp_path / "out")
    assert [p.name for p in paths] == [f"{name}_train.npz", f"{name}_test.npz"]
    train, test = ds.REGISTRY[name].make(0)
    for p, split in zip(paths, (train, test)):
        with np.load(p, allow_pickle=False) as npz:
            _same(dict(npz), split)
    assert sorted(q.name for q in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)


def test_write_is_atomic(tmp_path, monkeypatch):
    old = tmp_path / "sine_train.npz"
    old.write_bytes(b"old contents")

    def boom(f, **arrays):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ds.np, "savez_compressed", boom)
    with pytest.raises(KeyboardInterrupt):
        ds.write("sine", tmp_path)
    assert old.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["sine_train.npz"]


def test_names_and_unknown():
    assert ds.NAMES == ("sine", "digits", "reber", "dates", "sort")
    with pytest.raises(ValueError, match="unknown data set 'wikitext'"):
        ds.write("wikitext", "/nonexistent-never-created")
