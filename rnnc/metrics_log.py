"""Training metrics as JSON lines (``RUN_DIR/metrics.jsonl``) and a loss plot.

Each call of :meth:`MetricsLog.log` appends one JSON object on its own line and
flushes it, so the file can be followed while training runs. Conventions used
by :func:`plot_loss`: training records carry ``step`` and ``loss`` (or
``train_loss``); validation records carry ``step`` (the step at which the
epoch ended), ``epoch`` and ``val_loss``. Non-finite floats (NaN, inf) are
written as ``null`` so the file stays strict JSON.

Resuming a run from a checkpoint taken at step N: ``MetricsLog(run_dir,
resume_step=N)`` first drops every record whose ``step`` is greater than N
(they will be logged again), so lines are not duplicated. A torn last line
from a crash is dropped too. Without ``resume_step`` an existing file is only
appended to.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from rnnc.checkpoint import atomic_write

__all__ = ["METRICS_FILE", "LOSS_PLOT", "MetricsLog", "plot_loss", "read_metrics"]

METRICS_FILE = "metrics.jsonl"
LOSS_PLOT = "loss.png"


def _plain(value: Any) -> Any:
    """Convert numpy scalars/arrays to Python values; non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _split_lines(path: Path) -> tuple[list[dict], bool]:
    """Parse ``path``; return (records, torn).

    ``torn`` means the last line has no newline. If it still parses as JSON it
    is kept (the rewrite adds the newline); otherwise it is a partial write and
    is dropped. A malformed line elsewhere raises ValueError with file:line.
    """
    text = path.read_bytes().decode("utf-8", errors="replace")
    raw_lines = text.split("\n")
    torn = False
    if raw_lines and raw_lines[-1] == "":
        raw_lines.pop()  # text ended with a newline
    elif raw_lines:
        torn = True  # last line has no newline: written partially, or by hand
    records = []
    for lineno, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as e:
            if torn and lineno == len(raw_lines):
                break  # drop the torn tail
            raise ValueError(f"{path}:{lineno}: not a JSON line ({e.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object per line")
        records.append(rec)
    return records, torn


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """All complete records of ``run_dir/metrics.jsonl`` ([] if there is none)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return _split_lines(path)[0]


class MetricsLog:
    """Append-only JSON-lines log at ``run_dir/metrics.jsonl``.

    ``resume_step=N`` drops records with ``step > N`` before appending (the
    file is rewritten atomically). Use as a context manager or call
    :meth:`close`.
    """

    def __init__(self, run_dir: str | os.PathLike, resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        if self.path.exists():
            records, torn = _split_lines(self.path)
            keep = records
            if resume_step is not None:
                keep = [r for r in records if not _after(r, resume_step)]
            if torn or len(keep) != len(records):
                body = "".join(json.dumps(r, allow_nan=False) + "\n" for r in keep).encode("utf-8")
                atomic_write(self.path, lambda f: f.write(body))
        self._file = open(self.path, "a", encoding="utf-8")

    def log(self, record: dict | None = None, /, **fields: Any) -> dict:
        """Append one record (``record`` merged with keyword fields); return what was written."""
        if self._file.closed:
            raise ValueError(f"{self.path}: metrics log is closed")
        rec = dict(record or {})
        rec.update(fields)
        rec = _plain(rec)
        self._file.write(json.dumps(rec, allow_nan=False) + "\n")
        self._file.flush()
        return rec

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _after(record: dict, step: int) -> bool:
    s = record.get("step")
    return isinstance(s, (int, float)) and not isinstance(s, bool) and s > step


def _series(records: list[dict], keys: tuple[str, ...]) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        step = r.get("step")
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            continue
        for k in keys:
            v = r.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                xs.append(float(step))
                ys.append(float(v))
                break
    return xs, ys


def plot_loss(run_dir: str | os.PathLike) -> Path | None:
    """Write ``run_dir/loss.png``: training loss per step, validation loss per epoch.

    Returns the image path, or None when matplotlib is not installed (it is an
    optional extra) or the log holds no loss values.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    train = _series(records, ("loss", "train_loss"))
    val = _series(records, ("val_loss",))
    if not train[0] and not val[0]:
        return None
    # Figure + Agg canvas directly: no pyplot, no global backend switch.
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if train[0]:
        ax.plot(train[0], train[1], label="train loss", linewidth=1.0)
    if val[0]:
        ax.plot(val[0], val[1], "o-", label="validation loss (per epoch)", linewidth=1.5)
    values = train[1] + val[1]
    if min(values) > 0 and max(values) / min(values) > 100:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = run_dir / LOSS_PLOT
    atomic_write(out, lambda f: fig.savefig(f, format="png"))
    return out
