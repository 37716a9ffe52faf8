"""seq2seq numerics against an independent numpy reference (tests/seq2seq_reference.py):
teacher-forced logits, one decoder step (decoder_step.onnx), in-graph greedy decoding (also
against a Python loop over encoder.onnx + decoder_step.onnx), beam search (tokens and
scores, on weights where beam and greedy disagree), width 1 = greedy, empty inputs.
"""
from __future__ import annotations

import functools

import numpy as np
import onnxruntime as ort
import pytest

from rnnc.api import build_infer, check
from rnnc.ir import Decode
from rnnc.seq2seq.export import build_decoder_step, build_encoder, build_infer_decoding
from rnnc.seq2seq.meta import blocks

try:
    from tests import seq2seq_reference as R
except ImportError:  # tests/ itself on sys.path
    import seq2seq_reference as R

MAX_LEN = 7
ATTN = {"luong": "attention luong", "dot": "attention luong(score=dot)", "bahdanau": "attention bahdanau",
        None: ""}


def spec(attention, layers=2, reverse=True, decode="greedy(max_len=7)") -> str:
    cell = "stack(lstm(4), lstm(4))" if layers == 2 else "lstm(4)"
    return f"""model tiny
vocab sv = chars("abcdefgh")
vocab tv = chars("xyz")
input src: i64[batch, src_time]
input src_len: i64[batch]
input tgt: i64[batch, tgt_time]
seq2seq tr {{
  source embed(sv, 3){' reversed' if reverse else ''}
  encoder {cell}
  target embed(tv, 3)
  decoder {cell}
  {ATTN[attention]}
  decode {decode}
}}
logits = tr(src, src_len, tgt)
output logits
{'output att = tr.alignments(src, src_len, tgt)' if attention else ''}
output tokens, token_len, scores, align = tr.decode(src, src_len)
"""


@functools.lru_cache(maxsize=None)
def setup(attention, layers=2, reverse=True, scale=0.8, seed=0):
    model = check("tiny.rnn", text=spec(attention, layers, reverse))
    shapes = build_infer(model).params
    rng = np.random.default_rng(seed)
    w = {k: rng.normal(scale=scale, size=v.shape).astype(np.float32) for k, v in shapes.items()}
    ref = R.Seq2Seq(w, "tr", layers, attention, reverse)
    return model, w, ref


def session(proto):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run(proto, feeds):
    s = session(proto)
    need = {i.name for i in s.get_inputs()}
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {k: v for k, v in feeds.items() if k in need})))


def data(seed=1, B=6, S=6, T=4):
    rng = np.random.default_rng(seed)
    src_len = rng.integers(1, S + 1, size=B)
    src_len[0] = S
    src = rng.integers(4, 12, size=(B, S))
    for b in range(B):
        src[b, src_len[b]:] = 0
    tgt = rng.integers(2, 7, size=(B, T))
    return {"src": src, "src_len": src_len, "tgt": tgt}


@pytest.mark.parametrize("attention", ["luong", "dot", "bahdanau", None])
def test_teacher_forced_logits_match_reference(attention):
    model, w, ref = setup(attention)
    d = data()
    got = run(build_infer(model, weights=w).onnx, d)["logits"]
    want = ref.teacher_forced(d["src"], d["src_len"], d["tgt"])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    if attention:       # translate.alignments: the teacher-forced attention weights
        got = run(build_infer(model, weights=w).onnx, d)["att"]
        np.testing.assert_allclose(got, ref.teacher_forced(d["src"], d["src_len"], d["tgt"], alignments=True),
                                   rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("attention", ["luong", "bahdanau", None])
def test_decoder_step_matches_reference(attention):
    model, w, ref = setup(attention)
    blk = blocks(model)[0]
    d = data(seed=2)
    B = len(d["src"])
    rng = np.random.default_rng(3)
    memory = rng.normal(size=(B, 6, 4)).astype(np.float32)
    st = [(rng.normal(size=(B, 4)).astype(np.float32), rng.normal(size=(B, 4)).astype(np.float32)) for _ in range(2)]
    att = rng.normal(size=(B, 4)).astype(np.float32)
    token = rng.integers(0, 7, size=B)
    feeds = {"token": token, "memory": memory, "src_len": d["src_len"], "state.attention": att}
    for k, (c, h) in enumerate(st):
        feeds[f"state.{k}.c"], feeds[f"state.{k}.h"] = c, h
    got = run(build_decoder_step(model, blk, weights=w), feeds)
    logits, new, att2, align = ref.step(token, st, att, memory.astype(np.float64), d["src_len"])
    np.testing.assert_allclose(got["logits"], logits, rtol=1e-4, atol=1e-5)
    for k, (c, h) in enumerate(new):
        np.testing.assert_allclose(got[f"state.{k}.c.next"], c, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[f"state.{k}.h.next"], h, rtol=1e-4, atol=1e-5)
    if attention:
        np.testing.assert_allclose(got["state.attention.next"], att2, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["alignment"], align, rtol=1e-4, atol=1e-6)
        assert np.all(got["alignment"][np.arange(6)[None, :] >= d["src_len"][:, None]] < 1e-6)   # masked


def _python_greedy(model, w, feeds):
    """Greedy decoding by hand, driving encoder.onnx and decoder_step.onnx."""
    blk = blocks(model)[0]
    enc = run(build_encoder(model, blk, weights=w), feeds)
    step = session(build_decoder_step(model, blk, weights=w))
    names = [o.name for o in step.get_outputs()]
    state = {k: v for k, v in enc.items() if k.startswith("state.")}
    B = len(feeds["src"])
    tok, done, toks = np.full(B, 1), np.zeros(B, bool), []
    for _ in range(MAX_LEN):
        out = dict(zip(names, step.run(None, {"token": tok, "memory": enc["memory"], "src_len": feeds["src_len"],
                                              **state})))
        tok = np.where(done, 0, out["logits"].argmax(axis=1))
        done |= tok == 2
        toks.append(tok)
        state = {k[:-len(".next")]: v for k, v in out.items() if k.endswith(".next")}
        if done.all():
            break
    return np.stack(toks, axis=1)


@pytest.mark.parametrize("attention", ["luong", "bahdanau", None])
def test_greedy_in_graph_matches_reference_and_step_loop(attention):
    model, w, ref = setup(attention)
    d = data(seed=4, B=8)
    got = run(build_infer(model, weights=w).onnx, d)
    toks, n, score, align = ref.greedy(d["src"], d["src_len"], MAX_LEN)
    np.testing.assert_array_equal(got["tokens"], toks)
    np.testing.assert_array_equal(got["token_len"], n)
    np.testing.assert_allclose(got["scores"], score, rtol=1e-4, atol=1e-4)
    if attention:
        np.testing.assert_allclose(got["align"], align, rtol=1e-4, atol=1e-5)
    else:
        assert got["align"].shape == toks.shape + (d["src"].shape[1],) and not got["align"].any()
    np.testing.assert_array_equal(_python_greedy(model, w, d), got["tokens"])
    # tokens after each row's end are <pad>
    for b in range(len(n)):
        assert np.all(got["tokens"][b, n[b]:] == 0)
        assert n[b] == MAX_LEN or got["tokens"][b, n[b] - 1] == 2


def _beam(model, w, width, alpha):
    return build_infer_decoding(model, Decode("beam", MAX_LEN, width, alpha), weights=w)


@pytest.mark.parametrize("alpha", [0.6, 0.0])
@pytest.mark.parametrize("attention", ["luong", "bahdanau"])
def test_beam_matches_reference(attention, alpha):
    model, w, ref = setup(attention)
    d = data(seed=5, B=8)
    got = run(_beam(model, w, 4, alpha), d)
    want = ref.beam(d["src"], d["src_len"], 4, MAX_LEN, alpha)
    greedy = run(build_infer(model, weights=w).onnx, d)
    differ = 0
    for b, h in enumerate(want):
        n = h["n"]
        assert got["token_len"][b] == n
        np.testing.assert_array_equal(got["tokens"][b, :len(h["tokens"])], h["tokens"])
        assert np.all(got["tokens"][b, len(h["tokens"]):] == 0)
        np.testing.assert_allclose(got["scores"][b], h["score"], rtol=1e-4, atol=1e-4)
        g = greedy["tokens"][b, :greedy["token_len"][b]]
        differ += not np.array_equal(g, got["tokens"][b, :n])
    assert differ, "these weights should make beam search and greedy decoding disagree somewhere"
    # alignments: each decoded step attends over the valid source only
    a = got["align"]
    for b in range(len(a)):
        n = got["token_len"][b]
        np.testing.assert_allclose(a[b, :n].sum(axis=-1), 1.0, rtol=1e-5)
        assert not a[b, n:].any() and not a[b, :, d["src_len"][b]:].any()


def test_beam_width_1_equals_greedy():
    model, w, _ = setup("luong")
    d = data(seed=6, B=8)
    one = run(_beam(model, w, 1, 0.6), d)
    greedy = run(build_infer(model, weights=w).onnx, d)
    for k in ("tokens", "token_len"):
        np.testing.assert_array_equal(one[k], greedy[k])
    np.testing.assert_allclose(one["scores"], greedy["scores"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(one["align"], greedy["align"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["greedy", "beam"])
def test_decoding_empty_batch_and_empty_source(kind):
    model, w, ref = setup("luong")
    proto = build_infer(model, weights=w).onnx if kind == "greedy" else _beam(model, w, 3, 0.6)
    d = data(seed=8, B=3)
    d["src_len"][1] = 0
    d["src"][1] = 0
    got = run(proto, d)
    assert got["tokens"].shape[0] == 3 and np.all(got["token_len"] >= 1)
    if kind == "greedy":
        np.testing.assert_array_equal(got["tokens"], ref.greedy(d["src"], d["src_len"], MAX_LEN)[0])
    empty = {"src": np.zeros((0, 5), np.int64), "src_len": np.zeros(0, np.int64), "tgt": np.zeros((0, 2), np.int64)}
    got = run(proto, empty)
    assert got["tokens"].shape[0] == 0 and got["token_len"].shape == (0,)


def test_single_layer_without_reversal_matches_reference():
    model, w, ref = setup("luong", layers=1, reverse=False)
    d = data(seed=9)
    got = run(build_infer(model, weights=w).onnx, d)
    np.testing.assert_allclose(got["logits"], ref.teacher_forced(d["src"], d["src_len"], d["tgt"]), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_array_equal(got["tokens"], ref.greedy(d["src"], d["src_len"], MAX_LEN)[0])
