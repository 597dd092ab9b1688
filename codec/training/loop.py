"""The training loop of ``codec.train``: resume, steps, metrics/eval CSVs, checkpoints (rank 0 only)."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from codec.checkpoint import WEIGHTS_FILE, save_checkpoint
from codec.data import AudioDataset, ShardedEpochSampler
from codec.training.state import (METRICS_FILE, DistInfo, MetricsWriter, all_reduce_mean, load_train_state,
                                  save_train_state)
from codec.training.trainer import Trainer

EVAL_FILE = "eval.csv"


def _resume(out: Path, trainer: Trainer, vocab_info: dict[str, Any]) -> tuple[int, int, int]:
    """Load weights + optimiser state from ``out``; returns ``(step, epoch, batches done in epoch)``."""
    state = load_train_state(out)
    if (state["vocab_fingerprint"] != vocab_info["fingerprint"] or state["word_token_ids"] != vocab_info["word_token_ids"]
            or state.get("residual_token_ids", vocab_info["residual_token_ids"]) != vocab_info["residual_token_ids"]):
        raise SystemExit(f"error: --resume: {out} was trained with a different vocabulary/word table than --llm")
    if state["config"] != trainer.codec.cfg.to_dict():
        raise SystemExit(f"error: --resume: {out} was trained with a different config (preset/overrides/GGUF dim)")
    trainer.codec.load_state_dict(load_file(str(out / WEIGHTS_FILE)), strict=True)
    trainer.load_state_dict(state["trainer"])
    return int(state["step"]), int(state["epoch"]), int(state["pos"])


def _checkpoint(out: Path, trainer: Trainer, vocab_info: dict[str, Any], step: int, epoch: int, pos: int) -> None:
    save_checkpoint(out, trainer.codec, vocab_info, overwrite=True)
    save_train_state(out, {"step": step, "epoch": epoch, "pos": pos, "trainer": trainer.state_dict(),
                           "config": trainer.codec.cfg.to_dict(), "vocab_fingerprint": vocab_info["fingerprint"],
                           "word_token_ids": vocab_info["word_token_ids"],
                           "residual_token_ids": vocab_info["residual_token_ids"]})


def run_loop(args: argparse.Namespace, trainer: Trainer, dataset: AudioDataset, sampler: ShardedEpochSampler,
             loader, eval_wav: torch.Tensor, vocab_info: dict[str, Any], info: DistInfo,
             device: torch.device) -> int:
    """Train until ``--steps``/``--stop-after``/``--time-limit`` or Ctrl-C, checkpointing at the end either
    way; returns 0, or 130 after Ctrl-C (the checkpoint is saved: ``--resume`` continues)."""
    out: Path = args.out
    step, epoch, pos = _resume(out, trainer, vocab_info) if args.resume else (0, 0, 0)
    metrics, evals = MetricsWriter(out / METRICS_FILE), MetricsWriter(out / EVAL_FILE)
    if info.is_main and step == 0:
        evals.write({"step": 0, **trainer.evaluate(eval_wav)})
    audio_per_step = args.batch_size * info.world_size * dataset.segment / dataset.sample_rate
    bar = tqdm(total=args.steps, initial=step, disable=args.no_progress or not info.is_main,
               desc="train", dynamic_ncols=True)
    sums: dict[str, float] = defaultdict(float)
    seen: dict[str, int] = defaultdict(int)  # per term: with --disc-every N the adversarial terms skip steps
    count, t_log = 0, time.perf_counter()
    end, done, stopped = _session_end(args, step, info, device), False, False
    trainer.train()
    with _StopOnInterrupt() as ctrl_c:
        while step < end.steps:
            sampler.set_epoch(epoch, start=pos * args.batch_size)
            dataset.set_epoch(epoch)
            for wav, texts in loader:
                logs = trainer.step(wav.to(device, non_blocking=True), texts, step)
                step, pos, count = step + 1, pos + 1, count + 1
                for k, v in logs.items():
                    sums[k] += v
                    seen[k] += 1
                bar.update(1)
                stopped = end.interrupted(ctrl_c.requested)
                done = stopped or step >= end.steps or end.timed_out()
                if step % args.log_every == 0 or done:
                    secs = time.perf_counter() - t_log
                    row = all_reduce_mean({k: v / seen[k] for k, v in sums.items()}, info, device)
                    row.update(secs=secs, audio_s_per_s=audio_per_step * count / secs, epoch=epoch)
                    if info.is_main:
                        metrics.write({"step": step, **row})
                        bar.set_postfix(total=f"{row['total']:.3f}", recon=f"{row['recon']:.3f}",
                                        lr=f"{row['lr']:.2e}")
                    sums.clear()
                    seen.clear()
                    count, t_log = 0, time.perf_counter()
                if info.is_main and args.eval_every and step % args.eval_every == 0 and not done:
                    evals.write({"step": step, **trainer.evaluate(eval_wav)})
                if info.is_main and (step % args.ckpt_every == 0 or done):
                    _checkpoint(out, trainer, vocab_info, step, epoch, pos)
                if done:
                    break
            else:
                epoch, pos = epoch + 1, 0
            if done:
                break
    bar.close()
    if stopped:
        if info.is_main:
            print(f"interrupted: checkpoint at step {step}/{args.steps} saved in {out} (continue with --resume)",
                  file=sys.stderr)
        return 130
    if info.is_main:
        evals.write({"step": step, **trainer.evaluate(eval_wav)})
        print(f"trained {step}/{args.steps} steps; checkpoint in {out}")
    return 0


class _StopOnInterrupt:
    """While the step loop runs, the first Ctrl-C (SIGINT) only sets ``requested``: the loop finishes the
    current step, checkpoints and returns, so ``--resume`` continues from there. A second Ctrl-C raises
    KeyboardInterrupt at once (checkpoint files are written atomically, so the last one stays intact)."""

    def __enter__(self) -> "_StopOnInterrupt":
        self.requested, self._installed = False, False
        if threading.current_thread() is threading.main_thread():  # signal handlers: main thread only
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        self._restore()

    def _restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._installed = False

    def __exit__(self, *exc: Any) -> None:
        self._restore()


class _SessionEnd:
    """Where this invocation stops: ``--steps``, ``--stop-after`` steps from here, or ``--time-limit``."""

    def __init__(self, steps: int, deadline: float | None, info: DistInfo, device: torch.device) -> None:
        self.steps, self.deadline, self.info, self.device = steps, deadline, info, device

    def interrupted(self, local: bool) -> bool:
        """Whether any rank saw Ctrl-C (all ranks must stop at the same step)."""
        if not self.info.enabled:
            return local
        flag = torch.tensor([int(local)], dtype=torch.int32, device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def timed_out(self) -> bool:
        if self.deadline is None:
            return False
        flag = torch.tensor([time.perf_counter() >= self.deadline], dtype=torch.int32, device=self.device)
        if self.info.enabled:  # rank 0's clock decides, so all ranks stop at the same step
            torch.distributed.broadcast(flag, 0)
        return bool(flag.item())


def _session_end(args: argparse.Namespace, step: int, info: DistInfo, device: torch.device) -> _SessionEnd:
    steps = args.steps if args.stop_after is None else min(args.steps, step + args.stop_after)
    deadline = None if args.time_limit is None else time.perf_counter() + 60.0 * args.time_limit
    return _SessionEnd(steps, deadline, info, device)
