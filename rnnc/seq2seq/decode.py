"""Decoding inside the graph: one ONNX Loop that feeds each step's own output back.

Greedy (`greedy(max_len)`), in Python:

    y, S, done, n, score, out = <go>, start state, False, 0, 0, []
    for t in range(max_len):                       # stops early once every row is done
        logp = log_softmax(project(step(embed(y), S)))
        y = argmax(logp); y = <pad> where done
        score += logp[y] where not done;  n += not done
        done |= (y == <eos>); out.append(y)
        if all(done): break

Beam (`beam(width=K, max_len, alpha)`), TF1 BeamSearchDecoder / GNMT: each row keeps K
hypotheses with their summed log-probabilities (beam 0 starts at 0, the others at -1e9 so
the first step expands one). Every step extends each hypothesis by every token; a finished
hypothesis may only extend by `<eos>` at no cost and without growing. The K best
extensions by the length-normalized score

    s / lp(n),   lp(n) = ((5 + n) / 6)^alpha      (alpha = 0: the plain sum)

survive (ties: the lower beam·|V| + token index first). At the end the hypothesis with the
best normalized score is returned. Outputs (both): tokens [B, steps] (`<pad>` after
`<eos>`), lengths [B] (counting the `<eos>`; `max_len` if none came), scores [B] (the
returned sequence's summed log-probability, `<eos>` included), alignments [B, steps, S]
(zero after the end).
"""
from __future__ import annotations

import numpy as np

from ..builder import Builder, Tensor
from ..vocab import EOS, GO, PAD

NEG = -1e9


def _i64(b: Builder, v) -> Tensor:
    return b.const(np.array(v, np.int64), "i64")


def _not(b: Builder, x: Tensor) -> Tensor:
    return b.op("Not", [x], x.shape, dtype="bool")


def _or(b: Builder, x: Tensor, y: Tensor) -> Tensor:
    return b.op("Or", [x, y], x.shape, dtype="bool")


def _any(b: Builder, x: Tensor) -> Tensor:
    """A bool scalar: some element of x is true (false for an empty x)."""
    n = b.reduce_sum(b.cast(x, "i64"), list(range(x.rank)))
    return b.greater(n, _i64(b, 0))


def _filled(b: Builder, like: Tensor, lead: int, tail: tuple, value, dtype: str, shape) -> Tensor:
    """A tensor [like.shape[:lead], *tail] filled with value."""
    dims = b.concat([b.shape_of(like, 0, lead), _i64(b, list(tail))], axis=0) if tail else b.shape_of(like, 0, lead)
    return b.expand(b.const(np.full((1,) * (lead + len(tail)), value), dtype), dims, shape)


def loop(b: Builder, trips: Tensor, cond: Tensor, carried: list[Tensor], body, out_shapes: list) -> list[Tensor]:
    """ONNX Loop: body(sub, iteration, carried in the body) -> (cond, next carried)."""
    sub = b.subgraph()
    it = sub.input(sub.fresh("iter"), "i64", ())
    sub.input(sub.fresh("cond_in"), "bool", ())
    ins = [sub.input(sub.fresh(t.name.rsplit("_", 1)[0] + "_in"), t.dtype, s) for t, s in zip(carried, out_shapes)]
    c_out, outs = body(sub, it, ins)
    seen, final = {v.name for v in sub.g.inputs}, []
    for t in [c_out] + list(outs):       # body outputs: distinct, never a body input
        if t.name in seen or t.b is not sub:
            t = sub.identity(Tensor(sub, t.v))
        seen.add(t.name)
        final.append(t)
    sub.g.outputs = [t.v for t in final]
    types = [(t.dtype, s) for t, s in zip(carried, out_shapes)]
    return b.node("Loop", [trips, cond] + carried, types, {}, sub.g)


def _step(s2s, ops: Builder, P: dict, enc_vals: dict, tokens: Tensor, states: list[Tensor]):
    """Embed the previous tokens, run the decoder step: (log-probabilities, next states, align)."""
    x = ops.gather(s2s.embed_table("target"), tokens, axis=0)
    y, nxt, align = s2s.dec.step(ops, P | enc_vals, x, states)
    return ops.log_softmax(s2s.project(ops, P, y)), nxt, align


def greedy(s2s, enc, decode, want: int):
    b, blk = s2s.b, s2s.blk
    P = s2s.params()
    B, S = enc.memory.shape[0], enc.memory.shape[1]
    batch_like = enc.src_len                                                    # [B]
    n_state = len(enc.initial)
    go = _filled(b, batch_like, 1, (), GO, "i64", (B,))
    done0 = b.cast(_filled(b, batch_like, 1, (), 0, "i64", (B,)), "bool")
    len0 = _filled(b, batch_like, 1, (), 0, "i64", (B,))
    score0 = _filled(b, batch_like, 1, (), 0.0, b.fdtype, (B,))
    hist0 = _filled(b, batch_like, 1, (0,), 0, "i64", (B, 0))
    carried = list(enc.initial) + [go, done0, len0, score0, hist0]
    shapes = [t.shape for t in enc.initial] + [(B,), (B,), (B,), (B,), (B, "decode_time")]
    with_align = want >= 4 and blk.attention is not None
    if with_align:
        carried.append(_empty_align(b, enc))
        shapes.append((B, "decode_time", S))
    enc_vals = {"memory": enc.memory, "keys": enc.keys, "mask": enc.mask} if blk.attention else {}

    def body(sub, it, ins):
        states, (prev, done, n, score, hist) = ins[:n_state], ins[n_state:n_state + 5]
        logp, nxt, align = _step(s2s, sub, P, enc_vals, prev, states)
        tok = sub.argmax(logp, 1)      # a positive axis: ORT 1.31 mis-shapes ArgMax(axis=-1) of an empty tensor
        tok = sub.where(done, _i64(sub, PAD), tok)
        lp = sub.squeeze(sub.op("GatherElements", [logp, sub.unsqueeze(tok, [1])], (B, 1),
                                attrs={"axis": 1}), [1])
        live = _not(sub, done)
        score = score + sub.where(done, sub.const(0.0), lp)
        n = n + sub.cast(live, "i64")
        done2 = _or(sub, done, sub.equal(tok, _i64(sub, EOS)))
        hist = sub.op("Concat", [hist, sub.unsqueeze(tok, [1])], (B, None), attrs={"axis": 1})
        outs = list(nxt) + [tok, done2, n, score, hist]
        if with_align:
            a = sub.where(sub.unsqueeze(live, [1]), align, sub.const(0.0))
            outs.append(sub.op("Concat", [ins[-1], sub.unsqueeze(a, [1])], (B, None, S), attrs={"axis": 1}))
        return _any(sub, _not(sub, done2)), outs

    trips = _i64(b, decode.max_len)
    results = loop(b, trips, _any(b, _not(b, done0)), carried, body, shapes)
    _, _, n, score, hist = results[n_state:n_state + 5]
    outs = [hist, n, score]
    if want >= 4:
        outs.append(results[-1] if with_align else _zero_align(b, hist, enc))
    return tuple(outs[:want])


def _empty_align(b: Builder, enc) -> Tensor:
    """[B, 0, S] zeros."""
    B, S = enc.memory.shape[0], enc.memory.shape[1]
    dims = b.concat([b.shape_of(enc.memory, 0, 1), _i64(b, [0]), b.shape_of(enc.memory, 1, 2)], axis=0)
    return b.expand(b.const(np.zeros((1, 1, 1)), b.fdtype), dims, (B, 0, S))


def _zero_align(b: Builder, hist: Tensor, enc) -> Tensor:
    """Alignments without attention: zeros [B, steps, S]."""
    B, S = enc.memory.shape[0], enc.memory.shape[1]
    dims = b.concat([b.shape_of(hist), b.shape_of(enc.memory, 1, 2)], axis=0)
    return b.expand(b.const(np.zeros((1, 1, 1)), b.fdtype), dims, (B, "decode_time", S))


# ----- beam search -----
def _reshape(b: Builder, t: Tensor, parts: list[Tensor], shape) -> Tensor:
    """Reshape to the concatenated sizes; a 0 means 0 (allowzero), never "copy that dim"."""
    return b.op("Reshape", [t, b.concat(parts, axis=0) if len(parts) > 1 else parts[0]], shape,
                attrs={"allowzero": 1})


def _tile(b: Builder, t: Tensor, K: int) -> Tensor:
    """[B, ...] -> [B*K, ...]: each row repeated K times, beams of a row adjacent."""
    rest = list(t.shape[1:])
    dims = [b.shape_of(t, 0, 1), _i64(b, [K])] + ([b.shape_of(t, 1)] if rest else [])
    e = b.expand(b.unsqueeze(t, [1]), b.concat(dims, axis=0), (t.shape[0], K, *rest))
    return _flat_rows(b, e, K)


def _flat_rows(b: Builder, t: Tensor, K: int) -> Tensor:
    """[B, K, ...] -> [B*K, ...] (sizes spelled out: -1 is ambiguous for an empty tensor)."""
    bk = b.mul(b.shape_of(t, 0, 1), b.shape_of(t, 1, 2))
    return _reshape(b, t, [bk] + ([b.shape_of(t, 2)] if t.rank > 2 else []), (None, *t.shape[2:]))


def _unflat(b: Builder, t: Tensor, K: int, B) -> Tensor:
    """[B*K, ...] -> [B, K, ...]."""
    rows = b.op("Div", [b.shape_of(t, 0, 1), _i64(b, [K])], (1,))
    return _reshape(b, t, [rows, _i64(b, [K])] + ([b.shape_of(t, 1)] if t.rank > 1 else []), (B, K, *t.shape[1:]))


def beam_search(s2s, enc, decode, want: int):
    b, blk = s2s.b, s2s.blk
    K, V = decode.width, blk.target.vocab.size
    P = s2s.params()
    B, S = enc.memory.shape[0], enc.memory.shape[1]
    n_state = len(enc.initial)
    enc_vals = {}
    if blk.attention:
        enc_vals = {"memory": _tile(b, enc.memory, K), "keys": _tile(b, enc.keys, K),
                    "mask": _tile(b, enc.mask, K)}
    states0 = [_tile(b, s, K) for s in enc.initial]
    like = enc.src_len
    go = _tile(b, _filled(b, like, 1, (), GO, "i64", (B,)), K)                     # [B*K]
    start = np.full((1, K), NEG)
    start[0, 0] = 0.0
    score0 = b.expand(b.const(start), b.concat([b.shape_of(like, 0, 1), _i64(b, [K])], axis=0), (B, K))
    done0 = b.cast(_filled(b, like, 1, (K,), 0, "i64", (B, K)), "bool")
    len0 = _filled(b, like, 1, (K,), 0, "i64", (B, K))
    hist0 = _filled(b, like, 1, (K, 0), 0, "i64", (B, K, 0))
    carried = states0 + [go, score0, done0, len0, hist0]
    shapes = [(None, s.shape[1]) for s in states0] + [(None,), (B, K), (B, K), (B, K), (B, K, "decode_time")]
    with_align = want >= 4 and blk.attention is not None
    if with_align:
        dims = b.concat([b.shape_of(like, 0, 1), _i64(b, [K, 0]), b.shape_of(enc.memory, 1, 2)], axis=0)
        carried.append(b.expand(b.const(np.zeros((1, 1, 1, 1))), dims, (B, K, 0, S)))
        shapes.append((B, K, "decode_time", S))
    eos_row = np.full((V,), NEG)
    eos_row[EOS] = 0.0
    alpha = decode.alpha

    def penalty(ops, n):
        if alpha == 0:
            return None
        return ops.pow(ops.div(ops.add(ops.cast(n, ops.fdtype), ops.const(5.0)), ops.const(6.0)), ops.const(alpha))

    def body(sub, it, ins):
        states = ins[:n_state]
        prev, score, done, n, hist = ins[n_state:n_state + 5]
        logp, nxt, align = _step(s2s, sub, P, enc_vals, prev, states)            # [B*K, V]
        logp = _unflat(sub, logp, K, B)                                           # [B, K, V]
        logp = sub.where(sub.unsqueeze(done, [2]), sub.const(eos_row), logp)
        total = sub.unsqueeze(score, [2]) + logp                                  # [B, K, V]
        grown = n + sub.cast(_not(sub, done), "i64")                              # [B, K]
        lp = penalty(sub, grown)
        norm = total if lp is None else sub.div(total, sub.unsqueeze(lp, [2]))
        flat = sub.reshape_to(norm, [0, -1], (B, K * V))
        _, idx = sub.node("TopK", [flat, _i64(sub, [K])], [(sub.fdtype, (B, K)), ("i64", (B, K))],
                          {"axis": -1, "largest": 1, "sorted": 1})
        parent = sub.op("Div", [idx, _i64(sub, V)], (B, K))
        tok = sub.op("Mod", [idx, _i64(sub, V)], (B, K), attrs={"fmod": 0})
        new_score = sub.op("GatherElements", [sub.reshape_to(total, [0, -1], (B, K * V)), idx], (B, K),
                           attrs={"axis": 1})
        pick = lambda t: sub.op("GatherElements", [t, parent], (B, K), attrs={"axis": 1})  # noqa: E731
        done_p, n_p = pick(done), pick(n)
        n2 = n_p + sub.cast(_not(sub, done_p), "i64")
        done2 = _or(sub, done_p, sub.equal(tok, _i64(sub, EOS)))
        tok_out = sub.where(done_p, _i64(sub, PAD), tok)
        # rows of the flat [B*K] tensors that each new beam continues
        base = sub.mul(sub.range_(_i64(sub, 0), sub.squeeze(sub.shape_of(score, 0, 1), [0]), _i64(sub, 1), B),
                       _i64(sub, K))
        rows = sub.reshape_to(sub.add(parent, sub.unsqueeze(base, [1])), [-1], (None,))
        new_states = [sub.gather(s, rows, axis=0) for s in nxt]
        hist_p = _unflat(sub, sub.gather(_flat_rows(sub, hist, K), rows, axis=0), K, B)
        hist2 = sub.op("Concat", [hist_p, sub.unsqueeze(tok_out, [2])], (B, K, None), attrs={"axis": 2})
        outs = new_states + [sub.reshape_to(tok, [-1], (None,)), new_score, done2, n2, hist2]
        if with_align:
            a = _unflat(sub, sub.gather(align, rows, axis=0), K, B)                 # [B, K, S]
            a = sub.where(sub.unsqueeze(_not(sub, done_p), [2]), a, sub.const(0.0))
            al_p = _unflat(sub, sub.gather(_flat_rows(sub, ins[-1], K), rows, axis=0), K, B)
            outs.append(sub.op("Concat", [al_p, sub.unsqueeze(a, [2])], (B, K, None, S), attrs={"axis": 2}))
        return _any(sub, _not(sub, done2)), outs

    trips = _i64(b, decode.max_len)
    results = loop(b, trips, _any(b, _not(b, done0)), carried, body, shapes)
    _, score, _, n, hist = results[n_state:n_state + 5]
    lp = penalty(b, n)
    norm = score if lp is None else b.div(score, lp)
    best = b.argmax(norm, 1)                                                   # [B]
    base = b.mul(b.range_(_i64(b, 0), b.squeeze(b.shape_of(score, 0, 1), [0]), _i64(b, 1), B), _i64(b, K))
    rows = b.add(base, best)
    tokens = b.gather(_flat_rows(b, hist, K), rows, axis=0)
    outs = [tokens, b.gather(b.reshape_to(n, [-1], (None,)), rows, axis=0),
            b.gather(b.reshape_to(score, [-1], (None,)), rows, axis=0)]
    if want >= 4:
        outs.append(b.gather(_flat_rows(b, results[-1], K), rows, axis=0) if with_align
                    else _zero_align(b, tokens, enc))
    return tuple(outs[:want])

