"""Streaming ``step`` equals offline ``forward`` for every chunking; state contract; ONNX traceability."""
from __future__ import annotations

import io
import itertools
import re

import numpy as np
import pytest
import torch

from codec.model import LLMCodec
from codec.modules import CausalLocalAttention, StepModule
from helpers_codec import make_codec, sample_audio
from tolerances import TOLERANCES

pytestmark = pytest.mark.usefixtures("torch_one_thread")

HOP = 480
ATOL = 1e-5
# A harmonic head's oscillators integrate F0: float rounding drifts their phase (see the tolerance row).
OSC_ATOL = TOLERANCES["audio_oscillator_torch_stream_vs_torch_offline"].atol


def _audio_atol(codec: LLMCodec) -> float:
    return OSC_ATOL if codec.cfg.decoder_head == "harmonic" else ATOL
FRAMES = 24

SCHEDULES = [
    pytest.param([1], id="chunk1"),
    pytest.param([2], id="chunk2"),
    pytest.param([3], id="chunk3"),
    pytest.param([1, 3, 2, 5, 1, 4], id="ragged"),
]


def _chunks(total: int, schedule: list[int]) -> list[tuple[int, int]]:
    out, start = [], 0
    for size in itertools.cycle(schedule):
        if start >= total:
            return out
        size = min(size, total - start)
        out.append((start, start + size))
        start += size


HEADS = {"conv": {"decoder_head": "conv"}, "istft": {"decoder_head": "istft"},
         "harmonic": {"decoder_head": "harmonic"}, "istft-overlap16": {"decoder_head": "istft", "head_overlap": 16}}


@pytest.fixture(scope="module", params=list(HEADS))
def codec(request: pytest.FixtureRequest) -> LLMCodec:
    """The tiny codec with each decoder output head (transposed convs, one stage + inverse STFT with a 4- or
    16-frame window, or that plus an oscillator bank)."""
    return make_codec(seed=7, **HEADS[request.param])


def _stream(block, x: torch.Tensor, bounds: list[tuple[int, int]], scale: int, batch: int) -> torch.Tensor:
    state = block.init_state(batch)
    outs = []
    for a, b in bounds:
        y, *state = block.step(x[..., a * scale: b * scale], *state)
        outs.append(y)
    return torch.cat(outs, dim=-1)


@pytest.mark.parametrize("schedule", SCHEDULES)
@torch.no_grad()
def test_encoder_stream_equals_offline(codec: LLMCodec, schedule: list[int]) -> None:
    x = sample_audio(FRAMES * HOP / 16000, batch=2, seed=11)
    offline = codec.encoder(x)
    streamed = _stream(codec.encoder, x, _chunks(FRAMES, schedule), HOP, batch=2)
    assert streamed.shape == offline.shape == (2, codec.cfg.latent_dim, FRAMES)
    assert torch.allclose(streamed, offline, atol=ATOL, rtol=0)


@pytest.mark.parametrize("schedule", SCHEDULES)
@torch.no_grad()
def test_decoder_stream_equals_offline(codec: LLMCodec, schedule: list[int]) -> None:
    z = torch.randn(2, codec.cfg.latent_dim, FRAMES, generator=torch.Generator().manual_seed(12))
    offline = codec.decoder(z)
    streamed = _stream(codec.decoder, z, _chunks(FRAMES, schedule), 1, batch=2)
    assert streamed.shape == offline.shape == (2, 1, FRAMES * HOP)
    assert torch.allclose(streamed, offline, atol=_audio_atol(codec), rtol=0)
    if codec.cfg.decoder_head == "harmonic":
        snr = 10 * torch.log10(offline.pow(2).sum() / (streamed - offline).pow(2).sum())
        assert snr >= TOLERANCES["audio_oscillator_torch_stream_vs_torch_offline"].min_snr_db


@pytest.mark.parametrize("schedule", SCHEDULES)
@torch.no_grad()
def test_codes_per_completed_group_equal_offline(codec: LLMCodec, schedule: list[int]) -> None:
    """Encoder step in chunks of frames; each completed 4-frame group is quantised on its own."""
    x = sample_audio(FRAMES * HOP / 16000, seed=13)
    tables = codec.quantizer.projected_tables()
    state, pending, got = codec.encoder.init_state(1), [], [[], [], []]
    for a, b in _chunks(FRAMES, schedule):
        latent, *state = codec.encoder.step(x[..., a * HOP: b * HOP], *state)
        pending.append(latent)
        buf = torch.cat(pending, dim=-1)
        whole = buf.shape[-1] // 4 * 4
        if whole:
            for g in range(0, whole, 4):
                for layer, c in enumerate(codec.quantizer.quantize_groups(buf[..., g:g + 4], tables)[1]):
                    got[layer].append(c)
        pending = [buf[..., whole:]]
    for mine, ref in zip(got, codec.encode(x)):
        assert torch.equal(torch.cat(mine, dim=-1), ref)


@torch.no_grad()
def test_encode_stream_with_ragged_pushes_and_flush_equals_encode(codec: LLMCodec) -> None:
    x = sample_audio(0.77, batch=2, seed=14)  # 12320 samples: not a whole number of hops or groups
    stream, groups, start = codec.encode_stream(batch=2), [], 0
    for size in itertools.cycle([1000, 37, 2500, 480, 1]):
        if start >= x.shape[-1]:
            break
        groups += stream.push(x[..., start:start + size])
        start += size
    assert len(groups) == x.shape[-1] // codec.group_samples  # only completed groups before the flush
    groups += stream.flush()
    for layer, ref in enumerate(codec.encode(x)):
        assert torch.equal(torch.cat([g[layer] for g in groups], dim=-1), ref)


@torch.no_grad()
def test_decode_stream_equals_decode(codec: LLMCodec) -> None:
    codes = codec.encode(sample_audio(0.96, seed=15))  # 8 groups
    stream = codec.decode_stream()
    audio = torch.cat([stream.push([c[:, g * n:(g + 1) * n] for c, n in zip(codes, (1, 2, 4))])
                       for g in range(8)], dim=-1)
    assert torch.allclose(audio, codec.decode(codes), atol=_audio_atol(codec), rtol=0)


@pytest.mark.parametrize("part", ["encoder", "decoder"])
@torch.no_grad()
def test_state_contract(codec: LLMCodec, part: str) -> None:
    block = getattr(codec, part)
    names, init = block.state_names(), block.init_state(2)
    assert len(names) == len(init) == len(set(names))
    assert all(re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)+", n) for n in names), names
    assert "attn.k" in names
    if part == "encoder" or codec.cfg.decoder_head == "conv":
        assert "block2.res1.conv.prev" in names
    else:
        assert "head.idft.tail" in names and "block2.res1.conv.prev" not in names
    assert all(t.abs().sum() == 0 for t in init)
    for k in (1, 3):
        x = torch.randn(2, 1, k * HOP) if part == "encoder" else torch.randn(2, codec.cfg.latent_dim, k)
        x_copy, state_copy = x.clone(), [s.clone() for s in init]
        y1, *s1 = block.step(x, *init)
        y2, *s2 = block.step(x, *init)
        assert torch.equal(x, x_copy) and all(torch.equal(a, b) for a, b in zip(init, state_copy))  # pure
        assert torch.equal(y1, y2) and all(torch.equal(a, b) for a, b in zip(s1, s2))
        assert [tuple(s.shape) for s in s1] == [tuple(s.shape) for s in init]  # fixed shapes, any k


def test_step_rejects_partial_hops(codec: LLMCodec) -> None:
    with pytest.raises(ValueError, match="whole number of hops"):
        codec.encoder.step(torch.zeros(1, 1, HOP + 1), *codec.encoder.init_state(1))
    with pytest.raises(ValueError, match="state tensors"):
        codec.encoder.step(torch.zeros(1, 1, HOP))


@torch.no_grad()
def test_attention_sees_exactly_its_window() -> None:
    torch.manual_seed(0)
    attn = CausalLocalAttention(dim=16, window=4, dim_head=8).eval()
    x = torch.randn(1, 16, 12)
    base = attn(x)
    for src, hits in ((5, range(5, 9)), (0, range(0, 4))):
        y = x.clone()
        y[..., src] += 3.0 * torch.randn(16)  # not a constant shift: LayerNorm would remove that
        moved = (attn(y) - base).abs().amax(dim=1)[0]
        changed = {int(t) for t in torch.nonzero(moved > 1e-6)}
        assert changed == set(hits), (src, changed)


def _ort_steps(block, step_input, steps: int, batch: int = 1) -> float:
    """Trace ``step`` to ONNX with explicit state I/O, run it ``steps`` times in onnxruntime, return max |diff|."""
    ort = pytest.importorskip("onnxruntime")
    names = block.state_names()
    state = block.init_state(batch)
    buf = io.BytesIO()
    torch.onnx.export(StepModule(block), (step_input(0), *state), buf, dynamo=False, opset_version=17,
                      input_names=["x"] + [f"state_in.{n}" for n in names],
                      output_names=["y"] + [f"state_out.{n}" for n in names])
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    ort_state = [s.numpy() for s in state]
    worst = 0.0
    for i in range(steps):
        x = step_input(i)
        y, *state = block.step(x, *state)
        feeds = {"x": x.numpy(), **{f"state_in.{n}": s for n, s in zip(names, ort_state)}}
        y_ort, *ort_state = sess.run(None, feeds)
        worst = max(worst, float(np.abs(y_ort - y.numpy()).max()))
    return worst


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy (TorchScript) exporter: fast, still supported
@pytest.mark.parametrize("head", list(HEADS))
@torch.no_grad()
def test_steps_trace_to_onnx_and_match_onnxruntime(head: str) -> None:
    model = make_codec(seed=8, **HEADS[head])
    model.fold_weight_norm()
    audio = sample_audio(8 * 2 * HOP / 16000, seed=16)
    assert _ort_steps(model.encoder, lambda i: audio[..., 2 * i * HOP:(2 * i + 2) * HOP], steps=8) < 1e-5
    latents = torch.randn(1, model.cfg.latent_dim, 16, generator=torch.Generator().manual_seed(17))
    assert _ort_steps(model.decoder, lambda i: latents[..., 2 * i:2 * i + 2], steps=8) < _audio_atol(model)
