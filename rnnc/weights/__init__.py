"""Weights in and out: a framework's trained RNN weights as an rnnc model, and back.

    rnnc weights import SPEC FILE --layout torch|keras|tf1 -o DIR [--map RNNC=SOURCE ...]
    rnnc weights export MODEL|DIR --layout torch|keras|tf1 -o FILE [--map RNNC=SOURCE ...]

FILE is an .npz (read with allow_pickle=False) or a .safetensors file (parsed here, no
dependency). How a spec's parameters meet a file's tensors is each layout's business
(`torch_layout`, `keras_layout`, `tf1_layout`, each documented in its module): PyTorch
modules hold a whole cell run (stack layers `_l{k}`, `bi` as `_reverse`), Keras and TF1
name each cell. Name prefixes follow the spec's names (the cell run `rnn`, the dense
target `logits`) unless `--map RNNC_PREFIX=SOURCE_PREFIX` says otherwise; a map key is an
rnnc path (`rnn`, `deep.1`, `enc.fw`, `logits`) and applies to everything under it.

Every parameter of the spec must come from the file and every tensor of the file must be
used (`allow_extra` ignores unused ones); each mismatch — a missing or extra tensor, a
wrong shape, a cell the framework cannot express — is one located error, all reported at
once as a `SpecError` (exit code 3). A file that cannot be read is a `WeightsError`
(exit code 4).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import Diagnostic, SpecError
from . import keras_layout, tf1_layout, torch_layout
from .common import Source
from .files import WeightsError, read_tensors, tensors_bytes
from .structure import structure

LAYOUTS = {"torch": torch_layout, "keras": keras_layout, "tf1": tf1_layout}

__all__ = [
    "LAYOUTS",
    "WeightsError",
    "export_weights",
    "import_params",
    "import_weights",
    "load_initial",
    "model_params",
    "parse_maps",
    "read_tensors",
]


def _layout(name: str):
    if name not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def parse_maps(items) -> dict[str, str]:
    """`["rnn=encoder.lstm", "logits=fc"]` -> {"rnn": "encoder.lstm", "logits": "fc"}."""
    maps = {}
    for item in items or ():
        if "=" not in item:
            raise WeightsError(f"--map {item!r}: write RNNC_PREFIX=SOURCE_PREFIX (e.g. rnn=encoder.lstm)")
        k, v = item.split("=", 1)
        maps[k.strip()] = v.strip()
    return maps


def _expected_params(model) -> dict[str, tuple]:
    """Every parameter the compiled models have, with its shape (from the lowering itself)."""
    from ..api import build_infer

    shapes = {k: v.shape for k, v in build_infer(model).params.items()}
    if model.loss is not None:
        from ..training_graph import _lower_loss

        lw, _ = _lower_loss(model, "f32", 0, "auto", None, stateful=False)
        shapes |= {k: lw.g.initializers[k].shape for k in lw.g.params}
    return shapes


def import_params(model, file: str | os.PathLike, layout: str, maps: dict | None = None,
                  allow_extra: bool = False) -> dict[str, np.ndarray]:
    """rnnc parameter name -> float32 array, from a weights file, for a resolved model."""
    mod = _layout(layout)
    maps = maps or {}
    st = structure(model)
    src = Source(read_tensors(file), str(file))
    refused = mod.unsupported(st, src.error)
    params = mod.import_(st, src, maps, refused)
    if not allow_extra and not refused:   # a refused cell's tensors are never read: not "extra"
        extra = sorted(set(src.tensors) - src.used)
        if extra and src.diagnostics:     # likely caused by the errors above: one line for all
            shown = ", ".join(f"'{n}'" for n in extra[:8]) + (f" and {len(extra) - 8} more" if len(extra) > 8 else "")
            src.error(f"{src.file}: {len(extra)} tensor(s) match no parameter of the spec: {shown}")
        elif extra:
            src.report_extra()
    if not src.diagnostics:
        expected = _expected_params(model)
        for name in expected:
            if name not in params:
                src.error(f"parameter '{name}' has no {mod.NAME} form")
        for name, shape in expected.items():
            if name in params and params[name].shape != tuple(shape):
                src.error(f"parameter '{name}': {mod.NAME} gives shape {params[name].shape}, rnnc needs {shape}")
    if src.diagnostics:
        raise SpecError(src.diagnostics, model.source)
    return params


@dataclass
class ImportResult:
    model: object
    out: Path
    files: list[Path]
    params: dict[str, np.ndarray]


def import_weights(spec: str | os.PathLike, file: str | os.PathLike, layout: str, out: str | os.PathLike,
                   maps: dict | None = None, allow_extra: bool = False, unroll: str = "auto",
                   seed: int = 0, stateful: bool = False) -> ImportResult:
    """Compile SPEC with the weights of FILE into a folder (as `rnnc compile` does):
    infer.onnx, and eval.onnx and train.onnx when the spec has a loss."""
    from ..api import build_infer, check, refuse_unsupported, write_atomic

    model = check(spec, unroll=unroll)
    refuse_unsupported(model)
    params = import_params(model, file, layout, maps, allow_extra)
    out_dir = Path(out)
    files = [(out_dir / "infer.onnx", build_infer(model, unroll, seed=seed, weights=params).onnx)]
    if model.loss is not None:
        from ..training_graph import build_eval, build_train

        files.append((out_dir / "eval.onnx", build_eval(model, unroll, seed=seed, weights=params)))
        files.append((out_dir / "train.onnx", build_train(model, unroll, seed=seed, weights=params).onnx))
    if stateful:
        files.append((out_dir / "infer_stateful.onnx",
                      build_infer(model, unroll, seed=seed, weights=params, stateful=True).onnx))
    for path, proto in files:
        write_atomic(path, proto.SerializeToString())
    return ImportResult(model, out_dir, [p for p, _ in files], params)


def _initializers(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    import onnx
    from onnx import numpy_helper

    try:
        proto = onnx.load(str(path))
    except Exception as e:   # noqa: BLE001  (protobuf raises several kinds)
        raise WeightsError(f"{path}: not a readable ONNX model ({e})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}, meta


def model_params(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str], Path]:
    """The initializers of a model file, or of a folder's infer.onnx and eval.onnx (and the
    metadata of the first), and the file the metadata came from."""
    p = Path(path)
    if p.is_dir():
        files = [f for f in (p / "infer.onnx", p / "eval.onnx") if f.is_file()]
        if not files:
            raise WeightsError(f"{path}: no infer.onnx or eval.onnx in this folder")
    elif p.is_file():
        files = [p]
    else:
        raise WeightsError(f"no model at {path}")
    params: dict[str, np.ndarray] = {}
    meta: dict[str, str] = {}
    for f in files:
        inits, m = _initializers(f)
        for k, v in inits.items():
            params.setdefault(k, v)
        meta = meta or m
    return params, meta, files[0]


def export_weights(model_path: str | os.PathLike, layout: str, out: str | os.PathLike,
                   maps: dict | None = None) -> dict[str, np.ndarray]:
    """Write the parameters of an rnnc model (file or folder) as a framework's weights file."""
    from ..api import check, write_atomic

    mod = _layout(layout)
    params, meta, src_file = model_params(model_path)
    if "rnnc.spec" not in meta:
        raise WeightsError(f"{src_file}: not an rnnc model (no rnnc.spec in its metadata)")
    model = check(f"{src_file}[rnnc.spec]", text=meta["rnnc.spec"])
    st = structure(model)
    diags: list[Diagnostic] = []
    mod.unsupported(st, lambda m, span=None, hint=None: diags.append(Diagnostic(m, span, hint)))
    if diags:
        raise SpecError(diags, model.source)
    missing = [n for n in st.param_names() if n not in params]
    if missing:
        raise WeightsError(f"{src_file}: parameter(s) {', '.join(missing)} are not among its initializers "
                           "(export from infer.onnx, eval.onnx or a model folder)")
    tensors = mod.export(st, {k: np.asarray(v) for k, v in params.items()}, maps or {})
    write_atomic(Path(out), tensors_bytes(out, tensors))
    return tensors


def load_initial(path: str | os.PathLike, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Initial weights for training from a compiled model (folder or .onnx): for each
    parameter of `like`, the initializer of the same name, which must have the same shape."""
    params, _, _ = model_params(path)
    out, problems = {}, []
    for name, ref in like.items():
        if name not in params:
            problems.append(f"parameter '{name}' is missing")
        elif tuple(params[name].shape) != tuple(ref.shape):
            problems.append(f"parameter '{name}' has shape {tuple(params[name].shape)}, the spec needs "
                            f"{tuple(ref.shape)}")
        else:
            out[name] = np.asarray(params[name]).astype(ref.dtype)
    if problems:
        raise WeightsError(f"--init {path}: " + "; ".join(problems))
    return out
