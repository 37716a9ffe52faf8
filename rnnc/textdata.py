"""Parallel text as .tsv, and batches bucketed by length.

A .tsv data file holds one pair per line: the source text, a tab, the target text (UTF-8;
blank lines skipped; a third column or more is an error). `layout` (from the model:
rnnc/seq2seq/meta.py `text`) says which inputs the columns fill:

    column 1  -> the source ids input (e.g. `src`) and its lengths input (`src_len`)
    column 2  -> the target ids input (`tgt`), `<eos>` appended, and its lengths (`tgt_len`,
                 counting the `<eos>`)

Text is split into symbols as its vocabulary says (characters or words); a symbol the
vocabulary lacks becomes `<unk>`. Id arrays are padded with `<pad>` (0) to the longest line.

`bucketed_batches` cuts padding: rows are shuffled, then taken in chunks of 50 batches, each
chunk sorted by source length and cut into batches, and the batches shuffled; every batch is
trimmed to its own longest sequence.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from .datafile import DTYPES, DataError
from .vocab import Vocab

BUCKET_CHUNK = 50      # batches per sorted chunk


def read_tsv(path: str | os.PathLike, layout: list[dict], vocabs: dict[str, Vocab],
             expected: dict[str, tuple[str, tuple]]) -> dict[str, np.ndarray]:
    path = Path(path)
    provided = {c["input"] for c in layout} | {c["lengths"] for c in layout if c.get("lengths")}
    missing = [n for n in expected if n not in provided]
    if missing:
        cols = ", ".join(f"column {i + 1} -> {c['input']}" + (f" (+ {c['lengths']})" if c.get("lengths") else "")
                         for i, c in enumerate(layout))
        raise DataError(path, f"a .tsv file gives {cols}; the model also needs {', '.join(map(repr, missing))}: "
                              "use an .npz file with every input")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise DataError(path, f"cannot read file: {e.strerror or e}") from None
    columns: list[list[list[int]]] = [[] for _ in layout]
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != len(layout):
            raise DataError(path, f"expected {len(layout)} tab-separated columns (source, target), found "
                                  f"{len(parts)}", number)
        for col, spec, part in zip(columns, layout, parts):
            col.append(vocabs[spec["vocab"]].encode(part, eos=bool(spec.get("eos"))))
    if not columns[0]:
        raise DataError(path, "no pairs in the file")
    out: dict[str, np.ndarray] = {}
    for col, spec in zip(columns, layout):
        lengths = np.array([len(ids) for ids in col], np.int64)
        ids = np.zeros((len(col), max(1, int(lengths.max()))), np.int64)
        for i, row in enumerate(col):
            ids[i, :len(row)] = row
        for name, arr in ((spec["input"], ids), (spec.get("lengths"), lengths)):
            if name and name in expected:
                dtype, dims = expected[name]
                if len(dims) != arr.ndim:
                    raise DataError(path, f"input '{name}' is {dtype}[{', '.join(map(str, dims))}], "
                                          f"but a text column gives rank {arr.ndim}")
                for axis, d in enumerate(dims):
                    if isinstance(d, int) and axis > 0 and arr.shape[axis] > d:
                        raise DataError(path, f"input '{name}' has {d} steps, a line needs {arr.shape[axis]}")
                    if isinstance(d, int) and axis > 0:
                        arr = np.pad(arr, [(0, 0)] * axis + [(0, d - arr.shape[axis])])
                out[name] = arr.astype(DTYPES[dtype])
    return out


def length_pairs(layout: list[dict] | None) -> list[tuple[str, str]]:
    """(ids input, lengths input) of each column that has both."""
    return [(c["input"], c["lengths"]) for c in layout or () if c.get("lengths")]


def bucketed_batches(data: dict[str, np.ndarray], batch_size: int, rng: np.random.Generator,
                     pairs: list[tuple[str, str]], fixed: set[str] = frozenset()) -> Iterator[dict[str, np.ndarray]]:
    """Batches of similar source length (the first pair's lengths), each trimmed to its own
    longest sequence (inputs in `fixed` keep their width)."""
    n = len(next(iter(data.values())))
    order = rng.permutation(n)
    key = data[pairs[0][1]] if pairs else None
    chunk = batch_size * BUCKET_CHUNK
    groups = []
    for start in range(0, n, chunk):
        idx = order[start:start + chunk]
        if key is not None:
            idx = idx[np.argsort(key[idx], kind="stable")]
        groups += [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    for g in rng.permutation(len(groups)):
        idx = groups[g]
        batch = {k: v[idx] for k, v in data.items()}
        for seq, n_name in pairs:
            if seq in batch and n_name in batch and seq not in fixed:
                width = max(1, int(batch[n_name].max()))
                batch[seq] = batch[seq][:, :width]
        yield batch
