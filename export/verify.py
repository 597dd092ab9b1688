"""Check a bundle in onnxruntime (CPU) against its torch golden pairs. numpy + onnxruntime only.

Checks, each must pass for export to succeed:
- every step graph, teacher-forced (golden state in) and free-running (own state carried over
  all S steps): main output and every state output at SNR >= ``ORT_MIN_SNR_DB``;
- offline graphs vs the torch offline pass (latent, decoded audio);
- codes: the runtime's numpy RVQ on the ORT latents (offline graph and the streaming path of the
  runtime) equals the torch codes, except where torch's best two cosine scores are closer than
  ``NEAR_TIE_EPS`` (a near-tie; later layers of that group are then not comparable).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from export.compare import Match, compare
from runtime.codec import CodecSession
from kernels.reference import code_mismatches as _code_mismatches
from kernels.reference import rvq_reference
from kernels.tolerances import TOLERANCES

# The gate is a row of the project's one tolerance table.
ORT_MIN_SNR_DB = float(TOLERANCES["codec_ort_cpu_vs_torch"].min_snr_db)
NEAR_TIE_EPS = float(TOLERANCES["codec_ort_cpu_vs_torch"].tie_eps)


@dataclass
class Report:
    """All comparisons of one verification run; ``ok`` only if every one passed."""

    matches: list[Match] = field(default_factory=list)
    codes: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.matches) and all(c["hard"] == 0 for c in self.codes.values())

    def lines(self) -> list[str]:
        """One line per graph (its worst tensor) plus every failure and the code comparisons."""
        by_graph: dict[str, list[Match]] = {}
        for m in self.matches:
            by_graph.setdefault(m.name.split("[")[0], []).append(m)
        out = []
        for graph, ms in by_graph.items():
            worst = min(ms, key=lambda m: m.snr_db)
            out.append(f"{graph}: {len(ms)} tensors {'ok' if all(m.ok for m in ms) else 'FAIL'}, worst {worst}")
            out += [f"  {m}" for m in ms if not m.ok]
        out += [f"{k}: {v['mismatch']} of {v['total']} codes differ ({v['near_tie']} near-ties, {v['hard']} real) "
                f"{'ok' if v['hard'] == 0 else 'FAIL'}" for k, v in self.codes.items()]
        return out

    def summary(self) -> dict[str, Any]:
        finite = [m.snr_db for m in self.matches if np.isfinite(m.snr_db)]
        return {"ok": self.ok, "checks": len(self.matches), "min_snr_db": round(min(finite), 2) if finite else None,
                "codes": self.codes, "failed": [str(m) for m in self.matches if not m.ok]}


def reference_codes(latent: np.ndarray, tables: list[tuple[np.ndarray, np.ndarray]],
                    strides: tuple[int, ...]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Codes and top-2 score gaps per layer for ``latent (T, D)`` (``kernels.reference.rvq_reference``)."""
    codes, gaps, _ = rvq_reference(latent, tables, strides)
    return codes, gaps


def code_mismatches(ref: list[np.ndarray], test: list[np.ndarray], gaps: list[np.ndarray],
                    strides: tuple[int, ...], eps: float = NEAR_TIE_EPS) -> dict[str, int]:
    """``kernels.reference.code_mismatches`` (the one near-tie rule) at this gate's epsilon."""
    return _code_mismatches(ref, test, gaps, strides, eps)


def check_step_graph(session: CodecSession, name: str, golden: dict[str, np.ndarray], min_snr: float) -> list[Match]:
    """Teacher-forced and free-running comparison of one step graph."""
    spec = session.bundle.graphs[name]
    sess = session.graph(name)
    out_names = [t.name for t in spec.outputs]
    steps = golden[f"in.{spec.inputs[0].name}"].shape[0]
    forced: dict[str, list[np.ndarray]] = {n: [] for n in out_names}
    free: list[np.ndarray] = []
    state = [golden[f"in.{t.name}"][0] for t in spec.inputs[1:]]
    for s in range(steps):
        outs = sess.run(out_names, {t.name: golden[f"in.{t.name}"][s] for t in spec.inputs})
        for n, o in zip(out_names, outs):
            forced[n].append(o)
        y, *state = sess.run(out_names, {spec.inputs[0].name: golden[f"in.{spec.inputs[0].name}"][s],
                                         **{t.name: v for t, v in zip(spec.inputs[1:], state)}})
        free.append(y)
    matches = [compare(f"{name}[{n}]", golden[f"out.{n}"], np.stack(forced[n]), min_snr) for n in out_names]
    matches.append(compare(f"{name}[{out_names[0]}, free-running {steps} steps]", golden[f"out.{out_names[0]}"],
                           np.stack(free), min_snr))
    return matches


def verify_bundle(bundle_dir: Path, log: Callable[[str], None] = print,
                  min_snr: float = ORT_MIN_SNR_DB, eps: float = NEAR_TIE_EPS) -> Report:
    """Run every check on ``bundle_dir`` with onnxruntime CPU; log each line; return the report."""
    session = CodecSession(bundle_dir, provider="cpu")
    golden_files = session.bundle.manifest["golden"]
    report = Report()
    for name, rel in golden_files.items():
        if name != "offline":
            report.matches += check_step_graph(session, name, dict(np.load(bundle_dir / rel)), min_snr)
    off = dict(np.load(bundle_dir / golden_files["offline"]))
    (latent,) = session.graph("encoder_offline").run(None, {"audio": off["audio"]})
    (decoded,) = session.graph("decoder_offline").run(None, {"latent": off["zq"]})
    report.matches.append(compare("encoder_offline[latent]", off["latent"], latent, min_snr))
    report.matches.append(compare("decoder_offline[audio]", off["decoded"], decoded, min_snr))
    strides = session.strides
    torch_codes = [off[f"codes{l + 1}"] for l in range(len(strides))]
    _, gaps = reference_codes(off["latent"][0].T, session.tables, strides)
    report.codes["codes[encoder_offline]"] = code_mismatches(
        torch_codes, session.quantize(latent[0].T)[0], gaps, strides, eps)
    stream = session.new_stream()
    groups = stream.encode(off["audio"].reshape(-1)) + stream.flush()
    stream_codes = [np.concatenate([g[l] for g in groups]) for l in range(len(strides))]
    report.codes["codes[runtime stream]"] = code_mismatches(torch_codes, stream_codes, gaps, strides, eps)
    report.matches.append(compare("runtime stream decode[torch codes]", off["decoded"].reshape(-1),
                                  session.new_stream().decode(torch_codes), min_snr))
    for line in report.lines():
        log(line)
    return report
