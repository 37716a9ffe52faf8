"""`rnnc eval` for seq2seq models: decode the sources and compare with the references.

    exact_match     fraction of rows whose decoded tokens (up to and with `<eos>`) equal the
                    reference's (its `tgt_len` ids, `<eos>` included)
    token_accuracy  Σ over rows and reference positions t < tgt_len of [decoded[t] == ref[t]]
                    / Σ tgt_len (a position past the decoded length counts as wrong)
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..vocab import Vocab


def vocab_meta(proto) -> dict | None:
    meta = {p.key: p.value for p in proto.metadata_props}
    return json.loads(meta["rnnc.vocab"]) if "rnnc.vocab" in meta else None


def text_of(proto):
    """(tsv layout, vocabularies) from a model's metadata, or None."""
    io = vocab_meta(proto)
    if not io or not io.get("text"):
        return None
    return io["text"], {k: Vocab.from_json(k, v) for k, v in io["vocabularies"].items()}


def parse_decode(text: str):
    """"greedy(max_len=12)" or "beam(width=4, max_len=12, alpha=0.6)" -> (kind, options)."""
    from ..runtime import InputError

    m = re.fullmatch(r"\s*(greedy|beam)\s*(?:\((.*)\))?\s*", text)
    if not m:
        raise InputError(f"--decode {text!r}: write greedy(max_len=N) or beam(width=K, max_len=N, alpha=A)")
    opts = {"max_len": None, "width": 1 if m.group(1) == "greedy" else 4, "alpha": 0.6 if m.group(1) == "beam" else 0.0}
    allowed = ("max_len",) if m.group(1) == "greedy" else ("width", "max_len", "alpha")
    for part in filter(None, (p.strip() for p in (m.group(2) or "").split(","))):
        k, _, v = part.partition("=")
        k = k.strip()
        try:
            value = float(v) if k == "alpha" else int(v)
        except ValueError:
            value = None
        if k not in allowed or value is None or value < 0 or (k != "alpha" and value == 0):
            raise InputError(f"--decode {text!r}: bad option {part!r} (options: {', '.join(allowed)})")
        opts[k] = value
    return m.group(1), opts


def decode_metrics(folder: Path, eval_proto, data: dict, decode: str | None = None, chunk: int = 256) -> dict:
    import onnx

    from ..train import session_from_proto

    io = vocab_meta(eval_proto)
    src_col, tgt_col = io["text"]
    infer_path = folder / "infer.onnx"
    if not infer_path.is_file():
        return {}
    proto = onnx.load(str(infer_path))
    if decode is not None:
        proto = _redecoded(proto, decode)
    outs = vocab_meta(proto)["outputs"] if vocab_meta(proto) else {}
    if not outs:
        return {}
    tok_name, spec = next(iter(outs.items()))
    sess = session_from_proto(proto)
    need = [i.name for i in sess.get_inputs()]
    if any(n not in data for n in need) or not spec.get("lengths"):
        return {}
    n = len(data[src_col["input"]])
    ref, ref_len = data[tgt_col["input"]], data[tgt_col["lengths"]]
    exact = hits = total = 0
    for start in range(0, n, chunk):
        feeds = {k: data[k][start:start + chunk] for k in need}
        values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        toks, lens = values[tok_name], values[spec["lengths"]]
        for i in range(len(toks)):
            r = ref[start + i, :int(ref_len[start + i])]
            p = toks[i, :int(lens[i])]
            exact += int(len(p) == len(r) and np.array_equal(p, r))
            m = min(len(p), len(r))
            hits += int(np.sum(p[:m] == r[:m]))
            total += len(r)
    return {"exact_match": exact / max(n, 1), "token_accuracy": hits / max(total, 1)}


def _redecoded(infer_proto, decode_text: str):
    """infer.onnx rebuilt from its spec and weights, decoding another way."""
    from onnx import numpy_helper

    from ..api import check
    from ..ir import Decode
    from .export import build_infer_decoding
    from .meta import blocks

    meta = {p.key: p.value for p in infer_proto.metadata_props}
    model = check("spec.rnn", text=meta["rnnc.spec"])
    kind, opts = parse_decode(decode_text)
    blk = blocks(model)[0]
    base = blk.decode
    decode = Decode(kind, opts["max_len"] or base.max_len, opts["width"], opts["alpha"])
    if kind == "beam" and decode.width > blk.target.vocab.size:
        from ..runtime import InputError
        raise InputError(f"--decode: beam width {decode.width} exceeds the target vocabulary ({blk.target.vocab.size})")
    weights = {i.name: numpy_helper.to_array(i) for i in infer_proto.graph.initializer}
    return build_infer_decoding(model, decode, weights)
