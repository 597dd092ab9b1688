"""benchmarks.icl_probe: synthetic in-context matching episodes on real GGUFs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fixtures_llm import tiny_gguf  # noqa: F401  (fixture)


def test_noisy_copies_replace_the_stated_fraction():
    from benchmarks.icl_probe import episode, noisy

    rng = np.random.default_rng(0)
    pool = np.arange(1000, 2000)
    proto = rng.choice(pool, 24)
    assert noisy(proto, 0.0, pool, rng) == proto.tolist()
    changed = [np.sum(np.asarray(noisy(proto, 0.5, np.arange(5000, 6000), rng)) != proto) for _ in range(5)]
    assert changed == [12] * 5
    demos, query, truth, labels = episode(np.random.default_rng(1), pool, 3, 2, 24, 0.0)
    assert len(demos) == 6 and sorted(lab for _, lab in demos) == sorted(labels * 2)
    assert any(d == query and lab == labels[truth] for d, lab in demos)  # rate 0: the query is a demo


def test_probe_runs_and_writes_a_table(tiny_gguf, tmp_path, capsys):  # noqa: F811
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    from benchmarks.icl_probe import main

    assert main(["--model", str(tiny_gguf), "--episodes", "3", "--rates", "0", "0.85", "--threads", "1",
                 "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "icl_probe.jsonl").read_text().splitlines()]
    assert [r["rate"] for r in rows] == [0.0, 0.85] and all(0 <= r["accuracy"] <= 1 for r in rows)
    assert all(r["ci95"][0] <= r["accuracy"] <= r["ci95"][1] for r in rows)
    assert "| 85% |" in (tmp_path / "icl_probe.md").read_text()
    assert main(["--model", str(tiny_gguf), "--ways", "1"]) == 1
    assert "--ways" in capsys.readouterr().err
