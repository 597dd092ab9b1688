"""Training bookkeeping: LR schedule, metrics CSV, ``train_state.pt`` for --resume, DDP setup."""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from runtime.cli import atomic_path
import torch.distributed as dist

TRAIN_STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.csv"


def lr_factor(step: int, warmup: int, total: int, schedule: str, final_ratio: float) -> float:
    """Multiplier of the base LR at ``step``: linear warm-up, then cosine or exponential decay to ``final_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "exp":
        return final_ratio ** progress
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}; use cosine, exp or constant")


class MetricsWriter:
    """Appends one CSV row per log interval; the header is fixed by the first row (resume keeps it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if path.is_file() and path.stat().st_size:
            with open(path, newline="") as f:
                self.columns = next(csv.reader(f), None)

    def write(self, row: dict[str, float]) -> None:
        if self.columns is None:
            self.columns = list(row)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c, float("nan"))) for c in self.columns])


def _fmt(v: Any) -> str:
    return str(v) if isinstance(v, int) else f"{float(v):.6g}"


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a metrics CSV as floats."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def save_train_state(directory: Path, state: dict[str, Any]) -> None:
    """Write ``train_state.pt`` atomically (``runtime.cli.atomic_path``: temp file + rename)."""
    with atomic_path(directory / TRAIN_STATE_FILE) as tmp:
        torch.save(state, tmp)


def load_train_state(directory: Path) -> dict[str, Any]:
    path = directory / TRAIN_STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--resume: {path} not found (no checkpoint has been written to this --out yet)")
    return torch.load(path, map_location="cpu", weights_only=False)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> tuple[DistInfo, torch.device]:
    """Read torchrun's WORLD_SIZE/RANK/LOCAL_RANK; init the process group when world_size > 1.

    ``device`` is ``cpu``, ``cuda`` or ``auto``; under torchrun each rank takes ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda requested but torch sees no CUDA GPU; use --device cpu")
        dev = torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if info.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return info, dev


def all_reduce_mean(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Average a dict of floats over ranks (identity without DDP)."""
    if not info.enabled:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}


def cleanup_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
