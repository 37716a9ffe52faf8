"""A plain numpy encoder-decoder, written from the published equations, independent of
rnnc's lowering: the oracle of tests/test_seq2seq_reference.py.

Only the parameter names are rnnc's (that is the interface): `NAME.source.embed`,
`NAME.encoder.<layer>.W|U|b` (TF1 LSTMCell, gates i, j, f, o, forget_bias 1.0),
`NAME.decoder.<layer>.*`, `NAME.attention.*`, `NAME.output.W|b`.

    encoder   each row separately: its valid ids, reversed if asked, through the layers
    decoder   x_t = [E_tgt[y_{t-1}]; att_{t-1}]; layers; attention (Luong general / dot,
              Bahdanau additive) over the row's valid memory; att_t = [h; ctx]·Wc;
              logits = att_t·W + b
    greedy    argmax until <eos> (per row), max_len steps at most
    beam      K hypotheses per row, ranked by score / ((5 + len) / 6)^alpha; finished ones
              stay; the best normalized one is returned
"""
from __future__ import annotations

import numpy as np

PAD, GO, EOS = 0, 1, 2


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm(p, x, c, h, forget_bias=1.0):
    z = x @ p["W"] + h @ p["U"] + p["b"]
    i, j, f, o = np.split(z, 4, axis=-1)
    c2 = sigmoid(f + forget_bias) * c + sigmoid(i) * np.tanh(j)
    return sigmoid(o) * np.tanh(c2), c2


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class Seq2Seq:
    def __init__(self, w: dict, name: str, layers: int, attention: str | None, reverse: bool):
        self.w = {k: np.asarray(v, np.float64) for k, v in w.items()}
        self.name, self.layers, self.attention, self.reverse = name, layers, attention, reverse

    def p(self, part: str, layer: int | None = None) -> dict:
        pre = f"{self.name}.{part}" + (f".{layer}" if layer is not None and self.layers > 1 else "")
        return {k: self.w[f"{pre}.{k}"] for k in ("W", "U", "b")}

    # ----- encoder -----
    def encode(self, src, src_len):
        B, S = src.shape
        E = self.w[f"{self.name}.source.embed"]
        H = self.w[f"{self.name}.encoder{'.0' if self.layers > 1 else ''}.U"].shape[0]
        memory = np.zeros((B, S, H))
        states = []
        for b in range(B):
            n = int(src_len[b])
            ids = src[b, :n][::-1] if self.reverse else src[b, :n]
            st = [(np.zeros(H), np.zeros(H)) for _ in range(self.layers)]
            outs = []
            for t in range(n):
                x = E[ids[t]]
                for k in range(self.layers):
                    h, c = lstm(self.p("encoder", k), x, st[k][0], st[k][1])
                    st[k] = (c, h)
                    x = h
                outs.append(x)
            if n:
                memory[b, :n] = np.array(outs[::-1] if self.reverse else outs)
            states.append(st)
        return memory, states

    # ----- one decoder step, batched -----
    def step(self, y_prev, st, att, memory, src_len):
        """st: list per layer of (c [B, H], h [B, H]); returns logits, new st, att, align."""
        Et = self.w[f"{self.name}.target.embed"]
        x = Et[y_prev]
        if self.attention:
            x = np.concatenate([x, att], axis=-1)
        new = []
        for k in range(self.layers):
            h, c = lstm(self.p("decoder", k), x, st[k][0], st[k][1])
            new.append((c, h))
            x = h
        q, align = x, None
        if self.attention:
            a = f"{self.name}.attention"
            if self.attention == "luong":
                score = np.einsum("bsh,bh->bs", memory @ self.w[f"{a}.W"], q)
            elif self.attention == "dot":
                score = np.einsum("bsh,bh->bs", memory, q)
            else:
                keys = memory @ self.w[f"{a}.W_memory"]
                score = np.tanh(keys + (q @ self.w[f"{a}.W_query"])[:, None, :]) @ self.w[f"{a}.v"]
            valid = np.arange(memory.shape[1])[None, :] < np.asarray(src_len)[:, None]
            score = np.where(valid, score, -1e9)
            align = np.exp(score - score.max(axis=1, keepdims=True))
            align /= align.sum(axis=1, keepdims=True)
            ctx = np.einsum("bs,bsh->bh", align, memory)
            q = np.concatenate([q, ctx], axis=-1) @ self.w[f"{a}.Wc"]
            att = q
        logits = q @ self.w[f"{self.name}.output.W"] + self.w[f"{self.name}.output.b"]
        return logits, new, att, align

    def start(self, src, src_len):
        memory, states = self.encode(src, src_len)
        st = [(np.stack([s[k][0] for s in states]), np.stack([s[k][1] for s in states])) for k in range(self.layers)]
        A = self.w[f"{self.name}.output.W"].shape[0]
        return memory, st, np.zeros((len(src), A))

    # ----- teacher forcing -----
    def teacher_forced(self, src, src_len, tgt, alignments=False):
        memory, st, att = self.start(src, src_len)
        prev = np.concatenate([np.full((len(tgt), 1), GO), tgt[:, :-1]], axis=1)
        out = []
        for t in range(tgt.shape[1]):
            logits, st, att, align = self.step(prev[:, t], st, att, memory, src_len)
            out.append(align if alignments else logits)
        return np.stack(out, axis=1)

    # ----- greedy -----
    def greedy(self, src, src_len, max_len):
        memory, st, att = self.start(src, src_len)
        B = len(src)
        y = np.full(B, GO)
        done = np.zeros(B, bool)
        n, score, toks, aligns = np.zeros(B, int), np.zeros(B), [], []
        for _ in range(max_len):
            if done.all():
                break
            logits, st, att, align = self.step(y, st, att, memory, src_len)
            lp = log_softmax(logits)
            y = np.where(done, PAD, lp.argmax(axis=1))
            score += np.where(done, 0.0, lp[np.arange(B), y])
            n += ~done
            if align is not None:
                aligns.append(np.where(done[:, None], 0.0, align))
            done |= y == EOS
            toks.append(y)
        return np.stack(toks, 1), n, score, (np.stack(aligns, 1) if aligns else None)

    # ----- beam search, one row at a time -----
    def beam(self, src, src_len, width, max_len, alpha):
        memory, st0, att0 = self.start(src, src_len)
        lp = (lambda n: ((5.0 + n) / 6.0) ** alpha) if alpha else (lambda n: 1.0)
        results = []
        for b in range(len(src)):
            mem, sl = memory[b:b + 1], src_len[b:b + 1]
            hyps = [dict(tokens=[], score=0.0, n=0, done=False, st=[(c[b:b + 1], h[b:b + 1]) for c, h in st0],
                         att=att0[b:b + 1], prev=GO)]
            for _ in range(max_len):
                if all(h["done"] for h in hyps):
                    break
                cands = []
                for k, h in enumerate(hyps):
                    if h["done"]:
                        cands.append((-h["score"] / lp(h["n"]), k * 10**6 + EOS, k, EOS, h["score"], h["n"], None))
                        continue
                    logits, st, att, _ = self.step(np.array([h["prev"]]), h["st"], h["att"], mem, sl)
                    logp = log_softmax(logits)[0]
                    for v in range(len(logp)):
                        total = h["score"] + logp[v]
                        cands.append((-total / lp(h["n"] + 1), k * 10**6 + v, k, v, total, h["n"] + 1, (st, att)))
                cands.sort(key=lambda c: (c[0], c[1]))
                new = []
                for _, _, k, v, total, n, nxt in cands[:width]:
                    h = hyps[k]
                    new.append(dict(tokens=h["tokens"] + [PAD if h["done"] else v], score=total, n=n,
                                    done=h["done"] or v == EOS, st=nxt[0] if nxt else h["st"],
                                    att=nxt[1] if nxt else h["att"], prev=v))
                hyps = new
            best = max(range(len(hyps)), key=lambda k: (hyps[k]["score"] / lp(hyps[k]["n"]), -k))
            results.append(hyps[best])
        return results
