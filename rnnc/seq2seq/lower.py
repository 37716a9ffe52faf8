"""seq2seq Exprs -> tensor graph: encoder, teacher-forced logits, sampled loss, decoding.

    embed       E[ids]                              NAME.source.embed [|src|, D], NAME.target.embed
    reversed    each source reversed within its own length (ReverseSequence), before the encoder
    encoder     the encoder cell tree over the embedded source with lengths=src_len
                (outputs past a length are zero; the final state is at each last valid step)
    memory      the encoder outputs [B, S, He], put back in source order when reversed (attention
                is a weighted sum over positions, so the order only changes which alignment
                column is which: alignments index the source as given)
    start       decoder state = the encoder's final state, part by part; attention vector 0
    teacher     decoder input ids = [<go>, tgt[:, :-1]]; logits = step outputs·W + b
                (NAME.output.W [out, |tgt|], NAME.output.b)
"""
from __future__ import annotations

import inspect

import numpy as np

from ..builder import Tensor
from ..cells import ParamSpec
from ..ir import Decode, Seq2SeqBlock
from ..lower.chunked import chunked_strategy
from ..lower.recurrence import length_mask, run_cell, zero_state
from ..vocab import GO
from . import attention as A
from .decoder_step import DecoderStep


def _strategy(lw, time_dim):
    """What rnnc.lower.model picks for a cell run over `time_dim` steps (in the form the
    encoder's CellRunner takes)."""
    from ..lower import model as M
    if "training" in inspect.signature(M.choose_strategy).parameters:
        lw.runner.training = bool(getattr(lw, "training", True))
        return M.choose_strategy(None, lw.unroll, time_dim, lw.runner.training, getattr(lw, "memory", "store"))
    return M.choose_strategy(None, lw.unroll, time_dim)


def _loop_kind(strategy) -> str:
    """static | loop: how the decoder step (never a fused operator) runs over the target."""
    s = strategy if isinstance(strategy, str) else strategy[0]
    return s if s in ("static", "loop") else "loop"


def _record(lw, path: str, strategy: str, why: str) -> None:
    decisions = getattr(lw.runner, "decisions", None)
    if decisions is not None:
        decisions.append((path, strategy, why))
    else:
        lw.strategies.append((path, strategy))


class Encoded:
    def __init__(self, memory, mask, keys, initial, src_len):
        self.memory, self.mask, self.keys, self.initial, self.src_len = memory, mask, keys, initial, src_len


class S2SLowering:
    """The seq2seq parts of one ModelLowering (`lw`): parameters are shared by name."""

    def __init__(self, lw, blk: Seq2SeqBlock):
        self.lw, self.blk, self.b = lw, blk, lw.b
        self.dec = DecoderStep(blk)
        self._encoded: dict = {}

    # ----- parameters -----
    def embed_table(self, which: str) -> Tensor:
        emb = self.blk.source if which == "source" else self.blk.target
        name = f"{self.blk.name}.{which}.embed"
        lw = self.lw
        if name in lw.g.initializers:
            return self.b.tensor(name)
        if emb.pretrained is not None and (emb.frozen or name not in lw.weights):
            value = np.asarray(emb.pretrained).astype(np.float64 if lw.fdtype == "f64" else np.float32)
            return self.b.initializer(name, value, trainable=not emb.frozen)
        return lw.param(name, ParamSpec((emb.vocab.size, emb.dim), "glorot"))

    def params(self) -> dict[str, Tensor]:
        """Decoder, attention and output-layer parameters, by name."""
        P = {n: self.lw.param(n, spec) for n, spec in self.dec.params().items()}
        for n, spec in self.output_params().items():
            P[n] = self.lw.param(n, spec)
        return P

    def output_params(self) -> dict[str, ParamSpec]:
        V = self.blk.target.vocab.size
        return {f"{self.blk.name}.output.W": ParamSpec((self.blk.out_size, V), "glorot"),
                f"{self.blk.name}.output.b": ParamSpec((V,), "zeros")}

    def project(self, ops, P, y):
        return y @ P[f"{self.blk.name}.output.W"] + P[f"{self.blk.name}.output.b"]

    # ----- the encoder -----
    def encode(self, src: Tensor, src_len: Tensor) -> Encoded:
        key = (src.name, src_len.name)
        if key not in self._encoded:
            self._encoded[key] = self._encode(src, src_len)
        return self._encoded[key]

    def _encode(self, src: Tensor, src_len: Tensor) -> Encoded:
        b, blk = self.b, self.blk
        src = b.cast(src, "i64")
        src_len = b.cast(src_len, "i64")
        x = b.gather(self.embed_table("source"), src, axis=0)                   # [B, S, D]
        if blk.reversed:
            x = b.reverse_sequence(x, src_len, time_axis=1, batch_axis=0)
        xt = b.transpose(x, [1, 0, 2])
        strategy = _strategy(self.lw, src.shape[1])
        if getattr(self.lw, "training", False):     # --memory checkpoint: chunks (lower/chunked.py)
            strategy = chunked_strategy(strategy, getattr(self.lw, "memory", "store"), src.shape[1])
        if not hasattr(self.lw.runner, "decisions"):
            self.lw.strategies.append((f"{blk.name}.encoder", strategy))
        mask_t = length_mask(b, xt, src_len)
        y, final = self.lw.runner.run(blk.encoder, f"{blk.name}.encoder", xt, mask_t, src_len, {}, strategy)
        memory = b.transpose(y, [1, 0, 2])                                       # [B, S, He]
        if blk.reversed:
            memory = b.reverse_sequence(memory, src_len, time_axis=1, batch_axis=0)
        mask = b.transpose(b.squeeze(mask_t, [2]), [1, 0])                       # [B, S] bool
        initial = [final[p] for p, _ in self.dec.layout]
        keys = None
        if blk.attention:
            P = self.params()
            keys = A.keys(b, blk, P, memory)
            initial.append(zero_state(b, xt, blk.out_size))
        return Encoded(memory, mask, keys, initial, src_len)

    def step_params(self, enc: Encoded) -> dict[str, Tensor]:
        P = self.params()
        if self.blk.attention:
            P |= {"memory": enc.memory, "keys": enc.keys, "mask": enc.mask}
        return P

    # ----- training: teacher forcing -----
    def decoder_outputs(self, src, src_len, tgt, alignments: bool = False) -> Tensor:
        """The step outputs [B, T, out_size] with the decoder reading <go> + tgt[:, :-1]
        (with `alignments`, the attention weights [B, T, S] instead)."""
        b, blk = self.b, self.blk
        enc = self.encode(src, src_len)
        tgt = b.cast(tgt, "i64")
        B, T = tgt.shape
        batch = b.shape_of(tgt, 0, 1)
        go = b.expand(b.const(np.full((1, 1), GO, np.int64), "i64"),
                      b.concat([batch, b.const(np.array([1], np.int64), "i64")], axis=0), (B, 1))
        prev = b.op("Slice", [tgt, *(b.const(np.array([v], np.int64), "i64") for v in (0, -1, 1))],
                    (B, T - 1 if isinstance(T, int) else None))
        ids = b.op("Concat", [go, prev], (B, T), attrs={"axis": 1})
        x = b.gather(self.embed_table("target"), ids, axis=0)                    # [B, T, D]
        xt = b.transpose(x, [1, 0, 2])
        if not blk.attention:      # a plain cell run over the target: fusable like any other
            from ..lower.cells import initial_dict
            init = initial_dict(blk.decoder, list(enc.initial))
            y, _ = self.lw.runner.run(blk.decoder, f"{blk.name}.decoder", xt, None, None, init,
                                      _strategy(self.lw, T))
            return b.transpose(y, [1, 0, 2])
        strategy = _loop_kind(_strategy(self.lw, T))
        _record(self.lw, f"{blk.name}.decoder", strategy, "decoder step with attention (one body per step)")
        cell = self.dec.step_cell(alignments)
        y, _ = run_cell(b, cell, self.step_params(enc), xt, list(enc.initial), None, strategy)
        return b.transpose(y, [1, 0, 2])

    def logits(self, src, src_len, tgt) -> Tensor:
        y = self.decoder_outputs(src, src_len, tgt)
        return self.project(self.b, self.params(), y)

    # ----- training: sampled softmax -----
    def sampled_loss(self, e, args) -> Tensor:
        from .sampled import sampled_softmax_loss
        src, src_len, tgt = args[:3]
        rest = list(args[3:])
        lengths = rest.pop(0) if e.attrs["weighting"] == "lengths" else None
        ids = rest.pop(0) if e.attrs["has_ids"] else None
        y = self.decoder_outputs(src, src_len, tgt)
        P = self.params()
        if getattr(self.lw, "training", True) is False:     # eval and inference: the full softmax
            from ..losses import softmax_xent
            return softmax_xent(self.b, self.project(self.b, P, y), tgt, e.attrs["weighting"], lengths)
        return sampled_softmax_loss(self.b, y, P[f"{self.blk.name}.output.W"], P[f"{self.blk.name}.output.b"],
                                    self.b.cast(tgt, "i64"), lengths, e.attrs["samples"], ids,
                                    self.b.cast(src, "i64"))

    # ----- inference -----
    def decode(self, src, src_len, want: int, decode: Decode | None = None):
        from .decode import beam_search, greedy
        decode = decode or self.blk.decode
        enc = self.encode(src, src_len)
        _record(self.lw, f"{self.blk.name}.decode", "Loop",
                f"{decode.kind} decoding until every row has emitted <eos> or max_len={decode.max_len}")
        if decode.kind == "beam":
            return beam_search(self, enc, decode, want)
        return greedy(self, enc, decode, want)


def lower_expr(lw, e, args):
    """Lower one seq2seq Expr for a ModelLowering (called from rnnc/lower/model.py)."""
    if e.op == "s2s_decode_out":
        return args[0][e.attrs["index"]]
    blk = e.attrs["block"]
    blocks = lw.__dict__.setdefault("_s2s", {})
    if blk.name not in blocks:
        blocks[blk.name] = S2SLowering(lw, blk)
    s2s = blocks[blk.name]
    if e.op == "s2s_logits":
        return s2s.logits(*args)
    if e.op == "s2s_alignments":
        return s2s.decoder_outputs(*args, alignments=True)
    if e.op == "s2s_decode":
        return s2s.decode(args[0], args[1], e.attrs["want"], getattr(lw, "decode_override", None))
    if e.op == "s2s_sampled_loss":
        return s2s.sampled_loss(e, args)
    raise ValueError(f"cannot lower '{e.op}'")
