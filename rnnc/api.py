"""The Python API the command line calls: check, compile, run.

    model = rnnc.check("specs/digits.rnn")                # parse + resolve: the model IR
    result = rnnc.compile("specs/digits.rnn", out="out")  # writes out/infer.onnx, ...
    outputs = rnnc.runtime.run("out", {"x": x})           # onnxruntime on numpy inputs
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .errors import Diagnostic, SpecError
from .export import to_model
from .graph import verify
from .metadata import metadata
from .ir import Model
from .lower.guard import guard_empty_input
from .lower.unroll import UNROLL
from .lower.model import lower_model
from .parser import parse
from .prune import prune
from .resolve import resolve

UNROLLS = ("static", "loop", "fused", "auto")


def read_spec(path: str | os.PathLike) -> tuple[str, str]:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise SpecError([Diagnostic(f"no such spec file: {path}")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError([Diagnostic(f"cannot read spec {path}: {e}")]) from None


def check(spec: str | os.PathLike, text: str | None = None, unroll: str = "auto") -> Model:
    """Parse and resolve a spec (a path, or `text` shown as that path); raise SpecError."""
    if text is None:
        text, name = read_spec(spec)
    else:
        name = str(spec)
    return resolve(parse(text, name), default_unroll=unroll)


def refuse_unsupported(model: Model) -> None:
    """Constructs later issues compile stop compilation here, each located."""
    if model.unsupported:
        raise SpecError([Diagnostic(f"not supported by this version of rnnc yet: {what}", span,
                                    "`rnnc check` accepts it; compiling it comes in a later release")
                         for what, span in model.unsupported], model.source)


@dataclass
class Built:
    """An ONNX model and what the summary shows about it."""

    onnx: onnx.ModelProto
    strategies: list[tuple[str, str]]            # (cell path, lowering) per leaf cell run
    params: dict[str, np.ndarray]
    state_io: list[tuple[str, str, int]] = field(default_factory=list)
    decisions: list[tuple[str, str, str]] = field(default_factory=list)   # (cell path, lowering, why)
    graph: object = None                                                   # the tensor graph exported
    providers: dict = field(default_factory=dict)                          # cell path -> provider

def finalize(graph, keep_inputs: tuple[str, ...] = ()):
    """The last passes before export: dead code out, invariants checked, loops guarded
    against empty input."""
    for n in graph.nodes:             # a loop nobody unrolled stays a (valid) loop
        n.attrs.pop(UNROLL, None)
    g = prune(graph, keep_inputs)
    verify(g)
    return guard_empty_input(g)


def build_infer(model: Model, unroll: str = "auto", fdtype: str = "f32", seed: int = 0,
                weights: dict | None = None, stateful: bool = False, target: str = "cpu") -> Built:
    """The inference model: the spec's outputs, from exactly the inputs they need, with
    lowerings picked for running on `target`."""
    lw = lower_model(model, list(model.outputs), fdtype, seed, unroll, weights, stateful, target)
    g = finalize(lw.g)
    extra = {"rnnc.kind": "infer_stateful" if stateful else "infer",
             "rnnc.lowering": [list(s) for s in lw.strategies]}
    if stateful:
        extra["rnnc.state"] = [{"input": i, "output": o, "size": s} for i, o, s in lw.state_io]
    proto = to_model(g, model.name, metadata(model, extra))
    return Built(proto, lw.strategies, {k: g.initializers[k] for k in g.params}, lw.state_io,
                 list(lw.runner.decisions), g, dict(lw.runner.providers))


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)     # mkstemp's 0600 is for secrets, not models
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class CompileResult:
    model: Model
    out: Path
    files: list[Path]
    infer: Built


def compile(spec: str | os.PathLike, out: str | os.PathLike | None = None, unroll: str = "auto",
            seed: int = 0, stateful: bool = False, memory: str = "store", device: str = "cpu") -> CompileResult:
    """Compile a spec into a folder: infer.onnx; eval.onnx and train.onnx when the spec has a
    loss; infer_stateful.onnx with `stateful`; encoder.onnx and decoder_step.onnx with a
    seq2seq block. Nothing is written unless everything compiled. `memory`: what
    train.onnx's loops keep for the backward pass, "store", "recompute" or "checkpoint[:K]"."""
    if unroll not in UNROLLS:
        raise ValueError(f"unroll must be one of {', '.join(UNROLLS)}")
    from .lower.chunked import parse_memory

    parse_memory(memory)      # store | recompute | checkpoint[:K]: refused before any work
    model = check(spec, unroll=unroll)
    refuse_unsupported(model)
    out_dir = Path(out) if out is not None else Path(model.name)
    target = "cuda" if device.startswith("cuda") else "cpu"     # never needs the device to be there
    infer = build_infer(model, unroll, seed=seed, target=target)
    files = [(out_dir / "infer.onnx", infer.onnx)]
    train = None
    if model.loss is not None:
        from .training_graph import build_eval, build_train

        files.append((out_dir / "eval.onnx", build_eval(model, unroll, seed=seed, target=target)))
        train = build_train(model, unroll, seed=seed, memory=memory)
        files.append((out_dir / "train.onnx", train.onnx))
    if stateful:
        files.append((out_dir / "infer_stateful.onnx",
                      build_infer(model, unroll, seed=seed, stateful=True, target=target).onnx))
    from .seq2seq.export import seq2seq_files   # encoder.onnx, decoder_step.onnx (seq2seq)

    files += [(out_dir / name, proto) for name, proto in seq2seq_files(model, unroll, seed=seed).items()]
    files += placed_files(model, out_dir, infer, train)
    for path, proto in files:
        write_atomic(path, proto if isinstance(proto, bytes) else proto.SerializeToString())
    return CompileResult(model, out_dir, [p for p, _ in files], infer)


def placed_files(model: Model, out_dir: Path, infer: Built, train) -> list:
    """segments/*.onnx and manifest.json when the spec places cells (rnnc/placement.py);
    infer.onnx stays the whole, unplaced model."""
    from .placement import is_placed, segment_models

    if not is_placed(infer.graph):
        return []
    meta = metadata(model, {"rnnc.kind": "segment"})
    manifest = {"model": model.name}
    files = []
    for kind, graph in (("infer", infer.graph), ("train", train.graph if train is not None else None)):
        if graph is None:
            continue
        manifest[kind], segs = segment_models(graph, kind, model.name, meta)
        files += [(out_dir / rel, proto) for rel, proto in segs]
    files.append((out_dir / "manifest.json", json.dumps(manifest, indent=2).encode()))
    return files
