"""benchmarks.fewshot end to end on labelled views of ../shared/data with the tiny LLaMA + matched codec."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from fixtures_tasks import blas_one_thread, demo_root, matched_bundle, task_llm  # noqa: F401

pytestmark = pytest.mark.usefixtures("blas_one_thread")
FINAL = re.compile(r"^accuracy=(\d\.\d{4}) ci95=\[(\d\.\d{4}),(\d\.\d{4})\] chance=(\d\.\d{4}) episodes=(\d+)$")


def _bench(capsys, *argv):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    from benchmarks.fewshot import main

    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("k,n,lo,hi", [(5, 10, 0.2366, 0.7634), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0),
                                       (81, 263, 0.2553, 0.3662)])
def test_wilson_interval(k, n, lo, hi):
    from benchmarks.fewshot import wilson

    got = wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_episodes_never_put_the_query_among_the_demos(tmp_path):
    from benchmarks.fewshot import draw_episode

    groups = {f"c{i}": [tmp_path / f"c{i}_{j}.wav" for j in range(3)] for i in range(4)}
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        demos, (q, ql) = draw_episode(rng, groups, 3, 2)
        labels = [lab for _, lab in demos]
        assert len(demos) == 6 and len(set(labels)) == 3 and all(labels.count(c) == 2 for c in set(labels))
        assert ql in labels and q not in [p for p, _ in demos] and q in groups[ql]
        seen.add(ql)
    assert seen == set(groups)


def test_classify_benchmark_end_to_end(capsys, task_llm, matched_bundle, demo_root, tmp_path):
    out = tmp_path / "fs.jsonl"
    rc, stdout, err = _bench(capsys, "--task", "classify", "--data", demo_root / "labelled" / "esc50",
                             "--ways", 3, "--shots", 2, "--episodes", 6, "--seed", 1, "--model", task_llm,
                             "--codec", matched_bundle, "--threads", 2, "--out", out)
    assert rc == 0, err
    lines = stdout.strip().splitlines()
    assert len(lines) == 7 and all(ln.startswith(f"episode {i + 1}/6:") for i, ln in enumerate(lines[:6]))
    m = FINAL.match(lines[-1])
    assert m, lines[-1]
    acc, lo, hi, chance, episodes = float(m[1]), float(m[2]), float(m[3]), float(m[4]), int(m[5])
    assert 0 <= lo <= acc <= hi <= 1 and chance == pytest.approx(1 / 3, abs=1e-4) and episodes == 6
    records = [json.loads(x) for x in out.read_text().splitlines()]
    eps, summary = records[:-1], records[-1]
    assert len(eps) == 6 and summary["summary"] and summary["episodes"] == 6
    for r in eps:
        demo_paths = [p for p, _ in r["demos"]]
        assert r["query"] not in demo_paths and len(demo_paths) == 6
        assert r["label"] in {lab for _, lab in r["demos"]} and r["pred"] in r["logprobs"]
        assert all(math.isfinite(v) for v in r["logprobs"].values())
    assert sum(r["correct"] for r in eps) / 6 == pytest.approx(acc, abs=1e-4)
    unique = {p for r in eps for p in [r["query"], *[d for d, _ in r["demos"]]]}
    assert summary["clips_encoded"] == len(unique)  # each clip encoded once


def test_denoise_benchmark_reports_metrics(capsys, task_llm, matched_bundle, demo_root):
    rc, stdout, err = _bench(capsys, "--task", "denoise", "--data", demo_root / "labelled" / "voicebank",
                             "--shots", 1, "--episodes", 2, "--model", task_llm, "--codec", matched_bundle,
                             "--threads", 2, "--clip-seconds", 0.48)
    assert rc == 0, err
    last = stdout.strip().splitlines()[-1]
    vals = dict(kv.split("=") for kv in last.split())
    assert set(vals) == {"pesq_wb_in", "pesq_wb_out", "stoi_in", "stoi_out", "si_sdr_in", "si_sdr_out", "files"}
    assert vals["files"] == "2"
    assert 1.0 <= float(vals["pesq_wb_in"]) <= 4.65 and 0.3 < float(vals["stoi_in"]) <= 1.0
    assert float(vals["si_sdr_in"]) > -10  # real noisy speech vs its clean reference


def test_benchmark_errors(capsys, task_llm, matched_bundle, demo_root, tmp_path):
    common = ["--model", task_llm, "--codec", matched_bundle]
    rc, _, err = _bench(capsys, "--task", "classify", "--data", demo_root / "labelled" / "esc50", "--ways", 11, *common)
    assert rc == 1 and "11-way episodes need 11 labels, the data has 10" in err
    rc, _, err = _bench(capsys, "--task", "classify", "--data", tmp_path, *common)
    assert rc == 1 and "no <label>/ sub-folders" in err
    rc, _, err = _bench(capsys, "--task", "denoise", "--data", demo_root / "labelled" / "esc50", *common)
    assert rc == 1 and "clean/ and noisy/" in err
