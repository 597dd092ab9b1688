"""One GAN training step of the codec and the state it needs (optimisers, schedules, resume).

Order per step: the discriminator is updated first on (real, detached fake) in one forward, then
the generator on reconstruction + VQ + semantic + consistency + adversarial + feature matching,
with the real features from the discriminator forward reused (detached). During the generator
step the discriminator's weights do not require grad, so no gradient is wasted on them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

from codec.losses import discriminator_loss
from codec.model import LLMCodec
from codec.pitch import yin
from codec.training.objective import GeneratorObjective
from codec.training.state import DistInfo, lr_factor


@dataclass
class OptimConfig:
    lr: float = 3e-4
    disc_lr: float | None = None  # default: lr
    betas: tuple[float, float] = (0.8, 0.99)
    eps: float = 1e-6
    weight_decay: float = 0.0
    warmup: int = 100
    schedule: str = "cosine"
    final_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    adv_start: int = 0  # first step with the discriminator (None-like: >= total steps disables it)
    disc_every: int = 1  # discriminator update + adversarial terms on every N-th step from adv_start
    bf16: bool = False  # bf16 autocast of the convolutions (search, losses, audio stay float32)
    gain_every: int = 0  # re-fit the VQ layers' scales (MultiScaleRVQ.match_gains) every N steps; 0: never
    f0_teacher: float = 0.0  # harmonic head: the share of steps whose oscillators get the input's YIN F0
    # usage entropy on every N-th step only, weighted xN there: its soft assignment over the codebooks was about a
    # quarter of each step on a 2-core CPU (benchmarks/results/train_ab/long16_cpu_quality.md)
    entropy_every: int = 1


class CodecWithHead(nn.Module):
    """The codec plus the consistency and pitch heads, so DDP synchronises all with one wrapper."""

    def __init__(self, codec: LLMCodec, head: nn.Module | None, pitch_head: nn.Module | None = None,
                 f0_teacher: float = 0.0) -> None:
        super().__init__()
        self.codec, self.head, self.pitch_head, self.f0_teacher = codec, head, pitch_head, f0_teacher

    def forward(self, wav: Tensor):
        target = self._teacher_f0(wav)
        out = self.codec(wav, None if target is None else torch.where(target[1], target[0], 0.0))
        out.pitch_target = target  # the f0 loss reuses this YIN pass
        pred = self.head(out.per_layer_zq[1].transpose(1, 2)).float() if self.head is not None else None
        pitch = self.pitch_head(out.zq) if self.pitch_head is not None else None
        return out, pred, pitch

    def _teacher_f0(self, wav: Tensor) -> tuple[Tensor, Tensor] | None:
        """On a ``f0_teacher`` share of training steps, a harmonic head's oscillators play the input's own F0
        (YIN per head frame, ``(f0, voiced)``; unvoiced frames keep the predicted F0), so its harmonic
        amplitudes learn while the F0 predictor is still poor."""
        cfg = self.codec.cfg
        if cfg.decoder_head != "harmonic" or not self.training or self.f0_teacher <= 0:
            return None
        if float(torch.rand(())) >= self.f0_teacher:
            return None
        frames = -(-wav.shape[-1] // self.codec.group_samples) * self.codec.group_samples // cfg.head_hop
        return yin(wav[:, 0], frames, cfg.head_hop, cfg.sample_rate)


class Trainer:
    """Owns the modules and optimisers; ``step(wav, texts, step) -> {loss name: float}``."""

    def __init__(self, codec: LLMCodec, objective: GeneratorObjective, disc: nn.Module | None, opt: OptimConfig,
                 total_steps: int, info: DistInfo, device: torch.device) -> None:
        self.codec, self.objective, self.disc, self.opt_cfg = codec.to(device), objective.to(device), disc, opt
        self.info, self.device = info, device
        self.entropy_tau = codec.quantizer.entropy_tau  # None: the usage-entropy term is off
        self.gen = CodecWithHead(self.codec, objective.head, objective.pitch_head, opt.f0_teacher)
        self.gen_params = [p for p in self.gen.parameters() if p.requires_grad]
        self.opt_g = torch.optim.AdamW(self.gen_params, opt.lr, betas=opt.betas, eps=opt.eps,
                                       weight_decay=opt.weight_decay)
        factor = lambda s: lr_factor(s, opt.warmup, total_steps, opt.schedule, opt.final_lr_ratio)  # noqa: E731
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, factor)
        self.gen_ddp = self._wrap(self.gen)
        self.opt_d = self.sched_d = self.disc_ddp = None
        if disc is not None:
            self.disc = disc.to(device)
            self.opt_d = torch.optim.AdamW(self.disc.parameters(), opt.disc_lr or opt.lr, betas=opt.betas,
                                           eps=opt.eps, weight_decay=opt.weight_decay)
            self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, factor)
            self.disc_ddp = self._wrap(self.disc)

    def _wrap(self, module: nn.Module) -> nn.Module:
        if not self.info.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(module, device_ids=ids)

    def train(self) -> None:
        self.gen.train()
        if self.disc is not None:
            self.disc.train()

    def step(self, wav: Tensor, texts: list[str | None], step: int) -> dict[str, float]:
        """One optimisation step on ``wav (B, 1, N)``; returns detached loss values, grad norm and lr."""
        every = self.opt_cfg.entropy_every
        with_entropy = self.entropy_tau is not None and step % every == 0
        self.codec.quantizer.entropy_tau = self.entropy_tau if with_entropy else None
        with self._autocast():
            out, head_pred, pitch_pred = self.gen_ddp(wav)
        logs: dict[str, float] = {}
        disc_fake = real_feats = None
        if self.uses_disc(step):
            real_feats = self._disc_step(wav, out.audio.detach(), logs)
            self.disc.requires_grad_(False)
            with self._autocast():
                disc_fake = self.disc(out.audio)
        terms = self.objective(out, wav, texts, self.codec.quantizer.cb_proj[0], disc_fake, real_feats,
                               head_pred=head_pred, pitch_pred=pitch_pred,
                               entropy_scale=float(every) if with_entropy else 0.0)
        self.opt_g.zero_grad(set_to_none=True)
        terms["total"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.gen_params, self.opt_cfg.grad_clip)
        self.opt_g.step()
        self.sched_g.step()
        if disc_fake is not None:
            self.sched_d.step()
            self.disc.requires_grad_(True)
        logs.update({k: float(v.detach()) for k, v in terms.items()})
        logs["grad_norm"], logs["lr"] = float(grad_norm), self.sched_g.get_last_lr()[0]
        logs.update({f"gain_l{k + 1}": g for k, g in enumerate(self.codec.quantizer.last_gains)})
        if self.opt_cfg.gain_every and step % self.opt_cfg.gain_every == 0:
            self.codec.quantizer.match_gains(out.z.detach().float())
        return logs

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.opt_cfg.bf16)

    def uses_disc(self, step: int) -> bool:
        """Whether ``step`` updates the discriminator and adds the adversarial and feature-matching terms."""
        start, every = self.opt_cfg.adv_start, self.opt_cfg.disc_every
        return self.disc is not None and step >= start and (step - start) % every == 0

    def _disc_step(self, wav: Tensor, fake: Tensor, logs: dict[str, float]) -> list[list[Tensor]]:
        b = wav.shape[0]
        with self._autocast():
            logits, feats = self.disc_ddp(torch.cat([wav, fake], dim=0))  # one forward: DDP-safe
        loss = discriminator_loss([lg[:b] for lg in logits], [lg[b:] for lg in logits])
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.disc.parameters(), self.opt_cfg.grad_clip)
        self.opt_d.step()
        logs["disc"] = float(loss.detach())
        return [[f[:b].detach() for f in fs] for fs in feats]

    @torch.no_grad()
    def evaluate(self, wav: Tensor) -> dict[str, float]:
        """Reconstruction losses, distinct codes per layer (``used_l{k}``) and the entropy of their
        histogram in bits (``entropy_l{k}``) on a fixed batch, no update.

        The distinct-code counts expose codebook collapse (the paper's failure without the consistency loss).
        """
        self.gen.eval()
        out = self.codec(wav)
        terms = self.objective.reconstruction(out.audio, wav)
        self.train()
        logs = {"recon": float(terms["stft"] + terms["mel"]), "stft": float(terms["stft"]), "mel": float(terms["mel"])}
        for k, c in enumerate(out.codes):
            _, counts = torch.unique(c, return_counts=True)
            p = counts.double() / counts.sum()
            logs[f"used_l{k + 1}"] = int(counts.numel())
            logs[f"entropy_l{k + 1}"] = float(-(p * p.log2()).sum())  # bits; log2(used) if uniform
        return logs

    def state_dict(self) -> dict[str, Any]:
        state = {"opt_g": self.opt_g.state_dict(), "sched_g": self.sched_g.state_dict(),
                 "head": self.objective.head.state_dict() if self.objective.head is not None else None,
                 "pitch_head": (self.objective.pitch_head.state_dict()
                                if self.objective.pitch_head is not None else None)}
        if self.disc is not None:
            state.update(disc=self.disc.state_dict(), opt_d=self.opt_d.state_dict(), sched_d=self.sched_d.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore optimisers, schedules, head and discriminator (the codec weights come from the checkpoint)."""
        if (state.get("head") is None) != (self.objective.head is None):
            raise ValueError("--resume: the checkpoint was trained with a different --teacher setting")
        if (state.get("disc") is None) != (self.disc is None):
            raise ValueError("--resume: the checkpoint was trained with a different adversarial setting")
        if (state.get("pitch_head") is None) != (self.objective.pitch_head is None):
            raise ValueError("--resume: the checkpoint was trained with a different pitch loss setting")
        if self.objective.head is not None:
            self.objective.head.load_state_dict(state["head"])
        if self.objective.pitch_head is not None:
            self.objective.pitch_head.load_state_dict(state["pitch_head"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.sched_g.load_state_dict(state["sched_g"])
        if self.disc is not None:
            self.disc.load_state_dict(state["disc"])
            self.opt_d.load_state_dict(state["opt_d"])
            self.sched_d.load_state_dict(state["sched_d"])
