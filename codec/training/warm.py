"""Warm start (``codec.train --init DIR``): a new run that begins from another run's weights.

Unlike ``--resume`` (same run, same schedule, optimiser state), a warm start takes only weights: the
codec's from any checkpoint (a training run or the weights-only ``models/default/checkpoint``, whose
frozen codebooks are rebuilt from ``--llm``), and the discriminator's and consistency head's from the
run's ``train_state.pt`` or a published ``train_aux.safetensors`` when there (a fresh discriminator would
first feed the generator noise).
The optimiser and LR schedule start fresh, so the new run's ``--steps``/``--warmup`` apply.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from codec.checkpoint import load_checkpoint
from codec.model import LLMCodec
from codec.training.state import TRAIN_STATE_FILE, load_train_state

# Beside a weights-only checkpoint (codec.publish): the discriminator's and the consistency head's
# weights (no optimiser state; ~0.3 MB for `small`), so a later warm start keeps its critic.
AUX_FILE = "train_aux.safetensors"


def aux_weights(run_dir: Path) -> dict[str, Any] | None:
    """``{"disc": state_dict | None, "head": state_dict | None}`` from a run's ``train_state.pt`` or a
    published ``train_aux.safetensors``; None when the directory has neither."""
    if (run_dir / TRAIN_STATE_FILE).is_file():
        state = load_train_state(run_dir)["trainer"]
        return {"disc": state.get("disc"), "head": state.get("head"), "pitch_head": state.get("pitch_head")}
    if (run_dir / AUX_FILE).is_file():
        flat = load_file(str(run_dir / AUX_FILE))
        split = {p: {k[len(p) + 1:]: v for k, v in flat.items() if k.startswith(p + ".")}
                 for p in ("disc", "head", "pitch_head")}
        return {p: (d or None) for p, d in split.items()}
    return None


def save_aux(run_dir: Path, out_dir: Path) -> bool:
    """Copy a run's discriminator/head weights to ``out_dir/train_aux.safetensors``; False if it has none."""
    aux = aux_weights(run_dir)
    if aux is None:
        return False
    flat = {f"{p}.{k}": v.contiguous() for p, d in aux.items() if d for k, v in d.items()}
    if not flat:
        return False
    save_file(flat, str(out_dir / AUX_FILE))
    return True


# Config fields a warm start may change: the decoder's output head (a new head over the same encoder,
# quantizer and early decoder stages). Every other difference is an error.
HEAD_FIELDS = {"decoder_head", "head_blocks", "head_dim", "harmonics", "head_overlap"}


def _load_shared(state: dict[str, Any], codec: LLMCodec) -> str:
    """Copy every tensor whose name and shape match; the rest of ``codec`` keeps its fresh init."""
    own = codec.state_dict()
    shared = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    codec.load_state_dict(shared, strict=False)
    fresh = sorted({".".join(k.split(".")[:2]) for k in own if k not in shared})
    dropped = sorted({".".join(k.split(".")[:2]) for k in state if k not in shared})
    return (f"codec ({len(shared)} of {len(own)} tensors; fresh: {', '.join(fresh)}; "
            f"dropped: {', '.join(dropped)})")


def _load_disc(disc: nn.Module, state: dict[str, Any]) -> str:
    """The saved discriminator into ``disc``; an MS-STFT one into the MS-STFT part of a combined one."""
    own = disc.state_dict().keys()
    if set(state) == set(own):
        disc.load_state_dict(state)
        return "discriminator"
    part = getattr(disc, "msstft", None)
    if part is not None and set(state) == set(part.state_dict()):
        part.load_state_dict(state)
        return "discriminator (its MS-STFT part; the multi-period part starts fresh)"
    raise ValueError("the saved discriminator does not fit this run's --disc; --disc both keeps a saved "
                     "MS-STFT one (its multi-period part starts fresh), --no-adversarial trains without")


def _load_head(head: nn.Module, state: dict[str, Any]) -> str:
    """The saved consistency head, unless it was fitted to another teacher (other feature size): then fresh."""
    own = head.state_dict()
    if set(state) == set(own) and all(own[k].shape == v.shape for k, v in state.items()):
        head.load_state_dict(state)
        return "consistency head"
    return "consistency head fresh (the saved one is for another --teacher)"


def warm_start(directory: Path, llm: Path, codec: LLMCodec, vocab_info: dict[str, Any],
               disc: nn.Module | None, head: nn.Module | None, pitch_head: nn.Module | None = None) -> list[str]:
    """Load ``directory``'s weights into ``codec`` (and ``disc``/``head`` when saved); returns what was loaded.

    Raises ``ValueError`` when the checkpoint's config or token tables differ from this run's."""
    source, info = load_checkpoint(directory, llm=llm)
    diff = {k: v for k, v in source.cfg.to_dict().items() if codec.cfg.to_dict().get(k) != v}
    if set(diff) - HEAD_FIELDS:
        raise ValueError(f"--init {directory}: its config differs from this run's in {diff} "
                         "(pass the same --preset/--override as the run that wrote it; only the decoder head "
                         f"fields {sorted(HEAD_FIELDS)} may differ)")
    for key in ("word_token_ids", "residual_token_ids"):
        if info.get(key) is not None and list(info[key]) != list(vocab_info[key]):
            raise ValueError(f"--init {directory}: its {key} differ from this run's tables (other --llm, "
                             "--word-table-size or --residual-table-size)")
    if diff:
        loaded = [_load_shared(source.state_dict(), codec)]
    else:
        codec.load_state_dict(source.state_dict(), strict=True)
        loaded = ["codec"]
    aux = aux_weights(directory)
    if aux is not None:
        if disc is not None and aux.get("disc") is not None:
            loaded.append(_load_disc(disc, aux["disc"]))
        if head is not None and aux.get("head") is not None:
            loaded.append(_load_head(head, aux["head"]))
        if pitch_head is not None and aux.get("pitch_head") is not None:
            pitch_head.load_state_dict(aux["pitch_head"])
            loaded.append("pitch head")
    print(f"warm start from {directory}: {', '.join(loaded)}", file=sys.stderr)
    return loaded
