import builtins
import json

import numpy as np
import pytest

from rnnc import metrics_log as ml
from rnnc.metrics_log import MetricsLog, plot_loss, read_metrics


def _lines(run_dir):
    return (run_dir / "metrics.jsonl").read_text().splitlines()


def test_append_and_flush(tmp_path):
    log = MetricsLog(tmp_path / "run")
    log.log(step=1, epoch=0, loss=np.float32(0.5))
    # flushed immediately: visible to a reader before close
    assert [json.loads(x) for x in _lines(tmp_path / "run")] == [{"step": 1, "epoch": 0, "loss": 0.5}]
    log.log({"step": 2, "loss": float("nan")}, lr=np.float64(0.1), n=np.int64(3))
    log.close()
    recs = read_metrics(tmp_path / "run")
    assert recs[1] == {"step": 2, "loss": None, "lr": 0.1, "n": 3}  # NaN -> null, strict JSON
    assert "NaN" not in (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(ValueError):
        log.log(step=3)
    # reopening without resume_step only appends
    with MetricsLog(tmp_path / "run") as log2:
        log2.log(step=3, loss=0.25)
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]


def test_resume_truncates_later_steps(tmp_path):
    with MetricsLog(tmp_path) as log:
        for step in range(1, 11):
            log.log(step=step, loss=1.0 / step)
            if step % 5 == 0:
                log.log(step=step, epoch=step // 5, val_loss=2.0 / step)
    with MetricsLog(tmp_path, resume_step=6) as log:
        assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 5, 6]
        for step in range(7, 11):
            log.log(step=step, loss=1.0 / step)
    steps = [r["step"] for r in read_metrics(tmp_path) if "loss" in r]
    assert steps == list(range(1, 11))  # no duplicates after resume
    assert len(_lines(tmp_path)) == 11
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temp files left


def test_torn_last_line_dropped(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    with MetricsLog(tmp_path) as log:
        log.log(step=2, loss=0.5)
    assert [json.loads(x) for x in _lines(tmp_path)] == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
    # a complete record that only lacks its newline is kept
    p.write_text('{"step": 1, "loss": 1.0}')
    with MetricsLog(tmp_path) as log:
        log.log(step=2, loss=0.5)
    assert len(_lines(tmp_path)) == 2


def test_malformed_middle_line_is_an_error_and_file_untouched(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\ngarbage\n{"step": 2}\n')
    before = p.read_bytes()
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        MetricsLog(tmp_path, resume_step=1)
    assert p.read_bytes() == before


def test_plot_loss(tmp_path):
    pytest.importorskip("matplotlib")
    assert plot_loss(tmp_path) is None  # no log yet
    with MetricsLog(tmp_path) as log:
        for step in range(1, 21):
            log.log(step=step, epoch=(step - 1) // 10, loss=1.0 / step)
            if step % 10 == 0:
                log.log(step=step, epoch=step // 10 - 1, val_loss=1.5 / step)
    out = plot_loss(tmp_path)
    assert out == tmp_path / "loss.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "metrics.jsonl"]


def test_plot_loss_without_matplotlib(tmp_path, monkeypatch):
    with MetricsLog(tmp_path) as log:
        log.log(step=1, loss=1.0)
    real_import = builtins.__import__

    def no_mpl(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    assert ml.plot_loss(tmp_path) is None
    assert not (tmp_path / "loss.png").exists()
