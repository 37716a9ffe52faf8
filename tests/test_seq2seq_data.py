"""Vocabularies, parallel-text data (.tsv), length bucketing, and the dates/sort example sets."""
from __future__ import annotations

import datetime

import numpy as np
import pytest

from rnnc import datasets as ds
from rnnc.api import check
from rnnc.datafile import DataError, load_data
from rnnc.errors import SpecError
from rnnc.textdata import bucketed_batches, length_pairs, read_tsv
from rnnc.vocab import EOS, GO, PAD, UNK, Vocab

SECTION5_CHARS = set(" ,0123456789abcdefghijklmnopqrstuvwxyz")


# ----- vocabularies -----
def test_vocab_reserved_ids_encode_decode():
    v = Vocab("v", "chars", tuple("ab-"))
    assert v.tokens[:4] == ("<pad>", "<go>", "<eos>", "<unk>") and (PAD, GO, EOS, UNK) == (0, 1, 2, 3)
    assert v.size == 7 and v.encode("ab?-") == [4, 5, 3, 6] and v.encode("a", eos=True) == [4, 2]
    assert v.decode([4, 0, 5, 2, 6]) == "ab" and v.decode([1, 4, 5, 6], length=2) == "a"
    w = Vocab("w", "words", ("hello", "world"))
    assert w.encode("hello  there world") == [4, 3, 5] and w.decode([4, 3, 5, 2]) == "hello <unk> world"
    assert Vocab.from_json("v", v.to_json()) == v


def _spec(vocab_line: str) -> str:
    return f"""model m
{vocab_line}
vocab t = chars("xy")
input src: i64[batch, s]
input n: i64[batch]
seq2seq tr {{
  source embed(v, 2)
  encoder lstm(3)
  target embed(t, 2)
  decoder lstm(3)
}}
output tokens, len = tr.decode(src, n)
"""


def test_word_list_is_read_relative_to_the_spec(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "words.txt").write_text("the\ncat\n\n sat \n")
    spec = tmp_path / "sub" / "m.rnn"
    spec.write_text(_spec('vocab v = words("words.txt")'))
    model = check(spec)
    assert model.vocabs[0].symbols == ("the", "cat", "sat") and model.vocabs[0].kind == "words"


@pytest.mark.parametrize("line, message", [
    ('vocab v = chars("abca")', "the symbol 'a' appears twice"),
    ('vocab v = words("missing.txt")', "cannot read the word list missing.txt"),
    ('vocab v = letters("ab")', "a vocabulary is chars"),
    ('vocab v = chars("")', "at least one symbol"),
])
def test_bad_vocabularies_are_located(tmp_path, line, message):
    spec = tmp_path / "m.rnn"
    spec.write_text(_spec(line))
    with pytest.raises(SpecError) as info:
        check(spec)
    d = info.value.diagnostics[0]
    assert message in d.message and d.span is not None and d.span.line == 2


# ----- .tsv -----
LAYOUT = [{"input": "src", "lengths": "src_len", "vocab": "s", "eos": False},
          {"input": "tgt", "lengths": "tgt_len", "vocab": "t", "eos": True}]
VOCABS = {"s": Vocab("s", "chars", tuple("abc ")), "t": Vocab("t", "chars", tuple("xyz"))}
EXPECTED = {"src": ("i64", ("batch", "src_time")), "src_len": ("i64", ("batch",)),
            "tgt": ("i64", ("batch", "tgt_time")), "tgt_len": ("i64", ("batch",))}


def test_tsv_columns_fill_source_and_target(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("ab c\txy\n\nq\tzzz\r\n")
    data = load_data(p, EXPECTED, text=(LAYOUT, VOCABS))
    np.testing.assert_array_equal(data["src"], [[4, 5, 7, 6], [3, 0, 0, 0]])      # 'q' is <unk>
    np.testing.assert_array_equal(data["src_len"], [4, 1])
    np.testing.assert_array_equal(data["tgt"], [[4, 5, 2, 0], [6, 6, 6, 2]])      # <eos> appended
    np.testing.assert_array_equal(data["tgt_len"], [3, 4])


def test_tsv_errors_name_the_line(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("ab\txy\nno tab here\n")
    with pytest.raises(DataError, match=r"d\.tsv:2: expected 2 tab-separated columns"):
        load_data(p, EXPECTED, text=(LAYOUT, VOCABS))
    with pytest.raises(DataError, match="model also needs 'other'"):
        read_tsv(p, LAYOUT, VOCABS, EXPECTED | {"other": ("f32", ("batch",))})
    with pytest.raises(DataError, match="needs a model with a seq2seq block"):
        load_data(p, EXPECTED)


def test_bucketing_covers_every_row_once_and_cuts_padding():
    rng = np.random.default_rng(0)
    n, width = 1000, 30
    lens = rng.integers(1, width + 1, size=n)
    src = np.where(np.arange(width)[None, :] < lens[:, None], 5, 0)
    data = {"src": src, "src_len": lens, "row": np.arange(n)}
    pairs = length_pairs(LAYOUT)[:1]
    got = list(bucketed_batches(data, 16, np.random.default_rng(1), pairs))
    assert sorted(np.concatenate([b["row"] for b in got]).tolist()) == list(range(n))
    assert all(b["src"].shape[1] == b["src_len"].max() for b in got)
    padded = sum(b["src"].size for b in got)
    assert padded < 0.6 * n * width          # random batches of 16 would pad to ~width
    again = list(bucketed_batches(data, 16, np.random.default_rng(1), pairs))
    assert all(np.array_equal(a["row"], b["row"]) for a, b in zip(got, again))


# ----- example data sets -----
def test_dates_set():
    train, test = ds.dates(0)
    assert len(train["src"]) == 10000 and len(test["src"]) == 1000
    assert set(train["tgt"]).isdisjoint(test["tgt"])                 # no date in both splits
    assert set("".join(train["src"]) + "".join(test["src"])) <= SECTION5_CHARS
    for s, t in zip(train["src"][:300], train["tgt"][:300]):
        d = datetime.date.fromisoformat(t)
        assert str(d.year) in s and (str(d.day) in s)
    forms = {ds.spoken_date(datetime.date(2019, 4, 22), f) for f in range(ds.DATE_FORMS)}
    assert {"april 22, 2019", "22 april 2019", "2019 april 22", "22nd of april, 2019"} <= forms
    a, _ = ds.dates(0)
    assert np.array_equal(a["src"], train["src"])


def test_sort_set_and_tsv_files(tmp_path):
    train, test = ds.sort_digits(0)
    assert all("".join(sorted(s)) == t for s, t in zip(train["src"], train["tgt"]))
    assert set(train["src"]).isdisjoint(test["src"])
    paths = ds.write("sort", tmp_path)
    assert [p.name for p in paths] == ["sort_train.tsv", "sort_test.tsv"]
    lines = paths[1].read_text().splitlines()
    assert len(lines) == 1000 and lines[0] == f"{test['src'][0]}\t{test['tgt'][0]}"
