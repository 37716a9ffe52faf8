"""Vocabularies: symbols <-> ids, with the reserved ids every vocabulary starts with.

    vocab src = chars(" ,0123456789abc")     # one symbol per character
    vocab words = words("vocab.txt")         # one symbol per line (path relative to the spec)

Ids 0..3 are reserved: `<pad>`=0, `<go>`=1, `<eos>`=2, `<unk>`=3; the symbols follow in
the order written. Text is split into symbols by character (`chars`) or on whitespace
(`words`); a symbol the vocabulary does not hold becomes `<unk>`. `to_json` is what the
exported models carry in their metadata, enough for an app to do the same without rnnc.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

RESERVED = ("<pad>", "<go>", "<eos>", "<unk>")
PAD, GO, EOS, UNK = 0, 1, 2, 3
KINDS = ("chars", "words")


@dataclass(frozen=True)
class Vocab:
    name: str
    kind: str                       # chars | words
    symbols: tuple[str, ...]        # without the reserved ones

    @property
    def tokens(self) -> tuple[str, ...]:
        return RESERVED + self.symbols

    @property
    def size(self) -> int:
        return len(RESERVED) + len(self.symbols)

    @property
    def separator(self) -> str:
        return "" if self.kind == "chars" else " "

    def split(self, text: str) -> list[str]:
        return list(text) if self.kind == "chars" else text.split()

    def encode(self, text: str, eos: bool = False) -> list[int]:
        ids = [self.index.get(s, UNK) for s in self.split(text)]
        return ids + [EOS] if eos else ids

    def decode(self, ids, length: int | None = None) -> str:
        """Text of `ids` up to `length` (or the first `<eos>`), without pad/go/eos."""
        out = []
        for i, t in enumerate(int(x) for x in ids):
            if (length is not None and i >= length) or t == EOS:
                break
            if t in (PAD, GO):
                continue
            out.append(self.tokens[t] if 0 <= t < self.size else RESERVED[UNK])
        return self.separator.join(out)

    @cached_property
    def index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.tokens)}

    def to_json(self) -> dict:
        return {"kind": self.kind, "tokens": list(self.tokens), "separator": self.separator,
                "pad": PAD, "go": GO, "eos": EOS, "unk": UNK}

    @staticmethod
    def from_json(name: str, d: dict) -> "Vocab":
        return Vocab(name, d["kind"], tuple(d["tokens"][len(RESERVED):]))


def symbols_problem(symbols: list[str]) -> str | None:
    """Why a list of symbols is not a vocabulary (None if it is one)."""
    if not symbols:
        return "a vocabulary needs at least one symbol"
    seen = set()
    for s in symbols:
        if s in RESERVED:
            return f"'{s}' is reserved (ids 0-3 are {', '.join(RESERVED)})"
        if s in seen:
            return f"the symbol {s!r} appears twice"
        seen.add(s)
    return None


def read_word_list(text: str) -> list[str]:
    """One symbol per line; blank lines and surrounding spaces ignored."""
    return [line.strip() for line in text.splitlines() if line.strip()]
