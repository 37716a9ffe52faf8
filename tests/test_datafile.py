import csv

import numpy as np
import pytest

from rnnc.datafile import DataError, batches, load_data, split

SEQ = {"x": ("f32", ("batch", "time", 2)), "y": ("i64", ("batch",))}


def _npz(tmp_path, name="d.npz", **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def _csv(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _err(path, expected):
    with pytest.raises(DataError) as e:
        load_data(path, expected)
    assert path.name in str(e.value)
    assert e.value.path == path
    return e.value


# --------------------------------------------------------------------------- npz


def test_npz_ok_and_casts(tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 3, 2))  # f64 -> f32
    y = np.array([0.0, 1.0, 2.0, 3.0, 4.0])  # integral floats -> i64
    p = _npz(tmp_path, x=x, y=y, extra=np.zeros(9))
    d = load_data(p, SEQ)
    assert set(d) == {"x", "y"}
    assert d["x"].dtype == np.float32 and d["x"].shape == (5, 3, 2)
    assert d["y"].dtype == np.int64 and d["y"].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(d["x"], x, rtol=1e-6)
    d = load_data(_npz(tmp_path, "b.npz", m=np.array([[0, 1], [1, 1]])), {"m": ("bool", ("batch", 2))})
    assert d["m"].dtype == np.bool_ and d["m"].tolist() == [[False, True], [True, True]]
    d = load_data(_npz(tmp_path, "i.npz", k=np.array([1, 2], np.int64)), {"k": ("i32", ("batch",))})
    assert d["k"].dtype == np.int32


def test_npz_missing_name_did_you_mean(tmp_path):
    p = _npz(tmp_path, inputs=np.zeros((2, 3, 2)), y=np.zeros(2))
    e = _err(p, {"input": ("f32", ("batch", "time", 2)), "y": ("i64", ("batch",)), "z": ("f32", ("batch",))})
    msg = str(e)
    assert "missing inputs 'input', 'z'" in msg
    assert "the file has arrays 'inputs', 'y'" in msg
    assert "did you mean 'inputs' for 'input'?" in msg


def test_npz_rank_and_dims(tmp_path):
    e = _err(_npz(tmp_path, x=np.zeros((4, 3)), y=np.zeros(4)), SEQ)
    assert "'x' should be f32[batch, time, 2] (rank 3)" in str(e) and "[4, 3] (rank 2)" in str(e)
    e = _err(_npz(tmp_path, x=np.zeros((4, 3, 5)), y=np.zeros(4)), SEQ)
    assert "axis 2 has size 5, not 2" in str(e)
    e = _err(_npz(tmp_path, x=np.zeros((4, 3, 2)), y=np.zeros(5)), SEQ)
    assert "dimension 'batch' is 4 in 'x' (axis 0) but 5 in 'y' (axis 0)" in str(e)
    spec = {"a": ("f32", ("batch", "time")), "b": ("f32", ("batch", "time"))}
    e = _err(_npz(tmp_path, a=np.zeros((2, 7)), b=np.zeros((2, 6))), spec)
    assert "dimension 'time' is 7 in 'a' (axis 1) but 6 in 'b' (axis 1)" in str(e)
    e = _err(_npz(tmp_path, x=np.zeros((0, 3, 2)), y=np.zeros(0)), SEQ)
    assert "no examples" in str(e)


def test_npz_values(tmp_path):
    x = np.zeros((2, 3, 2))
    x[1, 2, 0] = np.nan
    e = _err(_npz(tmp_path, x=x, y=np.zeros(2)), SEQ)
    assert "NaN/infinite" in str(e) and "(1, 2, 0)" in str(e)
    x[1, 2, 0] = np.inf
    assert "NaN/infinite" in str(_err(_npz(tmp_path, x=x, y=np.zeros(2)), SEQ))
    e = _err(_npz(tmp_path, x=np.zeros((2, 3, 2)), y=np.array([1.0, 2.5])), SEQ)
    assert "non-integer value 2.5 at index (1,)" in str(e)
    e = _err(_npz(tmp_path, x=np.full((2, 3, 2), 1e300), y=np.zeros(2)), SEQ)
    assert "out of range for f32" in str(e)
    e = _err(_npz(tmp_path, x=np.zeros((2, 3, 2)), y=np.array(["a", "b"])), SEQ)
    assert "dtype <U1" in str(e)
    e = _err(_npz(tmp_path, k=np.array([1, 2**40])), {"k": ("i32", ("batch",))})
    assert "out of range for i32" in str(e)
    e = _err(_npz(tmp_path, m=np.array([0, 2])), {"m": ("bool", ("batch",))})
    assert "only 0/1" in str(e)


def test_npz_pickle_and_corrupt(tmp_path):
    p = _npz(tmp_path, x=np.array([{"a": 1}, None], dtype=object))
    assert "pickled" in str(_err(p, {"x": ("f32", ("batch",))}))
    good = _npz(tmp_path, "good.npz", x=np.arange(50.0))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(good.read_bytes()[:60])
    assert "not a valid .npz" in str(_err(bad, {"x": ("f32", ("batch",))}))
    assert "no such data file" in str(_err(tmp_path / "none.npz", {"x": ("f32", ("batch",))}))
    txt = tmp_path / "d.json"
    txt.write_text("{}")
    assert "unsupported data file type '.json'" in str(_err(txt, {"x": ("f32", ("batch",))}))


def test_bad_expected_is_a_programming_error(tmp_path):
    p = _npz(tmp_path, x=np.zeros(2))
    with pytest.raises(ValueError):
        load_data(p, {"x": ("f16", ("batch",))})
    with pytest.raises(ValueError):
        load_data(p, {"x": ("f32", ("time", "batch"))})


# --------------------------------------------------------------------------- csv


def test_csv_formats(tmp_path):
    text = (
        'y, x[1][0], "x[0,0]", x[0] [1], "x[1,1]", s[0], s[1], s[2], lab, v[0], v[1], flag\n'
        "1, 3, 1, 2, 4, 0.5, 0.25, 1e-3, 7, 1, 2, true\n"
        "\n"
        "0, -3, -1, -2, -4.5, 1, 2, 3, 8, 3, 4, 0\n"
    )
    p = _csv(tmp_path, text)
    d = load_data(
        p,
        {
            "x": ("f32", ("batch", "time", 2)),
            "y": ("i64", ("batch",)),
            "s": ("f64", ("batch", "steps", 1)),  # NAME[t] columns -> [batch, T, 1]
            "lab": ("i32", ("batch", 1)),  # single column -> [batch, 1]
            "v": ("f32", ("batch", 2)),
            "flag": ("bool", ("batch",)),
        },
    )
    assert d["x"].dtype == np.float32 and d["x"].shape == (2, 2, 2)
    assert d["x"][0].tolist() == [[1, 2], [3, 4]]
    assert d["x"][1].tolist() == [[-1, -2], [-3, -4.5]]
    assert d["y"].tolist() == [1, 0] and d["y"].dtype == np.int64
    assert d["s"].shape == (2, 3, 1) and d["s"][0, :, 0].tolist() == [0.5, 0.25, 1e-3]
    assert d["lab"].shape == (2, 1) and d["lab"].dtype == np.int32 and d["lab"][:, 0].tolist() == [7, 8]
    assert d["v"].tolist() == [[1, 2], [3, 4]]
    assert d["flag"].tolist() == [True, False]


def test_csv_same_as_npz(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(2, 3, 2) / 4
    y = np.array([3, 4], dtype=np.int64)
    b = load_data(_npz(tmp_path, x=x, y=y), SEQ)
    for style in ("{t}][{k}", "{t},{k}"):  # x[t][k], or "x[t,k]" quoted by csv.writer
        p = tmp_path / "d.csv"
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["y"] + ["x[" + style.format(t=t, k=k) + "]" for t in range(3) for k in range(2)])
            for i in range(2):
                w.writerow([int(y[i])] + [float(v) for v in x[i].ravel()])
        a = load_data(p, SEQ)
        for k in SEQ:
            np.testing.assert_array_equal(a[k], b[k])
            assert a[k].dtype == b[k].dtype


@pytest.mark.parametrize(
    "text, where, needle",
    [
        ("x[0][0],x[0][1],y\n1,2,3\n1,oops,3\n", ":3:2:", "'oops' in column 'x[0][1]' is not a number"),
        ("x[0][0],x[0][1],y\n1,2,3\n1,2,3.5\n", ":3:3:", "'3.5' in column 'y' is not an integer"),
        ("x[0][0],x[0][1],y\n1,nan,3\n", ":2:2:", "'nan' in column 'x[0][1]' is not a finite number"),
        ("x[0][0],x[0][1],y\n1,inf,3\n", ":2:2:", "not a finite number"),
        ("x[0][0],x[0][1],y\n1,,3\n", ":2:2:", "empty value in column 'x[0][1]'"),
        ("x[0][0],x[0][1],y\n1,2,3\n1,2\n", ":3:", "row has 2 values but the header has 3 columns"),
        ("x[0][0],x[0 1],y\n", ":1:2:", "bad column name 'x[0 1]'"),
        ("x[0,0],x[0,1],y\n1,2,3,4,5\n", ":1:1:", "must be quoted in CSV"),
        ("x[0][0],x[0][1],x[0][0],y\n", ":1:3:", "duplicate column 'x[0][0]' (also column 1)"),
        ("x[0][0],x[1],y\n", ":1:2:", "column 'x[1]' has 1 index(es) but column 'x[0][0]' has 2"),
        ("x[0][0],x[1][1],x[0][1],y\n1,2,3,4\n", ":1:", "column 'x[1][0]' is missing"),
        ("x[0][0],x[0][1],z\n1,2,3\n", ":1:", "missing input 'y'; the file has columns for 'x', 'z'"),
        ("x[0][0],x[0][1],yy\n1,2,3\n", ":1:", "did you mean 'yy' for 'y'?"),
        ("x[0][0],x[0][1],y\n", ":1:", "no data rows"),
        ("", ":1:", "empty file"),
        ("x[0],x[1],y\n1,2,3\n", ":1:", "have 1 index(es), giving rank 2; name its columns like 'x[t][k]'"),
        ("x[0][0],x[0][1],x[0][2],y\n1,2,3,4\n", ":1:", "axis 2 has size 3, not 2"),
        ("x[0][0],x[0][1],y\n1,2,1e30\n", ":2:3:", "out of range for i64"),
        ('x[0][0],x[0][1],y\n1,"2,3\n', ":", "row has 2 values"),
    ],
)
def test_csv_errors(tmp_path, text, where, needle):
    p = _csv(tmp_path, text)
    e = _err(p, SEQ)
    msg = str(e)
    assert msg.startswith(str(p) + where), msg
    assert needle in msg, msg


def test_csv_error_line_col_attributes(tmp_path):
    p = _csv(tmp_path, "y,x[0][0],x[0][1]\n1,2,3\n\n2,3,bad\n")
    e = _err(p, SEQ)
    assert (e.line, e.column) == (4, 3)


def test_csv_symbolic_dims_across_inputs(tmp_path):
    spec = {"a": ("f32", ("batch", "time")), "b": ("f32", ("batch", "time"))}
    p = _csv(tmp_path, "a[0],a[1],a[2],b[0],b[1]\n1,2,3,4,5\n")
    e = _err(p, spec)
    assert "dimension 'time' is 3 in 'a' (axis 1) but 2 in 'b' (axis 1)" in str(e)
    assert e.line == 1


def test_csv_bool_and_non_utf8(tmp_path):
    spec = {"m": ("bool", ("batch",))}
    assert load_data(_csv(tmp_path, "m\nTrue\n0\n1.0\n"), spec)["m"].tolist() == [True, False, True]
    e = _err(_csv(tmp_path, "m\n2\n"), spec)
    assert (e.line, e.column) == (2, 1)
    p = tmp_path / "latin.csv"
    p.write_bytes("m\n1\n\xe9\n".encode("latin-1"))
    assert "not UTF-8" in str(_err(p, spec))


def test_file_never_modified(tmp_path):
    p = _csv(tmp_path, "x[0][0],x[0][1],y\n1,oops,3\n")
    before = p.read_bytes()
    _err(p, SEQ)
    assert p.read_bytes() == before


# --------------------------------------------------------------------------- split / batches


def _table(n=10):
    return {"x": np.arange(n * 2, dtype=np.float32).reshape(n, 2), "y": np.arange(n, dtype=np.int64)}


def test_split_disjoint_and_seeded():
    data = _table(10)
    train, val = split(data, 0.2, seed=3)
    assert len(val["y"]) == 2 and len(train["y"]) == 8
    assert not set(train["y"]) & set(val["y"])
    assert sorted(train["y"].tolist() + val["y"].tolist()) == list(range(10))
    np.testing.assert_array_equal(train["x"][:, 0], train["y"] * 2)  # rows stay aligned
    t2, v2 = split(data, 0.2, seed=3)
    assert v2["y"].tolist() == val["y"].tolist()
    others = {tuple(split(data, 0.2, seed=s)[1]["y"].tolist()) for s in range(10)}
    assert len(others) > 1
    _, v = split(_table(3), 0.01, seed=0)
    assert len(v["y"]) == 1
    with pytest.raises(ValueError):
        split(data, 1.0, 0)
    with pytest.raises(ValueError):
        split({"a": np.zeros(3), "b": np.zeros(4)}, 0.5, 0)


def test_batches():
    data = _table(10)
    got = list(batches(data, 4, np.random.default_rng(0)))
    assert [len(b["y"]) for b in got] == [4, 4, 2]
    ys = np.concatenate([b["y"] for b in got])
    assert sorted(ys.tolist()) == list(range(10)) and ys.tolist() != list(range(10))
    for b in got:
        np.testing.assert_array_equal(b["x"][:, 0], b["y"] * 2)
    again = np.concatenate([b["y"] for b in batches(data, 4, np.random.default_rng(0))])
    assert again.tolist() == ys.tolist()
    seeded = np.concatenate([b["y"] for b in batches(data, 4, 0)])
    assert seeded.tolist() == ys.tolist()
    ordered = [b["y"].tolist() for b in batches(data, 3, None, shuffle=False)]
    assert ordered == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    with pytest.raises(ValueError):
        next(batches(data, 0, None))
    with pytest.raises(ValueError):
        next(batches(data, 2, None))
