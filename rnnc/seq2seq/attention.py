"""Attention over the encoder's outputs (the memory), as TF1's AttentionWrapper computes it.

Memory m [B, S, He] (the encoder outputs, in source order), its mask [B, S] (s < src_len),
query q [B, Hd] (the decoder's output at this step). Parameters `NAME.attention.*`:

    luong (general):   keys = m·W                  W [He, Hd]       score_s = q · keys_s
    luong(score=dot):  keys = m                    (He = Hd)        score_s = q · m_s
    bahdanau:          keys = m·W_memory           W_memory [He, Hd], W_query [Hd, Hd], v [Hd]
                                                   score_s = v · tanh(keys_s + q·W_query)
    masked:            score_s = -1e9 where s >= src_len
    alignments         a = softmax(score)                          [B, S]
    context            c = Σ_s a_s m_s                             [B, He]
    attention vector   att = [q; c]·Wc                             Wc [Hd + He, Hd], no bias

The attention vector is linear, without the tanh of Luong's paper: TF1's attention layer is
`Dense(attention_layer_size, use_bias=False)` (SEMANTICS.md b8); its size is the decoder's
output size. Keys are computed once per source, outside any loop.
"""
from __future__ import annotations

from ..cells import ParamSpec
from ..ir import Seq2SeqBlock

NEG = -1e9


def attention_params(blk: Seq2SeqBlock) -> dict[str, ParamSpec]:
    att = blk.attention
    if att is None:
        return {}
    he, hd = blk.encoder.output_size, blk.decoder.output_size
    p = f"{blk.name}.attention"
    out: dict[str, ParamSpec] = {}
    if att.kind == "luong" and att.score == "general":
        out[f"{p}.W"] = ParamSpec((he, hd), "glorot")
    elif att.kind == "bahdanau":
        out[f"{p}.W_memory"] = ParamSpec((he, hd), "glorot")
        out[f"{p}.W_query"] = ParamSpec((hd, hd), "glorot")
        out[f"{p}.v"] = ParamSpec((hd,), "glorot")
    out[f"{p}.Wc"] = ParamSpec((hd + he, hd), "glorot")
    return out


def keys(ops, blk: Seq2SeqBlock, P: dict, memory):
    """What the score compares the query with, [B, S, Hd]: computed once per source."""
    att, p = blk.attention, f"{blk.name}.attention"
    if att.kind == "luong" and att.score == "dot":
        return memory
    return memory @ P[f"{p}.W" if att.kind == "luong" else f"{p}.W_memory"]


def attend(ops, blk: Seq2SeqBlock, P: dict, query, keys_, memory, mask):
    """(attention vector [B, Hd], alignments [B, S]) for one decoder step."""
    att, p = blk.attention, f"{blk.name}.attention"
    if att.kind == "luong":
        score = ops.squeeze(keys_ @ ops.unsqueeze(query, [2]), [2])            # [B, S]
    else:
        q = ops.unsqueeze(query @ P[f"{p}.W_query"], [1])                      # [B, 1, Hd]
        score = ops.reduce_sum(ops.tanh(keys_ + q) * P[f"{p}.v"], [2])        # [B, S]
    score = ops.where(mask, score, NEG)
    align = ops.softmax(score)
    context = ops.squeeze(ops.unsqueeze(align, [1]) @ memory, [1])            # [B, He]
    vec = ops.concat([query, context], axis=-1) @ P[f"{p}.Wc"]
    return vec, align
