"""Training checkpoints: one ``.npz`` file per checkpoint, written atomically.

A checkpoint holds named numpy arrays (weights, optimizer moments, ...) and a
JSON-serializable ``meta`` dict (step, epoch, RNG state as ints, spec sha256,
config ...). The meta dict is stored as JSON text in a 0-d unicode array under
the reserved key ``__meta__``, wrapped with a format version. Nothing is
pickled: files are read with ``np.load(..., allow_pickle=False)``.

Writes go to a temporary file in the destination directory (named
``.tmp-<final name>.<random>.partial``, which never matches the checkpoint
pattern), are flushed and fsync'ed, and only then renamed over the final name
with :func:`os.replace`. A crash at any point therefore leaves either the old
file or the complete new one under the final name, never a half-written one.

Checkpoints in a directory are named ``step-000000123.npz`` (nine digits,
zero padded); :func:`latest` and :func:`prune` only look at such names.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from .npzfile import NpzError, read_npz

__all__ = [
    "FORMAT_VERSION",
    "META_KEY",
    "CheckpointError",
    "atomic_write",
    "checkpoint_path",
    "latest",
    "list_checkpoints",
    "load",
    "prune",
    "save",
]

FORMAT_VERSION = 1
META_KEY = "__meta__"
_FORMAT_NAME = "rnnc-checkpoint"
_STEP_RE = re.compile(r"^step-(\d{9,})\.npz$")


class CheckpointError(Exception):
    """A checkpoint file could not be read: ``path`` and a human ``reason``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


# --------------------------------------------------------------------------- atomic write


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it.
_FILE_MODE = 0o666 & ~_current_umask()


def _fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so a rename is durable (POSIX only)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Create or replace ``path`` atomically.

    ``write(f)`` is called with a binary file object open on a temporary file in
    the same directory; after it returns the file is flushed, fsync'ed and moved
    over ``path`` with :func:`os.replace`. If ``write`` (or anything else) fails,
    the temporary file is removed and ``path`` is left exactly as it was.
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".tmp-{path.name}.", suffix=".partial")
    tmp = Path(tmp_name)
    try:
        try:  # mkstemp makes the file 0600; give it the mode a plain open() would
            os.chmod(tmp, _FILE_MODE)
        except OSError:
            pass
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)
    return path


# --------------------------------------------------------------------------- save / load


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"checkpoint meta: value of type {type(obj).__name__} is not JSON-serializable")


def _write_npz(f: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an (uncompressed) npz into the open file ``f``."""
    np.savez(f, **arrays)


def save(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write one checkpoint ``.npz`` at ``path`` atomically; return ``path``.

    ``arrays`` maps names to numpy arrays (object arrays are refused: they would
    need pickle). ``meta`` must be JSON-serializable (numpy scalars and arrays
    are converted to Python numbers/lists). An existing file at ``path`` is
    replaced only once the new one is completely on disk.
    """
    path = Path(path)
    if not isinstance(meta, dict):
        raise TypeError(f"checkpoint meta must be a dict, got {type(meta).__name__}")
    payload: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"checkpoint array names must be non-empty strings, got {name!r}")
        if name.startswith("__"):
            raise ValueError(f"checkpoint array name {name!r} is reserved (starts with '__')")
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise TypeError(f"checkpoint array {name!r} has dtype object, which would need pickle")
        payload[name] = arr
    text = json.dumps(
        {"format": _FORMAT_NAME, "version": FORMAT_VERSION, "meta": meta},
        default=_json_default,
        sort_keys=True,
    )
    payload[META_KEY] = np.array(text)  # 0-d unicode array: no pickle needed
    return atomic_write(path, lambda f: _write_npz(f, payload))


def load(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint written by :func:`save`; return ``(arrays, meta)``.

    Raises :class:`CheckpointError` (with the path and a reason) if the file is
    missing, not a complete npz/zip, holds pickled data, lacks the meta entry,
    or was written with another format version.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such checkpoint file")
    if not path.is_file():
        raise CheckpointError(path, "not a regular file")
    try:
        arrays = read_npz(path)
    except NpzError as e:
        raise CheckpointError(path, str(e)) from e
    raw = arrays.pop(META_KEY, None)
    if raw is None:
        raise CheckpointError(path, f"missing the {META_KEY!r} entry (not an rnnc checkpoint)")
    if raw.shape != () or raw.dtype.kind != "U":
        raise CheckpointError(path, f"{META_KEY!r} entry is not a JSON string")
    try:
        doc = json.loads(str(raw[()]))
    except json.JSONDecodeError as e:
        raise CheckpointError(path, f"{META_KEY!r} entry is not valid JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT_NAME:
        raise CheckpointError(path, f"{META_KEY!r} entry is not an rnnc checkpoint header")
    version = doc.get("version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            path, f"checkpoint format version {version!r} is not supported (expected {FORMAT_VERSION})"
        )
    meta = doc.get("meta")
    if not isinstance(meta, dict):
        raise CheckpointError(path, "checkpoint meta is not a JSON object")
    return arrays, meta


# --------------------------------------------------------------------------- directories


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """``directory / 'step-000000123.npz'`` for ``step=123``."""
    step = int(step)
    if step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {step}")
    return Path(directory) / f"step-{step:09d}.npz"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """All ``(step, path)`` checkpoints in ``directory``, oldest first.

    Temporary files, other names and sub-directories are ignored; a missing
    directory yields ``[]``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        m = _STEP_RE.match(entry.name)
        if m and entry.is_file():
            found.append((int(m.group(1)), entry))
    found.sort()
    return found


def latest(directory: str | os.PathLike) -> Path | None:
    """Path of the checkpoint with the highest step in ``directory``, or None."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def prune(directory: str | os.PathLike, keep: int = 3) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints; return the deleted paths."""
    if keep < 1:
        raise ValueError(f"prune keeps at least one checkpoint, got keep={keep}")
    found = list_checkpoints(directory)
    removed = []
    for _, path in found[: max(0, len(found) - keep)]:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed
