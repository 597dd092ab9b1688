"""The generator objective: reconstruction + VQ + semantic (layer 1) + consistency (layer 2) (+ GAN terms).

Kept apart from the loop so the ablation and tests can evaluate the same losses on a fixed batch.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor, nn

from codec.pitch import PitchHead, pitch_loss
from codec.losses import (MultiResolutionMelLoss, MultiResolutionSTFTLoss, consistency_loss, feature_matching_loss,
                          generator_adversarial_loss, semantic_loss)
from codec.teacher import Teacher
from codec.vocab import LlmVocab, SpmBpe


@dataclass
class LossWeights:
    """Weights of the generator terms (official §5: "no special loss design", i.e. mostly 1.0)."""

    stft: float = 1.0
    mel: float = 1.0
    commitment: float = 1.0
    codebook: float = 1.0
    entropy: float = 5.0  # codebook-usage entropy (codec.losses.codebook_usage_loss), in [-1, 0] per layer; 0: off
    semantic: float = 1.0
    consistency: float = 1.0
    adversarial: float = 1.0
    feature: float = 2.0
    pitch: float = 0.0  # F0 + voicing from zq against YIN targets (codec.pitch); 0: off (no head)
    f0: float = 1.0  # a harmonic decoder head's own F0 + voicing against YIN at its hop (other heads: none)

    def update(self, assignments: list[str]) -> "LossWeights":
        """Apply ``name=value`` strings (``--loss-weight mel=2``)."""
        known = {f.name for f in fields(self)}
        for item in assignments:
            name, sep, value = item.partition("=")
            if not sep or name not in known:
                raise ValueError(f"bad --loss-weight {item!r}; use NAME=VALUE with NAME in {sorted(known)}")
            setattr(self, name, float(value))
        return self


class TextTargets:
    """Clip text -> mean LLM token embedding ``(D_llm,)`` (SentencePiece-BPE pieces of the lower-cased text).

    Texts are tokenised with the GGUF's own pieces and scores (codec.vocab.SpmBpe), so a label like
    "sea waves" maps to the same ids LLaMA would see; results are cached per text.
    """

    def __init__(self, vocab: LlmVocab) -> None:
        if vocab.embeddings is None:
            raise ValueError("semantic targets need token embeddings; the GGUF is vocab-only")
        self._bpe = SpmBpe(vocab)
        self._table = vocab.embeddings
        self._cache: dict[str, np.ndarray | None] = {}

    def mean_embedding(self, text: str | None) -> np.ndarray | None:
        if not text:
            return None
        if text not in self._cache:
            ids = self._bpe.encode(text.lower())
            self._cache[text] = self._table[ids].mean(axis=0) if ids else None
        return self._cache[text]

    def batch(self, texts: list[str | None], device: torch.device) -> tuple[Tensor, Tensor]:
        """``(embeddings (B, D_llm), mask (B,) bool)``; rows without text are zeros with mask False."""
        dim = self._table.shape[1]
        rows = [self.mean_embedding(t) for t in texts]
        emb = np.stack([r if r is not None else np.zeros(dim, np.float32) for r in rows]).astype(np.float32)
        mask = torch.tensor([r is not None for r in rows], dtype=torch.bool, device=device)
        return torch.from_numpy(emb).to(device), mask


class GeneratorObjective(nn.Module):
    """Holds the loss modules and the trainable consistency head (``latent -> teacher.dim``)."""

    def __init__(self, latent_dim: int, sample_rate: int, weights: LossWeights, teacher: Teacher | None,
                 text_targets: TextTargets | None) -> None:
        super().__init__()
        self.weights = weights
        self.stft = MultiResolutionSTFTLoss()
        self.mel = MultiResolutionMelLoss(sample_rate)
        self.teacher = teacher
        self.head = nn.Linear(latent_dim, teacher.dim) if teacher is not None else None
        self.pitch_head = PitchHead(latent_dim) if weights.pitch > 0 else None
        self.text_targets = text_targets

    def reconstruction(self, audio: Tensor, wav: Tensor) -> dict[str, Tensor]:
        return {"stft": self.stft(audio, wav), "mel": self.mel(audio, wav)}

    def forward(self, out, wav: Tensor, texts: list[str | None], cb_proj1: nn.Module,
                disc_fake: tuple[list[Tensor], list[list[Tensor]]] | None = None,
                disc_real_feats: list[list[Tensor]] | None = None, head_pred: Tensor | None = None,
                pitch_pred: Tensor | None = None, entropy_scale: float = 1.0) -> dict[str, Tensor]:
        """All generator terms plus ``total`` (weighted sum) for a model output ``out`` on ``wav (B, 1, N)``.

        ``out`` is a :class:`codec.model.CodecOutput`: ``audio (B, 1, N)``, ``vq_losses`` (scalars) and
        ``per_layer_zq`` (layer ``l``: ``(B, latent, T)``). ``cb_proj1`` is the layer-1 projection ``Linear(D_llm -> latent)``.
        ``head_pred (B, T, F)`` is ``self.head`` applied to layer-2 zq (computed inside the DDP-wrapped
        module so the head's gradients are synchronised); computed here when None. ``pitch_pred (B, T, 2)``
        likewise for ``self.pitch_head`` on zq. ``entropy_scale`` multiplies the usage-entropy weight on this step
        (``--entropy-every N``: N on the steps that compute it, 0 on the others, which then log no entropy).
        """
        terms = self.reconstruction(out.audio, wav)
        terms["commitment"], terms["codebook"] = out.vq_losses.commitment, out.vq_losses.codebook
        if self.weights.entropy > 0 and entropy_scale > 0:
            terms["entropy"] = out.vq_losses.entropy
        if self.text_targets is not None and self.weights.semantic > 0:
            emb, mask = self.text_targets.batch(texts, wav.device)
            with torch.no_grad():  # a fixed target: cb_proj must not shrink to satisfy it
                target = cb_proj1(emb)
            terms["semantic"] = semantic_loss(out.per_layer_zq[0], target, mask)
        if self.teacher is not None and self.weights.consistency > 0:
            pred = self.head(out.per_layer_zq[1].transpose(1, 2)) if head_pred is None else head_pred  # (B, T, F)
            terms["consistency"] = consistency_loss(pred, self.teacher(wav))
        if self.pitch_head is not None:
            pred = self.pitch_head(out.zq) if pitch_pred is None else pitch_pred  # (B, T, 2)
            terms["pitch"] = pitch_loss(pred, wav)
        if out.pitch is not None and self.weights.f0 > 0:
            terms["f0"] = pitch_loss(out.pitch, wav, out.pitch_hop, out.pitch_target)
        if disc_fake is not None:
            terms["adversarial"] = generator_adversarial_loss(disc_fake[0])
            terms["feature"] = feature_matching_loss(disc_real_feats, disc_fake[1])
        terms["total"] = sum(getattr(self.weights, k) * (entropy_scale if k == "entropy" else 1.0) * v
                             for k, v in terms.items())
        terms["recon"] = (terms["stft"] + terms["mel"]).detach()
        return terms
