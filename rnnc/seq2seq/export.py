"""encoder.onnx and decoder_step.onnx: the two halves of a seq2seq block for apps that drive
decoding themselves (their own beam search, constrained decoding, streaming output).

    encoder.onnx       src [batch, src_time], src_len [batch]
                       -> memory [batch, src_time, He], state.<path> [batch, n] for every decoder
                          state part (`state.0.c`, `state.0.h`, ...; `state.attention` with attention)
    decoder_step.onnx  token [batch] (the previous token; <go> first), state.<path>, memory, src_len
                       -> logits [batch, |target vocab|], state.<path>.next, alignment [batch, src_time]
                          (with attention)

Greedy decoding with them is: state = encoder(src, src_len); token = <go>; repeat
logits, state = decoder_step(token, state, memory, src_len); token = argmax(logits) until
<eos> — exactly what the in-graph decode loop of infer.onnx computes. Metadata `rnnc.state`
lists the state pairs; `rnnc.seq2seq` the reserved ids, max_len and the input names.
"""
from __future__ import annotations

import numpy as np

from ..api import finalize
from ..export import to_model
from ..ir import Model, walk
from ..lower.model import ModelLowering, _rename_output
from ..metadata import metadata
from ..vocab import EOS, GO, PAD, UNK
from . import attention as A
from .lower import S2SLowering


def _source_names(model: Model, blk) -> tuple[str, str]:
    for e in walk(model):
        if e.op in ("s2s_decode", "s2s_logits", "s2s_sampled_loss", "s2s_alignments") and e.attrs["block"] is blk:
            a, n = e.args[0], e.args[1]
            if a.op == "input" and n.op == "input":
                return a.attrs["name"], n.attrs["name"]
    return "src", "src_len"


def _info(model, blk, s2s, src: str, src_len: str) -> dict:
    return {"block": blk.name, "pad": PAD, "go": GO, "eos": EOS, "unk": UNK, "max_len": blk.decode.max_len,
            "source": src, "source_lengths": src_len, "source_vocab": blk.source.vocab.name,
            "target_vocab": blk.target.vocab.name, "reversed": blk.reversed,
            "attention": None if blk.attention is None else f"{blk.attention.kind}({blk.attention.score})",
            "state": [p for p, _ in s2s.dec.state]}


def build_encoder(model: Model, blk, unroll: str = "auto", fdtype: str = "f32", seed: int = 0,
                  weights: dict | None = None):
    lw = ModelLowering(model, fdtype, seed, unroll, weights)
    s2s = S2SLowering(lw, blk)
    src_name, len_name = _source_names(model, blk)
    src, src_len = lw.input(src_name), lw.input(len_name)
    enc = s2s.encode(src, src_len)
    outs = [_rename_output(lw.b, enc.memory, "memory")]
    for (path, _), t in zip(s2s.dec.state, enc.initial):
        outs.append(_rename_output(lw.b, t, f"state.{path}"))
    lw.g.outputs = [t.v for t in outs]
    g = finalize(lw.g, keep_inputs=(src_name, len_name))
    extra = {"rnnc.kind": "encoder", "rnnc.seq2seq": _info(model, blk, s2s, src_name, len_name),
             "rnnc.state": [{"input": f"state.{p}", "output": f"state.{p}.next", "size": n} for p, n in s2s.dec.state]}
    return to_model(g, model.name, metadata(model, extra))


def build_decoder_step(model: Model, blk, unroll: str = "auto", fdtype: str = "f32", seed: int = 0,
                       weights: dict | None = None):
    lw = ModelLowering(model, fdtype, seed, unroll, weights)
    b = lw.b
    s2s = S2SLowering(lw, blk)
    src_name, len_name = _source_names(model, blk)
    batch = model.input_type(src_name).shape[0] if src_name in dict(model.inputs) else "batch"
    src_time = model.input_type(src_name).shape[1] if src_name in dict(model.inputs) else "src_time"
    token = b.input("token", "i64", (batch,))
    states = [b.input(f"state.{p}", b.fdtype, (batch, n)) for p, n in s2s.dec.state]
    memory = b.input("memory", b.fdtype, (batch, src_time, blk.encoder.output_size))
    src_len = b.cast(b.input(len_name, model.input_type(len_name).dtype if len_name in dict(model.inputs)
                             else "i64", (batch,)), "i64")
    P = s2s.params()
    if blk.attention:
        S = b.squeeze(b.shape_of(memory, 1, 2), [0])
        steps = b.range_(b.const(np.array(0, np.int64), "i64"), S, b.const(np.array(1, np.int64), "i64"), src_time)
        mask = b.less(b.unsqueeze(steps, [0]), b.unsqueeze(src_len, [1]))
        P |= {"memory": memory, "keys": A.keys(b, blk, P, memory), "mask": mask}
    x = b.gather(s2s.embed_table("target"), token, axis=0)
    y, nxt, align = s2s.dec.step(b, P, x, states)
    outs = [_rename_output(b, s2s.project(b, P, y), "logits")]
    for (path, _), t in zip(s2s.dec.state, nxt):
        outs.append(_rename_output(b, t, f"state.{path}.next"))
    if align is not None:
        outs.append(_rename_output(b, align, "alignment"))
    lw.g.outputs = [t.v for t in outs]
    g = finalize(lw.g, keep_inputs=("token", "memory", len_name) + tuple(f"state.{p}" for p, _ in s2s.dec.state))
    extra = {"rnnc.kind": "decoder_step", "rnnc.seq2seq": _info(model, blk, s2s, src_name, len_name),
             "rnnc.state": [{"input": f"state.{p}", "output": f"state.{p}.next", "size": n} for p, n in s2s.dec.state]}
    return to_model(g, model.name, metadata(model, extra))


def seq2seq_files(model: Model, unroll: str = "auto", seed: int = 0, weights: dict | None = None) -> dict:
    """{file name: ModelProto} for the model's first seq2seq block (empty without one)."""
    from .meta import blocks

    found = blocks(model)
    if not found:
        return {}
    blk = found[0]
    return {"encoder.onnx": build_encoder(model, blk, unroll, seed=seed, weights=weights),
            "decoder_step.onnx": build_decoder_step(model, blk, unroll, seed=seed, weights=weights)}


def build_infer_decoding(model: Model, decode, weights: dict | None = None, unroll: str = "auto"):
    """infer.onnx with every seq2seq block decoding as `decode` (an ir.Decode) instead of its
    spec's `decode` line: to compare greedy and beam search on one trained model."""
    lw = ModelLowering(model, "f32", 0, unroll, weights)
    lw.decode_override = decode
    outs = [_rename_output(lw.b, lw.lower(e), name) for name, e in model.outputs]
    lw.g.outputs = [t.v for t in outs]
    g = finalize(lw.g)
    return to_model(g, model.name, metadata(model, {"rnnc.kind": "infer"}))
