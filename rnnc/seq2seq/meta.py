"""Which inputs and outputs of a model a vocabulary encodes (for metadata, data files and
`rnnc run`), found in the model IR.

The JSON stored under the metadata key `rnnc.vocab`:

    {"vocabularies": {"src_chars": {"kind": "chars", "tokens": ["<pad>", "<go>", "<eos>", "<unk>",
                                    " ", ",", ...], "separator": "", "pad": 0, "go": 1, "eos": 2, "unk": 3}},
     "inputs":  {"src": {"vocab": "src_chars", "lengths": "src_len", "eos": false},
                 "tgt": {"vocab": "out_chars", "lengths": "tgt_len", "eos": true}},
     "outputs": {"tokens": {"vocab": "out_chars", "lengths": "token_len"}},
     "text": [{"input": "src", "lengths": "src_len", "vocab": "src_chars", "eos": false},
              {"input": "tgt", "lengths": "tgt_len", "vocab": "out_chars", "eos": true}]}

An input with `"eos": true` holds ids ending with `<eos>` (the target of teacher forcing).
`text` maps the columns of a .tsv data file to inputs (textdata.py): column 1 is the source
of the seq2seq call the loss reads, column 2 its target; each with its lengths input (the
call's second argument; the loss's `lengths=`).
"""
from __future__ import annotations

from ..ir import Model, walk

S2S_TRAIN = ("s2s_logits", "s2s_sampled_loss")


def _input_name(e) -> str | None:
    return e.attrs["name"] if e is not None and e.op == "input" else None


def _loss_target_lengths(model: Model) -> dict[str, str]:
    """tgt input -> its lengths input, from losses `f(logits, tgt, lengths=n)`."""
    out = {}
    for e in walk(model):
        if e.op in ("softmax_xent", "accuracy") and e.attrs.get("weighting") == "lengths":
            tgt, n = _input_name(e.args[1]), _input_name(e.args[2])
            if tgt and n:
                out.setdefault(tgt, n)
        if e.op == "s2s_sampled_loss" and e.attrs.get("weighting") == "lengths":
            tgt, n = _input_name(e.args[2]), _input_name(e.args[3])
            if tgt and n:
                out.setdefault(tgt, n)
    return out


def vocab_io(model: Model) -> dict | None:
    if not model.vocabs:
        return None
    inputs: dict[str, dict] = {}
    tgt_lengths = _loss_target_lengths(model)
    for e in walk(model):
        if e.op in S2S_TRAIN + ("s2s_decode", "s2s_alignments"):
            blk = e.attrs["block"]
            src, n = _input_name(e.args[0]), _input_name(e.args[1])
            if src:
                inputs.setdefault(src, {"vocab": blk.source.vocab.name, "lengths": n, "eos": False})
            if e.op in S2S_TRAIN + ("s2s_alignments",):
                tgt = _input_name(e.args[2])
                if tgt:
                    inputs.setdefault(tgt, {"vocab": blk.target.vocab.name, "lengths": tgt_lengths.get(tgt),
                                            "eos": True})
    outputs: dict[str, dict] = {}
    for name, e in model.outputs:
        if e.op == "s2s_decode_out" and e.attrs["index"] == 0:
            dec = e.args[0]
            lengths = next((n for n, o in model.outputs if o.op == "s2s_decode_out" and o.args[0] is dec
                            and o.attrs["index"] == 1), None)
            outputs[name] = {"vocab": dec.attrs["block"].target.vocab.name, "lengths": lengths}
    return {"vocabularies": {v.name: v.to_json() for v in model.vocabs}, "inputs": inputs, "outputs": outputs,
            "text": text_layout(model)}


def text_layout(model: Model) -> list[dict] | None:
    """The columns of a .tsv file: [source column, target column] of the seq2seq call the loss
    reads (None when the model has no such call)."""
    if model.loss is None:
        return None
    tgt_lengths = _loss_target_lengths(model)
    stack, seen = [model.loss], set()
    while stack:
        e = stack.pop()
        if id(e) in seen or not hasattr(e, "op"):
            continue
        seen.add(id(e))
        if e.op in S2S_TRAIN:
            blk = e.attrs["block"]
            src, n, tgt = _input_name(e.args[0]), _input_name(e.args[1]), _input_name(e.args[2])
            if src is None or tgt is None:
                return None
            return [{"input": src, "lengths": n, "vocab": blk.source.vocab.name, "eos": False},
                    {"input": tgt, "lengths": tgt_lengths.get(tgt), "vocab": blk.target.vocab.name, "eos": True}]
        stack.extend(a for a in reversed(e.args) if hasattr(a, "op"))
    return None


def has_seq2seq(model: Model) -> bool:
    return any(e.op.startswith("s2s_") for e in walk(model))


def blocks(model: Model) -> list:
    """The seq2seq blocks the model's outputs and loss use, in first-use order."""
    out = []
    for e in walk(model):
        blk = e.attrs.get("block") if e.op.startswith("s2s_") else None
        if blk is not None and all(b is not blk for b in out):
            out.append(blk)
    return sorted(out, key=lambda b: (b.span.line, b.span.column) if b.span else (0, 0))
