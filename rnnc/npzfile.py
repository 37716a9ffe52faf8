"""Reading .npz files safely: nothing is ever unpickled, every failure is one reason.

Data files, checkpoints and weights files all read .npz through `read_npz`; each caller
turns an `NpzError` into its own error type (DataError, CheckpointError, WeightsError).
"""
from __future__ import annotations

import os
import zipfile
import zlib
from typing import Callable

import numpy as np


class NpzError(Exception):
    """Why an .npz file cannot be read (the caller adds the path)."""


def read_npz(path: str | os.PathLike, names: Callable[[list[str]], list[str]] | None = None
             ) -> dict[str, np.ndarray]:
    """The arrays of an .npz file: all of them, or those `names(files)` picks (it may raise)."""
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as e:
        raise NpzError(f"cannot read file: {e.strerror or e}") from e
    if not is_zip:
        raise NpzError("not a valid .npz file (truncated or corrupt zip archive)")
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for name in (names(list(npz.files)) if names else npz.files):
                try:
                    out[name] = npz[name]
                except ValueError as e:
                    if "pickle" in str(e).lower():
                        raise NpzError(f"array {name!r} holds pickled (object) data, which is never unpickled") from e
                    raise NpzError(f"array {name!r} is corrupt ({e})") from e
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as e:
        raise NpzError(f"truncated or corrupt .npz data ({e})") from e
    return out
