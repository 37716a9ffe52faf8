"""Example data sets, made offline and deterministically from a seed.

Each maker returns ``(train, test)``, two dicts of numpy arrays named after the
inputs of the matching example spec; :func:`write` stores them as
``NAME_train.npz`` / ``NAME_test.npz``.

* ``sine``   -- windows of the time series f(t) = t*sin(t)/3 + 2*sin(5t) (the
  series of Geron, *Hands-On Machine Learning*, ch. 15), 20 steps at
  resolution 0.1; ``y`` is ``x`` shifted one step into the future. Train
  windows lie in t in [0, 30), test windows in t in [30, 40) (never trained on).
* ``digits`` -- the 1797 8x8 hand-written digits (UCI, via scikit-learn's
  ``load_digits``; vendored in ``rnnc/data/digits.npz``, see
  ``rnnc/data/DIGITS_LICENSE.txt``), read as sequences of 8 rows of 8 pixels.
* ``dates``  -- dates in 12 spoken or written forms ("april 22, 2019", "22nd of april,
  2019", "2019 04 22", ...) paired with ISO 8601 ("2019-04-22"); text pairs, ``.tsv``.
* ``sort``   -- digit strings paired with their digits sorted; text pairs, ``.tsv``.
* ``reber``  -- embedded Reber grammar strings (Hochreiter & Schmidhuber 1997,
  "Long Short-Term Memory", section 5.1; Geron's ch. 16 exercise): half valid,
  half invalid by swapping the second-to-last symbol T<->P, which only an
  RNN that remembers the second symbol across the whole string can detect.

The registry :data:`REGISTRY` maps a name to a :class:`Dataset` (maker and
writer), so formats other than npz (e.g. a text ``.tsv`` set) can be added.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from rnnc.checkpoint import atomic_write

__all__ = [
    "NAMES",
    "REGISTRY",
    "REBER_ALPHABET",
    "Dataset",
    "decode_reber",
    "digits",
    "embedded_reber_string",
    "is_embedded_reber",
    "is_reber",
    "reber",
    "reber_string",
    "sine",
    "sine_series",
    "write",
]

Split = dict[str, np.ndarray]

_DATA_DIR = Path(__file__).resolve().parent / "data"

# --------------------------------------------------------------------------- sine

SINE_STEPS = 20
SINE_RESOLUTION = 0.1
SINE_TRAIN_RANGE = (0.0, 30.0)
SINE_TEST_RANGE = (30.0, 40.0)
SINE_TRAIN_N = 1000
SINE_TEST_N = 200


def sine_series(t: np.ndarray) -> np.ndarray:
    """f(t) = t*sin(t)/3 + 2*sin(5t)."""
    t = np.asarray(t, dtype=np.float64)
    return t * np.sin(t) / 3.0 + 2.0 * np.sin(5.0 * t)


def _sine_windows(rng: np.random.Generator, n: int, lo: float, hi: float) -> Split:
    span = (SINE_STEPS + 1) * SINE_RESOLUTION  # x and y together cover 21 points
    starts = rng.uniform(lo, hi - span, size=(n, 1))
    t = starts + SINE_RESOLUTION * np.arange(SINE_STEPS + 1)[None, :]
    f = sine_series(t).astype(np.float32)
    return {"x": f[:, :-1, None].copy(), "y": f[:, 1:, None].copy()}


def sine(seed: int = 0) -> tuple[Split, Split]:
    """Time-series windows: ``x`` f32[n, 20, 1], ``y`` f32[n, 20, 1] (x shifted by one step).

    1000 train windows with t in [0, 30), 200 test windows with t in [30, 40);
    window starts are uniform random from ``seed``.
    """
    rng = np.random.default_rng([seed, 1])
    train = _sine_windows(rng, SINE_TRAIN_N, *SINE_TRAIN_RANGE)
    test = _sine_windows(rng, SINE_TEST_N, *SINE_TEST_RANGE)
    return train, test


# --------------------------------------------------------------------------- digits

DIGITS_TEST_FRACTION = 0.2


def _load_vendored_digits() -> tuple[np.ndarray, np.ndarray]:
    path = _DATA_DIR / "digits.npz"
    with np.load(path, allow_pickle=False) as npz:
        images = npz["images"]
        labels = npz["labels"]
    if images.shape != (1797, 8, 8) or labels.shape != (1797,):
        raise RuntimeError(f"{path}: unexpected shapes {images.shape}, {labels.shape}")
    return images, labels


def digits(seed: int = 0) -> tuple[Split, Split]:
    """8x8 hand-written digits as 8-step sequences of 8 pixels.

    ``x`` f32[n, 8, 8] in [0, 1] (pixel / 16), ``y`` i64[n] in 0..9. A seeded
    random 20 % (359) of the 1797 images is the test split; the rest (1438) is
    train. The two splits are disjoint by image index.
    """
    images, labels = _load_vendored_digits()
    n = len(labels)
    rng = np.random.default_rng([seed, 2])
    perm = rng.permutation(n)
    n_test = int(round(n * DIGITS_TEST_FRACTION))
    test_idx = np.sort(perm[:n_test])
    train_idx = np.sort(perm[n_test:])

    def take(idx: np.ndarray) -> Split:
        return {
            "x": images[idx].astype(np.float32) / np.float32(16.0),
            "y": labels[idx].astype(np.int64),
        }

    return take(train_idx), take(test_idx)


# --------------------------------------------------------------------------- reber

REBER_ALPHABET = "BTPSXVE"  # one-hot index 0..6 in this order

# The Reber automaton (Reber 1967; Hochreiter & Schmidhuber 1997, fig. 5):
# state -> list of (symbol, next state); None ends the string. It is
# deterministic: the two symbols leaving a state always differ.
_REBER = {
    0: (("B", 1),),
    1: (("T", 2), ("P", 3)),
    2: (("S", 2), ("X", 4)),
    3: (("T", 3), ("V", 5)),
    4: (("X", 3), ("S", 6)),
    5: (("P", 4), ("V", 6)),
    6: (("E", None),),
}

REBER_TRAIN_N = 2000
REBER_TEST_N = 500
REBER_TEST_FRACTION = 0.2  # chance that a newly seen string is reserved for test
REBER_MAX_LEN = 30  # longer strings are rejected when sampling (a ~0.1 % tail)


def reber_string(rng: np.random.Generator) -> str:
    """One string of the (plain) Reber grammar, e.g. ``BTSSXXTVVE``."""
    out = []
    state: int | None = 0
    while state is not None:
        choices = _REBER[state]
        sym, state = choices[int(rng.integers(len(choices)))] if len(choices) > 1 else choices[0]
        out.append(sym)
    return "".join(out)


def embedded_reber_string(rng: np.random.Generator) -> str:
    """One embedded Reber string: ``B`` + T|P + Reber string + the same T|P + ``E``."""
    branch = "TP"[int(rng.integers(2))]
    return "B" + branch + reber_string(rng) + branch + "E"


def is_reber(s: str) -> bool:
    """Whether ``s`` is accepted by the Reber automaton."""
    state: int | None = 0
    for ch in s:
        if state is None:
            return False
        for sym, nxt in _REBER[state]:
            if sym == ch:
                state = nxt
                break
        else:
            return False
    return state is None


def is_embedded_reber(s: str) -> bool:
    """Whether ``s`` is a string of the embedded Reber grammar."""
    return (
        len(s) >= 4
        and s[0] == "B"
        and s[1] in "TP"
        and s[-2] == s[1]
        and s[-1] == "E"
        and is_reber(s[2:-2])
    )


def _corrupt(s: str) -> str:
    """Swap the second-to-last symbol T<->P (the embedded branch symbol)."""
    swap = {"T": "P", "P": "T"}
    if s[-2] not in swap:
        raise ValueError(f"cannot corrupt {s!r}: second-to-last symbol is not T or P")
    return s[:-2] + swap[s[-2]] + s[-1]


def _encode(strings: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.zeros((len(strings), max_len, len(REBER_ALPHABET)), dtype=np.float32)
    lengths = np.zeros(len(strings), dtype=np.int64)
    index = {c: i for i, c in enumerate(REBER_ALPHABET)}
    for row, s in enumerate(strings):
        lengths[row] = len(s)
        for t, ch in enumerate(s):
            x[row, t, index[ch]] = 1.0
    return x, lengths


def decode_reber(x: np.ndarray, n: np.ndarray) -> list[str]:
    """Inverse of the one-hot encoding: ``x`` [batch, max_len, 7], lengths ``n``."""
    idx = np.asarray(x).argmax(axis=-1)
    return ["".join(REBER_ALPHABET[k] for k in idx[i, : int(n[i])]) for i in range(len(idx))]


def reber(seed: int = 0) -> tuple[Split, Split]:
    """Embedded Reber classification: ``x`` f32[n, max_len, 7] one-hot (zero padded),
    ``n`` i64[n] string lengths, ``y`` i64[n] (1 valid, 0 invalid).

    2000 train and 500 test strings, half valid and half corrupted (second-to-last
    symbol swapped T<->P, which breaks the embedded grammar), shuffled. Every
    distinct base string is assigned, when first drawn, to either train (80 %)
    or test (20 %) at random, so no string (valid or corrupted) occurs in both
    splits. Strings longer than ``REBER_MAX_LEN`` (30) are not used; ``max_len``
    is 30 for both splits.
    """
    rng = np.random.default_rng([seed, 3])
    owner: dict[str, int] = {}  # base string -> 0 train / 1 test
    bases: tuple[list[str], list[str]] = ([], [])
    wanted = (REBER_TRAIN_N, REBER_TEST_N)
    while len(bases[0]) < wanted[0] or len(bases[1]) < wanted[1]:
        s = embedded_reber_string(rng)
        if len(s) > REBER_MAX_LEN:
            continue
        side = owner.get(s)
        if side is None:
            side = owner[s] = int(rng.random() < REBER_TEST_FRACTION)
        if len(bases[side]) < wanted[side]:
            bases[side].append(s)

    def build(strings: list[str]) -> Split:
        n = len(strings)
        labels = np.zeros(n, dtype=np.int64)
        labels[: n // 2] = 1
        rng.shuffle(labels)
        final = [s if lab else _corrupt(s) for s, lab in zip(strings, labels)]
        x, lengths = _encode(final, REBER_MAX_LEN)
        return {"x": x, "n": lengths, "y": labels}

    return build(bases[0]), build(bases[1])


# --------------------------------------------------------------------------- text pairs (seq2seq)

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DATES_YEARS = (1950, 2049)
DATES_TRAIN_N = 10000
DATES_TEST_N = 1000


def _ordinal(d: int) -> str:
    return f"{d}{'th' if 10 <= d % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(d % 10, 'th')}"


def spoken_date(day, form: int) -> str:
    """One of 12 spoken or written forms of a ``datetime.date``, using only the characters
    `` ,0123456789abcdefghijklmnopqrstuvwxyz``."""
    m, d, y = MONTHS[day.month - 1], day.day, day.year
    mon = m[:3]
    wd = WEEKDAYS[day.weekday()]
    return (f"{m} {d}, {y}", f"{d} {m} {y}", f"{y} {m} {d}", f"{mon} {d}, {y}", f"{d} {mon} {y}",
            f"{m} {d} {y}", f"{wd}, {m} {d}, {y}", f"{_ordinal(d)} of {m}, {y}", f"{m} {_ordinal(d)}, {y}",
            f"{y} {day.month:02d} {d:02d}", f"{d} {m}, {y}", f"{wd} {d} {mon} {y}")[form]


DATE_FORMS = 12


def dates(seed: int = 0) -> tuple[Split, Split]:
    """Dates in spoken forms -> ISO: ``src`` ("april 22, 2019", "22nd of april, 2019", ...),
    ``tgt`` ("2019-04-22"), as arrays of strings (written as .tsv).

    10 000 train and 1 000 test pairs; each date (1950-2049) is in at most one split, in
    one of 12 forms drawn at random (``spoken_date``).
    """
    import datetime

    rng = np.random.default_rng([seed, 4])
    first = datetime.date(DATES_YEARS[0], 1, 1)
    n_days = (datetime.date(DATES_YEARS[1], 12, 31) - first).days + 1
    days = rng.permutation(n_days)[: DATES_TRAIN_N + DATES_TEST_N]
    forms = rng.integers(DATE_FORMS, size=len(days))

    def build(idx, form) -> Split:
        ds = [first + datetime.timedelta(days=int(i)) for i in idx]
        return {"src": np.array([spoken_date(d, int(f)) for d, f in zip(ds, form)]),
                "tgt": np.array([d.isoformat() for d in ds])}

    return (build(days[:DATES_TRAIN_N], forms[:DATES_TRAIN_N]),
            build(days[DATES_TRAIN_N:], forms[DATES_TRAIN_N:]))


SORT_TRAIN_N = 10000
SORT_TEST_N = 1000
SORT_MAX_LEN = 10


def sort_digits(seed: int = 0) -> tuple[Split, Split]:
    """Digit strings (1 to 10 digits) -> the same digits sorted: ``src`` "31415",
    ``tgt`` "11345". 10 000 train and 1 000 test pairs, no source string in both."""
    rng = np.random.default_rng([seed, 5])
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < SORT_TRAIN_N + SORT_TEST_N:
        n = int(rng.integers(1, SORT_MAX_LEN + 1))
        s = "".join(str(int(c)) for c in rng.integers(10, size=n))
        if s not in seen:
            seen.add(s)
            out.append(s)

    def build(strings) -> Split:
        return {"src": np.array(strings), "tgt": np.array(["".join(sorted(s)) for s in strings])}

    return build(out[:SORT_TRAIN_N]), build(out[SORT_TRAIN_N:])


def _write_tsv_split(path: Path, arrays: Split) -> None:
    """One pair per line: source, a tab, target (UTF-8)."""
    text = "".join(f"{a}\t{b}\n" for a, b in zip(arrays["src"], arrays["tgt"]))
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# --------------------------------------------------------------------------- registry / writing


def _write_npz_split(path: Path, arrays: Split) -> None:
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


@dataclass(frozen=True)
class Dataset:
    """A registered example data set.

    ``make(seed) -> (train, test)`` builds the splits; ``write_split(path, split)``
    stores one of them in a file with suffix ``suffix`` (atomically).
    """

    make: Callable[[int], tuple[Split, Split]]
    description: str
    suffix: str = ".npz"
    write_split: Callable[[Path, Split], None] = _write_npz_split


REGISTRY: dict[str, Dataset] = {
    "sine": Dataset(sine, "time series t*sin(t)/3 + 2*sin(5t), next-step prediction"),
    "digits": Dataset(digits, "8x8 hand-written digits, rows as a sequence, 10 classes"),
    "reber": Dataset(reber, "embedded Reber grammar strings, valid vs. corrupted"),
    "dates": Dataset(dates, "dates in spoken forms -> ISO 8601 (seq2seq, text pairs)", ".tsv", _write_tsv_split),
    "sort": Dataset(sort_digits, "digit strings -> the digits sorted (seq2seq, text pairs)", ".tsv",
                    _write_tsv_split),
}

NAMES: tuple[str, ...] = tuple(REGISTRY)


def write(name: str, out_dir: str | os.PathLike, seed: int = 0) -> list[Path]:
    """Write ``NAME_train`` and ``NAME_test`` files into ``out_dir``; return their paths.

    Each file is written to a temporary file in ``out_dir`` and renamed into
    place, so an interrupted run never leaves a partial file under the final name.
    """
    try:
        ds = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, test = ds.make(seed)
    paths = []
    for split_name, split in (("train", train), ("test", test)):
        path = out / f"{name}_{split_name}{ds.suffix}"
        ds.write_split(path, split)
        paths.append(path)
    return paths
