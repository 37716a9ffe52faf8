"""Running exported models with onnxruntime: sessions, model folders, input checks.

A model argument is an .onnx file or a folder written by `rnnc compile`/`rnnc train`
(its `infer.onnx` is used). Inputs are checked against the model's declared inputs before
onnxruntime sees them, so a wrong name, rank or dtype gets one clear message.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .graph import NUMPY_DTYPES

ONNX_TO_NUMPY = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
                 "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


class InputError(Exception):
    """Bad input to a model run: a missing or malformed array, an unreadable file."""


def model_file(path: str | os.PathLike, name: str = "infer.onnx") -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / name
    if not p.is_file():
        raise InputError(f"no model at {path}" + (f" (looked for {p})" if Path(path).is_dir() else ""))
    return p


def session(path: str | os.PathLike, threads: int | None = None):
    """A session of the model at `path` on the selected device (rnnc/devices.py)."""
    from .devices import DeviceError, session as device_session

    try:
        return device_session(str(path), threads)
    except DeviceError:
        raise
    except Exception as e:  # onnxruntime raises its own exception types
        raise InputError(f"{path}: onnxruntime cannot load this model: {e}") from None


def check_feeds(sess, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cast and check `feeds` against the session's inputs; extra arrays are ignored."""
    out = {}
    for inp in sess.get_inputs():
        if inp.name not in feeds:
            have = ", ".join(sorted(feeds)) or "nothing"
            raise InputError(f"the model needs input '{inp.name}' {_fmt(inp)}; given: {have}")
        a = np.asarray(feeds[inp.name])
        want = ONNX_TO_NUMPY.get(inp.type)
        if len(a.shape) != len(inp.shape):
            raise InputError(f"input '{inp.name}' needs rank {len(inp.shape)} {_fmt(inp)}, got shape {a.shape}")
        for i, (d, n) in enumerate(zip(inp.shape, a.shape)):
            if isinstance(d, int) and d != n:
                raise InputError(f"input '{inp.name}' needs size {d} on axis {i} {_fmt(inp)}, got shape {a.shape}")
        if want is not None and a.dtype != want:
            if np.issubdtype(want, np.integer) and not np.issubdtype(a.dtype, np.integer):
                if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                    raise InputError(f"input '{inp.name}' needs integers, got {a.dtype} values that are not")
            a = a.astype(want)
        out[inp.name] = a
    return out


def spec_dtype(onnx_type: str) -> str:
    """'tensor(float)' -> 'f32': an ONNX input's type as the spec language writes it."""
    return {v: k for k, v in NUMPY_DTYPES.items()}.get(ONNX_TO_NUMPY.get(onnx_type), onnx_type)


def _fmt(inp) -> str:
    return f"{spec_dtype(inp.type)}[{', '.join(str(d) for d in inp.shape)}]"


def load_array(spec: str) -> tuple[str, np.ndarray]:
    """`name=path.npy`, `name=path.npz` (the array called name, or the only one), `name=path.npz:key`."""
    if "=" not in spec:
        raise InputError(f"'{spec}': give inputs as name=file.npy")
    name, path = spec.split("=", 1)
    key = None
    if ".npz:" in path:
        path, key = path.rsplit(":", 1)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except Exception:
        raise InputError(f"{path}: not a .npy or .npz file (save arrays with numpy.save or numpy.savez)") from None
    if isinstance(data, np.ndarray):
        return name, data
    with data:
        keys = list(data.keys())
        pick = key or (name if name in keys else (keys[0] if len(keys) == 1 else None))
        if pick not in keys:
            raise InputError(f"{path}: has no array '{key or name}' (it has {', '.join(keys)}); "
                             f"write {name}={path}:KEY")
        return name, data[pick]


def run(model: str | os.PathLike, feeds: dict[str, np.ndarray], pipeline: int = 0,
        device: str = "cpu", allow_cpu: bool = False) -> dict[str, np.ndarray]:
    """Run a model file or folder; a folder with a manifest.json runs placed: each segment on
    its device (`pipeline` > 1: that many micro-batches flowing through the segments)."""
    folder = Path(model)
    if folder.is_dir() and (folder / "manifest.json").is_file():
        return run_placed(folder, feeds, pipeline, device, allow_cpu)
    return run_session(session(model_file(model)), feeds)


def run_placed(folder: Path, feeds: dict[str, np.ndarray], pipeline: int = 0, device: str = "cpu",
               allow_cpu: bool = False) -> dict[str, np.ndarray]:
    from .placement import PlacedModel

    whole = session(model_file(folder))          # the unplaced model checks the inputs
    feeds = check_feeds(whole, feeds)
    placed = PlacedModel(folder, "infer", run_device=device, allow_cpu=allow_cpu)
    try:
        if pipeline > 1:
            return placed.run_pipelined(feeds, pipeline)
        return placed.run(feeds)
    except Exception as e:
        raise InputError(f"onnxruntime failed to run the model: {e}") from None


def run_session(sess, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    feeds = check_feeds(sess, feeds)
    names = [o.name for o in sess.get_outputs()]
    try:
        values = sess.run(names, feeds)
    except Exception as e:
        raise InputError(f"onnxruntime failed to run the model: {e}") from None
    return dict(zip(names, values))
