"""Trace the codec's encoder/decoder to ONNX: fixed-chunk step graphs with explicit state, and
offline graphs with a dynamic time axis.

The legacy TorchScript exporter (``dynamo=False``) is used: it is fast, and with weight norm folded
beforehand the graphs hold plain Conv/ConvTranspose weights. Snake is plain Sin/Mul/Reciprocal ops.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import onnx
import torch
from torch import nn

from codec.modules.streaming import StepModule

OPSET = 17
# float64: the harmonic decoder head's oscillator phase (codec.modules.harmonic).
_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16", torch.int64: "int64",
           torch.int32: "int32"}
# (input name, output name, symbolic time axis in, out) of each half of the codec.
_IO = {"encoder": ("audio", "latent", "samples", "frames"), "decoder": ("latent", "audio", "frames", "samples")}


@contextmanager
def _quiet_tracer() -> Iterator[None]:
    """The shape checks in ``step``/``forward`` are Python branches on static shapes: constant in a
    fixed-chunk trace by design, so the tracer's warnings about them are noise here; so is the
    deprecation notice of the legacy exporter, which is chosen on purpose (fast, folds weight norm)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is chosen on purpose
        yield


def state_specs(module: nn.Module, batch: int = 1) -> list[dict[str, Any]]:
    """``[{name: "state_in.<layer>.<name>", shape, dtype}]`` of a streaming module, in step order."""
    state = module.init_state(batch)
    names = module.state_names()
    if len(names) != len(state):
        raise ValueError(f"{type(module).__name__}: {len(names)} state names for {len(state)} state tensors")
    for n, s in zip(names, state):
        if torch.count_nonzero(s):
            raise ValueError(f"state {n} does not start at zeros; the bundle format assumes zero initial state")
    return [{"name": f"state_in.{n}", "shape": list(s.shape), "dtype": _DTYPES[s.dtype]} for n, s in zip(names, state)]


def _spec(name: str, t: torch.Tensor) -> dict[str, Any]:
    return {"name": name, "shape": list(t.shape), "dtype": _DTYPES[t.dtype]}


def example_input(part: str, cfg: Any, frames: int, batch: int = 1) -> torch.Tensor:
    """A seeded random encoder audio ``(B, 1, frames*hop)`` or decoder latent ``(B, latent, frames)``."""
    g = torch.Generator().manual_seed(frames)
    shape = (batch, 1, frames * cfg.hop) if part == "encoder" else (batch, cfg.latent_dim, frames)
    return 0.1 * torch.randn(shape, generator=g)


@torch.no_grad()
def export_step(module: nn.Module, part: str, cfg: Any, k: int, path: Path) -> dict[str, Any]:
    """Export ``part``'s ``step`` for chunks of ``k`` frames; returns the manifest graph entry."""
    x = example_input(part, cfg, k)
    state = module.init_state(1)
    names = module.state_names()
    in_name, out_name = _IO[part][:2]
    inputs = [in_name] + [f"state_in.{n}" for n in names]
    outputs = [out_name] + [f"state_out.{n}" for n in names]
    y, *new_state = module.step(x, *state)
    with _quiet_tracer():
        torch.onnx.export(StepModule(module).eval(), (x, *state), str(path), input_names=inputs,
                          output_names=outputs, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    _check_io(path, inputs, outputs)
    return {"file": path.name, "kind": f"{part}_step", "chunk_frames": k,
            "inputs": [_spec(n, t) for n, t in zip(inputs, (x, *state))],
            "outputs": [_spec(n, t) for n, t in zip(outputs, (y, *new_state))]}


@torch.no_grad()
def export_offline(module: nn.Module, part: str, cfg: Any, path: Path) -> dict[str, Any]:
    """Export ``part``'s offline ``forward`` with dynamic batch and time axes."""
    in_name, out_name, t_in, t_out = _IO[part]
    x = example_input(part, cfg, 2 * cfg.group_frames)
    y = module(x)
    with _quiet_tracer():
        torch.onnx.export(module.eval(), (x,), str(path), input_names=[in_name], output_names=[out_name],
                          dynamic_axes={in_name: {0: "batch", 2: t_in}, out_name: {0: "batch", 2: t_out}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    _check_io(path, [in_name], [out_name])
    sym = {"audio": ["batch", 1, "samples"], "latent": ["batch", cfg.latent_dim, "frames"]}
    return {"file": path.name, "kind": f"{part}_offline", "chunk_frames": None,
            "inputs": [{"name": in_name, "shape": sym[in_name], "dtype": _DTYPES[x.dtype]}],
            "outputs": [{"name": out_name, "shape": sym[out_name], "dtype": _DTYPES[y.dtype]}]}


def _check_io(path: Path, inputs: list[str], outputs: list[str]) -> None:
    """The exporter silently drops unused inputs: the step contract needs every state as I/O."""
    graph = onnx.load(str(path), load_external_data=False).graph
    got_in, got_out = [i.name for i in graph.input], [o.name for o in graph.output]
    if got_in != inputs or got_out != outputs:
        raise RuntimeError(f"{path.name}: exported I/O {got_in} -> {got_out} differs from the step "
                           f"contract {inputs} -> {outputs} (an unused or pass-through state?)")


def add_metadata(path: Path, props: dict[str, str]) -> None:
    """Write ``props`` into the graph's ``metadata_props`` (replacing earlier values)."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
