"""Vocabularies, `seq2seq` blocks and their calls: syntax -> model IR, every mistake located.

Called by the main resolver (rnnc/resolve.py) with itself as `r` (errors, names, tensors).

    vocab v = chars("...") | words("file.txt")
    seq2seq NAME { source embed(v, D) [reversed]  encoder CELL  target embed(w, D)
                   decoder CELL  [attention luong | luong(score=dot) | bahdanau]
                   [decode greedy(max_len=N) | beam(width=K, max_len=N, alpha=0.6)] }
    NAME(src, src_len, tgt)                         -> logits [batch, tgt_time, |w|]
    NAME.decode(src, src_len)                       -> tokens, lengths[, scores[, alignments]]
    NAME.sampled_loss(src, src_len, tgt, lengths=n, samples=N[, ids=sampled])  -> scalar
    NAME.alignments(src, src_len, tgt)              -> teacher-forced attention [batch, tgt_time, src_time]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import syntax as S
from ..errors import did_you_mean
from ..ir import Attention, Bi, Decode, Dropout, Embedding, Expr, Leaf, Project, Residual, Seq2SeqBlock, Stack, \
    TensorType, state_layout
from ..resolve_cells import _literal
from ..vocab import Vocab, read_word_list, symbols_problem

INTS = {"i64", "i32"}
METHODS = ("decode", "sampled_loss", "alignments")
DEFAULT_MAX_LEN = 50


def _spec_dir(r) -> Path:
    return Path(r.m.file).parent


# ----- vocabularies -----
def vocab_decl(r, s: S.VocabDecl) -> Vocab | None:
    v = s.value
    if not isinstance(v, S.Call) or v.func not in ("chars", "words"):
        r.error("a vocabulary is chars(\"...\") or words(\"file\")", getattr(v, "span", s.span),
                did_you_mean(v.func, ("chars", "words")) if isinstance(v, S.Call) else None)
        return None
    if len(v.args) != 1 or v.kwargs or not isinstance(v.args[0], S.String):
        r.error(f"{v.func}(...) takes one string", v.span)
        return None
    text = v.args[0].value
    if v.func == "chars":
        symbols = list(text)
    else:
        path = _spec_dir(r) / text
        try:
            symbols = read_word_list(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            r.error(f"cannot read the word list {text}: {getattr(e, 'strerror', None) or e}", v.args[0].span,
                    "the path is relative to the spec's folder; one word per line")
            return None
    problem = symbols_problem(symbols)
    if problem:
        r.error(f"vocab '{s.name}': {problem}", v.args[0].span)
        return None
    return Vocab(s.name, v.func, tuple(symbols))


# ----- the block -----
def block(r, s: S.Seq2SeqBlock) -> Seq2SeqBlock | None:
    items: dict[str, S.Seq2SeqItem] = {}
    for item in s.items:
        if item.key in items:
            r.error(f"'{item.key}' is given twice in seq2seq '{s.name}'", item.span)
        items[item.key] = item
        bad = [f for f in item.flags if f != "reversed"] or (item.flags if item.key != "source" else [])
        if bad or len(item.flags) > 1:
            r.error("`reversed` applies once, to the source line", item.span)
    missing = [k for k in ("source", "encoder", "target", "decoder") if k not in items]
    for need in missing:
        r.error(f"seq2seq '{s.name}' needs a '{need}' line", s.span)
    for k in ("encoder", "decoder"):       # option mistakes reported even if the rest is wrong
        if k in items:
            r.cells.instantiate(items[k].value, None)
    if missing:
        return None
    source = _embedding(r, items["source"].value)
    target = _embedding(r, items["target"].value)
    attention = _attention(r, items["attention"].value) if "attention" in items else None
    decode = _decode(r, items["decode"].value, target) if "decode" in items else Decode("greedy", DEFAULT_MAX_LEN)
    if source is None or target is None or ("attention" in items and attention is None) or decode is None:
        return None
    encoder = r.cells.instantiate(items["encoder"].value, source.dim, (s.name,))
    probe = r.cells.instantiate(items["decoder"].value, None, (s.name,))
    if encoder is None or probe is None or not _decoder_shape_ok(r, probe, items["decoder"].span):
        return None
    dec_in = target.dim + (probe.output_size if attention is not None else 0)
    decoder = r.cells.instantiate(items["decoder"].value, dec_in, (s.name,))
    if decoder is None:
        return None
    enc_layout, dec_layout = state_layout(encoder), state_layout(decoder)
    if enc_layout != dec_layout:
        show = lambda layout: ", ".join(f"{p}[{n}]" for p, n in layout)   # noqa: E731
        r.error(f"seq2seq '{s.name}': the encoder's final state starts the decoder, layer by layer, so their "
                f"states must match: encoder ({show(enc_layout)}), decoder ({show(dec_layout)})",
                items["decoder"].span, "give the decoder the encoder's layer structure and sizes")
        return None
    if attention is not None and attention.score == "dot" and encoder.output_size != decoder.output_size:
        r.error(f"luong(score=dot) needs the encoder's outputs ({encoder.output_size}) and the decoder's "
                f"({decoder.output_size}) to have one size", items["attention"].span,
                "use luong (general) or bahdanau")
        return None
    return Seq2SeqBlock(s.name, source, "reversed" in items["source"].flags, encoder, target, decoder,
                        attention, decode, s.span)


def _decoder_shape_ok(r, cell, span) -> bool:
    """The decoder runs one step at a time inside the decode loop: no bi, no wrappers
    that need the whole sequence."""
    if isinstance(cell, Leaf):
        return True
    if isinstance(cell, Stack):
        return all(_decoder_shape_ok(r, c, span) for c in cell.layers)
    if isinstance(cell, (Project, Residual)):
        return _decoder_shape_ok(r, cell.inner, span)
    if isinstance(cell, Bi):
        r.error("the decoder runs forward one step at a time: bi(...) cannot decode", span)
        return False
    if isinstance(cell, Dropout):    # the decoder step has no dropout masks of its own yet
        r.cells.not_yet("dropout inside a seq2seq decoder", cell.span or span)
    return _decoder_shape_ok(r, cell.inner, span) if hasattr(cell, "inner") else True


def _embedding(r, v) -> Embedding | None:
    if not isinstance(v, S.Call) or v.func != "embed":
        r.error("expected embed(VOCAB, DIM)", getattr(v, "span", None))
        return None
    if len(v.args) != 2 or not isinstance(v.args[0], S.Name):
        r.error("embed(VOCAB, DIM[, pretrained=\"file.npy\", frozen=false]) takes a vocabulary and a size",
                v.span)
        return None
    vocab = r.env.get(v.args[0].name)
    if not isinstance(vocab, Vocab):
        vocabs = [k for k, x in r.env.items() if isinstance(x, Vocab)]
        if v.args[0].name not in r.env:
            r.error(f"unknown vocabulary '{v.args[0].name}'", v.args[0].span, did_you_mean(v.args[0].name, vocabs))
        elif not _is_opaque(r, v.args[0].name):
            r.error(f"'{v.args[0].name}' is not a vocabulary", v.args[0].span)
        return None
    dim = _literal(v.args[1])
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        r.error("embed(VOCAB, DIM): DIM must be a positive whole number", v.args[1].span)
        return None
    pretrained, frozen = None, False
    for k in v.kwargs:
        if k.name == "pretrained":
            if not isinstance(k.value, S.String):
                r.error("pretrained= takes a .npy file name", k.value.span)
                return None
            pretrained = _load_pretrained(r, k.value, vocab, dim)
            if pretrained is None:
                return None
        elif k.name == "frozen":
            frozen = _literal(k.value)
            if not isinstance(frozen, bool):
                r.error("frozen= must be true or false", k.value.span)
                return None
        else:
            r.error(f"embed(...) has no option '{k.name}'", k.span, did_you_mean(k.name, ("pretrained", "frozen")))
            return None
    if frozen and pretrained is None:
        r.error("frozen=true keeps pretrained vectors fixed: give pretrained=\"file.npy\"", v.span)
        return None
    return Embedding(vocab, dim, pretrained, frozen, v.span)


def _load_pretrained(r, node: S.String, vocab: Vocab, dim: int):
    path = _spec_dir(r) / node.value
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        r.error(f"cannot read pretrained vectors {node.value}: {getattr(e, 'strerror', None) or e}", node.span,
                "a .npy file (numpy.save), path relative to the spec's folder")
        return None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f" or not np.all(np.isfinite(arr)):
        r.error(f"pretrained vectors {node.value} must be a finite float array", node.span)
        return None
    if arr.shape == (len(vocab.symbols), dim):     # symbols only: reserved rows start at zero
        arr = np.concatenate([np.zeros((vocab.size - len(vocab.symbols), dim), arr.dtype), arr])
    if arr.shape != (vocab.size, dim):
        r.error(f"pretrained vectors {node.value} are {list(arr.shape)}; vocabulary '{vocab.name}' with dim "
                f"{dim} needs [{vocab.size}, {dim}] (or [{len(vocab.symbols)}, {dim}] without the 4 reserved "
                "rows)", node.span)
        return None
    return arr.astype(np.float64)


def _is_opaque(r, name) -> bool:
    from ..resolve import Opaque
    return isinstance(r.env.get(name), Opaque)


def _call_parts(v):
    if isinstance(v, S.Name):
        return v.name, (), ()
    if isinstance(v, S.Call):
        return v.func, v.args, v.kwargs
    return None, (), ()


def _attention(r, v) -> Attention | None:
    name, args, kwargs = _call_parts(v)
    if name not in ("luong", "bahdanau"):
        r.error("attention is luong, luong(score=dot) or bahdanau", getattr(v, "span", None),
                did_you_mean(name, ("luong", "bahdanau")) if name else None)
        return None
    if args:
        r.error(f"{name}(...) takes options by name", args[0].span)
        return None
    score = "general" if name == "luong" else "additive"
    for k in kwargs:
        if name == "luong" and k.name == "score":
            val = k.value.name if isinstance(k.value, S.Name) else None
            if val not in ("general", "dot"):
                r.error("luong(score=...) is general or dot", k.value.span)
                return None
            score = val
        else:
            r.error(f"{name}(...) has no option '{k.name}'", k.span, "luong(score=dot|general)")
            return None
    return Attention(name, score, v.span)


def _decode(r, v, target: Embedding | None) -> Decode | None:
    name, args, kwargs = _call_parts(v)
    if name not in ("greedy", "beam"):
        r.error("decode is greedy(max_len=N) or beam(width=K, max_len=N)", getattr(v, "span", None),
                did_you_mean(name, ("greedy", "beam")) if name else None)
        return None
    allowed = {"greedy": ("max_len",), "beam": ("width", "max_len", "alpha")}[name]
    if args:
        r.error(f"{name}(...) takes options by name: {', '.join(f'{a}=' for a in allowed)}", args[0].span)
        return None
    opts = {"max_len": DEFAULT_MAX_LEN, "width": 1 if name == "greedy" else 4, "alpha": 0.6}
    for k in kwargs:
        if k.name not in allowed:
            r.error(f"{name}(...) has no option '{k.name}'", k.span, did_you_mean(k.name, allowed))
            return None
        val = _literal(k.value)
        if k.name == "alpha":
            if isinstance(val, bool) or not isinstance(val, (int, float)) or val < 0:
                r.error("alpha (the length penalty's exponent) is a number >= 0", k.value.span)
                return None
            opts["alpha"] = float(val)
        else:
            if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
                r.error(f"{k.name}= must be a positive whole number", k.value.span)
                return None
            opts[k.name] = val
    if target is not None and opts["width"] > target.vocab.size:
        r.error(f"beam width {opts['width']} is larger than the target vocabulary ({target.vocab.size} ids)", v.span)
        return None
    return Decode(name, opts["max_len"], opts["width"], opts["alpha"] if name == "beam" else 0.0, v.span)


# ----- calls -----
def call(r, blk: Seq2SeqBlock, e: S.Call, want: int | None):
    parts = e.func.split(".")
    method = parts[1] if len(parts) == 2 else None
    if len(parts) > 2 or (len(parts) == 2 and method not in METHODS):
        r.error(f"unknown function '{e.func}'", e.func_span or e.span,
                did_you_mean(method or "", METHODS) or f"a seq2seq block is called as {blk.name}(src, src_len, tgt), "
                f"{blk.name}.decode(src, src_len) or {blk.name}.sampled_loss(...)")
        return None
    if method is None:
        return _teacher_forced(r, blk, e)
    if method == "alignments":
        return _alignments(r, blk, e)
    if method == "decode":
        return _decode_call(r, blk, e, want)
    return _sampled_loss(r, blk, e)


def _ids(r, node, what: str, rank: int):
    t = r.tensor(r.expr(node), node.span)
    if t is None:
        return None
    if t.type.dtype not in INTS or len(t.type.shape) != rank:
        want = "[batch, time]" if rank == 2 else "[batch]"
        r.error(f"{what} must be integer ids {want}, '{_src(node)}' is {t.type}", node.span)
        return None
    return t


def _src(node) -> str:
    from ..resolve import _src as src
    return src(node)


def _args(r, blk, e: S.Call, names: tuple[str, ...], kw: tuple[str, ...] = ()):
    sig = f"{e.func}({', '.join(names + tuple(f'{k}=' for k in kw))})"
    if len(e.args) != len(names):
        r.error(f"{sig} takes {len(names)} argument(s), got {len(e.args)}", e.span)
        return None
    for k in e.kwargs:
        if k.name not in kw:
            r.error(f"{e.func}(...) has no option '{k.name}'", k.span, did_you_mean(k.name, kw) or sig)
            return None
    return {k.name: k for k in e.kwargs}


def _same_batch(a, b) -> bool:
    x, y = a.type.shape[0], b.type.shape[0]
    return x == y or not (isinstance(x, int) and isinstance(y, int))


def _static_ok(r, t, node) -> bool:
    """--unroll static unrolls the encoder and the teacher-forced decoder: fixed lengths only."""
    if r.default_unroll == "static" and not isinstance(t.type.shape[1], int):
        r.error(f"--unroll static needs a fixed number of steps, but '{_src(node)}' has a time dim "
                f"'{t.type.shape[1]}'", node.span, "use --unroll loop or auto, or declare the input with a fixed time size")
        return False
    return True


def _source(r, blk, e):
    src = _ids(r, e.args[0], "the source", 2)
    src_len = _ids(r, e.args[1], "the source lengths", 1)
    if src is None or src_len is None or not _static_ok(r, src, e.args[0]):
        return None
    if not _same_batch(src, src_len):
        r.error(f"source {src.type} and lengths {src_len.type} have different batch sizes", e.args[1].span)
        return None
    return src, src_len


def _source_and_target(r, blk: Seq2SeqBlock, e: S.Call):
    """(src, src_len, tgt) of a call whose first three arguments are those, checked."""
    got = _source(r, blk, e)
    tgt = _ids(r, e.args[2], "the target", 2)
    if got is None or tgt is None or not _static_ok(r, tgt, e.args[2]):
        return None
    return (*got, tgt)


def _teacher_forced(r, blk: Seq2SeqBlock, e: S.Call):
    if _args(r, blk, e, ("src", "src_len", "tgt")) is None:
        return None
    got = _source_and_target(r, blk, e)
    if got is None:
        return None
    src, src_len, tgt = got
    t = TensorType("f32", (src.type.shape[0], tgt.type.shape[1], blk.target.vocab.size))
    return Expr("s2s_logits", (src, src_len, tgt), {"block": blk}, t, e.span)


def _alignments(r, blk: Seq2SeqBlock, e: S.Call):
    if blk.attention is None:
        r.error(f"seq2seq '{blk.name}' has no attention line, so no alignments", e.span)
        return None
    logits = _teacher_forced(r, blk, e)
    if logits is None:
        return None
    src, _, tgt = logits.args
    t = TensorType("f32", (src.type.shape[0], tgt.type.shape[1], src.type.shape[1]))
    return Expr("s2s_alignments", logits.args, {"block": blk}, t, e.span)


def _decode_call(r, blk: Seq2SeqBlock, e: S.Call, want: int | None):
    if _args(r, blk, e, ("src", "src_len")) is None:
        return None
    if want not in (2, 3, 4):
        r.error(f"{e.func}(...) gives tokens, lengths[, scores[, alignments]]: name 2 to 4 results, e.g. "
                f"`output tokens, token_len = {e.func}(src, src_len)`", e.span)
        return None
    got = _source(r, blk, e)
    if got is None:
        return None
    src, src_len = got
    batch, src_time = src.type.shape
    dec = Expr("s2s_decode", (src, src_len), {"block": blk, "want": want}, None, e.span)
    types = [TensorType("i64", (batch, "decode_time")), TensorType("i64", (batch,)),
             TensorType("f32", (batch,)), TensorType("f32", (batch, "decode_time", src_time))]
    return tuple(Expr("s2s_decode_out", (dec,), {"index": i}, types[i], e.span) for i in range(want))


def _sampled_loss(r, blk: Seq2SeqBlock, e: S.Call):
    kw = _args(r, blk, e, ("src", "src_len", "tgt"), ("lengths", "samples", "ids"))
    if kw is None:
        return None
    got = _source_and_target(r, blk, e)
    if got is None:
        return None
    src, src_len, tgt = got
    V = blk.target.vocab.size
    if "samples" not in kw:
        r.error(f"{e.func}(...) needs samples=N, the number of sampled classes (fewer than {V})", e.span)
        return None
    n = _literal(kw["samples"].value)
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        r.error("samples= must be a positive whole number", kw["samples"].value.span)
        return None
    if n >= V:
        r.error(f"samples={n} must be smaller than the target vocabulary ({V} ids)", kw["samples"].value.span,
                "use softmax_cross_entropy(...) for a small vocabulary")
        return None
    args = [src, src_len, tgt]
    weighting = None
    if "lengths" in kw:
        n_len = _ids(r, kw["lengths"].value, "lengths=", 1)
        if n_len is None:
            return None
        args.append(n_len)
        weighting = "lengths"
    ids = None
    if "ids" in kw:
        ids = r.tensor(r.expr(kw["ids"].value), kw["ids"].value.span)
        if ids is None:
            return None
        if ids.type.dtype not in INTS or ids.type.shape != (n,):
            r.error(f"ids= are the {n} sampled class ids, i64[{n}]; '{_src(kw['ids'].value)}' is {ids.type}",
                    kw["ids"].value.span)
            return None
    attrs = {"block": blk, "samples": n, "weighting": weighting, "has_ids": ids is not None}
    if ids is not None:
        args.append(ids)
    return Expr("s2s_sampled_loss", tuple(args), attrs, TensorType("f32", ()), e.span)
