"""W5: an encoder–decoder (seq2seq, LANGUAGE.md §5) with teacher forcing, for bench/bench.py.

    B=64, source and target T=20, one vocabulary of 1000 ids (4 reserved + 996 words),
    embed 128, lstm(256) encoder and decoder (the decoder starts from the encoder's final
    (c, h)), no attention, output layer 256 -> 1000, cross-entropy over every target step,
    adam.

The forward compared is rnnc's *eval model* (build_eval: teacher-forced logits and the
loss; it outputs only the loss), PyTorch eager computing the same two under no_grad, and
onnxruntime on the torch-exported module (logits, loss), asked for the loss as rnnc's is.
The training step is rnnc's train model (build_train, as bench.rnnc_train_step runs it)
against loss.backward() + Adam. The bench keys keep the other workloads' names ("rnnc
auto fwd" is the eval model here).

Both sides do the same work: the decoder reads <go> followed by tgt[:, :-1] (as
rnnc/seq2seq/lower.py does), every length is the full 20, the same matmuls (per step per
LSTM x·W [64×128·128×1024] + h·U [64×256·256×1024]; the output layer [1280×256·256×1000]),
≈ 1.3 G multiply-adds per forward on either side. Differences, all elementwise and small:
rnnc's encoder runs with lengths=src_len (a per-step mask that keeps state past a length;
no effect here, every length is 20), the loss is length-weighted (Σ mask·nll / Σ mask, the
spec's `lengths=tgt_len`; equal to torch's plain mean with full lengths); torch's LSTM has two bias vectors (b_ih,
b_hh) where rnnc has one; rnnc's LSTM adds forget_bias (1.0, TF1's default) to the f gate.
No `reversed` on the source (torch's side would need a flip; with full lengths it is the
same work either way). With torch's weights mapped into rnnc (gate order i,j,f,o; b_ih+b_hh
with forget_bias taken off) the two give the same loss and gradients to ~1e-6 (checked once,
not part of the bench). Both read the label's log-probability by lookup and scatter-add an
embedding's gradient into its rows.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

GO, EOS, RESERVED = 1, 2, 4          # rnnc/vocab.py: <pad>=0, <go>=1, <eos>=2, <unk>=3


def spec_text(w: dict) -> str:
    T = w["T"]
    return f"""model w5
vocab v = words("words.txt")         # {w['vocab'] - RESERVED} words + the 4 reserved ids = {w['vocab']}

input src: i64[batch, {T}]
input src_len: i64[batch]
input tgt: i64[batch, {T}]
input tgt_len: i64[batch]

seq2seq s2s {{
  source   embed(v, {w['embed']})
  encoder  lstm({w['H']})
  target   embed(v, {w['embed']})
  decoder  lstm({w['H']})
}}

logits = s2s(src, src_len, tgt)      # teacher forcing: the decoder reads <go>, tgt[:, :-1]
loss = softmax_cross_entropy(logits, tgt, lengths=tgt_len)
output logits

train {{ optimizer adam(lr=0.001) }}
"""


def check_model(w: dict):
    """The model IR; the word list lives in a temporary folder beside the spec (only
    resolving reads it)."""
    from rnnc.api import check

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "words.txt").write_text("".join(f"w{i}\n" for i in range(w["vocab"] - RESERVED)))
        return check(str(Path(tmp) / "w5.rnn"), text=spec_text(w))


def data_for(w: dict, rng) -> dict:
    B, T, V = w["B"], w["T"], w["vocab"]
    src = rng.integers(RESERVED, V, size=(B, T)).astype(np.int64)
    tgt = rng.integers(RESERVED, V, size=(B, T)).astype(np.int64)
    tgt[:, -1] = EOS                  # targets end with <eos>, as `rnnc train` feeds them
    full = np.full(B, T, np.int64)    # full lengths: both sides compute every step
    return {"src": src, "src_len": full, "tgt": tgt, "tgt_len": full.copy()}


def rnnc_runners(w: dict, data: dict, ort_session, train_step) -> dict:
    from rnnc.training_graph import build_eval, build_train

    model = check_model(w)
    runners = {}
    for unroll in ("static", "loop", "auto"):
        sess = ort_session(build_eval(model, unroll).SerializeToString())
        runners[f"rnnc {unroll} fwd"] = (lambda s=sess: s.run(None, data))      # outputs: loss (logits stay inside)
    runners["rnnc train step"] = train_step(build_train(model, "auto"), data)
    return runners


def torch_model(w: dict):
    import torch

    V, D, H = w["vocab"], w["embed"], w["H"]

    class Seq2Seq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.src_embed, self.tgt_embed = torch.nn.Embedding(V, D), torch.nn.Embedding(V, D)
            self.encoder = torch.nn.LSTM(D, H, batch_first=True)
            self.decoder = torch.nn.LSTM(D, H, batch_first=True)
            self.out = torch.nn.Linear(H, V)

        def forward(self, src, tgt):
            _, state = self.encoder(self.src_embed(src))            # final (h, c) starts the decoder
            prev = torch.cat([torch.full_like(tgt[:, :1], GO), tgt[:, :-1]], dim=1)
            y, _ = self.decoder(self.tgt_embed(prev), state)
            logits = self.out(y)
            return logits, torch.nn.functional.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1))

    return Seq2Seq()


def torch_runners(w: dict, data: dict, ort_session, threads: int, export: bool = True) -> dict:
    import torch
    from bench import torch_runners_of

    torch.set_num_threads(threads)
    src, tgt = torch.from_numpy(data["src"]), torch.from_numpy(data["tgt"])
    feeds = {"src": data["src"], "tgt": data["tgt"]}
    # the export asked for the loss only, as rnnc's eval model outputs it
    return torch_runners_of(torch_model(w), (src, tgt), lambda out: out[1], feeds, ort_session, export,
                            output_names=["logits", "loss"], fetch=["loss"])


def w5_runners(w: dict, ort_session, train_step, threads: int) -> dict:
    """rnnc's runners, then PyTorch's (bench() interleaves them in this order)."""
    data = data_for(w, np.random.default_rng(0))
    return {**rnnc_runners(w, data, ort_session, train_step),
            **torch_runners(w, data, ort_session, threads)}
