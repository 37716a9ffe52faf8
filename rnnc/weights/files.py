"""Reading and writing weights files: .npz (never unpickled) and .safetensors (parsed here).

safetensors: 8 bytes little-endian header length N, N bytes of JSON
`{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}`,
then the raw little-endian bytes of every tensor (offsets relative to the end of the header).
"""
from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import numpy as np

from ..npzfile import NpzError, read_npz

from ..runtime import InputError


class WeightsError(InputError):
    """A weights file that cannot be read or written (the command line's exit code 4)."""


SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
                      "I8": "i1", "U8": "u1", "BOOL": "?"}
NUMPY_TO_SAFETENSORS = {np.dtype(v).str.replace("|", ""): k for k, v in SAFETENSORS_DTYPES.items()}


def read_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of an .npz or .safetensors file, by name."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"no weights file at {path}")
    if p.suffix == ".safetensors":
        return read_safetensors(p)
    if p.suffix == ".npz":
        try:
            return read_npz(p)
        except NpzError as e:
            raise WeightsError(f"{path}: {e}") from None
    raise WeightsError(f"{path}: weights files are .npz or .safetensors")


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    if len(data) < 8:
        raise WeightsError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise WeightsError(f"{path}: not a safetensors file (header length {n} past the end)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path}: bad safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: bad safetensors header")
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise WeightsError(f"{path}: bad safetensors entry for '{name}'") from None
        if dtype == "BF16":
            raw = np.frombuffer(body[begin:end], "<u2").astype(np.uint32) << 16
            arr = raw.view(np.float32)
        elif dtype in SAFETENSORS_DTYPES:
            arr = np.frombuffer(body[begin:end], SAFETENSORS_DTYPES[dtype])
        else:
            raise WeightsError(f"{path}: tensor '{name}' has dtype {dtype}, which rnnc does not read")
        if not 0 <= begin <= end <= len(body) or arr.size != int(np.prod(shape, dtype=np.int64)):
            raise WeightsError(f"{path}: tensor '{name}': its bytes do not match its shape {list(shape)}")
        out[name] = arr.reshape(shape).astype(arr.dtype.newbyteorder("="), copy=True)
    return out


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    header: dict = {"__metadata__": dict(metadata or {})} if metadata else {}
    blobs, offset = [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        a = a.astype(a.dtype.newbyteorder("<"))
        key = a.dtype.str.replace("|", "")
        if key not in NUMPY_TO_SAFETENSORS:
            raise WeightsError(f"cannot write '{name}' of dtype {a.dtype} to safetensors")
        raw = a.tobytes()
        header[name] = {"dtype": NUMPY_TO_SAFETENSORS[key], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def tensors_bytes(path: str | os.PathLike, tensors: dict[str, np.ndarray]) -> bytes:
    """The bytes of an .npz or .safetensors file holding `tensors` (by the path's suffix)."""
    suffix = Path(path).suffix
    if suffix == ".safetensors":
        return safetensors_bytes(tensors)
    if suffix == ".npz":
        buf = io.BytesIO()
        np.savez(buf, **tensors)
        return buf.getvalue()
    raise WeightsError(f"{path}: write weights to a .npz or .safetensors file")
