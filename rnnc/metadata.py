"""Metadata stored in every exported model: rnnc version, the spec's source and its sha256;
with vocabularies, `rnnc.vocab` (rnnc/seq2seq/meta.py: the vocabularies and which inputs and
outputs each encodes)."""
from __future__ import annotations

import hashlib
import json

from . import __version__
from .ir import Model


def metadata(model: Model, extra: dict | None = None) -> dict[str, str]:
    meta = {
        "rnnc.version": __version__,
        "rnnc.model": model.name,
        "rnnc.spec": model.source,
        "rnnc.spec_sha256": hashlib.sha256(model.source.encode()).hexdigest(),
    }
    from .seq2seq.meta import vocab_io

    io = vocab_io(model)
    if io is not None:
        meta["rnnc.vocab"] = json.dumps(io)
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    return meta
