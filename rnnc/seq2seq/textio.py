"""Text in and out for `rnnc run` on models whose metadata has vocabularies (`rnnc.vocab`).

    rnnc run runs/dates src="april 22, 2019"         # one text: a batch of 1
    rnnc run runs/dates --text sources.txt           # one text per line: a batch

A vocab-encoded input given as `name=TEXT` (anything but an existing .npy/.npz file) is
encoded with its vocabulary (`<eos>` appended where the model expects it) and padded; its
lengths input is filled in unless given. Vocab-encoded outputs are printed as text, each
row cut at its length.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..runtime import InputError, load_array
from ..vocab import Vocab


def vocab_io(proto_or_session) -> dict | None:
    meta = (proto_or_session.get_modelmeta().custom_metadata_map if hasattr(proto_or_session, "get_modelmeta")
            else {p.key: p.value for p in proto_or_session.metadata_props})
    return json.loads(meta["rnnc.vocab"]) if "rnnc.vocab" in meta else None


def _vocabs(io: dict) -> dict[str, Vocab]:
    return {k: Vocab.from_json(k, v) for k, v in io["vocabularies"].items()}


def encode_texts(io: dict, name: str, texts: list[str]) -> dict[str, np.ndarray]:
    """ids [batch, longest] (and lengths [batch] under the lengths input's name)."""
    spec = io["inputs"][name]
    vocab = _vocabs(io)[spec["vocab"]]
    rows = [vocab.encode(t, eos=bool(spec.get("eos"))) for t in texts]
    ids = np.zeros((len(rows), max([1] + [len(r) for r in rows])), np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    out = {name: ids}
    if spec.get("lengths"):
        out[spec["lengths"]] = np.array([len(r) for r in rows], np.int64)
    return out


def _is_array_file(value: str) -> bool:
    path = value.rsplit(":", 1)[0] if ".npz:" in value else value
    return path.endswith((".npy", ".npz")) and Path(path).is_file()


def feeds(sess, specs: list[str], text_file: str | None = None) -> dict[str, np.ndarray]:
    """Inputs for a run: arrays from files, text for vocab-encoded inputs."""
    io = vocab_io(sess)
    encoded = set((io or {}).get("inputs", {}))
    needed = {i.name for i in sess.get_inputs()}
    out: dict[str, np.ndarray] = {}
    texts: dict[str, list[str]] = {}
    for s in specs:
        name, sep, value = s.partition("=")
        if sep and name in encoded and not _is_array_file(value):
            texts[name] = [value]
        else:
            k, v = load_array(s)
            out[k] = v
    if text_file is not None:
        try:
            lines = [line.rstrip("\r") for line in Path(text_file).read_text(encoding="utf-8").split("\n")]
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"--text {text_file}: cannot read it ({e})") from None
        lines = [line for line in lines if line.strip()]
        target = next((n for n in (io or {}).get("inputs", {}) if n in needed and n not in texts and n not in out
                       and not io["inputs"][n].get("eos")), None)
        if target is None:
            raise InputError("--text: the model has no text input left to fill" if io else
                             "--text: this model has no vocabularies (rnnc.vocab metadata)")
        if not lines:
            raise InputError(f"--text {text_file}: no lines of text")
        texts[target] = lines
    for name, values in texts.items():
        for k, v in encode_texts(io, name, values).items():
            if k == name or k not in out:
                out[k] = v
    return out


def decoded_outputs(sess, results: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """Vocab-encoded outputs as text, one string per row."""
    io = vocab_io(sess)
    if not io:
        return {}
    vocabs = _vocabs(io)
    out = {}
    for name, spec in io.get("outputs", {}).items():
        if name not in results:
            continue
        ids = results[name]
        lengths = results.get(spec.get("lengths") or "")
        vocab = vocabs[spec["vocab"]]
        out[name] = [vocab.decode(ids[i], None if lengths is None else int(lengths[i])) for i in range(len(ids))]
    return out
