"""benchmarks.train_compare: minutes of a chain of warm-started runs add up; an interrupted run's end counts."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.train_compare import chain_curve, main, parse_chain


def _run(d: Path, metric_rows: list[tuple[int, float]], eval_steps: list[int], recon: float) -> Path:
    d.mkdir()
    (d / "metrics.csv").write_text("step,recon,secs\n" + "".join(f"{s},{recon},{secs}\n" for s, secs in metric_rows))
    (d / "eval.csv").write_text("step,recon,stft,mel\n" + "".join(f"{s},{recon - s / 1000},1,0.5\n" for s in eval_steps))
    return d


def test_chain_minutes_add_up_and_a_missing_final_eval_is_taken_from_the_next_run(tmp_path):
    first = _run(tmp_path / "a", [(10, 60.0), (20, 60.0)], [0, 10], 3.0)  # interrupted at 20: no final eval
    second = _run(tmp_path / "b", [(10, 120.0)], [0, 10], 2.0)
    curve = chain_curve([first, second])
    assert [(round(m, 3), s) for m, s, _ in curve] == [(0.0, 0), (1.0, 10), (2.0, 0), (4.0, 10)]
    ended = _run(tmp_path / "c", [(10, 60.0)], [0, 10], 3.0)  # evaluated at its end: the next step 0 repeats it
    assert [s for _, s, _ in chain_curve([ended, second])] == [0, 10, 10]


def test_cli_writes_plot_and_table_and_rejects_bad_runs(tmp_path, capsys):
    run = _run(tmp_path / "a", [(10, 60.0)], [0, 10], 3.0)
    out = tmp_path / "cmp.png"
    assert main([f"x={run}", f"y={run}+{run}", "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and "| y | 2 | 10 |" in out.with_suffix(".md").read_text()
    with pytest.raises(ValueError, match="NAME=RUN"):
        parse_chain(str(run))
    with pytest.raises(SystemExit):
        main([f"x={tmp_path}", "--out", str(tmp_path / "other.png")])
    assert "not a codec.train --out directory" in capsys.readouterr().err
