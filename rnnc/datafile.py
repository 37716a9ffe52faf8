"""Reading and checking training/evaluation data files (.npz or .csv).

:func:`load_data` reads a file and checks it against what a model's spec
expects: ``expected`` maps each input name to ``(dtype, dims)`` where dtype is
one of ``'f32' 'f64' 'i64' 'i32' 'bool'`` and each dim is an int (fixed size)
or a symbolic name such as ``'batch'`` or ``'time'``. Every problem raises one
:class:`DataError` naming the file (and, for CSV, the line and column).

Checks: every needed input is present (the message lists what is missing,
what the file has, and close matches); the rank matches; fixed dims match;
a symbolic dim has the same size everywhere it is used (``'batch'``, when
used, must be axis 0, so all arrays share their number of examples); values
can be cast to the dtype (any number to a float type; a float to an integer
type only when every value is a whole number in range; to ``bool`` only 0/1);
float inputs contain no NaN or infinity. Arrays the spec does not need are
ignored.

.npz files
    One array per input, stored under the input's name (``np.savez``). Files
    are read with ``allow_pickle=False``: object arrays are refused.

.csv files
    UTF-8 text, comma separated (RFC 4180 quoting), one example (batch row)
    per line, with a header line of column names. A column is named

    * ``NAME``        -- the value of a ``[batch]`` input,
    * ``NAME[k]``     -- element ``k`` of a ``[batch, K]`` input (k = 0..K-1),
    * ``NAME[t][k]``  -- element ``(t, k)`` of a ``[batch, T, K]`` input,

    and so on: the brackets hold the 0-based index of the element within one
    example (all axes after the batch axis). ``"NAME[t,k]"`` means the same as
    ``NAME[t][k]``, but since it holds a comma it must be quoted in the header
    (CSV writers such as Python's ``csv`` module do that by themselves). The
    columns of one input must cover every index of the full grid exactly
    once, in any order. An input whose last axis has size 1 may leave that
    index out, so ``NAME[t]`` columns give a ``[batch, T, 1]`` input and a
    single ``NAME`` column a ``[batch, 1]`` input. Values are decimal numbers
    (``3``, ``-0.25``, ``1e-3``); ``bool`` inputs also accept
    ``true``/``false``. Spaces around names and values are ignored, blank
    lines are skipped, and no cell may be empty. Example for
    ``x: f32[batch, 2, 2]`` and ``y: i64[batch]``::

        x[0][0],x[0][1],x[1][0],x[1][1],y
        0.5,0.25,1,2,1
        -1.0,2.0,3,4,0

    and for ``s: f32[batch, 3, 1]``::

        s[0],s[1],s[2]
        0.1,0.2,0.3

    Line numbers in errors count from 1 (the header); columns count from 1.

:func:`split` makes a seeded train/validation split by example, and
:func:`batches` iterates over mini-batches.
"""

from __future__ import annotations

import csv
import difflib
import math
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from .npzfile import NpzError, read_npz

__all__ = ["DTYPES", "DataError", "batches", "load_data", "split"]

DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "i64": np.dtype(np.int64),
    "i32": np.dtype(np.int32),
    "bool": np.dtype(np.bool_),
}

Dim = int | str
Expected = dict[str, tuple[str, tuple[Dim, ...]]]


class DataError(Exception):
    """A data file does not fit the spec. ``str()`` is ``path[:line[:column]]: message``."""

    def __init__(
        self,
        path: str | os.PathLike,
        message: str,
        line: int | None = None,
        column: int | None = None,
    ):
        self.path = Path(path)
        self.message = message
        self.line = line
        self.column = column
        where = str(self.path)
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------- helpers


def _fmt_dims(dtype: str, dims: tuple[Dim, ...]) -> str:
    return f"{dtype}[{', '.join(str(d) for d in dims)}]"


def _check_expected(expected: Expected) -> dict[str, tuple[str, tuple[Dim, ...]]]:
    """Validate the caller's ``expected`` (a programming error raises ValueError)."""
    out = {}
    for name, spec in expected.items():
        try:
            dtype, dims = spec
        except (TypeError, ValueError):
            raise ValueError(f"expected[{name!r}] must be (dtype, dims), got {spec!r}") from None
        if dtype not in DTYPES:
            raise ValueError(f"expected[{name!r}]: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        dims = tuple(dims)
        for axis, d in enumerate(dims):
            if isinstance(d, bool) or not isinstance(d, (int, str, np.integer)):
                raise ValueError(f"expected[{name!r}]: dim {d!r} must be an int or a name")
            if isinstance(d, str) and not d:
                raise ValueError(f"expected[{name!r}]: empty dim name")
            if not isinstance(d, str) and d < 0:
                raise ValueError(f"expected[{name!r}]: negative dim {d}")
            if d == "batch" and axis != 0:
                raise ValueError(f"expected[{name!r}]: 'batch' must be axis 0, found at axis {axis}")
        out[name] = (dtype, tuple(d if isinstance(d, str) else int(d) for d in dims))
    return out


def _missing_message(missing: list[str], have: list[str], kind: str) -> str:
    parts = [f"missing input{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)}"]
    parts.append(f"the file has {kind} " + (", ".join(repr(h) for h in have) if have else "none"))
    hints = []
    for m in missing:
        close = difflib.get_close_matches(m, have, n=1, cutoff=0.6)
        if close:
            hints.append(f"{close[0]!r} for {m!r}")
    msg = "; ".join(parts)
    if hints:
        msg += "; did you mean " + ", ".join(hints) + "?"
    return msg


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _cast(path: Path, name: str, arr: np.ndarray, dtype: str) -> np.ndarray:
    """Cast ``arr`` to ``DTYPES[dtype]`` if that loses nothing; else DataError."""
    target = DTYPES[dtype]
    kind = arr.dtype.kind
    if kind not in "biuf":
        raise DataError(path, f"input {name!r} has dtype {arr.dtype}, which cannot be used as {dtype}")
    if kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            idx = _first_index(bad)
            raise DataError(
                path,
                f"input {name!r} contains {int(bad.sum())} NaN/infinite value(s), "
                f"first {arr[idx]} at index {idx}",
            )
    if target.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            out = arr.astype(target)
        if kind == "f" and not np.isfinite(out).all():
            idx = _first_index(~np.isfinite(out))
            raise DataError(path, f"input {name!r}: value {arr[idx]} at index {idx} is out of range for {dtype}")
        return out
    if target.kind == "b":
        if kind != "b":
            bad = (arr != 0) & (arr != 1)
            if bad.any():
                idx = _first_index(bad)
                raise DataError(
                    path, f"input {name!r} is bool but has value {arr[idx]} at index {idx} (only 0/1 allowed)"
                )
        return arr.astype(target)
    # integer target
    if kind == "f":
        bad = arr != np.floor(arr)
        if bad.any():
            idx = _first_index(bad)
            raise DataError(
                path,
                f"input {name!r} is {dtype} but has non-integer value {arr[idx]} at index {idx} "
                f"({int(bad.sum())} such value(s))",
            )
    if kind != "b" and arr.size:
        info = np.iinfo(target)
        lo, hi = arr.min(), arr.max()
        if (kind == "f" and (lo < info.min or hi > info.max)) or (
            kind in "iu" and (int(lo) < info.min or int(hi) > info.max)
        ):
            bad = (arr < info.min) | (arr > info.max)
            idx = _first_index(bad)
            raise DataError(path, f"input {name!r}: value {arr[idx]} at index {idx} is out of range for {dtype}")
    return arr.astype(target)


def _check_shapes(
    path: Path,
    arrays: dict[str, np.ndarray],
    expected: Expected,
    line: int | None = None,
) -> None:
    bound: dict[str, tuple[int, str, int]] = {}
    for name, (dtype, dims) in expected.items():
        shape = arrays[name].shape
        want = _fmt_dims(dtype, dims)
        if len(shape) != len(dims):
            raise DataError(
                path,
                f"input {name!r} should be {want} (rank {len(dims)}), but the file gives shape "
                f"{list(shape)} (rank {len(shape)})",
                line,
            )
        for axis, (d, size) in enumerate(zip(dims, shape)):
            if isinstance(d, int):
                if size != d:
                    raise DataError(
                        path, f"input {name!r} should be {want}, but axis {axis} has size {size}, not {d}", line
                    )
            elif d in bound:
                size0, name0, axis0 = bound[d]
                if size != size0:
                    raise DataError(
                        path,
                        f"dimension {d!r} is {size0} in {name0!r} (axis {axis0}) but {size} in "
                        f"{name!r} (axis {axis})",
                        line,
                    )
            else:
                bound[d] = (size, name, axis)
    if "batch" in bound and bound["batch"][0] == 0:
        raise DataError(path, "the file holds no examples ('batch' is 0)", line)


# --------------------------------------------------------------------------- npz


def _read_npz(path: Path, expected: Expected) -> dict[str, np.ndarray]:
    def needed(have: list[str]) -> list[str]:
        missing = [n for n in expected if n not in have]
        if missing:
            raise DataError(path, _missing_message(missing, have, "arrays"))
        return list(expected)

    try:
        return read_npz(path, needed)
    except NpzError as e:
        raise DataError(path, str(e)) from e


# --------------------------------------------------------------------------- csv

_COLUMN_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)((?:\s*\[\s*\d+(?:\s*,\s*\d+)*\s*\])*)$")
_INDEX_RE = re.compile(r"\d+")
_BOOL_WORDS = {"true": True, "false": False}


def _parse_cell(path: Path, text: str, dtype: str, line: int, col: int, colname: str):
    cell = text.strip()
    where = f"column {colname!r}"
    if not cell:
        raise DataError(path, f"empty value in {where}", line, col)
    if dtype == "bool" and cell.lower() in _BOOL_WORDS:
        return _BOOL_WORDS[cell.lower()]
    try:
        value: int | float = int(cell)
    except ValueError:
        try:
            value = float(cell)
        except ValueError:
            raise DataError(path, f"{cell!r} in {where} is not a number", line, col) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(path, f"{cell!r} in {where} is not a finite number", line, col)
    kind = DTYPES[dtype].kind
    if kind == "f":
        if abs(float(value)) > np.finfo(DTYPES[dtype]).max:
            raise DataError(path, f"{cell!r} in {where} is out of range for {dtype}", line, col)
        return float(value)
    if kind == "b":
        if value not in (0, 1):
            raise DataError(path, f"{cell!r} in {where} is not a bool (use 0/1 or true/false)", line, col)
        return bool(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise DataError(path, f"{cell!r} in {where} is not an integer, but {colname!r} is {dtype}", line, col)
        value = int(value)
    info = np.iinfo(DTYPES[dtype])
    if not info.min <= value <= info.max:
        raise DataError(path, f"{cell!r} in {where} is out of range for {dtype}", line, col)
    return value


def _read_csv(path: Path, expected: Expected) -> dict[str, np.ndarray]:
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise DataError(path, f"cannot read file: {e.strerror or e}") from e
    with f:
        reader = csv.reader(f, skipinitialspace=True)
        try:
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise DataError(path, "empty file: expected a header line of column names", 1)
            # name -> {index tuple: column number (0-based)}
            columns: dict[str, dict[tuple[int, ...], int]] = {}
            for c, raw in enumerate(header):
                label = raw.strip()
                m = _COLUMN_RE.match(label)
                if not m:
                    hint = ""
                    if label.count("[") != label.count("]"):
                        hint = (
                            "; a name with a comma inside must be quoted in CSV (\"x[0,1]\"), "
                            "or write it as x[0][1]"
                        )
                    raise DataError(
                        path,
                        f"bad column name {raw!r}: use NAME, NAME[k], NAME[t][k] or \"NAME[t,k]\" "
                        f"(0-based indices){hint}",
                        1,
                        c + 1,
                    )
                name = m.group(1)
                index = tuple(int(i) for i in _INDEX_RE.findall(m.group(2)))
                cols = columns.setdefault(name, {})
                if index in cols:
                    raise DataError(
                        path, f"duplicate column {label!r} (also column {cols[index] + 1})", 1, c + 1
                    )
                if cols and len(next(iter(cols))) != len(index):
                    first = next(iter(cols))
                    raise DataError(
                        path,
                        f"column {label!r} has {len(index)} index(es) but column "
                        f"{header[cols[first]].strip()!r} has {len(first)}",
                        1,
                        c + 1,
                    )
                cols[index] = c
            missing = [n for n in expected if n not in columns]
            if missing:
                raise DataError(path, _missing_message(missing, list(columns), "columns for"), 1)

            # Per needed input: grid shape and the column of each grid cell.
            layouts: dict[str, tuple[tuple[int, ...], list[int]]] = {}
            for name in expected:
                cols = columns[name]
                arity = len(next(iter(cols)))
                grid = tuple(max(ix[a] for ix in cols) + 1 for a in range(arity))
                order = []
                for ix in np.ndindex(*grid) if arity else [()]:
                    if ix not in cols:
                        label = name + "".join(f"[{i}]" for i in ix)
                        raise DataError(
                            path,
                            f"column {label!r} is missing: the columns of {name!r} must cover every index "
                            f"up to {''.join(f'[{g - 1}]' for g in grid)}",
                            1,
                        )
                    order.append(cols[ix])
                layouts[name] = (grid, order)

            values: dict[str, list[list]] = {name: [] for name in expected}
            lines: list[int] = []
            for row in reader:
                line = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DataError(
                        path, f"row has {len(row)} values but the header has {len(header)} columns", line
                    )
                lines.append(line)
                for name, (dtype, _) in expected.items():
                    values[name].append(
                        [_parse_cell(path, row[c], dtype, line, c + 1, header[c].strip()) for c in layouts[name][1]]
                    )
        except csv.Error as e:
            raise DataError(path, f"malformed CSV: {e}", reader.line_num) from e
        except UnicodeDecodeError as e:
            raise DataError(path, f"not UTF-8 text ({e.reason})") from e
    if not lines:
        raise DataError(path, "no data rows after the header line", 1)

    arrays: dict[str, np.ndarray] = {}
    for name, (dtype, dims) in expected.items():
        grid, _ = layouts[name]
        arr = np.array(values[name], dtype=DTYPES[dtype]).reshape((len(lines),) + grid)
        if len(dims) == arr.ndim + 1 and dims[-1] == 1:
            arr = arr[..., None]  # NAME[t] columns for a [batch, T, 1] input
        if arr.ndim != len(dims):
            letters = "k" if len(dims) == 2 else "tkijlmn"[: len(dims) - 1]
            example = name + "".join(f"[{c}]" for c in letters)
            raise DataError(
                path,
                f"input {name!r} should be {_fmt_dims(dtype, dims)} (rank {len(dims)}), but its columns "
                f"have {len(grid)} index(es), giving rank {len(grid) + 1}; name its columns like {example!r}",
                1,
            )
        arrays[name] = arr
    return arrays


# --------------------------------------------------------------------------- public API


def load_data(path: str | os.PathLike, expected: Expected, text=None) -> dict[str, np.ndarray]:
    """Read ``path`` (.npz, .csv, or .tsv) and return ``{name: array}`` for every input in ``expected``.

    ``expected[name] = (dtype, dims)``; arrays come back with exactly that dtype
    and rank. Raises :class:`DataError` on any mismatch (see the module doc).
    A .tsv file (parallel text, rnnc/textdata.py) needs ``text = (layout, vocabularies)``:
    which inputs its columns fill, from a model with vocabularies.
    """
    path = Path(path)
    expected = _check_expected(expected)
    if not path.exists():
        raise DataError(path, "no such data file")
    if not path.is_file():
        raise DataError(path, "not a regular file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = _read_npz(path, expected)
        _check_shapes(path, arrays, expected)
        return {name: _cast(path, name, arrays[name], dtype) for name, (dtype, _) in expected.items()}
    if suffix == ".csv":
        arrays = _read_csv(path, expected)
        _check_shapes(path, arrays, expected, line=1)
        return arrays
    if suffix == ".tsv":
        if not text or not text[0]:
            raise DataError(path, "a .tsv file holds text pairs; it needs a model with a seq2seq block and "
                                  "vocabularies (or use .npz or .csv)")
        from .textdata import read_tsv

        arrays = read_tsv(path, text[0], text[1], expected)
        _check_shapes(path, arrays, expected)
        return arrays
    raise DataError(path, f"unsupported data file type {path.suffix or '(none)'!r}: use .npz, .csv or .tsv")


def _num_rows(data: dict[str, np.ndarray]) -> int:
    if not data:
        raise ValueError("no arrays given")
    sizes = {name: np.shape(a)[0] if np.ndim(a) else None for name, a in data.items()}
    if any(s is None for s in sizes.values()) or len(set(sizes.values())) != 1:
        raise ValueError(f"all arrays need the same number of rows (axis 0), got {sizes}")
    return next(iter(sizes.values()))


def split(
    data: dict[str, np.ndarray], fraction: float, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Split rows (axis 0) at random into ``(train, val)``, ``fraction`` of them for validation.

    The choice depends only on ``seed`` and the number of rows; both parts keep
    the original row order, are disjoint, and are non-empty (needs >= 2 rows).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    n = _num_rows(data)
    if n < 2:
        raise ValueError(f"need at least 2 rows to split, got {n}")
    n_val = min(max(int(round(n * fraction)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = np.sort(perm[:n_val])
    train_idx = np.sort(perm[n_val:])
    train = {k: np.asarray(v)[train_idx] for k, v in data.items()}
    val = {k: np.asarray(v)[val_idx] for k, v in data.items()}
    return train, val


def batches(
    data: dict[str, np.ndarray],
    batch_size: int,
    rng: np.random.Generator | int | None,
    shuffle: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield dicts of mini-batches of ``batch_size`` rows; the last, partial batch is kept.

    With ``shuffle`` the row order is a permutation drawn from ``rng`` (a
    ``np.random.Generator`` or an int seed); without it rows come in order and
    ``rng`` may be None.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = _num_rows(data)
    if shuffle:
        if rng is None:
            raise ValueError("shuffle=True needs an rng (np.random.Generator or int seed)")
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        order = gen.permutation(n)
    else:
        order = np.arange(n)
    arrays = {k: np.asarray(v) for k, v in data.items()}
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield {k: v[idx] for k, v in arrays.items()}
