"""`| dropout(...)`: TF1 DropoutWrapper semantics, in training graphs only.

Inference and eval graphs lower a dropout wrapper as its inner cell (no mask, no random op:
keep = 1). Graphs that are differentiated (train.onnx, gradient models) get:

- input dropout: x·mask on the cell's input sequence, mask [T, B, F] made before the loop;
- output dropout: y·mask on its output sequence, mask [T, B, out];
- state dropout: the state the step passes on to the next step is multiplied by a mask
  (TF1 drops `new_state`; its default filter never drops the `c` of an LSTM, so for lstm
  only h is dropped; every part of other cells). The mask is a per-step slice input of the
  loop body ([T, B, size] outside). As in TF1, the final state returned is the dropped one;
  the step's output (an LSTM's m) is not touched by state dropout.
- `variational`: one mask per sequence reused at every step ([1, B, F] broadcast over time;
  the state mask [B, size] a loop invariant). Masks are per example, as in Keras and Gal &
  Ghahramani — TF1's `variational_recurrent` shares one mask by the whole batch instead.

Keep probabilities, inverted dropout: kept values are scaled by 1/keep, so a unit's
expected value is unchanged and inference needs no scaling.

Masks are a pure function of the train model's inputs `seed` and `step` (i64 scalars), of
the dropout site (its order in the graph and the kind: input, state, output) and of each
element's index: a resumed run draws the same masks. No Random*, Bitwise* or BitShift op is
used (the CUDA provider lacks them); only int64 Mul, Add, Div, Mod and Less:

    a0..a3 = feistel(counter=(step, 4·stream + i), key=seed)      # 4 scalars per site, 12 rounds
    h(idx) = a3·idx³ + a2·idx² + a1·idx + a0  (mod p = 2³¹ − 1)     # Horner, every value < 2⁶²
    keep   = h(idx) < round(keep_prob · p)

The Feistel is Philox-2×31 with addition in place of xor (a round: hi, lo = M·c0 split at
2³¹; c0, c1 = hi + c1 + key, lo; key += W); a degree-3 polynomial with uniform coefficients
over a prime field is a 4-wise independent hash of the element index. `reference_mask`
computes the same masks with numpy (tests compare the two).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..builder import Builder, Tensor

Q = 2 ** 31              # Feistel word
P = 2 ** 31 - 1          # the prime of the polynomial hash
M = 0x4C957F2D           # Feistel multiplier (odd, < 2³¹)
W = 0x1E3779B9           # Feistel key increment (golden ratio, 31 bits)
K_SEED = 0x2545F491
ROUNDS = 12
KINDS = {"input": 0, "state": 1, "output": 2}


def _mix(seed: int, step: int, stream: int) -> np.ndarray:
    """numpy twin of `DropoutSource._coefficients`."""
    c0 = np.full(4, step % Q, np.int64)
    c1 = (np.int64(stream) * 4 + np.arange(4, dtype=np.int64)) % Q
    key = np.int64(seed % Q) * K_SEED % Q
    for _ in range(ROUNDS):
        prod = c0 * M
        c0, c1 = (prod // Q + c1 + key) % Q, prod % Q
        key = (key + W) % Q
    return c0 % P


def reference_mask(seed: int, step: int, stream: int, shape: tuple[int, ...], keep: float) -> np.ndarray:
    """The keep mask (bool) of a site, computed with numpy: what the graph computes."""
    a = _mix(seed, step, stream)
    idx = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape) % P
    acc = np.full(shape, a[3], np.int64)
    for c in (a[2], a[1], a[0]):
        acc = (acc * idx + c) % P
    return acc < threshold(keep)


def threshold(keep: float) -> int:
    return int(round(keep * P))


def stream_id(site: int, kind: str, part: int = 0) -> int:
    """The stream of a mask: the site (dropout wrappers numbered in lowering order), the
    kind, and for state masks the index of the state part."""
    return 3 * site + KINDS[kind] + 3 * 65536 * part


class DropoutSource:
    """Makes the masks of one training graph; `CellRunner.dropout` while lowering it."""

    def __init__(self, b: Builder):
        self.b = b
        self.sites = 0
        self.state_drops: list[tuple[float, bool, int]] = []   # active (keep, variational, site)

    # ----- graph inputs -----
    def _scalar_input(self, name: str) -> Tensor:
        g = self.b.g
        for v in g.inputs:
            if v.name == name:
                return self.b.tensor(name)
        return self.b.input(name, "i64", ())

    def _i64(self, v) -> Tensor:
        return self.b.const(np.asarray(v, np.int64), "i64")

    # ----- the hash -----
    def _coefficients(self, stream: int) -> list[Tensor]:
        b = self.b
        seed, step = self._scalar_input("seed"), self._scalar_input("step")
        q = self._i64(Q)
        c0 = b.expand(b.op("Mod", [step, q], (), attrs={"fmod": 0}), self._i64([4]), (4,))
        c1 = self._i64([(stream * 4 + i) % Q for i in range(4)])
        key = b.op("Mod", [b.mul(b.op("Mod", [seed, q], (), attrs={"fmod": 0}), self._i64(K_SEED)), q], (),
                   attrs={"fmod": 0})
        for r in range(ROUNDS):
            prod = b.mul(c0, self._i64(M))
            hi, lo = b.div(prod, q), b.op("Mod", [prod, q], (4,), attrs={"fmod": 0})
            c0, c1 = b.op("Mod", [b.add(b.add(hi, c1), key), q], (4,), attrs={"fmod": 0}), lo
            if r < ROUNDS - 1:
                key = b.op("Mod", [b.add(key, self._i64(W)), q], (), attrs={"fmod": 0})
        a = b.op("Mod", [c0, self._i64(P)], (4,), attrs={"fmod": 0})
        return b.split_sizes(a, [1, 1, 1, 1], axis=0)

    def _element_ids(self, dims: list) -> Tensor:
        """Row-major index of every element of a tensor of `dims` ((static, [1] i64 tensor) pairs)."""
        b = self.b
        zero, one = self._i64(0), self._i64(1)
        rank = len(dims)
        idx = None
        for i, (static, dyn) in enumerate(dims):
            n = b.squeeze(dyn, [0])
            r = b.range_(zero, n, one, static)
            r = b.unsqueeze(r, [a for a in range(rank) if a != i]) if rank > 1 else r
            idx = r if idx is None else b.add(b.mul(idx, n), r)
        return idx

    def mask(self, dims: list, keep: float, stream: int, dtype: str) -> Tensor:
        """1/keep where kept, 0 where dropped, of a tensor of `dims`."""
        b = self.b
        a0, a1, a2, a3 = self._coefficients(stream)
        p = self._i64(P)
        x = b.op("Mod", [self._element_ids(dims), p], tuple(s for s, _ in dims), attrs={"fmod": 0})
        acc = a3
        for c in (a2, a1, a0):
            acc = b.op("Mod", [b.add(b.mul(acc, x), c), p], x.shape, attrs={"fmod": 0})
        kept = b.less(acc, self._i64(threshold(keep)))
        return b.where(kept, b.const(1.0 / keep, dtype), b.const(0.0, dtype))

    # ----- the wrapper -----
    def run(self, runner, cell, prefix, x, mask, lengths, initial, strategy):
        """A `Dropout` cell over time-major x [T, B, F]."""
        b = self.b
        site = self.sites
        self.sites += 1
        if cell.input_keep < 1:
            x = b.mul(x, self.mask(self._seq_dims(x, cell.variational), cell.input_keep,
                                   stream_id(site, "input"), x.dtype))
        if cell.state_keep < 1:
            self.state_drops.append((cell.state_keep, cell.variational, site))
        try:
            y, final = runner.run(cell.inner, prefix, x, mask, lengths, initial, strategy)
        finally:
            if cell.state_keep < 1:
                self.state_drops.pop()
        if cell.output_keep < 1:
            y = b.mul(y, self.mask(self._seq_dims(y, cell.variational), cell.output_keep,
                                   stream_id(site, "output"), y.dtype))
        return y, final

    def _seq_dims(self, x: Tensor, variational: bool) -> list:
        b = self.b
        dims = [(x.shape[i], b.shape_of(x, i, i + 1)) for i in range(x.rank)]
        if variational:     # one mask per sequence: [1, B, F], broadcast over time
            dims[0] = (1, self._i64([1]))
        return dims

    def wrap_leaf(self, cell, x: Tensor):
        """The leaf's StepCell with the active state dropouts applied to the state it passes
        on, and the per-step mask sequences it reads (extra slice inputs of its body)."""
        if not self.state_drops:
            return cell, []
        b = self.b
        parts = [i for i, (n, _) in enumerate(cell.state) if not (cell.kind == "lstm" and n == "c")]
        plan = []             # per (drop, part): ("seq", index into extra) or ("inv", mask tensor)
        extra: list[Tensor] = []
        for keep, variational, site in self.state_drops:
            for i in parts:
                size = cell.state[i][1]
                batch = (x.shape[1], b.shape_of(x, 1, 2))
                width = (size, self._i64([size]))
                stream = stream_id(site, "state", i)
                if variational:
                    m = self.mask([batch, width], keep, stream, b.fdtype)
                    plan.append((i, "inv", m))
                else:
                    T = (x.shape[0], b.shape_of(x, 0, 1))
                    extra.append(self.mask([T, batch, width], keep, stream, b.fdtype))
                    plan.append((i, "seq", len(extra) - 1))
        inner = cell.step

        def step(ops, p, x_t, state, *masks_t):
            y, nxt = inner(ops, p, x_t, state)
            nxt = list(nxt)
            for i, how, m in plan:
                nxt[i] = nxt[i] * (masks_t[m] if how == "seq" else m)
            return y, tuple(nxt)

        return replace(cell, step=step), extra
